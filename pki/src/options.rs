//! What certificates are made with: validity periods and the options of `init`,
//! `issue-server` and `issue-client`.
//!
//! [`Validity::Between`] sets exact dates, which the tests use for expired and
//! not-yet-valid certificates; the command line only offers `--days`.

use std::net::IpAddr;

use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::CaError;
use crate::names;

/// How long a certificate is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    /// From a few minutes ago (clock skew) for this many days.
    Days(u32),
    /// Exactly this period (tests use it for expired and not-yet-valid certificates).
    Between {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
}

impl Validity {
    /// The period as (not_before, not_after), whole seconds as certificates store them.
    pub(crate) fn resolve(
        &self,
        now: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
        let (from, to) = match self {
            Validity::Days(0) => {
                return Err(CaError::InvalidValidity {
                    detail: "0 days".to_string(),
                })
            }
            Validity::Days(days) if *days > 100 * 365 => {
                return Err(CaError::InvalidValidity {
                    detail: format!("{days} days is more than 100 years"),
                })
            }
            Validity::Days(days) => (
                now - Duration::minutes(5),
                now + Duration::days(i64::from(*days)),
            ),
            Validity::Between {
                not_before,
                not_after,
            } => (*not_before, *not_after),
        };
        let (from, to) = (truncate(from), truncate(to));
        if to <= from {
            return Err(CaError::InvalidValidity {
                detail: format!("not_after ({to}) is not after not_before ({from})"),
            });
        }
        Ok((from, to))
    }
}

/// Drops the sub-second part of a time.
pub(crate) fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The CA's name (its certificate's CN), shown by `openssl x509 -subject`.
    pub name: String,
    /// Passphrase to encrypt `ca.key` with; `None` writes it in the clear (0600).
    pub passphrase: Option<Zeroizing<String>>,
    /// Validity of the CA certificate.
    pub validity: Validity,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            name: "virtgate CA".to_string(),
            passphrase: None,
            validity: Validity::Days(3650),
        }
    }
}

/// What a server certificate needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// DNS names the server is reached by (the first becomes the CN).
    pub dns: Vec<String>,
    /// IP addresses the server is reached by (IPv4 and IPv6).
    pub ips: Vec<IpAddr>,
    /// Validity of the certificate.
    pub validity: Validity,
}

impl ServerOptions {
    /// Checks that there is at least one name and that every DNS name is valid.
    pub fn check(&self) -> Result<(), CaError> {
        if self.dns.is_empty() && self.ips.is_empty() {
            return Err(CaError::NoServerNames);
        }
        for name in &self.dns {
            names::dns_name(name)?;
        }
        Ok(())
    }
}

/// What a client certificate needs besides the user name.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Validity of the certificate.
    pub validity: Validity,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            validity: Validity::Days(365),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_periods() {
        let now = OffsetDateTime::now_utc();
        let (from, to) = Validity::Days(10).resolve(now).unwrap();
        assert_eq!(from.nanosecond(), 0);
        assert!(from < now && to > now + Duration::days(9));
        assert!(Validity::Days(0).resolve(now).is_err());
        assert!(Validity::Days(100 * 366).resolve(now).is_err());
        let expired = Validity::Between {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
        };
        let (_, to) = expired.resolve(now).unwrap();
        assert!(to < now);
        let backwards = Validity::Between {
            not_before: now,
            not_after: now - Duration::days(1),
        };
        let err = backwards.resolve(now).unwrap_err();
        assert!(err.to_string().contains("is not after"), "{err}");
    }

    #[test]
    fn server_options_need_a_name() {
        let mut opts = ServerOptions {
            dns: vec![],
            ips: vec![],
            validity: Validity::Days(1),
        };
        assert!(matches!(opts.check(), Err(CaError::NoServerNames)));
        opts.ips.push("::1".parse().unwrap());
        opts.check().unwrap();
        opts.dns.push("bad name".into());
        assert!(opts.check().is_err());
    }
}
