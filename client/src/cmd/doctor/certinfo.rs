//! What `doctor` says about a certificate (ours, the CA's, the gateway's): subject, issuer,
//! the names it covers, and its dates against this machine's clock, read with x509-parser.

use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use crate::error::utc;

/// Within this many days of its end a certificate is reported with a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The parts of a certificate `doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, e.g. `CN=alice`.
    pub subject: String,
    /// The issuer's name, e.g. `CN=ca test CA`.
    pub issuer: String,
    /// DNS names and IP addresses of its subjectAltName.
    pub names: Vec<String>,
    /// Start of its validity.
    pub not_before: ASN1Time,
    /// End of its validity.
    pub not_after: ASN1Time,
}

/// A certificate's dates against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dates {
    /// Its time has not come yet.
    NotYetValid,
    /// It ended this many whole days ago.
    Expired {
        /// Whole days since its end.
        days_ago: i64,
    },
    /// It is valid for this many more whole days.
    Valid {
        /// Whole days to its end.
        days_left: i64,
    },
}

impl CertInfo {
    /// Parse a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip(b).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let v = cert.validity();
        Some(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: v.not_before,
            not_after: v.not_after,
        })
    }

    /// Its dates against `now`.
    pub fn dates_at(&self, now: ASN1Time) -> Dates {
        let days = |a: ASN1Time, b: ASN1Time| (a.timestamp() - b.timestamp()).div_euclid(86_400);
        if now < self.not_before {
            Dates::NotYetValid
        } else if now > self.not_after {
            Dates::Expired {
                days_ago: days(now, self.not_after),
            }
        } else {
            Dates::Valid {
                days_left: days(self.not_after, now),
            }
        }
    }

    /// Its dates against this machine's clock.
    pub fn dates(&self) -> Dates {
        self.dates_at(ASN1Time::now())
    }

    /// `valid until 2027-12-01 10:00:00 UTC (364 days left)`, `expired on … (3 days ago)`,
    /// `not valid before …`.
    pub fn validity_text(&self) -> String {
        match self.dates() {
            Dates::NotYetValid => format!("not valid before {}", utc(self.not_before)),
            Dates::Expired { days_ago } => {
                format!("expired on {} ({})", utc(self.not_after), ago(days_ago))
            }
            Dates::Valid { days_left } => format!(
                "valid until {} ({} left)",
                utc(self.not_after),
                plural(days_left, "day")
            ),
        }
    }

    /// Whether it ends within [`EXPIRY_WARNING_DAYS`].
    pub fn expires_soon(&self) -> bool {
        matches!(self.dates(), Dates::Valid { days_left } if days_left < EXPIRY_WARNING_DAYS)
    }

    /// The names it covers, `localhost, 127.0.0.1, ::1`, or `no names`.
    pub fn names_text(&self) -> String {
        if self.names.is_empty() {
            "no names".into()
        } else {
            self.names.join(", ")
        }
    }
}

/// A subjectAltName IP address (4 or 16 bytes).
fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// `today`, `1 day ago`, `3 days ago`.
fn ago(days: i64) -> String {
    if days == 0 {
        "today".into()
    } else {
        format!("{} ago", plural(days, "day"))
    }
}

/// `1 day`, `2 days`.
pub fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `gw.example.org` and `::1` (rcgen's default dates).
    fn cert() -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["gw.example.org".to_owned()]).unwrap();
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("::1".parse().unwrap()));
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "gw test");
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_subject_and_dates() {
        let info = CertInfo::parse(&cert()).unwrap();
        assert_eq!(info.subject, "CN=gw test");
        assert_eq!(info.issuer, "CN=gw test");
        assert_eq!(info.names_text(), "gw.example.org, ::1");
        let at = |s: i64| ASN1Time::from_timestamp(s).unwrap();
        let start = info.not_before.timestamp();
        assert_eq!(info.dates_at(at(start - 10)), Dates::NotYetValid);
        let end = info.not_after.timestamp();
        assert_eq!(
            info.dates_at(at(end + 3 * 86_400 + 5)),
            Dates::Expired { days_ago: 3 }
        );
        assert_eq!(
            info.dates_at(at(end - 86_400 * 2 - 1)),
            Dates::Valid { days_left: 2 }
        );
        assert_eq!(utc(at(0)), "1970-01-01 00:00:00 UTC");
        assert!(CertInfo::parse(b"not DER").is_none());
    }
}
