//! `virtgate profile add`: check everything that would fail later (the name, the URL and
//! the files that kind of URL needs, certificate ↔ key, certificate ↔ CA), copy the CA and
//! certificate the admin sent into `CONFIG_DIR/NAME/`, then write the profile (see the
//! parent module for the contract).

use std::path::{Path, PathBuf};

use virtgate_pki::files::{self, Existing};

use super::checks::{self, CertFile, KeyMatch};
use super::edit::ConfigDoc;
use super::{AddArgs, ConfigFile};
use crate::cli::GlobalArgs;
use crate::error::{Error, SetupFailure};
use crate::profile::{AuthKind, Env};
use crate::url::GatewayUrl;

/// A profile name usable as `-p NAME` and as a folder name.
fn check_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with(['.', '-']) {
        Some("it starts with `.` or `-`")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Some("it holds a character other than letters, digits and . _ -")
    } else {
        None
    };
    match why {
        Some(why) => Err(SetupFailure::InvalidProfileName {
            name: name.to_owned(),
            why,
        }
        .into()),
        None => Ok(()),
    }
}

/// A flag that does not go with the URL given.
fn not_with(flag: &str, url: &GatewayUrl, why: &str) -> Error {
    Error::Setting {
        message: format!("{flag} does not go with {url}: {why}"),
        hint: format!("leave out {flag}"),
    }
}

/// A flag the URL needs.
fn needs(flag: &str, url: &GatewayUrl, why: &str) -> Error {
    Error::Setting {
        message: format!("profile add for {url} needs {flag}"),
        hint: why.to_owned(),
    }
}

/// A file to copy into the config folder.
struct Copy {
    /// The file as given.
    from: PathBuf,
    /// Where it goes (or is already).
    to: PathBuf,
    /// Whether it must be written (`false`: it is there with the same contents, or it is
    /// inside the config folder already and used where it is).
    write: bool,
}

/// `profile add`.
pub(super) fn add(global: &GlobalArgs, args: AddArgs, env: &Env) -> Result<(), Error> {
    check_name(&args.name)?;
    let url_text = global.url.clone().ok_or_else(|| Error::Setting {
        message: "profile add needs --url".into(),
        hint: "e.g. --url virtgate://hv1.example.org (TLS), virtgate+ssh://USER@HOST or \
               virtgate+unix:///run/virtgate/virtgate.sock"
            .into(),
    })?;
    let url = GatewayUrl::parse(&url_text)?;
    let config = ConfigFile::read(env)?;
    let mut doc = ConfigDoc::parse(&config.path, &config.text)?;
    if doc.has_profile(&args.name) && !args.force {
        return Err(SetupFailure::ProfileExists {
            name: args.name.clone(),
            config: config.path.clone(),
        }
        .into());
    }
    let mut keys: Vec<(&str, String)> = vec![("url", url_text.clone())];
    let mut copies = Vec::new();
    let mut report = Vec::new();
    match &url {
        GatewayUrl::Tls { .. } => {
            let auth = global.auth.unwrap_or(AuthKind::Cert);
            let ca_path = global.ca.as_ref().ok_or_else(|| {
                needs(
                    "--ca CA.pem",
                    &url,
                    "the CA certificate the admin sent checks the gateway",
                )
            })?;
            let ca = checks::read_cert(ca_path)?;
            copies.push(plan_copy(&config.folder, &args, ca_path, "ca.pem")?);
            report.push(("ca", format!("CA \"{}\"", ca.summary.cn)));
            if auth == AuthKind::Kerberos {
                for (flag, given) in [("--cert", &global.cert), ("--key", &global.key)] {
                    if given.is_some() {
                        return Err(not_with(flag, &url, "Kerberos logs in with your ticket"));
                    }
                }
                keys.push(("auth", "kerberos".into()));
            } else {
                let (Some(cert_path), Some(key_path)) = (&global.cert, &global.key) else {
                    return Err(needs(
                        "--cert USER.pem and --key USER.key",
                        &url,
                        "the certificate the admin signed and the key `virtgate enroll` made \
                         (or --auth kerberos)",
                    ));
                };
                let cert = checks::read_cert(cert_path)?;
                checks::issued_by(&cert, &ca)?;
                let matched = checks::key_matches(&cert, key_path, key_passphrase(global, env)?)?;
                let name = cert_copy_name(cert_path);
                copies.push(plan_copy(&config.folder, &args, cert_path, &name)?);
                report.push(("cert", describe_cert(&cert)));
                report.push(("key", describe_match(key_path, &matched)));
                if let KeyMatch::Unchecked(why) = &matched {
                    eprintln!("note: the key was not compared with the certificate: {why}");
                }
                let key_text = if crate::pkcs11::uri::is_uri(key_path) {
                    key_path.display().to_string()
                } else {
                    written_path(&config.folder, &absolute(key_path))
                };
                keys.push(("key", key_text));
                if let Some(m) = &global.pkcs11_module {
                    keys.push(("pkcs11_module", absolute(m).display().to_string()));
                }
            }
        }
        GatewayUrl::Ssh { .. } | GatewayUrl::Unix { .. } => {
            let why = match url {
                GatewayUrl::Ssh { .. } => "over SSH, sshd authenticates you",
                _ => "the local socket knows you by your user id",
            };
            for (flag, given) in [
                ("--ca", global.ca.is_some()),
                ("--cert", global.cert.is_some()),
                ("--key", global.key.is_some()),
                ("--auth", global.auth.is_some()),
            ] {
                if given {
                    return Err(not_with(flag, &url, why));
                }
            }
        }
    }
    if let Some(ssh_key) = &global.ssh_key {
        if !matches!(url, GatewayUrl::Ssh { .. }) {
            return Err(not_with(
                "--ssh-key",
                &url,
                "it is for virtgate+ssh:// URLs",
            ));
        }
        std::fs::metadata(ssh_key).map_err(|e| Error::File {
            what: "SSH key",
            path: ssh_key.clone(),
            reason: crate::error::io_reason(&e),
        })?;
        keys.push(("ssh_key", written_path(&config.folder, &absolute(ssh_key))));
    }
    // ca and cert in the file's usual order: url, ca, cert, key
    for (at, (copy, key)) in (1..).zip(copies.iter().zip(["ca", "cert"])) {
        keys.insert(at, (key, written_path(&config.folder, &copy.to)));
    }
    if let Some(cmd) = &args.passphrase_command {
        keys.push(("passphrase_command", cmd.clone()));
    }
    let before = doc.profile_names();
    doc.put_profile(&args.name, &keys)?;
    let default = match (args.default, doc.default(), before.as_slice()) {
        (true, _, _) | (false, None, []) => Some(args.name.clone()),
        // the one profile there was is what commands used without -p: keep it so
        (false, None, [only]) if *only != args.name => Some(only.clone()),
        _ => None,
    };
    if let Some(d) = &default {
        doc.set_default(d);
    }
    let text = doc.text()?;
    let written = write_copies(&copies)?;
    if let Err(e) = config.write(&text) {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let is_default = doc.default().as_deref() == Some(args.name.as_str());
    println!(
        "added profile {} to {}{}",
        args.name,
        config.path.display(),
        if is_default { " (the default)" } else { "" }
    );
    println!("  url   {url}");
    for (i, (key, what)) in report.iter().enumerate() {
        let place = match copies.get(i) {
            Some(c) if c.write => format!("{} (copied from {})", c.to.display(), c.from.display()),
            Some(c) => c.to.display().to_string(),
            None => String::new(),
        };
        println!(
            "  {key:<5} {place}{}{what}",
            if place.is_empty() { "" } else { ": " }
        );
    }
    let pick = if is_default {
        String::new()
    } else {
        format!("-p {} ", args.name)
    };
    println!("try it: virtgate {pick}whoami");
    Ok(())
}

/// The key passphrase given on the command line or in the environment, for comparing an
/// encrypted key with its certificate (never prompted for here).
fn key_passphrase(
    global: &GlobalArgs,
    env: &Env,
) -> Result<Option<virtgate_pki::zeroize::Zeroizing<String>>, Error> {
    if let Some(f) = &global.passphrase_file {
        return Ok(Some(virtgate_pki::passphrase::from_file(f)?));
    }
    Ok(env
        .key_passphrase
        .as_ref()
        .map(|v| virtgate_pki::zeroize::Zeroizing::new(v.to_string_lossy().into_owned())))
}

/// The name of the certificate's copy: its own file name (`ca.pem` would clash).
fn cert_copy_name(cert: &Path) -> String {
    match cert.file_name().and_then(|n| n.to_str()) {
        Some(n) if n != "ca.pem" => n.to_owned(),
        _ => "cert.pem".to_owned(),
    }
}

/// Where `file` goes: `CONFIG_DIR/NAME/name`, unless it is in the config folder already
/// or `--no-copy`. Refuses a different file in the way without `--force`.
fn plan_copy(folder: &Path, args: &AddArgs, file: &Path, name: &str) -> Result<Copy, Error> {
    let from = absolute(file);
    let inside = std::fs::canonicalize(&from)
        .ok()
        .zip(std::fs::canonicalize(folder).ok())
        .is_some_and(|(f, c)| f.starts_with(c));
    if args.no_copy || inside {
        return Ok(Copy {
            to: from.clone(),
            from,
            write: false,
        });
    }
    let to = folder.join(&args.name).join(name);
    let write = match (std::fs::read(&to), std::fs::read(&from)) {
        (Ok(there), Ok(new)) if there == new => false,
        (Ok(_), _) if !args.force => {
            return Err(SetupFailure::CopyExists { path: to }.into());
        }
        _ => true,
    };
    Ok(Copy { from, to, write })
}

/// Copies the files planned; returns those written (to remove them again on failure).
fn write_copies(copies: &[Copy]) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for c in copies.iter().filter(|c| c.write) {
        let result =
            c.to.parent()
                .map_or(Ok(false), |d| files::create_dir_mode(d, 0o700))
                .and_then(|_| std::fs::read(&c.from))
                .and_then(|bytes| {
                    files::write_file(&c.to, &bytes, files::PUBLIC_MODE, Existing::Replace)
                });
        if let Err(source) = result {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            return Err(SetupFailure::Write {
                path: c.to.clone(),
                source,
            }
            .into());
        }
        written.push(c.to.clone());
    }
    Ok(written)
}

/// `path` absolute against the current folder.
pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A path as the profile holds it: relative inside the config folder, else absolute.
fn written_path(folder: &Path, path: &Path) -> String {
    let folder = absolute(folder);
    match path.strip_prefix(&folder) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// A certificate in words: its user, issuer and end of validity.
pub(super) fn describe_cert(cert: &CertFile) -> String {
    let s = &cert.summary;
    format!(
        "{}, issued by \"{}\", valid until {}",
        s.cn, s.issuer, s.not_after
    )
}

/// A key and how it was matched with the certificate.
fn describe_match(key: &Path, matched: &KeyMatch) -> String {
    let how = match matched {
        KeyMatch::Key => "belongs to the certificate".to_owned(),
        KeyMatch::Request(r) => format!(
            "belongs to the certificate (checked against {})",
            r.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        KeyMatch::Unchecked(_) => "not compared with the certificate".to_owned(),
    };
    format!("{}: {how}", key.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn profile_names() {
        for ok in ["hv1", "lab-2", "a.b_c"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ü"] {
            let e = check_name(bad).unwrap_err();
            assert!(e.to_string().contains("cannot be a profile name"), "{e}");
            assert!(e.hint().is_some());
        }
    }

    #[test]
    fn paths_inside_the_config_folder_are_relative() {
        assert_eq!(
            written_path(Path::new("/c"), Path::new("/c/hv1/ca.pem")),
            "hv1/ca.pem"
        );
        assert_eq!(
            written_path(Path::new("/c"), Path::new("/elsewhere/k.key")),
            "/elsewhere/k.key"
        );
        assert_eq!(cert_copy_name(Path::new("/d/bob.pem")), "bob.pem");
        assert_eq!(cert_copy_name(Path::new("/d/ca.pem")), "cert.pem");
    }
}
