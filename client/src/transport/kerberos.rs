//! Kerberos single sign-on to `virtgate://host[:port]` (`auth = "kerberos"`): TLS that
//! authenticates the gateway only (never a client certificate), then HTTP Negotiate (RFC 4559)
//! on the connection's first request.
//!
//! GSS-API (MIT krb5 through `libgssapi`) uses the user's default credential cache
//! (`KRB5CCNAME` honoured), mechanism SPNEGO, target `SERVICE@HOST` (host-based service, so
//! the ticket is for `HTTP/host@REALM`), and asks for mutual authentication without
//! delegation. Its calls block (they may talk to the KDC), so they run on tokio's blocking
//! pool. [`KerberosTransport::connect`] makes the first token while TLS connects; the session
//! sends it (see `session.rs`), feeds the gateway's answer to [`Negotiator::step`], and
//! accepts the connection only when [`Negotiator::verified`] holds.
//!
//! Tokens are never logged or printed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue};
use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE};

use super::tls::TlsTransport;
use super::Connected;
use crate::cli::Settings;
use crate::error::{Error, KerberosContext, KerberosFailure};
use crate::url::{GatewayUrl, Host};

/// The HTTP authentication scheme of RFC 4559.
const SCHEME: &str = "Negotiate";

/// A prepared Kerberos transport: TLS config (server authentication only) and the target.
#[derive(Debug)]
pub struct KerberosTransport {
    /// TLS without a client certificate.
    tls: TlsTransport,
    /// The gateway's service name and host, and what error messages need.
    context: KerberosContext,
}

impl KerberosTransport {
    /// Build the TLS side (CA only; `cert` and `key` are ignored, the key is not unlocked)
    /// and the target name.
    pub fn prepare(settings: &Settings) -> Result<KerberosTransport, Error> {
        let GatewayUrl::Tls { host, .. } = &settings.url else {
            return Err(Error::Setting {
                message: format!("{} is not a TLS URL", settings.url),
                hint: "Kerberos login needs a virtgate://HOST[:PORT] URL".into(),
            });
        };
        let service = settings.service.trim();
        if service.is_empty() || service.contains(['@', '/', ' ']) {
            return Err(Error::Setting {
                message: format!("`{}` is not a Kerberos service name", settings.service),
                hint: "`service` in the profile is the first part of the gateway's principal \
                       (HTTP for HTTP/host@REALM); leave it out for HTTP"
                    .into(),
            });
        }
        let (host, host_is_ip) = match host {
            Host::Dns(name) => (name.trim_end_matches('.').to_owned(), false),
            Host::Ip(ip) => (ip.to_string(), true),
        };
        let context = KerberosContext {
            service: service.to_owned(),
            host,
            host_is_ip,
            user: ["USER", "LOGNAME"]
                .iter()
                .find_map(|k| std::env::var(k).ok().filter(|u| !u.is_empty())),
            realm: crate::error::default_realm(),
        };
        Ok(KerberosTransport {
            tls: TlsTransport::prepare(settings)?,
            context,
        })
    }

    /// The TLS side (server authentication only), for `doctor`'s step-by-step connection.
    pub fn tls(&self) -> &TlsTransport {
        &self.tls
    }

    /// The gateway's service and host, and what messages need.
    pub fn context(&self) -> &KerberosContext {
        &self.context
    }

    /// Connect TLS and, at the same time, make the first Negotiate token. A failure to reach
    /// the gateway is reported before a Kerberos failure.
    pub async fn connect(&self) -> Result<Connected, Error> {
        let (tls, first) =
            tokio::join!(self.tls.connect(), Negotiator::start(self.context.clone()));
        let mut connected = tls?;
        let (negotiator, token) = first?;
        connected.negotiation = Some(Negotiation { negotiator, token });
        Ok(connected)
    }
}

/// The login still to be done on a new connection: the first token and its context.
pub struct Negotiation {
    /// The GSS-API context that made `token`.
    pub negotiator: Negotiator,
    /// The token for the first request's `Authorization: Negotiate` header.
    pub token: Vec<u8>,
}

impl std::fmt::Debug for Negotiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiation")
            .field("target", &self.negotiator.target())
            .finish_non_exhaustive()
    }
}

/// A GSS-API initiator context with what its error messages need.
pub struct Negotiator {
    /// The GSS-API context (moved to the blocking pool and back for each step).
    ctx: ClientCtx,
    /// Service, host, user and realm for messages.
    context: KerberosContext,
}

impl Negotiator {
    /// Create the context for `SERVICE@HOST` and make the first token (this is where the
    /// service ticket is fetched from the KDC).
    pub async fn start(context: KerberosContext) -> Result<(Negotiator, Vec<u8>), Error> {
        let target = format!("{}@{}", context.service, context.host);
        let result = tokio::task::spawn_blocking(move || {
            let name = Name::new(target.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
                .map_err(|e| e.to_string())?;
            let mut ctx = ClientCtx::new(
                None,
                name,
                CtxFlags::GSS_C_MUTUAL_FLAG,
                Some(GSS_MECH_SPNEGO),
            );
            // the text is made here: MIT keeps the detailed message per thread
            let token = ctx
                .step(None, None)
                .map_err(|e| with_krb5_detail(e.to_string()))?;
            Ok::<_, String>((ctx, token.map(|t| t.to_vec())))
        })
        .await;
        match result {
            Ok(Ok((ctx, Some(token)))) if !token.is_empty() => {
                tracing::debug!(target = %format!("{}@{}", context.service, context.host),
                    "made the first Negotiate token");
                Ok((Negotiator { ctx, context }, token))
            }
            Ok(Ok(_)) => Err(kerberos(
                KerberosFailure::Other("GSS-API made no initial token".into()),
                &context,
            )),
            Ok(Err(text)) => Err(gss_error(&text, &context, false)),
            Err(join) => Err(kerberos(
                KerberosFailure::Other(format!("the GSS-API call failed: {join}")),
                &context,
            )),
        }
    }

    /// Feed a token from the gateway; returns the next token to send, if the mechanism
    /// wants another leg. Consumes and returns `self` because the call runs on another thread.
    pub async fn step(self, token: Vec<u8>) -> Result<(Negotiator, Option<Vec<u8>>), Error> {
        let Negotiator { mut ctx, context } = self;
        let result = tokio::task::spawn_blocking(move || {
            let next = ctx.step(Some(&token), None);
            (
                ctx,
                next.map(|t| t.map(|b| b.to_vec()))
                    .map_err(|e| e.to_string()),
            )
        })
        .await;
        match result {
            Ok((ctx, Ok(next))) => Ok((Negotiator { ctx, context }, next)),
            Ok((_, Err(text))) => Err(gss_error(&text, &context, true)),
            Err(join) => Err(kerberos(
                KerberosFailure::Other(format!("the GSS-API call failed: {join}")),
                &context,
            )),
        }
    }

    /// Whether the context is complete and the gateway proved its identity (mutual auth).
    /// A context that cannot be inquired is an error: MIT's KDC still issues a service
    /// ticket on a TGT that expired less than the clock skew ago, and the context made with
    /// it has expired by the time it completes ("your Kerberos ticket has expired").
    pub fn verified(&self) -> Result<bool, Error> {
        if !self.ctx.is_complete() {
            return Ok(false);
        }
        match self.ctx.flags() {
            Ok(f) => Ok(f.contains(CtxFlags::GSS_C_MUTUAL_FLAG)),
            Err(e) => Err(gss_error(&e.to_string(), &self.context, false)),
        }
    }

    /// Whether the context needs no more tokens.
    pub fn is_complete(&self) -> bool {
        self.ctx.is_complete()
    }

    /// Service, host, user and realm, for messages.
    pub fn context(&self) -> &KerberosContext {
        &self.context
    }

    /// `SERVICE@HOST`, for messages.
    pub fn target(&self) -> String {
        format!("{}@{}", self.context.service, self.context.host)
    }

    /// An error about this login.
    pub fn failure(&self, failure: KerberosFailure) -> Error {
        kerberos(failure, &self.context)
    }
}

/// SPNEGO reports a missing or expired ticket only as "cannot find mechanisms to negotiate";
/// asking krb5 itself for our credential says which cache it looked in and why it failed
/// (`No Kerberos credentials available (default cache: FILE:/tmp/krb5cc_0)`). Runs on the
/// blocking thread that saw the error, and reads only the local cache.
fn with_krb5_detail(text: String) -> String {
    let detail = OidSet::singleton(GSS_MECH_KRB5)
        .and_then(|mechs| Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs)))
        .err()
        .map(|e| e.to_string());
    match detail {
        Some(d) if !text.contains(&d) => format!("{text}; krb5: {d}"),
        _ => text,
    }
}

fn kerberos(failure: KerberosFailure, context: &KerberosContext) -> Error {
    Error::Kerberos {
        failure,
        context: Box::new(context.clone()),
    }
}

/// A GSS-API error (its text, `MAJOR (MINOR)`) in words; `verifying` says the gateway's
/// token was being checked.
fn gss_error(text: &str, context: &KerberosContext, verifying: bool) -> Error {
    tracing::debug!(gss = %text, verifying, "GSS-API error");
    let failure = match KerberosFailure::from_gss_text(text, context) {
        KerberosFailure::Other(t) if verifying => KerberosFailure::BadMutualAuth(t),
        f => f,
    };
    kerberos(failure, context)
}

/// `Negotiate <base64>` for the `Authorization` header, marked sensitive (HPACK never
/// indexes it, and `Debug` hides it).
pub fn authorization(token: &[u8]) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("{SCHEME} {}", BASE64.encode(token)))
        .unwrap_or_else(|_| HeaderValue::from_static(SCHEME));
    value.set_sensitive(true);
    value
}

/// What the gateway's `WWW-Authenticate` headers say about Negotiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// No Negotiate challenge at all.
    Absent,
    /// `Negotiate` without a token (a request for one, or a refusal).
    Bare,
    /// `Negotiate <token>`, decoded.
    Token(Vec<u8>),
    /// `Negotiate <something that is not base64>`.
    Malformed,
}

/// Find the Negotiate challenge among the `WWW-Authenticate` headers (several headers, or
/// several challenges in one; the scheme is case-insensitive).
pub fn parse_challenge(headers: &HeaderMap) -> Challenge {
    let mut found = Challenge::Absent;
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let part = part.trim();
            let (scheme, rest) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
            if !scheme.eq_ignore_ascii_case(SCHEME) {
                continue;
            }
            let rest = rest.trim();
            if rest.is_empty() {
                if found == Challenge::Absent {
                    found = Challenge::Bare;
                }
                continue;
            }
            return match BASE64.decode(rest) {
                Ok(t) if !t.is_empty() => Challenge::Token(t),
                _ => Challenge::Malformed,
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge(&headers(&[])), Challenge::Absent);
        assert_eq!(
            parse_challenge(&headers(&["Basic realm=\"x\""])),
            Challenge::Absent
        );
        assert_eq!(parse_challenge(&headers(&["Negotiate"])), Challenge::Bare);
        assert_eq!(parse_challenge(&headers(&[" negotiate "])), Challenge::Bare);
        assert_eq!(
            parse_challenge(&headers(&["NEGOTIATE YWJj"])),
            Challenge::Token(b"abc".to_vec())
        );
        assert_eq!(
            parse_challenge(&headers(&["Basic realm=\"x\", Negotiate YWJjZA=="])),
            Challenge::Token(b"abcd".to_vec())
        );
        assert_eq!(
            parse_challenge(&headers(&["Negotiate", "Negotiate YWJj"])),
            Challenge::Token(b"abc".to_vec())
        );
        assert_eq!(
            parse_challenge(&headers(&["Negotiate !!notbase64"])),
            Challenge::Malformed
        );
    }

    #[test]
    fn authorization_header_is_base64_and_sensitive() {
        let v = authorization(b"abc");
        assert_eq!(v.to_str().unwrap(), "Negotiate YWJj");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("YWJj"));
    }
}
