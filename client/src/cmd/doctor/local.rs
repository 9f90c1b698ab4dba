//! The steps on this machine, before any network: the config file (found, parses, not
//! readable by others), the profile and its URL, the CA file (not writable by group or
//! others: `crate::perms`), the client certificate (its dates, its issuer, whether the CA
//! file verifies it) and the key (not readable or writable by group or others, decryptable
//! with the usual passphrase sources). The key is unlocked by the
//! transport's own preparation ([`Transport::prepare`]), so `doctor` judges exactly what
//! every other command would load, PKCS#11 keys included.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use virtgate_pki::keyfile;

use super::certinfo::{CertInfo, Dates};
use super::report::{Report, Status};
use crate::cli::{GlobalArgs, Settings};
use crate::error::Error;
use crate::passphrase::Source;
use crate::profile::{AuthKind, Env, Profiles};
use crate::transport::{tls, Transport};

/// Read and parse the config file; `None` when it cannot be used.
pub fn config(report: &mut Report, global: &GlobalArgs, env: &Env) -> Option<Profiles> {
    let profiles = match Profiles::load(env) {
        Ok(p) => p,
        Err(e) => {
            report.fail("config", &e);
            return None;
        }
    };
    let path = profiles.path.display().to_string();
    if !profiles.exists {
        if global.url.is_some() {
            report.ok(
                "config",
                format!("no config file at {path}: the command line says everything"),
            );
        } else {
            report.fail(
                "config",
                &Error::NoGateway {
                    config: profiles.path.clone(),
                },
            );
        }
        return Some(profiles);
    }
    let count = profiles.profiles.len();
    let what = format!(
        "{path}: {}",
        super::certinfo::plural(count as i64, "profile")
    );
    match readable_by_others(&profiles.path) {
        Some(mode) => report.add_hint(
            "config",
            Status::Warn,
            format!("{what}; readable by others (mode {mode:04o})"),
            format!("chmod 600 {path}"),
        ),
        None => report.ok("config", what),
    }
    Some(profiles)
}

/// Resolve the profile and the flags into settings; `None` when that fails.
pub fn profile(
    report: &mut Report,
    global: &GlobalArgs,
    profiles: &Profiles,
    env: &Env,
) -> Option<Settings> {
    match global.resolve(profiles, env) {
        Ok(s) => {
            let auth = match (&s.url, s.auth) {
                (crate::url::GatewayUrl::Tls { .. }, AuthKind::Cert) => ", client certificate",
                (crate::url::GatewayUrl::Tls { .. }, AuthKind::Kerberos) => ", Kerberos",
                _ => "",
            };
            let name = match (&s.profile, &global.url) {
                (Some(p), None) => format!("profile `{p}`"),
                (Some(p), Some(_)) => format!("profile `{p}` with the URL of --url"),
                (None, _) => "no profile, --url".into(),
            };
            report.ok("profile", format!("{name}: {}{auth}", s.url));
            Some(s)
        }
        Err(e) => {
            report.fail("profile", &e);
            None
        }
    }
}

/// The CA file that verifies the gateway: readable, holds certificates, the first one in
/// date. Returns its certificates when it can be used.
pub fn ca(report: &mut Report, settings: &Settings) -> Option<Vec<CertificateDer<'static>>> {
    let Some(path) = &settings.ca else {
        report.add_hint(
            "ca",
            Status::Fail,
            format!(
                "no CA certificate to verify the gateway at {}",
                settings.url
            ),
            format!(
                "{} (the ca.pem that came with your certificate)",
                settings.where_to_set("ca", "--ca FILE")
            ),
        );
        return None;
    };
    let certs = match tls::load_roots(path).and_then(|_| Ok(keyfile::load_certs(path)?)) {
        Ok(c) => c,
        Err(e) => {
            report.fail("ca", &e);
            return None;
        }
    };
    let Some(info) = certs.first().and_then(|c| CertInfo::parse(c)) else {
        report.ok(
            "ca",
            format!("{}: {} certificate(s)", path.display(), certs.len()),
        );
        return Some(certs);
    };
    let detail = format!(
        "{}: {}, {}",
        path.display(),
        info.subject,
        info.validity_text()
    );
    match info.dates() {
        Dates::Valid { .. } => report.ok("ca", detail),
        _ => report.add_hint(
            "ca",
            Status::Fail,
            detail,
            "check this machine's clock (`date -u`); otherwise the CA must be renewed: ask the \
             gateway's admin for its new ca.pem",
        ),
    }
    Some(certs)
}

/// The client certificate: readable, its dates, who issued it, and whether the CA file
/// verifies it. Returns whether the file can be used (its dates aside), and its subject.
pub fn cert(
    report: &mut Report,
    settings: &Settings,
    ca: Option<&[CertificateDer<'static>]>,
) -> (bool, Option<String>) {
    let Some(path) = &settings.cert else {
        report.add_hint(
            "cert",
            Status::Warn,
            "no client certificate configured: the gateway will not know who you are",
            settings.where_to_set("cert", "--cert FILE"),
        );
        return (true, None);
    };
    let chain = match keyfile::load_certs(path) {
        Ok(c) => c,
        Err(e) => {
            report.fail("cert", &Error::KeyFile(e));
            return (false, None);
        }
    };
    let Some(info) = chain.first().and_then(|c| CertInfo::parse(c)) else {
        report.add_hint(
            "cert",
            Status::Fail,
            format!("{}: not an X.509 certificate", path.display()),
            "`cert` must be the USER.pem the admin sent back",
        );
        return (false, None);
    };
    let mut detail = format!(
        "{}: {}, issued by {}, {}",
        path.display(),
        info.subject,
        info.issuer,
        info.validity_text()
    );
    let new_one = "ask the gateway's admin for a new certificate (`virtgate-pki issue-client \
                   USER`, or `sign-csr` for a request you made)";
    let (mut status, mut hint) = match info.dates() {
        Dates::Expired { .. } => (Status::Fail, Some(new_one.to_owned())),
        Dates::NotYetValid => (
            Status::Fail,
            Some(
                "check this machine's clock (`date -u`, NTP): the certificate was issued for a \
                 time that has not come yet"
                    .to_owned(),
            ),
        ),
        Dates::Valid { .. } if info.expires_soon() => (Status::Warn, Some(new_one.to_owned())),
        Dates::Valid { .. } => (Status::Ok, None),
    };
    if let (Some(ca), Some(ca_path)) = (ca, &settings.ca) {
        match verifies(ca, &chain) {
            Ok(()) => detail.push_str(&format!(" (verified by {})", ca_path.display())),
            Err(why) => {
                detail.push_str(&format!(
                    "; {} does not verify it ({why})",
                    ca_path.display()
                ));
                if status == Status::Ok {
                    status = Status::Warn;
                    hint = Some(format!(
                        "the gateway's CA usually issues client certificates too: is {} the \
                         ca.pem that came with this certificate?",
                        ca_path.display()
                    ));
                }
            }
        }
    }
    match hint {
        Some(h) => report.add_hint("cert", status, detail, h),
        None => report.add("cert", status, detail),
    }
    (true, Some(info.subject))
}

/// Whether the CA certificates verify the client certificate chain as a gateway would
/// (webpki, client-auth usage, today's date); the reason when not.
fn verifies(
    ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let (end, intermediates) = chain.split_first().ok_or("no certificate")?;
    match verifier.verify_client_cert(end, intermediates, UnixTime::now()) {
        Ok(_) => Ok(()),
        // the dates are reported on their own
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. },
        )) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        )) => Err("another CA issued it".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The key: what preparing the transport (refusing a key group or others may read or
/// write, reading and unlocking it) said; its mode alone when the CA file or certificate
/// stopped the preparation first. `files_ok` says whether the CA file and certificate could be read: when not,
/// the preparation failed on them, not on the key.
pub fn key(
    report: &mut Report,
    settings: &Settings,
    prepared: &Result<Transport, Error>,
    files_ok: bool,
) {
    let Some(path) = &settings.key else {
        if settings.cert.is_some() {
            report.add_hint(
                "key",
                Status::Fail,
                "a client certificate is configured but no key",
                settings.where_to_set("key", "--key FILE"),
            );
        }
        return;
    };
    let shown = path.display().to_string();
    let hardware = shown.starts_with("pkcs11:");
    match prepared {
        Err(_) if !files_ok => match crate::perms::check_key(path) {
            Err(e) if !hardware => report.fail("key", &e),
            _ => report.skip(
                "key",
                format!("{shown}: not checked (the CA file or certificate above cannot be used)"),
            ),
        },
        Err(e) => report.fail("key", e),
        Ok(_) if hardware => report.ok("key", format!("{shown}: found on the token")),
        Ok(_) => {
            let how = match keyfile::is_encrypted(path) {
                Ok(true) => format!(
                    "decrypted with the passphrase from {}",
                    source_text(&settings.passphrase.source())
                ),
                _ => "not encrypted".into(),
            };
            // a key group or others may read or write never gets here: preparing refused it
            report.ok(
                "key",
                format!("{shown}: {how}, yours alone, and it belongs to the certificate"),
            );
        }
    }
}

/// Where a passphrase comes from, in words.
fn source_text(source: &Source) -> String {
    match source {
        Source::File(p) => format!("--passphrase-file {}", p.display()),
        Source::Env => "$VIRTGATE_KEY_PASSPHRASE".into(),
        Source::Command(c) => format!("passphrase_command `{c}`"),
        Source::Prompt => "the terminal".into(),
    }
}

/// The file's permission bits when group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_readable_files_are_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_others(&f), Some(0o640));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(readable_by_others(&f), None);
    }

    #[test]
    fn a_missing_config_with_no_url_fails_with_the_how_to() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            xdg_config_home: Some(dir.path().into()),
            ..Default::default()
        };
        let mut r = Report::default();
        let p = config(&mut r, &GlobalArgs::default(), &env).unwrap();
        assert!(!p.exists);
        assert_eq!(r.checks[0].status, Status::Fail);
        assert!(r.checks[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("[profile.hv1]"));
        let mut r = Report::default();
        let g = GlobalArgs {
            url: Some("virtgate://gw".into()),
            ..Default::default()
        };
        config(&mut r, &g, &env).unwrap();
        assert_eq!(r.checks[0].status, Status::Ok);
    }
}
