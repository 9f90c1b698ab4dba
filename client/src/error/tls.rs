//! TLS failures in words: rustls errors (from our handshake, or alerts the gateway sent)
//! turned into a [`TlsFailure`] with a message naming the certificate's names or files, and a
//! hint. In TLS 1.3 the gateway judges our certificate after the client considers the
//! handshake done, so a rejection shows up as a received alert at the first request;
//! [`find_tls_error`] digs it out of the hyper → h2 → io → rustls chain wherever it appears.

use std::error::Error as StdError;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

/// What the hint of a TLS failure needs to know about our side.
#[derive(Debug, Clone, Default)]
pub struct TlsContext {
    /// `host:port` we connected to.
    pub server: String,
    /// The CA file that should have verified the gateway.
    pub ca: Option<PathBuf>,
    /// Our client certificate, when one was sent.
    pub cert: Option<PathBuf>,
    /// Whether we log in with Kerberos (and so send no certificate on purpose).
    pub kerberos: bool,
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
    /// The gateway says our certificate has expired (or is not valid yet: TLS has one alert
    /// for both; [`TlsFailure::refine`] tells them apart by our certificate's dates).
    ClientCertExpired,
    /// The gateway refused our certificate's dates, and by this machine's clock too it is
    /// not valid yet.
    ClientCertNotYetValid {
        /// Start of its validity, e.g. `2026-12-03 10:00:00 UTC`.
        not_before: String,
    },
    /// The gateway refused our certificate's dates, but by this machine's clock it is valid:
    /// one of the two clocks is wrong (most likely the gateway's).
    ClientCertClockSkew {
        /// Start of its validity.
        not_before: String,
        /// End of its validity.
        not_after: String,
    },
    /// The peer does not speak HTTP/2 (ALPN `h2`).
    NoH2,
    /// The connection closed, or stalled, before the handshake finished (what happened,
    /// with the address): a busy or hostile-client-shedding gateway, or not a gateway.
    Cut(String),
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
            TlsFailure::ClientCertNotYetValid { not_before } => write!(
                f,
                "the gateway rejected our client certificate: it is not yet valid (valid from {not_before})"
            ),
            TlsFailure::ClientCertClockSkew {
                not_before,
                not_after,
            } => write!(
                f,
                "the gateway rejected our client certificate as expired or not yet valid, but by \
                 this machine's clock it is valid (from {not_before} until {not_after})"
            ),
            TlsFailure::NoH2 => f.write_str("the server does not speak HTTP/2 (ALPN h2)"),
            TlsFailure::Cut(s) | TlsFailure::Other(s) => write!(f, "TLS failed: {s}"),
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
                | AlertDescription::UnsupportedCertificate
                // webpki reports a chain signed by a same-named foreign CA as a bad
                // signature, which rustls sends as decrypt_error
                | AlertDescription::DecryptError => TlsFailure::ClientCertUnknown,
                AlertDescription::CertificateRevoked => TlsFailure::ClientCertRevoked,
                AlertDescription::CertificateExpired => TlsFailure::ClientCertExpired,
                AlertDescription::NoApplicationProtocol => TlsFailure::NoH2,
                other => TlsFailure::Other(format!("the gateway sent the alert {other:?}")),
            },
            rustls::Error::NoApplicationProtocol => TlsFailure::NoH2,
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// The gateway's one alert for "expired" and "not yet valid" made precise with our own
    /// certificate's dates (read from `cx.cert`) and this machine's clock; every other
    /// failure, and an unreadable certificate, as is.
    pub fn refine(self, cx: &TlsContext) -> TlsFailure {
        if self != TlsFailure::ClientCertExpired {
            return self;
        }
        let Some(path) = &cx.cert else { return self };
        match validity_of(path) {
            Some((from, until)) => judge_dates(x509_parser::time::ASN1Time::now(), from, until),
            None => self,
        }
    }

    /// What to do about it.
    pub fn hint(&self, cx: &TlsContext) -> String {
        let ca = cx
            .ca
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the CA file".into());
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
                "is {ca} (`ca` in the profile, or --ca) the CA of this gateway? It is the ca.pem \
                 that came with your certificate"
            ),
            TlsFailure::ServerCertExpired | TlsFailure::ServerCertRevoked => {
                "check this machine's clock; otherwise ask the gateway's admin to reissue the \
                 server certificate (`virtgate-pki issue-server`)"
                    .into()
            }
            TlsFailure::ClientCertRequired if cx.kerberos => {
                "this gateway does not accept Kerberos logins (no [kerberos] in its config?): \
                 ask its admin, or use auth = \"cert\" with `cert` and `key` (--auth cert)"
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
            TlsFailure::ClientCertNotYetValid { .. } => format!(
                "check the clock of this machine and of the gateway (`date -u` on both; NTP): {} \
                 was issued for a time that has not come yet, or the clocks are behind",
                cert_name(cx)
            ),
            TlsFailure::ClientCertClockSkew { .. } => {
                "check the clock of the gateway and of this machine (`date -u` on both; NTP): \
                 the gateway's clock is probably wrong, so ask its admin"
                    .into()
            }
            TlsFailure::ClientCertRevoked | TlsFailure::ClientCertExpired => format!(
                "{} can no longer be used: ask the gateway's admin for a new one: \
                 `virtgate-pki issue-client USER`",
                cert_name(cx)
            ),
            TlsFailure::NoH2 => format!(
                "is {} a virtgated port? virtgate talks HTTP/2 over TLS",
                cx.server
            ),
            TlsFailure::Cut(_) => format!(
                "try again in a moment: a gateway closes handshakes it has no room for \
                 (limits.max_pending_per_address, limits.max_pending_handshakes) or that take \
                 longer than limits.handshake_timeout_s, and its log says which; if it keeps \
                 happening, is {} a virtgated port?",
                cx.server
            ),
            TlsFailure::Other(_) => format!(
                "is {} a virtgated port? Check the profile's `ca`, `cert` and `key`",
                cx.server
            ),
        }
    }
}

/// The validity period of the first certificate in a PEM file.
fn validity_of(
    path: &std::path::Path,
) -> Option<(x509_parser::time::ASN1Time, x509_parser::time::ASN1Time)> {
    use x509_parser::prelude::FromDer;
    let certs = virtgate_pki::keyfile::load_certs(path).ok()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(certs.first()?).ok()?;
    let v = cert.validity();
    Some((v.not_before, v.not_after))
}

/// What the gateway's "certificate expired" alert means, given the certificate's dates and
/// our clock.
fn judge_dates(
    now: x509_parser::time::ASN1Time,
    not_before: x509_parser::time::ASN1Time,
    not_after: x509_parser::time::ASN1Time,
) -> TlsFailure {
    if now < not_before {
        TlsFailure::ClientCertNotYetValid {
            not_before: utc(not_before),
        }
    } else if now > not_after {
        TlsFailure::ClientCertExpired
    } else {
        TlsFailure::ClientCertClockSkew {
            not_before: utc(not_before),
            not_after: utc(not_after),
        }
    }
}

/// `2026-12-03 10:00:00 UTC`: a certificate date for messages.
pub fn utc(t: x509_parser::time::ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
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
        let f = TlsFailure::ClientCertRequired;
        let kerberos = TlsContext {
            kerberos: true,
            ..Default::default()
        };
        assert!(f
            .hint(&kerberos)
            .contains("does not accept Kerberos logins"));
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
    fn expired_alert_is_told_apart_by_the_certificate_dates() {
        use x509_parser::time::ASN1Time;
        let at = |s: i64| ASN1Time::from_timestamp(s).unwrap();
        // 2026-12-03 10:00:00 UTC .. 2027-12-03 10:00:00 UTC
        let (from, until) = (at(1_796_292_000), at(1_827_828_000));
        let early = judge_dates(at(1_796_291_000), from, until);
        assert_eq!(
            early.to_string(),
            "the gateway rejected our client certificate: it is not yet valid (valid from 2026-12-03 10:00:00 UTC)"
        );
        assert!(early
            .hint(&TlsContext::default())
            .starts_with("check the clock of this machine and of the gateway"));
        assert_eq!(
            judge_dates(at(1_827_829_000), from, until),
            TlsFailure::ClientCertExpired
        );
        let skew = judge_dates(at(1_800_000_000), from, until);
        assert!(
            matches!(skew, TlsFailure::ClientCertClockSkew { .. }),
            "{skew}"
        );
        assert!(skew
            .hint(&TlsContext::default())
            .contains("gateway's clock"));
    }

    #[test]
    fn refine_reads_our_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["alice".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(9990, 1, 1);
        params.not_after = rcgen::date_time_ymd(9999, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.path().join("alice.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        let cx = TlsContext {
            cert: Some(path),
            ..Default::default()
        };
        let f = TlsFailure::ClientCertExpired.refine(&cx);
        assert_eq!(
            f,
            TlsFailure::ClientCertNotYetValid {
                not_before: "9990-01-01 00:00:00 UTC".into()
            }
        );
        // other failures, and no certificate to look at, stay as they are
        assert_eq!(
            TlsFailure::ClientCertRevoked.refine(&cx),
            TlsFailure::ClientCertRevoked
        );
        assert_eq!(
            TlsFailure::ClientCertExpired.refine(&TlsContext::default()),
            TlsFailure::ClientCertExpired
        );
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
}
