//! Kerberos failures in words: the status texts of MIT krb5's GSS-API (major and minor,
//! as `libgssapi` displays them: `MAJOR (MINOR)`) turned into a [`KerberosFailure`] with a
//! message a person understands and a hint naming the command to run (`kinit alice@REALM`)
//! or the principal the admin has to create (`HTTP/host@REALM`).
//!
//! The classification works on the text, because the useful detail (which cache, which
//! principal, which realm) is only in MIT's extended minor message. The strings in the tests
//! are the ones MIT krb5 1.20 printed when each case was provoked against a real KDC.

use std::path::PathBuf;

/// What the hints of a Kerberos failure need to know about our side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KerberosContext {
    /// The service part of the gateway's principal (`HTTP`).
    pub service: String,
    /// The gateway's host as in the URL (IPv6 without brackets).
    pub host: String,
    /// Whether the URL names the gateway by IP address (tickets are issued for names).
    pub host_is_ip: bool,
    /// The local login name (`$USER`), for `kinit USER@REALM`.
    pub user: Option<String>,
    /// `default_realm` from krb5.conf, when it could be read.
    pub realm: Option<String>,
}

impl KerberosContext {
    /// `HTTP/host@REALM`, with a placeholder realm when the default realm is unknown.
    pub fn service_principal(&self) -> String {
        format!(
            "{}/{}@{}",
            self.service,
            self.host,
            self.realm.as_deref().unwrap_or("REALM")
        )
    }

    /// `alice@EXAMPLE.ORG`, with placeholders for what is unknown.
    fn user_principal(&self) -> String {
        format!(
            "{}@{}",
            self.user.as_deref().unwrap_or("you"),
            self.realm.as_deref().unwrap_or("YOUR.REALM")
        )
    }
}

/// A Kerberos failure in words.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KerberosFailure {
    /// No credential cache, or one without a ticket-granting ticket.
    NoTicket {
        /// The cache GSS-API looked in (`FILE:/tmp/krb5cc_1000`), when it said.
        cache: Option<String>,
    },
    /// The ticket-granting ticket (or the service ticket) has expired.
    Expired,
    /// The KDC has no principal for the gateway's service.
    UnknownService {
        /// The principal asked for, `HTTP/host@REALM`.
        principal: String,
    },
    /// The clocks differ by more than the allowed skew (5 minutes by default).
    ClockSkew,
    /// No KDC of the realm answered (or none is configured).
    KdcUnreachable {
        /// The realm whose KDC was asked, when known.
        realm: Option<String>,
    },
    /// The gateway answered the authenticated request without a mutual-authentication token.
    NoMutualAuth,
    /// The gateway's mutual-authentication token did not verify.
    BadMutualAuth(String),
    /// A request on a connection whose Negotiate login failed before.
    NotLoggedIn,
    /// Anything else GSS-API reports, as its text.
    Other(String),
}

impl std::fmt::Display for KerberosFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KerberosFailure::NoTicket { cache: Some(c) } => write!(
                f,
                "no Kerberos ticket (credential cache {c} is empty or missing)"
            ),
            KerberosFailure::NoTicket { cache: None } => {
                f.write_str("no Kerberos ticket (the credential cache is empty or missing)")
            }
            KerberosFailure::Expired => f.write_str("your Kerberos ticket has expired"),
            KerberosFailure::UnknownService { principal } => {
                write!(f, "the KDC knows no service principal {principal}")
            }
            KerberosFailure::ClockSkew => {
                f.write_str("your clock and the KDC's (or the gateway's) differ too much")
            }
            KerberosFailure::KdcUnreachable { realm: Some(r) } => {
                write!(f, "cannot reach the KDC for {r}")
            }
            KerberosFailure::KdcUnreachable { realm: None } => {
                f.write_str("cannot reach the KDC of your realm")
            }
            KerberosFailure::NoMutualAuth => f.write_str(
                "the gateway did not prove its identity (no mutual authentication token)",
            ),
            KerberosFailure::BadMutualAuth(s) => {
                write!(f, "the gateway did not prove its identity: {s}")
            }
            KerberosFailure::NotLoggedIn => {
                f.write_str("this connection is not logged in: its Kerberos login failed")
            }
            KerberosFailure::Other(s) => write!(f, "Kerberos login failed: {s}"),
        }
    }
}

impl KerberosFailure {
    /// Classify the text of a GSS-API error (`MAJOR (MINOR)`, as `libgssapi` displays it).
    pub fn from_gss_text(text: &str, cx: &KerberosContext) -> KerberosFailure {
        let lower = text.to_ascii_lowercase();
        if lower.contains("not found in kerberos database") {
            let principal = between(text, "Server ", " not found")
                .filter(|p| !p.contains(' '))
                .map(str::to_owned)
                .unwrap_or_else(|| cx.service_principal());
            return KerberosFailure::UnknownService { principal };
        }
        if lower.contains("clock skew too great") {
            return KerberosFailure::ClockSkew;
        }
        if lower.contains("cannot contact any kdc")
            || lower.contains("cannot find kdc")
            || lower.contains("cannot resolve network address for kdc")
        {
            let realm = between(text, "realm '", "'")
                .or_else(|| between(text, "realm \"", "\""))
                .map(str::to_owned)
                .or_else(|| cx.realm.clone());
            return KerberosFailure::KdcUnreachable { realm };
        }
        if lower.contains("expired") {
            return KerberosFailure::Expired;
        }
        if lower.contains("no kerberos credentials available")
            || lower.contains("no credentials cache found")
            || lower.contains("credential cache is empty")
            || lower.contains("no credentials were supplied")
        {
            let cache = between(text, "(default cache: ", ")")
                .or_else(|| {
                    between(text, "(filename: ", ")").map(|f| f.trim_start_matches("FILE:"))
                })
                .map(|c| {
                    if c.starts_with('/') {
                        format!("FILE:{c}")
                    } else {
                        c.to_owned()
                    }
                });
            return KerberosFailure::NoTicket { cache };
        }
        KerberosFailure::Other(text.trim().to_owned())
    }

    /// What to do about it.
    pub fn hint(&self, cx: &KerberosContext) -> String {
        match self {
            KerberosFailure::NoTicket { .. } => format!(
                "run kinit {} (or point KRB5CCNAME at the cache that holds your ticket)",
                cx.user_principal()
            ),
            KerberosFailure::Expired => "run kinit again".into(),
            KerberosFailure::UnknownService { principal } => {
                let admin = format!(
                    "ask the gateway's admin to create {principal} and its keytab (see deploy/)"
                );
                if cx.host_is_ip {
                    format!(
                        "use the gateway's host name as in its certificate, not an IP address \
                         ({}), in the URL (virtgate://NAME); otherwise {admin}",
                        cx.host
                    )
                } else {
                    admin
                }
            }
            KerberosFailure::ClockSkew => "sync the clock (NTP)".into(),
            KerberosFailure::KdcUnreachable { .. } => format!(
                "check the `kdc` of the realm in krb5.conf ({}) and that the KDC is running and \
                 reachable from here",
                krb5_conf_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            KerberosFailure::NoMutualAuth | KerberosFailure::BadMutualAuth(_) => {
                "do not trust this gateway: is it a virtgated gateway with [kerberos] enabled, \
                 and does its keytab belong to this host? Tell its admin"
                    .into()
            }
            KerberosFailure::NotLoggedIn => {
                "the first error says why; fix that and run the command again".into()
            }
            KerberosFailure::Other(_) => format!(
                "run `klist` to see your tickets and `kvno {}` to test the gateway's principal",
                cx.service_principal()
            ),
        }
    }
}

/// The text between `start` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len]).filter(|s| !s.is_empty())
}

/// The krb5.conf files MIT krb5 reads: `$KRB5_CONFIG` (a colon-separated list), else
/// `/etc/krb5.conf`.
pub fn krb5_conf_paths() -> Vec<PathBuf> {
    match std::env::var_os("KRB5_CONFIG").filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(&v).collect(),
        None => vec![PathBuf::from("/etc/krb5.conf")],
    }
}

/// `default_realm` of the `[libdefaults]` section of the first krb5.conf that has one.
pub fn default_realm() -> Option<String> {
    krb5_conf_paths()
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| parse_default_realm(&text))
}

/// `default_realm` from krb5.conf text (only in `[libdefaults]`).
pub fn parse_default_realm(text: &str) -> Option<String> {
    let mut in_libdefaults = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            in_libdefaults = section.trim_end_matches(']').trim() == "libdefaults";
            continue;
        }
        if !in_libdefaults {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            if key.trim() == "default_realm" && !value.is_empty() {
                return Some(value.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> KerberosContext {
        KerberosContext {
            service: "HTTP".into(),
            host: "gw.example.org".into(),
            host_is_ip: false,
            user: Some("alice".into()),
            realm: Some("EXAMPLE.ORG".into()),
        }
    }

    /// What MIT krb5 1.20 printed (libgssapi's `MAJOR (MINOR)`; for a missing credential
    /// the SPNEGO text plus `; krb5: ` and krb5's own), each provoked against a real KDC.
    const NO_CACHE: &str = "No credentials were supplied, or the credentials were unavailable or \
        inaccessible (SPNEGO cannot find mechanisms to negotiate ); krb5: No credentials were \
        supplied, or the credentials were unavailable or inaccessible (No Kerberos credentials \
        available (default cache: FILE:/tmp/krb5cc_0))";
    const EMPTY_CACHE: &str = "No credentials were supplied, or the credentials were unavailable \
        or inaccessible (SPNEGO cannot find mechanisms to negotiate ); krb5: No credentials were \
        supplied, or the credentials were unavailable or inaccessible (No Kerberos credentials \
        available: Bad format in credentials cache (filename: /tmp/clk/emptycc))";
    const SPNEGO_ONLY: &str = "No credentials were supplied, or the credentials were unavailable \
        or inaccessible (SPNEGO cannot find mechanisms to negotiate )";
    const EXPIRED: &str =
        "Unspecified GSS failure.  Minor code may provide more information (Ticket expired)";
    /// A service ticket got on a TGT that expired less than the clock skew ago: the context
    /// completes, then cannot be inquired.
    const CONTEXT_EXPIRED: &str = "The referenced context has expired (Success)";
    const NO_SERVICE: &str = "Unspecified GSS failure.  Minor code may provide more information \
        (Server HTTP/127.0.0.1@VIRTGATE.TEST not found in Kerberos database)";
    const NO_SERVICE_SHORT: &str = "Unspecified GSS failure.  Minor code may provide more \
        information (Server not found in Kerberos database)";
    const SKEW: &str =
        "Unspecified GSS failure.  Minor code may provide more information (Clock skew too great)";
    const KDC_DOWN: &str = "Unspecified GSS failure.  Minor code may provide more information \
        (Cannot contact any KDC for realm 'VIRTGATE.TEST')";
    const NO_KDC: &str = "Unspecified GSS failure.  Minor code may provide more information \
        (Cannot find KDC for realm \"VIRTGATE.TEST\")";

    fn classify(text: &str) -> KerberosFailure {
        KerberosFailure::from_gss_text(text, &cx())
    }

    #[test]
    fn no_ticket_names_the_cache_and_says_kinit() {
        let f = classify(NO_CACHE);
        assert_eq!(
            f.to_string(),
            "no Kerberos ticket (credential cache FILE:/tmp/krb5cc_0 is empty or missing)"
        );
        assert!(f.hint(&cx()).starts_with("run kinit alice@EXAMPLE.ORG"));
        assert_eq!(
            classify(EMPTY_CACHE),
            KerberosFailure::NoTicket {
                cache: Some("FILE:/tmp/clk/emptycc".into())
            }
        );
        assert_eq!(
            classify(SPNEGO_ONLY),
            KerberosFailure::NoTicket { cache: None }
        );
    }

    #[test]
    fn expired_ticket() {
        let f = classify(EXPIRED);
        assert_eq!(f, KerberosFailure::Expired);
        assert_eq!(f.to_string(), "your Kerberos ticket has expired");
        assert_eq!(f.hint(&cx()), "run kinit again");
        assert_eq!(classify(CONTEXT_EXPIRED), KerberosFailure::Expired);
    }

    #[test]
    fn unknown_service_principal() {
        let f = classify(NO_SERVICE);
        assert_eq!(
            f.to_string(),
            "the KDC knows no service principal HTTP/127.0.0.1@VIRTGATE.TEST"
        );
        let ip = KerberosContext {
            host: "127.0.0.1".into(),
            host_is_ip: true,
            ..cx()
        };
        let h = f.hint(&ip);
        assert!(
            h.contains("host name as in its certificate, not an IP address"),
            "{h}"
        );
        assert!(
            h.contains("ask the gateway's admin to create HTTP/127.0.0.1@VIRTGATE.TEST and its keytab (see deploy/)"),
            "{h}"
        );
        // without the detail, the principal is made from the context
        let f = classify(NO_SERVICE_SHORT);
        assert_eq!(
            f.to_string(),
            "the KDC knows no service principal HTTP/gw.example.org@EXAMPLE.ORG"
        );
        assert!(!f.hint(&cx()).contains("IP address"));
    }

    #[test]
    fn clock_skew_and_unreachable_kdc() {
        let f = classify(SKEW);
        assert_eq!(
            f.to_string(),
            "your clock and the KDC's (or the gateway's) differ too much"
        );
        assert_eq!(f.hint(&cx()), "sync the clock (NTP)");
        let f = classify(KDC_DOWN);
        assert_eq!(f.to_string(), "cannot reach the KDC for VIRTGATE.TEST");
        assert!(f.hint(&cx()).contains("krb5.conf"));
        assert_eq!(
            classify(NO_KDC),
            KerberosFailure::KdcUnreachable {
                realm: Some("VIRTGATE.TEST".into())
            }
        );
    }

    #[test]
    fn anything_else_keeps_the_gss_text() {
        let f = classify("Unspecified GSS failure.  Minor code may provide more information (x)");
        assert_eq!(
            f.to_string(),
            "Kerberos login failed: Unspecified GSS failure.  Minor code may provide more information (x)"
        );
        assert_eq!(
            KerberosFailure::NoMutualAuth.to_string(),
            "the gateway did not prove its identity (no mutual authentication token)"
        );
    }

    #[test]
    fn krb5_conf_default_realm() {
        let text = "# x\n[logging]\n default_realm = NO\n[libdefaults]\n  dns_lookup_kdc = false\n  \
                    default_realm = VIRTGATE.TEST\n[realms]\n VIRTGATE.TEST = {\n kdc = 127.0.0.1:88\n }\n";
        assert_eq!(parse_default_realm(text).as_deref(), Some("VIRTGATE.TEST"));
        assert_eq!(parse_default_realm("[realms]\ndefault_realm = X\n"), None);
    }

    #[test]
    fn placeholders_when_nothing_is_known() {
        let c = KerberosContext {
            service: "HTTP".into(),
            host: "h".into(),
            ..Default::default()
        };
        let f = KerberosFailure::NoTicket { cache: None };
        assert_eq!(
            f.hint(&c),
            "run kinit you@YOUR.REALM (or point KRB5CCNAME at the cache that holds your ticket)"
        );
        assert_eq!(c.service_principal(), "HTTP/h@REALM");
    }
}
