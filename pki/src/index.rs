//! The CA's record of what it issued: `index.json`.
//!
//! One [`IndexEntry`] per certificate (serial, CN, kind, validity, SANs, revocation) and
//! the number of the last CRL. Everything here is pure data handling, no crypto: which
//! certificates a `revoke` target means, the status of an entry at a given time, the next
//! CRL number. [`crate::ca::Ca`] loads and saves it.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::CaError;

/// Version of the `index.json` layout, so that a later layout can convert old files.
const FORMAT_VERSION: u32 = 1;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// A gateway's TLS server certificate (EKU serverAuth).
    Server,
    /// A user's certificate (EKU clientAuth, CN = user).
    Client,
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertKind::Server => "server",
            CertKind::Client => "client",
        })
    }
}

/// A revocation, as recorded in the index and published in the CRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When `revoke` ran; the CRL's revocationDate.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The reason given (`unspecified`, `keyCompromise`, …), the CRL's reasonCode.
    pub reason: String,
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Serial number in lower-case hex without separators, as `openssl x509 -serial`
    /// prints it (modulo case); the key for `revoke SERIAL` and the CRL.
    pub serial: String,
    /// Subject common name: the user for client certificates, the first name for servers.
    pub cn: String,
    /// Server or client.
    pub kind: CertKind,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Subject alternative names (`DNS:name`, `IP:addr`), for `list` and audits.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Set once the certificate is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// Status of a certificate at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Within its validity period and not revoked.
    Valid,
    /// Not valid yet (not_before in the future).
    NotYetValid,
    /// Past not_after.
    Expired,
    /// Revoked (whatever its dates).
    Revoked,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Valid => "valid",
            Status::NotYetValid => "not-yet-valid",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        })
    }
}

impl IndexEntry {
    /// The certificate's status at `now`.
    pub fn status(&self, now: OffsetDateTime) -> Status {
        if self.revoked.is_some() {
            Status::Revoked
        } else if now < self.not_before {
            Status::NotYetValid
        } else if now > self.not_after {
            Status::Expired
        } else {
            Status::Valid
        }
    }
}

/// The whole `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Layout version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Number of the last CRL published (0: none yet); CRL numbers must increase.
    pub crl_number: u64,
    /// Every certificate issued, oldest first.
    pub certs: Vec<IndexEntry>,
    /// Where else every new CRL is written (absolute paths): the files gateways read, e.g.
    /// `/etc/virtgate/pki/crl.pem`. Added by `issue-server --out DIR` and `crl --out FILE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_copies: Vec<std::path::PathBuf>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: FORMAT_VERSION,
            crl_number: 0,
            certs: Vec::new(),
            crl_copies: Vec::new(),
        }
    }
}

/// Normalizes a serial as typed by a person: `0A:1b:…` or `0a1b…` → `0a1b…`.
pub fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

impl Index {
    /// Parses `index.json` text; `path` names the file in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Index, CaError> {
        let index: Index = serde_json::from_str(text).map_err(|e| CaError::Damaged {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if index.version != FORMAT_VERSION {
            return Err(CaError::Damaged {
                path: path.to_path_buf(),
                detail: format!(
                    "layout version {} (this program reads version {FORMAT_VERSION})",
                    index.version
                ),
            });
        }
        Ok(index)
    }

    /// The JSON text of the index (pretty, ends with a newline).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Takes the next CRL number and returns it.
    pub fn next_crl_number(&mut self) -> u64 {
        self.crl_number += 1;
        self.crl_number
    }

    /// The revoked entries, for the CRL.
    pub fn revoked(&self) -> impl Iterator<Item = &IndexEntry> {
        self.certs.iter().filter(|e| e.revoked.is_some())
    }

    /// Indices in `certs` of what `target` (a serial or a CN) means, for `revoke`.
    ///
    /// A serial (with or without colons, any case) matches that one certificate; otherwise
    /// every certificate whose CN is `target`. Empty when nothing matches.
    pub fn matching(&self, target: &str) -> Vec<usize> {
        let serial = normalize_serial(target);
        let by_serial: Vec<usize> = self
            .certs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.serial == serial)
            .map(|(i, _)| i)
            .collect();
        if !by_serial.is_empty() {
            return by_serial;
        }
        self.certs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.cn == target)
            .map(|(i, _)| i)
            .collect()
    }

    /// The distinct CNs with certificates, in order of first issue (for error hints).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for e in &self.certs {
            if !names.contains(&e.cn) {
                names.push(e.cn.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn entry(serial: &str, cn: &str, now: OffsetDateTime) -> IndexEntry {
        IndexEntry {
            serial: serial.to_string(),
            cn: cn.to_string(),
            kind: CertKind::Client,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(1),
            sans: vec![],
            revoked: None,
        }
    }

    #[test]
    fn matching_by_serial_then_cn() {
        let now = OffsetDateTime::now_utc();
        let mut idx = Index::default();
        idx.certs.push(entry("0a1b", "alice", now));
        idx.certs.push(entry("0c2d", "bob", now));
        idx.certs.push(entry("0e3f", "alice", now));
        assert_eq!(idx.matching("alice"), vec![0, 2]);
        assert_eq!(idx.matching("0A:1B"), vec![0]);
        assert_eq!(idx.matching("0c2d"), vec![1]);
        assert!(idx.matching("carol").is_empty());
        assert_eq!(idx.names(), ["alice", "bob"]);
    }

    #[test]
    fn status_follows_dates_and_revocation() {
        let now = OffsetDateTime::now_utc();
        let mut e = entry("01", "alice", now);
        assert_eq!(e.status(now), Status::Valid);
        assert_eq!(e.status(now + Duration::days(2)), Status::Expired);
        assert_eq!(e.status(now - Duration::days(2)), Status::NotYetValid);
        e.revoked = Some(Revocation {
            at: now,
            reason: "unspecified".into(),
        });
        assert_eq!(e.status(now), Status::Revoked);
    }

    #[test]
    fn crl_numbers_increase() {
        let mut idx = Index::default();
        assert_eq!(idx.next_crl_number(), 1);
        assert_eq!(idx.next_crl_number(), 2);
        assert_eq!(idx.crl_number, 2);
    }

    #[test]
    fn json_round_trip_and_damage() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let mut idx = Index::default();
        idx.certs.push(entry("0a1b", "alice", now));
        idx.certs[0].revoked = Some(Revocation {
            at: now,
            reason: "keyCompromise".into(),
        });
        let text = idx.to_json();
        assert!(text.contains("\"kind\": \"client\""));
        let back = Index::from_json(Path::new("index.json"), &text).unwrap();
        assert_eq!(back, idx);

        let err = Index::from_json(Path::new("/ca/index.json"), "{").unwrap_err();
        assert!(err.to_string().starts_with("/ca/index.json is damaged"));
        let err = Index::from_json(
            Path::new("/ca/index.json"),
            r#"{"version": 9, "crl_number": 0, "certs": []}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("layout version 9"));
    }
}
