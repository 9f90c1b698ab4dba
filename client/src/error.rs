//! Every failure a user can cause, each with a message naming the thing involved and a
//! hint saying what to do about it.
//!
//! `main` prints an [`Error`] with [`report`]: `error: …` (the message and its causes joined
//! by `: `) and, when there is one, `hint: …`. Nothing here is ever printed with `{:?}`.
//!
//! The TLS part ([`TlsFailure`]) turns rustls errors into sentences. In TLS 1.3 the gateway
//! judges our certificate after the client considers the handshake done, so a rejection shows
//! up as a received alert at the first request; [`find_tls_error`] digs it out of the
//! hyper → h2 → io → rustls chain wherever it appears.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};
use virtgate_proto::Problem;

use crate::url::UrlError;

/// Something went wrong; [`Error::hint`] says what the user can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither `--url` nor a profile says where the gateway is.
    #[error("no gateway to talk to: no --url given and no profile in {config}")]
    NoGateway {
        /// The config file that was looked for.
        config: PathBuf,
    },
    /// The config file could not be read (it was named explicitly, or exists but is unreadable).
    #[error("cannot read config {path}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys / wrong types.
    #[error("config {path}:{line}:{column}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// `-p NAME` or `default = NAME` names a profile the file does not have.
    #[error("no profile `{name}` in {path}")]
    UnknownProfile {
        /// The profile asked for.
        name: String,
        /// The config file.
        path: PathBuf,
        /// The profiles the file does have, for the hint.
        known: Vec<String>,
    },
    /// Several profiles and no `default`.
    #[error("{path} has several profiles and no `default`")]
    NoDefaultProfile {
        /// The config file.
        path: PathBuf,
        /// The profiles it has.
        known: Vec<String>,
    },
    /// A URL from the command line or a profile is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A feature that is designed but not built yet (SSH, unix socket, Kerberos).
    #[error("{what} is not supported yet")]
    Unsupported {
        /// The feature, e.g. `the SSH transport (virtgate+ssh://)`.
        what: String,
        /// What to use instead.
        hint: String,
    },
    /// A setting that is needed is missing or inconsistent.
    #[error("{message}")]
    Setting {
        /// What is missing.
        message: String,
        /// Where to set it.
        hint: String,
    },
    /// A file named in the profile or on the command line cannot be read or holds no
    /// usable content.
    #[error("cannot use {what} {path}: {reason}")]
    File {
        /// What the file was for (`CA certificate`, `client certificate`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not, already a sentence fragment (`No such file or directory`).
        reason: String,
    },
    /// A key or certificate file cannot be used: missing, not a key, wrong passphrase, ...
    /// (the message names the file).
    #[error(transparent)]
    KeyFile(#[from] virtgate_pki::error::KeyFileError),
    /// `passphrase_command` failed.
    #[error("passphrase command `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    PassphraseCommand {
        /// The command as configured.
        command: String,
        /// Exit status or spawn error.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// The key is encrypted, no other source gave a passphrase, and there is no terminal.
    #[error("the key {path} is encrypted and there is no terminal to ask for its passphrase")]
    NoTerminal {
        /// The key file.
        path: PathBuf,
    },
    /// DNS lookup of the gateway's host failed.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// Every address of the gateway refused or timed out.
    #[error("cannot connect to {}", describe_attempts(.attempts))]
    Connect {
        /// Each address tried and what happened.
        attempts: Vec<Attempt>,
    },
    /// The TLS handshake failed, or the gateway rejected our certificate right after it.
    #[error("{failure}")]
    Tls {
        /// What went wrong, in words.
        failure: TlsFailure,
        /// Context for the hint (names, files).
        context: TlsContext,
    },
    /// The gateway answered with a problem+json body.
    #[error("{problem}")]
    Problem {
        /// The body as the gateway sent it.
        problem: Problem,
    },
    /// The gateway answered something that is not the API (wrong content, bad JSON).
    #[error("unexpected answer from the gateway to {request}: {detail}")]
    BadResponse {
        /// The request, e.g. `GET /v1/domains`.
        request: String,
        /// What was wrong.
        detail: String,
    },
    /// The HTTP/2 connection to the gateway broke.
    #[error("lost the connection to the gateway at {server}: {reason}")]
    ConnectionLost {
        /// `host:port` of the gateway.
        server: String,
        /// The underlying error chain, joined.
        reason: String,
    },
    /// A local listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing to standard output failed (other than a closed pipe, which is not an error).
    #[error("cannot write to standard output")]
    Output(#[source] std::io::Error),
    /// Starting the async runtime failed (out of threads or file descriptors).
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The domain cannot be used the way the command wants.
    #[error("{message}")]
    Domain {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// One address tried while connecting.
#[derive(Debug)]
pub struct Attempt {
    /// The socket address.
    pub addr: std::net::SocketAddr,
    /// What happened (refused, timed out, unreachable).
    pub error: std::io::Error,
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    let mut out = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let family = if a.addr.is_ipv4() { "IPv4" } else { "IPv6" };
        let reason = match a.error.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => io_reason(&a.error),
        };
        let _ = write!(out, "{} ({family}): {reason}", a.addr);
    }
    out
}

/// An io::Error as text without the `(os error N)` noise.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// What the hint of a TLS failure needs to know about our side.
#[derive(Debug, Clone, Default)]
pub struct TlsContext {
    /// `host:port` we connected to.
    pub server: String,
    /// The CA file that should have verified the gateway.
    pub ca: Option<PathBuf>,
    /// Our client certificate, when one was sent.
    pub cert: Option<PathBuf>,
}

/// A TLS failure in words.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server certificate does not cover the host we asked for.
    NameMismatch {
        /// The host from the URL.
        expected: String,
        /// The DNS names and addresses the certificate covers.
        presented: Vec<String>,
    },
    /// The server certificate is not signed by our `ca`.
    UnknownCa,
    /// The server certificate has expired or is not valid yet.
    ServerCertExpired,
    /// The server certificate has been revoked.
    ServerCertRevoked,
    /// The gateway wants a client certificate and we sent none.
    ClientCertRequired,
    /// The gateway does not trust the CA of our certificate.
    ClientCertUnknown,
    /// The gateway says our certificate is revoked.
    ClientCertRevoked,
    /// The gateway says our certificate has expired.
    ClientCertExpired,
    /// The peer does not speak HTTP/2 (ALPN `h2`).
    NoH2,
    /// Anything else rustls reports.
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::NameMismatch {
                expected,
                presented,
            } if presented.is_empty() => write!(
                f,
                "the gateway's certificate names no host or address, not {expected}"
            ),
            TlsFailure::NameMismatch {
                expected,
                presented,
            } => write!(
                f,
                "the gateway's certificate is for {}, not {expected}",
                presented.join(", ")
            ),
            TlsFailure::UnknownCa => {
                f.write_str("the gateway's certificate is not issued by our CA (unknown issuer)")
            }
            TlsFailure::ServerCertExpired => {
                f.write_str("the gateway's certificate has expired or is not valid yet")
            }
            TlsFailure::ServerCertRevoked => f.write_str("the gateway's certificate is revoked"),
            TlsFailure::ClientCertRequired => {
                f.write_str("the gateway requires a client certificate and none was sent")
            }
            TlsFailure::ClientCertUnknown => f.write_str(
                "the gateway rejected our client certificate: it does not trust the CA that issued it",
            ),
            TlsFailure::ClientCertRevoked => {
                f.write_str("the gateway rejected our client certificate: it has been revoked")
            }
            TlsFailure::ClientCertExpired => {
                f.write_str("the gateway rejected our client certificate: it has expired")
            }
            TlsFailure::NoH2 => f.write_str("the server does not speak HTTP/2 (ALPN h2)"),
            TlsFailure::Other(s) => write!(f, "TLS failed: {s}"),
        }
    }
}

impl TlsFailure {
    /// Classify a rustls error (from our handshake or an alert the gateway sent).
    pub fn from_rustls(e: &rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidCertificate(ce) => match ce {
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsFailure::NameMismatch {
                    expected: server_name_text(expected),
                    presented: presented.iter().map(|p| clean_presented_name(p)).collect(),
                },
                CertificateError::NotValidForName => TlsFailure::NameMismatch {
                    expected: "the host in the URL".into(),
                    presented: vec!["other names".into()],
                },
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UnknownCa
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::ServerCertExpired,
                CertificateError::Revoked => TlsFailure::ServerCertRevoked,
                other => TlsFailure::Other(format!("the gateway's certificate: {other}")),
            },
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::CertificateRequired => TlsFailure::ClientCertRequired,
                AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate => TlsFailure::ClientCertUnknown,
                AlertDescription::CertificateRevoked => TlsFailure::ClientCertRevoked,
                AlertDescription::CertificateExpired => TlsFailure::ClientCertExpired,
                AlertDescription::NoApplicationProtocol => TlsFailure::NoH2,
                other => TlsFailure::Other(format!("the gateway sent the alert {other:?}")),
            },
            rustls::Error::NoApplicationProtocol => TlsFailure::NoH2,
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// What to do about it.
    pub fn hint(&self, cx: &TlsContext) -> String {
        let ca = cx
            .ca
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        match self {
            TlsFailure::NameMismatch { presented, .. } => {
                let port = cx.server.rsplit_once(':').map(|(_, p)| p).unwrap_or("PORT");
                let example = presented
                    .first()
                    .map(|n| {
                        let host = if n.contains(':') { format!("[{n}]") } else { n.clone() };
                        format!(" (e.g. virtgate://{host}:{port})")
                    })
                    .unwrap_or_default();
                format!(
                    "connect with one of the names it is for{example}, or reissue the server \
                     certificate with `virtgate-pki issue-server --dns NAME --ip ADDR` naming this host"
                )
            }
            TlsFailure::UnknownCa => format!(
                "is `ca` in the profile (or --ca){ca} the CA of this gateway? It is the ca.pem \
                 that came with your certificate"
            ),
            TlsFailure::ServerCertExpired | TlsFailure::ServerCertRevoked => {
                "check this machine's clock; otherwise ask the gateway's admin to reissue the \
                 server certificate (`virtgate-pki issue-server`)"
                    .into()
            }
            TlsFailure::ClientCertRequired => "set `cert` and `key` in the profile, or pass \
                 --cert FILE --key FILE (the admin issues them with `virtgate-pki issue-client USER`)"
                .into(),
            TlsFailure::ClientCertUnknown => format!(
                "{} was issued by another CA than the gateway's: check `cert`/`key` in the \
                 profile, or ask the admin for a new one: `virtgate-pki issue-client USER`",
                cert_name(cx)
            ),
            TlsFailure::ClientCertRevoked | TlsFailure::ClientCertExpired => format!(
                "{} can no longer be used: ask the gateway's admin for a new one: \
                 `virtgate-pki issue-client USER`",
                cert_name(cx)
            ),
            TlsFailure::NoH2 => format!(
                "is {} a virtgated port? virtgate talks HTTP/2 over TLS",
                cx.server
            ),
            TlsFailure::Other(_) => format!(
                "is {} a virtgated port? Check the profile's `ca`, `cert` and `key`",
                cx.server
            ),
        }
    }
}

fn cert_name(cx: &TlsContext) -> String {
    cx.cert
        .as_ref()
        .map(|p| format!("the certificate {}", p.display()))
        .unwrap_or_else(|| "the certificate".into())
}

fn server_name_text(name: &rustls_pki_types::ServerName<'_>) -> String {
    match name {
        rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// webpki reports presented names as `DnsName("x")` / `IpAddress(1.2.3.4)`; keep the name.
fn clean_presented_name(p: &str) -> String {
    let inner = p
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            p.strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        });
    match inner {
        Some(s) => s
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| s.to_owned()),
        None => p.to_owned(),
    }
}

/// The first rustls error anywhere in an error chain, looking inside io::Error and h2::Error
/// (whose `source()` skip the wrapped error). h2 keeps I/O errors only as kind + text, so a
/// received alert that went through it is recognised by its text
/// (`received fatal alert: CertificateRequired`).
pub fn find_tls_error(err: &(dyn StdError + 'static)) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|inner| find_tls_error(inner)) {
                return Some(t);
            }
        }
        if let Some(t) = e
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::get_io)
            .and_then(|io| find_tls_error(io))
        {
            return Some(t);
        }
        if let Some(alert) = alert_in_text(&e.to_string()) {
            return Some(rustls::Error::AlertReceived(alert));
        }
        cur = e.source();
    }
    None
}

/// The alert named in rustls's `received fatal alert: NAME` text, for the alerts we explain.
fn alert_in_text(text: &str) -> Option<AlertDescription> {
    let (_, rest) = text.split_once("received fatal alert: ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    Some(match name.as_str() {
        "CertificateRequired" => AlertDescription::CertificateRequired,
        "UnknownCA" => AlertDescription::UnknownCA,
        "BadCertificate" => AlertDescription::BadCertificate,
        "CertificateRevoked" => AlertDescription::CertificateRevoked,
        "CertificateExpired" => AlertDescription::CertificateExpired,
        "CertificateUnknown" => AlertDescription::CertificateUnknown,
        "UnsupportedCertificate" => AlertDescription::UnsupportedCertificate,
        "AccessDenied" => AlertDescription::AccessDenied,
        "DecryptError" => AlertDescription::DecryptError,
        "HandshakeFailure" => AlertDescription::HandshakeFailure,
        "NoApplicationProtocol" => AlertDescription::NoApplicationProtocol,
        "ProtocolVersion" => AlertDescription::ProtocolVersion,
        _ => return None,
    })
}

/// An error and its causes as one line: `a: b: c`, skipping causes already in the text.
pub fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io_reason(io),
            None => e.to_string(),
        };
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

impl Error {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NoGateway { config } => format!(
                "pass --url virtgate://HOST --ca CA.pem --cert USER.pem --key USER.key, or \
                 create {} with:\n  default = \"hv1\"\n  [profile.hv1]\n  url = \"virtgate://HOST\"\n  \
                 ca = \"ca.pem\"\n  cert = \"USER.pem\"\n  key = \"USER.key\"\n\
                 (to try it out, `virtgated demo` starts a demo gateway and writes a `demo` profile)",
                config.display()
            ),
            Error::ConfigRead { path, .. } => format!(
                "check $VIRTGATE_CONFIG and the permissions of {}",
                path.display()
            ),
            Error::Config { .. } => "profile keys are: url, ca, cert, key, auth (cert|kerberos), \
                 passphrase_command; the top level has `default` and [profile.NAME] tables"
                .into(),
            Error::UnknownProfile { known, .. } | Error::NoDefaultProfile { known, .. } => {
                if known.is_empty() {
                    "the file has no [profile.NAME] table yet".into()
                } else {
                    format!(
                        "pick one with -p NAME ({}) or set `default = \"NAME\"` at the top of the file",
                        known.join(", ")
                    )
                }
            }
            Error::Url(e) => e.hint(),
            Error::Unsupported { hint, .. } => hint.clone(),
            Error::Setting { hint, .. } => hint.clone(),
            Error::File { what, .. } => format!(
                "check the path (relative paths in a profile are relative to the config file's \
                 folder) and that it is a PEM {what}"
            ),
            Error::KeyFile(e) => e.hint()?,
            Error::PassphraseCommand { .. } => {
                "run the command by hand to see what it needs, or fix `passphrase_command` in the profile"
                    .into()
            }
            Error::NoTerminal { .. } => "give the passphrase with --passphrase-file FILE, the \
                 VIRTGATE_KEY_PASSPHRASE environment variable, or `passphrase_command` in the profile"
                .into(),
            Error::Resolve { host, .. } => {
                format!("check the spelling of `{host}` and this machine's DNS")
            }
            Error::Connect { .. } => {
                "is virtgated running there, and is this the port it listens on? \
                 (`listen.tcp` in its config; 16520 by default)"
                    .into()
            }
            Error::Tls { failure, context } => failure.hint(context),
            Error::Problem { problem } => problem.hint.clone()?,
            Error::BadResponse { .. } => {
                "is the URL a virtgated gateway of a matching version?".into()
            }
            Error::ConnectionLost { .. } => {
                "the gateway stopped or the network broke; run the command again".into()
            }
            Error::Listen { .. } => {
                "pick another address or port with --listen (e.g. 127.0.0.1:0 for any free port)"
                    .into()
            }
            Error::Output(_) | Error::Runtime(_) => return None,
            Error::Domain { hint, .. } => hint.clone(),
        })
    }
}

/// The text `main` prints: `error: …` and, when there is one, `hint: …`.
pub fn report(err: &Error) -> String {
    let mut out = format!("error: {}", chain_text(err));
    if let Some(h) = err.hint() {
        out.push_str("\nhint: ");
        out.push_str(&h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_are_cleaned() {
        assert_eq!(clean_presented_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(clean_presented_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(clean_presented_name("IpAddress(::1)"), "::1");
    }

    #[test]
    fn name_mismatch_lists_names_and_hints_reissue() {
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: rustls_pki_types::ServerName::try_from("10.0.0.1").unwrap(),
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(127.0.0.1)".into(),
                "IpAddress(::1)".into(),
            ],
        });
        let f = TlsFailure::from_rustls(&e);
        assert_eq!(
            f.to_string(),
            "the gateway's certificate is for localhost, 127.0.0.1, ::1, not 10.0.0.1"
        );
        let cx = TlsContext {
            server: "10.0.0.1:16520".into(),
            ..Default::default()
        };
        let h = f.hint(&cx);
        assert!(h.contains("virtgate://localhost:16520"), "{h}");
        assert!(h.contains("virtgate-pki issue-server --dns"), "{h}");
    }

    #[test]
    fn alerts_map_to_client_certificate_problems() {
        let cases = [
            (
                AlertDescription::CertificateRequired,
                "none was sent",
                "--cert FILE --key FILE",
            ),
            (
                AlertDescription::UnknownCA,
                "does not trust",
                "issue-client",
            ),
            (
                AlertDescription::BadCertificate,
                "does not trust",
                "issue-client",
            ),
            (
                AlertDescription::CertificateRevoked,
                "revoked",
                "issue-client",
            ),
            (
                AlertDescription::CertificateExpired,
                "expired",
                "issue-client",
            ),
        ];
        for (alert, msg, hint) in cases {
            let f = TlsFailure::from_rustls(&rustls::Error::AlertReceived(alert));
            assert!(f.to_string().contains(msg), "{alert:?}: {f}");
            assert!(f.hint(&TlsContext::default()).contains(hint), "{alert:?}");
        }
        let f = TlsFailure::from_rustls(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let cx = TlsContext {
            ca: Some("/p/ca.pem".into()),
            ..Default::default()
        };
        assert!(f.hint(&cx).contains("/p/ca.pem"));
    }

    #[test]
    fn tls_error_is_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
        );
        let found = find_tls_error(&io).unwrap();
        assert_eq!(
            found,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
        );
        // what is left of it after h2: kind and text
        let flat = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateExpired",
        );
        assert_eq!(
            find_tls_error(&flat),
            Some(rustls::Error::AlertReceived(
                AlertDescription::CertificateExpired
            ))
        );
    }

    #[test]
    fn connect_errors_name_address_and_family() {
        let e = Error::Connect {
            attempts: vec![
                Attempt {
                    addr: "[::1]:9".parse().unwrap(),
                    error: std::io::ErrorKind::ConnectionRefused.into(),
                },
                Attempt {
                    addr: "127.0.0.1:9".parse().unwrap(),
                    error: std::io::ErrorKind::TimedOut.into(),
                },
            ],
        };
        let r = report(&e);
        assert!(r.starts_with(
            "error: cannot connect to [::1]:9 (IPv6): connection refused; 127.0.0.1:9 (IPv4): timed out"
        ), "{r}");
        assert!(r.contains("hint: is virtgated running"), "{r}");
    }

    #[test]
    fn problems_print_title_detail_and_hint() {
        let p = Problem::new(404, "domain-not-found", "no such domain")
            .detail("domain `x` does not exist or is not yours")
            .hint("run `virtgate list`");
        let r = report(&Error::Problem { problem: p });
        assert_eq!(
            r,
            "error: no such domain: domain `x` does not exist or is not yours\nhint: run `virtgate list`"
        );
    }

    #[test]
    fn chains_are_joined_without_repeats() {
        let e = Error::Listen {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let r = report(&e);
        assert!(
            r.starts_with("error: cannot listen on 127.0.0.1:1: address in use"),
            "{r}"
        );
    }
}
