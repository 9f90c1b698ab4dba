//! TLS with client certificates: the server configuration, and the identity in a certificate.
//!
//! rustls (ring provider, TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`) requires a client
//! certificate that chains to `tls.client_ca` and is not revoked by `tls.crl`; with
//! `[kerberos]` a client may also present none and log in with Negotiate instead
//! ([`kerberos`](super::kerberos)). The user is the certificate's subject CN. CRLs are
//! fixed per `ServerConfig`: a reload builds a new [`ServerTls`], whose verifier also
//! re-checks the certificates of live connections. The server certificate must be valid
//! now; a CRL past its nextUpdate is reported by the caller (it is still used).
//! Failed handshakes are classified by [`handshake_failure_reason`] for the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use virtgate_pki::keyfile;
use virtgate_pki::zeroize::Zeroizing;
use virtgate_pki::KeyFileError;
use virtgate_proto::AuthMethod;

use super::Identity;
use crate::config;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file is missing, unreadable or not what it should be.
    #[error("{what}: {source}")]
    File {
        /// Which setting (`tls.cert`, `tls.key`, `tls.client_ca`).
        what: &'static str,
        /// What virtgate-pki's reader found.
        source: KeyFileError,
    },
    /// The CRL file is missing or unreadable.
    #[error("cannot read tls.crl {}: {source}", path.display())]
    Read {
        /// `tls.crl`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The CRL file is not PEM.
    #[error("tls.crl {}: {detail}", path.display())]
    BadCrl {
        /// `tls.crl`.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// rustls refused the certificates, key or CRLs.
    #[error("TLS set-up with {}: {source}", path.display())]
    Rustls {
        /// The file the refused item came from.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built (bad CA or CRL).
    #[error("client certificate verification with {}: {source}", path.display())]
    Verifier {
        /// `tls.client_ca`.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::server::VerifierBuilderError,
    },
    /// `tls.client_ca` is not set (validation normally catches this).
    #[error("tls.client_ca is not set")]
    NoClientCa,
    /// The server certificate is past its notAfter: every client would refuse it.
    #[error("tls.cert {} expired on {not_after}", path.display())]
    ServerCertExpired {
        /// `tls.cert`.
        path: PathBuf,
        /// Its notAfter.
        not_after: String,
    },
    /// The server certificate's notBefore is still to come (or this host's clock is wrong).
    #[error("tls.cert {} is not valid before {not_before}", path.display())]
    ServerCertNotYetValid {
        /// `tls.cert`.
        path: PathBuf,
        /// Its notBefore.
        not_before: String,
    },
}

impl TlsError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            TlsError::File { source: KeyFileError::NotFound { path, .. }, .. } => format!(
                "create it (e.g. `virtgate-pki --dir DIR issue-server --dns HOST --out {}`) or fix the path in the config",
                path.parent().unwrap_or(Path::new("DIR")).display()
            ),
            TlsError::File { what, source: KeyFileError::NotAKey { .. } | KeyFileError::NotACertificate { .. } } => {
                format!("{what} in the config points at the wrong file: certificates are *.pem, keys *.key")
            }
            TlsError::File { source, .. } => return source.hint(),
            TlsError::Read { path, source } if source.kind() == std::io::ErrorKind::NotFound => format!(
                "write it with `virtgate-pki --dir {} crl`, or remove tls.crl",
                path.parent().unwrap_or(Path::new("DIR")).display()
            ),
            TlsError::Read { .. } => "check the file's owner and mode: the gateway's user must read it".into(),
            TlsError::BadCrl { .. } => "tls.crl must be a PEM CRL (`-----BEGIN X509 CRL-----`)".into(),
            TlsError::Rustls { .. } => "check that tls.key belongs to tls.cert".into(),
            TlsError::Verifier { .. } => "tls.client_ca must be the CA certificate and tls.crl its CRL".into(),
            TlsError::NoClientCa => "set tls.client_ca".into(),
            TlsError::ServerCertExpired { .. } => {
                "issue a new one (`virtgate-pki --dir CA issue-server --dns HOST --out DIR`) and reload".into()
            }
            TlsError::ServerCertNotYetValid { .. } => {
                "check this host's clock (`date`), or wait until the certificate becomes valid".into()
            }
        })
    }
}

/// All certificates in a PEM file (at least one), through virtgate-pki's reader.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    keyfile::load_certs(path).map_err(|source| TlsError::File { what, source })
}

/// The server's private key. It must be unencrypted: the gateway starts unattended.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut no_passphrase = || -> Result<Zeroizing<String>, KeyFileError> {
        Err(KeyFileError::Passphrase {
            reason: format!("{} is encrypted, but the gateway starts unattended", path.display()),
            hint: Some(format!(
                "store it unencrypted (mode 0600): `openssl pkey -in {0} -out {0}.plain`, then point tls.key at that",
                path.display()
            )),
        })
    };
    keyfile::load_private_key(path, &mut no_passphrase).map_err(|source| TlsError::File {
        what: "tls.key",
        source,
    })
}

/// The verifier for client certificates chaining to `ca_path` (and not revoked by `tls.crl`).
fn client_verifier(
    tls: &config::Tls,
    ca_path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
    allow_unauthenticated: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs("tls.client_ca", ca_path)? {
        roots.add(ca).map_err(|source| TlsError::Rustls {
            path: ca_path.to_owned(),
            source,
        })?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crl) = &tls.crl {
        verifier = verifier
            .with_crls(load_crls(crl)?)
            .only_check_end_entity_revocation();
    }
    if allow_unauthenticated {
        verifier = verifier.allow_unauthenticated();
    }
    verifier.build().map_err(|source| TlsError::Verifier {
        path: ca_path.to_owned(),
        source,
    })
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_crls(path, &text)
}

/// The X.509 CRLs in `text`, the PEM contents of the `tls.crl` file `path` (named in
/// errors only): at least one, else an error. The in-memory reader behind `tls.crl`, also
/// the entry point of `fuzz/fuzz_targets/crl_parse.rs` with [`crls_next_update`].
pub fn parse_crls(
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bad = |detail: String| TlsError::BadCrl {
        path: path.to_owned(),
        detail,
    };
    let crls = CertificateRevocationListDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if crls.is_empty() {
        return Err(bad("no X509 CRL in it".into()));
    }
    Ok(crls)
}

/// Build the rustls server configuration from `[tls]`. With `kerberos`, clients may also
/// come without a certificate (they then log in with Negotiate); a certificate they do
/// present is verified exactly as without it. Without `tls.client_ca` (Kerberos-only) no
/// certificate is asked for at all.
pub fn server_config(tls: &config::Tls, kerberos: bool) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(server_tls(tls, kerberos)?.config)
}

/// The TLS set-up of one configuration: what a reload swaps.
pub struct ServerTls {
    /// rustls' server configuration (certificate, key, client verifier with the CRL).
    pub config: Arc<ServerConfig>,
    /// The client certificate verifier inside it, kept to re-check the certificates of
    /// live connections after a reload (revoked or expired ones are closed).
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The CRL's nextUpdate, when a CRL is configured (past it, the CRL is stale).
    pub crl_next_update: Option<time::OffsetDateTime>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("crl_next_update", &self.crl_next_update)
            .finish_non_exhaustive()
    }
}

/// Build the TLS set-up: the server certificate must be valid now, the key must belong
/// to it, and (with `tls.client_ca`) client certificates are checked against the CA and CRL.
pub fn server_tls(tls: &config::Tls, kerberos: bool) -> Result<ServerTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = load_certs("tls.cert", &tls.cert)?;
    check_validity(&tls.cert, &chain[0])?;
    let key = load_key(&tls.key)?;
    let crl_next_update = match &tls.crl {
        Some(path) => crl_next_update(path)?,
        None => None,
    };
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &tls.client_ca {
        Some(ca_path) => client_verifier(tls, ca_path, provider.clone(), kerberos)?,
        None if kerberos => WebPkiClientVerifier::no_client_auth(),
        None => return Err(TlsError::NoClientCa),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            path: tls.cert.clone(),
            source,
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            path: tls.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
        crl_next_update,
    })
}

/// The server certificate must be within its validity period now.
fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        // rustls reports an unparsable certificate with its own words
        return Ok(());
    };
    let v = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if v.not_after < now {
        return Err(TlsError::ServerCertExpired {
            path: path.to_owned(),
            not_after: v.not_after.to_string(),
        });
    }
    if v.not_before > now {
        return Err(TlsError::ServerCertNotYetValid {
            path: path.to_owned(),
            not_before: v.not_before.to_string(),
        });
    }
    Ok(())
}

/// The earliest nextUpdate of the CRLs in `path` (`None`: none says).
pub fn crl_next_update(path: &Path) -> Result<Option<time::OffsetDateTime>, TlsError> {
    crls_next_update(path, &load_crls(path)?)
}

/// The earliest nextUpdate of `crls` ([`parse_crls`] of the file `path`, named in errors
/// only); `None`: none says. A CRL that x509-parser cannot read is an error.
pub fn crls_next_update(
    path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
) -> Result<Option<time::OffsetDateTime>, TlsError> {
    let mut earliest: Option<time::OffsetDateTime> = None;
    for der in crls {
        let parsed = x509_parser::parse_x509_crl(der);
        let Ok((_, crl)) = parsed else {
            return Err(TlsError::BadCrl {
                path: path.to_owned(),
                detail: "it does not parse as an X.509 CRL".into(),
            });
        };
        if let Some(next) = crl.next_update() {
            let t = next.to_datetime();
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
    }
    Ok(earliest)
}

/// Why a client certificate gives no identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertIdentityError {
    /// The handshake finished without a client certificate (only possible once certificate-less
    /// logins such as Kerberos are allowed).
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate could not be parsed (rustls accepted it, so this is unexpected).
    #[error("client certificate does not parse: {0}")]
    Parse(String),
    /// The subject has no common name to use as the user name.
    #[error("client certificate subject `{0}` has no CN")]
    NoCommonName(String),
}

/// The identity in a verified client certificate chain: subject CN as the user.
pub fn identity_from_certs(
    certs: Option<&[CertificateDer<'_>]>,
    peer: Option<String>,
) -> Result<Identity, CertIdentityError> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or(CertIdentityError::NoCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| CertIdentityError::NoCommonName(subject.to_string()))?;
    Ok(Identity {
        groups: super::groups::groups_for_user(&cn),
        user: cn,
        method: AuthMethod::Certificate,
        principal: Some(subject.to_string()),
        peer,
    })
}

/// A short reason for a failed TLS handshake, for the log: the rustls error behind the I/O
/// error when there is one (unknown CA, revoked, expired, no certificate, ...).
pub fn handshake_failure_reason(e: &std::io::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "peer closed the connection during the handshake".into()
            }
            _ => e.to_string(),
        };
    };
    match tls {
        E::NoCertificatesPresented => "client sent no certificate".into(),
        E::InvalidCertificate(C::UnknownIssuer) => "client certificate from an unknown CA".into(),
        // A CA with the same name as ours but another key.
        E::InvalidCertificate(C::BadSignature) => {
            "client certificate from an unknown CA (its signature does not verify with tls.client_ca)".into()
        }
        E::InvalidCertificate(C::Revoked) => "client certificate is revoked".into(),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "client certificate has expired".into(),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "client certificate is not valid yet".into()
        }
        E::InvalidCertificate(other) => format!("client certificate refused: {other}"),
        E::InvalidCertRevocationList(crl) => format!("CRL problem: {crl:?}"),
        E::AlertReceived(alert) => format!("client aborted the handshake (alert {alert:?}, e.g. it does not trust our certificate)"),
        E::NoApplicationProtocol => "no common ALPN protocol (need h2 or http/1.1)".into(),
        E::PeerIncompatible(p) => format!("client incompatible: {p:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path_and_key() {
        let tls = config::Tls {
            cert: "/nonexistent/server.pem".into(),
            key: "/nonexistent/server.key".into(),
            client_ca: Some("/nonexistent/ca.pem".into()),
            crl: None,
        };
        let e = server_config(&tls, false).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("tls.cert") && shown.contains("/nonexistent/server.pem"),
            "{shown}"
        );
        assert!(e.hint().unwrap().contains("virtgate-pki"));
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.pem");
        std::fs::write(&p, "not pem").unwrap();
        let e = load_certs("tls.client_ca", &p).unwrap_err();
        assert!(matches!(e, TlsError::File { .. }), "{e:?}");
        assert!(e.to_string().starts_with("tls.client_ca: "), "{e}");
        assert!(e.to_string().contains("junk.pem"));
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(load_crls(&p)
            .unwrap_err()
            .to_string()
            .contains("no X509 CRL"));
    }

    #[test]
    fn reasons_for_rustls_errors() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            handshake_failure_reason(&io(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked
            ))),
            "client certificate is revoked"
        );
        assert_eq!(
            handshake_failure_reason(&io(rustls::Error::NoCertificatesPresented)),
            "client sent no certificate"
        );
    }
}
