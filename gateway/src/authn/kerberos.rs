//! Kerberos (HTTP Negotiate, RFC 4559) on the GSS-API side: the acceptor and its tokens.
//!
//! [`Acceptor::from_config`] runs at startup: the acceptor name is `SERVICE@host`
//! (`kerberos.service`, default `HTTP`; `kerberos.host`, default the system host name) and
//! its credential comes from one explicit keytab ([`keytab`] finds it and
//! explains failures). Per connection, [`Acceptor::step`] feeds a client token to a
//! `libgssapi` server context (SPNEGO or raw krb5, whichever the client sent); it blocks
//! (replay cache, key table), so callers run it on a blocking thread. A finished context
//! gives the principal (`alice@REALM`), which [`map_user`] turns into the user name rules
//! match. Failures become a [`Failure`] a person can act on. MIT's replay cache refuses a
//! token seen before; the gateway never disables it.

use std::path::PathBuf;

use libgssapi::context::{SecurityContext as _, ServerCtx};
use libgssapi::credential::Cred;
use libgssapi::error::{Error as GssError, MajorFlags};

use super::gss_ffi::{self, AcquireError};
use super::keytab::{self, Attempt, KeytabError, KeytabFailure};
use crate::config;

/// Why Kerberos login cannot be set up at startup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KerberosError {
    /// `kerberos.host` is not set and the system host name is unusable.
    #[error("cannot determine the host name for the Kerberos acceptor: {0}")]
    HostName(String),
    /// No keytab gives a credential for the service (boxed: it lists every path tried).
    #[error(transparent)]
    Keytab(Box<KeytabError>),
}

impl From<KeytabError> for KerberosError {
    fn from(e: KeytabError) -> Self {
        KerberosError::Keytab(Box::new(e))
    }
}

impl KerberosError {
    /// What the admin can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            KerberosError::HostName(_) => {
                "set `host` in [kerberos] to the name clients use for the gateway".into()
            }
            KerberosError::Keytab(k) => k.hint(),
        })
    }
}

/// The gateway's Kerberos acceptor, shared by every connection.
pub struct Acceptor {
    /// The acceptor credential from the keytab (never logged; GSS-API holds the keys).
    cred: Cred,
    /// `SERVICE@host`, for logs and messages.
    name: String,
    /// The keytab the credential came from.
    keytab: PathBuf,
    /// Realms stripped from principals to form user names.
    strip_realm: Vec<String>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("name", &self.name)
            .field("keytab", &self.keytab)
            .finish_non_exhaustive()
    }
}

/// The system's host name (`gethostname`), used when `kerberos.host` is not set.
pub fn system_host_name() -> Result<String, KerberosError> {
    let h = gethostname::gethostname()
        .into_string()
        .map_err(|h| KerberosError::HostName(format!("`{}` is not UTF-8", h.to_string_lossy())))?;
    if h.trim().is_empty() {
        return Err(KerberosError::HostName("it is empty".into()));
    }
    Ok(h)
}

impl Acceptor {
    /// Find the keytab and acquire the acceptor credential for `SERVICE@host`.
    pub fn from_config(k: &config::Kerberos) -> Result<Acceptor, KerberosError> {
        let service = k
            .service
            .as_deref()
            .unwrap_or(config::DEFAULT_KERBEROS_SERVICE);
        let host = match &k.host {
            Some(h) => h.clone(),
            None => system_host_name()?,
        };
        let name = format!("{service}@{host}");
        let principal = format!("{service}/{}", host.to_ascii_lowercase());
        let mut tried = Vec::new();
        let configured = k.keytab.is_some();
        for candidate in keytab::candidates(k.keytab.as_deref(), std::env::var_os("KRB5_KTNAME")) {
            let failure = if !candidate.path.is_absolute() {
                KeytabFailure::NotAFile
            } else {
                match try_keytab(&name, service, &host, &candidate.path) {
                    Ok(cred) => {
                        tracing::info!(acceptor = %name, keytab = %candidate.path.display(), "Kerberos login enabled");
                        return Ok(Acceptor {
                            cred,
                            name,
                            keytab: candidate.path,
                            strip_realm: k.strip_realm.clone(),
                        });
                    }
                    Err(f) => f,
                }
            };
            tried.push(Attempt { candidate, failure });
        }
        Err(match (configured, tried.pop()) {
            (true, Some(attempt)) => KeytabError::Configured {
                attempt,
                service: principal,
            },
            (_, last) => {
                tried.extend(last);
                KeytabError::Searched {
                    tried,
                    service: principal,
                }
            }
        }
        .into())
    }

    /// `SERVICE@host`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh server context for one connection's Negotiate exchange.
    pub fn new_context(&self) -> ServerCtx {
        ServerCtx::new(Some(self.cred.clone()))
    }

    /// The user name rules match for `principal` (see [`map_user`]).
    pub fn user_for(&self, principal: &str) -> String {
        map_user(principal, &self.strip_realm)
    }

    /// Feed one client token to `ctx`. Blocking (replay cache, keytab): run it on a
    /// blocking thread.
    pub fn step(&self, ctx: &mut ServerCtx, token: &[u8]) -> Step {
        match ctx.step(token, None) {
            Ok(out) if ctx.is_complete() => {
                match ctx.source_name().and_then(|n| n.display_name()) {
                    Ok(name) => Step::Complete {
                        principal: String::from_utf8_lossy(&name).into_owned(),
                        token: out.map(|b| b.to_vec()),
                    },
                    Err(e) => Step::Failed(classify(&e, &self.name)),
                }
            }
            Ok(Some(out)) => Step::Continue {
                token: out.to_vec(),
            },
            // Not complete and nothing to send back: a broken exchange.
            Ok(None) => Step::Failed(Failure {
                detail: "the Negotiate exchange stalled (no token to send back)".into(),
                hint: RETRY_HINT.into(),
                gss: String::new(),
            }),
            Err(e) => Step::Failed(classify(&e, &self.name)),
        }
    }
}

/// Open `path` as a keytab and acquire the credential, or say why not.
fn try_keytab(
    name: &str,
    service: &str,
    host: &str,
    path: &std::path::Path,
) -> Result<Cred, KeytabFailure> {
    let holds = keytab::read_principals(path)?;
    gss_ffi::acquire_acceptor(name, path).map_err(|e| match e {
        AcquireError::Nul => KeytabFailure::NotAFile,
        AcquireError::Gss(e) => keytab::no_key(service, host, holds, e.to_string()),
    })
}

/// What one Negotiate token did.
#[derive(Debug)]
pub enum Step {
    /// Authenticated; `token` (if any) is the mutual-authentication reply.
    Complete {
        /// `alice@REALM`.
        principal: String,
        /// For `WWW-Authenticate: Negotiate <token>`.
        token: Option<Vec<u8>>,
    },
    /// The mechanism needs another round trip: send `token`, keep the context.
    Continue {
        /// For `WWW-Authenticate: Negotiate <token>`.
        token: Vec<u8>,
    },
    /// Refused.
    Failed(Failure),
}

/// A refused token, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// For the client (problem `detail`): what went wrong, in words.
    pub detail: String,
    /// For the client (problem `hint`): what to do.
    pub hint: String,
    /// GSS-API's own major/minor text, for the log.
    pub gss: String,
}

const RETRY_HINT: &str = "run kinit, then retry; the gateway log has details";

/// Codes of MIT's krb5 error table (`krb5.h`), as they arrive in GSS minor statuses.
mod krb5 {
    pub const TKT_EXPIRED: i32 = -1765328352;
    pub const TKT_NYV: i32 = -1765328351;
    pub const REPEAT: i32 = -1765328350;
    pub const NOT_US: i32 = -1765328349;
    pub const BADMATCH: i32 = -1765328348;
    pub const SKEW: i32 = -1765328347;
    pub const MSG_TYPE: i32 = -1765328344;
    pub const MODIFIED: i32 = -1765328343;
    pub const BADKEYVER: i32 = -1765328340;
    pub const NOKEY: i32 = -1765328339;
    pub const BAD_INTEGRITY: i32 = -1765328353;
    pub const WRONG_PRINC: i32 = -1765328240;
    pub const RC_REPLAY: i32 = -1765328221;
    pub const KT_NOTFOUND: i32 = -1765328203;
    pub const KT_KVNONOTFOUND: i32 = -1765328154;
    pub const BAD_MSIZE: i32 = -1765328194;
}

/// Turn a GSS-API error into words (`acceptor` is `SERVICE@host`). Call it on the thread
/// that got the error: MIT keeps the detailed message of the last failure per thread.
pub fn classify(e: &GssError, acceptor: &str) -> Failure {
    failure_for(e.major, e.minor as i32, e.to_string(), acceptor)
}

/// What went wrong, as a kind: decided from the krb5 code when GSS passes it through,
/// else from MIT's message text (the mechanism glue renumbers minor codes, so the text is
/// what is stable), else from the GSS major status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Replay,
    Skew,
    Expired,
    WrongService,
    StaleKeytab,
    Malformed,
    Other,
}

fn reason(major: MajorFlags, minor: i32, gss: &str) -> Reason {
    let by_code = match minor {
        krb5::REPEAT | krb5::RC_REPLAY => Reason::Replay,
        krb5::SKEW | krb5::TKT_NYV => Reason::Skew,
        krb5::TKT_EXPIRED => Reason::Expired,
        krb5::NOT_US | krb5::WRONG_PRINC | krb5::BADMATCH | krb5::KT_NOTFOUND | krb5::NOKEY => {
            Reason::WrongService
        }
        krb5::MODIFIED | krb5::BADKEYVER | krb5::KT_KVNONOTFOUND | krb5::BAD_INTEGRITY => {
            Reason::StaleKeytab
        }
        krb5::MSG_TYPE | krb5::BAD_MSIZE => Reason::Malformed,
        _ => Reason::Other,
    };
    if by_code != Reason::Other {
        return by_code;
    }
    if major.contains(MajorFlags::GSS_S_DUPLICATE_TOKEN) {
        return Reason::Replay;
    }
    let text = gss.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["replay"]) {
        return Reason::Replay;
    }
    if has(&["clock skew", "not yet valid"]) {
        return Reason::Skew;
    }
    // "…kvno 3 not found in keytab; keytab is likely out of date", "…cannot decrypt ticket".
    if has(&[
        "out of date",
        "cannot decrypt",
        "message stream modified",
        "integrity",
        "key version",
    ]) {
        return Reason::StaleKeytab;
    }
    if has(&["ticket expired", "has expired"]) {
        return Reason::Expired;
    }
    if has(&[
        "wrong principal",
        "isn't for us",
        "don't match",
        "no key table entry",
        "key table entry not found",
        // "Request ticket server HTTP/other@R not found in keytab (ticket kvno 2)"
        "not found in keytab (",
        "cannot find key",
        "service key not available",
    ]) {
        return Reason::WrongService;
    }
    // Routine errors are a number in bits 16..24, not flags: compare, do not test bits.
    let routine = major.bits() & 0x00ff_0000;
    let is = |f: MajorFlags| routine == f.bits();
    if is(MajorFlags::GSS_S_CREDENTIALS_EXPIRED) || is(MajorFlags::GSS_S_CONTEXT_EXPIRED) {
        return Reason::Expired;
    }
    if is(MajorFlags::GSS_S_DEFECTIVE_TOKEN)
        || is(MajorFlags::GSS_S_BAD_MECH)
        || has(&["asn.1", "invalid token", "malformed"])
    {
        return Reason::Malformed;
    }
    Reason::Other
}

/// [`classify`] on the parts, so tests need no GSS call.
pub fn failure_for(major: MajorFlags, minor: i32, gss: String, acceptor: &str) -> Failure {
    let (detail, hint): (String, &str) = match reason(major, minor, &gss) {
        Reason::Replay => (
            "the Kerberos token was replayed (already used)".into(),
            "retry: every login needs a fresh token (curl and virtgate make one per connection)",
        ),
        Reason::Skew => (
            "the clocks of your machine and the gateway differ too much for Kerberos (clock skew)".into(),
            "synchronise the clocks (NTP) on both machines, then retry",
        ),
        Reason::Expired => (
            "your Kerberos ticket has expired".into(),
            "run kinit to get a new ticket, then retry",
        ),
        Reason::WrongService => (
            format!("the ticket is for another service principal, not this gateway's ({acceptor})"),
            "connect with the host name the gateway's service principal uses (ask the admin; the gateway's kerberos.host sets it)",
        ),
        Reason::StaleKeytab => (
            "the ticket cannot be decrypted with the gateway's key (its keytab is out of date)".into(),
            "ask the admin to export the service key again (kadmin ktadd) and restart the gateway; then kdestroy, kinit and retry",
        ),
        Reason::Malformed => (
            format!("the Negotiate token is malformed or uses an unsupported mechanism ({gss})"),
            "use Kerberos (SPNEGO or krb5); NTLM is not supported",
        ),
        Reason::Other => (format!("Kerberos login failed: {gss}"), RETRY_HINT),
    };
    Failure {
        detail,
        hint: hint.to_owned(),
        gss,
    }
}

/// The user name for `principal`: without its realm when the realm is in `strip_realm`
/// (`alice@EXAMPLE.ORG` -> `alice`), otherwise the full principal.
pub fn map_user(principal: &str, strip_realm: &[String]) -> String {
    match principal.rsplit_once('@') {
        Some((user, realm)) if !user.is_empty() && strip_realm.iter().any(|r| r == realm) => {
            user.to_owned()
        }
        _ => principal.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_stripped_only_when_listed() {
        let strip = vec!["EXAMPLE.ORG".to_owned()];
        assert_eq!(map_user("alice@EXAMPLE.ORG", &strip), "alice");
        assert_eq!(map_user("alice@OTHER.ORG", &strip), "alice@OTHER.ORG");
        assert_eq!(map_user("alice@example.org", &strip), "alice@example.org");
        assert_eq!(map_user("alice/admin@EXAMPLE.ORG", &strip), "alice/admin");
        assert_eq!(map_user("alice@EXAMPLE.ORG", &[]), "alice@EXAMPLE.ORG");
        assert_eq!(map_user("@EXAMPLE.ORG", &strip), "@EXAMPLE.ORG");
        assert_eq!(map_user("noat", &strip), "noat");
    }

    #[test]
    fn failures_are_explained() {
        let f = |minor: i32| {
            failure_for(
                MajorFlags::GSS_S_FAILURE,
                minor,
                "gss text".into(),
                "HTTP@gw",
            )
            .detail
        };
        assert_eq!(
            f(krb5::REPEAT),
            "the Kerberos token was replayed (already used)"
        );
        assert!(f(krb5::SKEW).contains("clock skew"));
        assert!(f(krb5::TKT_EXPIRED).contains("expired"));
        assert!(f(krb5::WRONG_PRINC).starts_with("the ticket is for another service principal"));
        assert!(f(krb5::WRONG_PRINC).contains("HTTP@gw"));
        assert!(f(krb5::MODIFIED).contains("keytab"));
        assert_eq!(f(12345), "Kerberos login failed: gss text");
        let dup = failure_for(
            MajorFlags::GSS_S_DUPLICATE_TOKEN,
            0,
            String::new(),
            "HTTP@gw",
        );
        assert!(dup.detail.contains("replayed"));
        let bad = failure_for(MajorFlags::GSS_S_DEFECTIVE_TOKEN, 0, "x".into(), "HTTP@gw");
        assert!(bad.detail.contains("malformed"));
    }

    #[test]
    fn mit_messages_are_recognised() {
        // The mechanism glue renumbers minor codes: MIT's text is what arrives.
        let f = |text: &str| {
            failure_for(MajorFlags::GSS_S_FAILURE, 100_003, text.into(), "HTTP@gw").detail
        };
        let gss = |minor: &str| {
            format!("Unspecified GSS failure.  Minor code may provide more information ({minor})")
        };
        assert!(f(&gss("Request is a replay")).contains("replayed"));
        assert!(f(&gss("Clock skew too great")).contains("clock skew"));
        assert!(f(&gss("Ticket expired")).contains("expired"));
        assert!(f(&gss("Wrong principal in request")).contains("another service principal"));
        let stale = "Request ticket server HTTP/gw@R kvno 3 not found in keytab; keytab is likely out of date";
        assert!(f(&gss(stale)).contains("out of date"));
        let other = "Request ticket server HTTP/other@R not found in keytab (ticket kvno 2)";
        assert!(f(&gss(other)).contains("another service principal"));
        // GSS_S_FAILURE (13) shares bits with GSS_S_CONTEXT_EXPIRED (12): not "expired".
        assert_eq!(f("odd"), "Kerberos login failed: odd");
    }
}
