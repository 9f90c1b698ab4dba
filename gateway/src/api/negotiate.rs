//! Who is on a connection: known at once (certificate, unix peer) or after an HTTP Negotiate
//! login (RFC 4559) on a TLS connection that came without a client certificate.
//!
//! A [`ConnAuth::Pending`] connection answers 401 `authentication-required` (bare
//! `WWW-Authenticate: Negotiate`) until a request carries `Authorization: Negotiate <token>`.
//! The token goes to the [`Acceptor`] on a blocking thread; once the context completes, the
//! WHOLE connection is bound to the principal (every later request and tunnel, whatever its
//! `Authorization` header), and the authenticating request's response carries the
//! mutual-authentication token. A multi-leg mechanism gets 401 with
//! `WWW-Authenticate: Negotiate <token>` and keeps its context for the next request. A
//! refused token answers 401 `kerberos-failed`; after [`MAX_FAILURES`] the connection is
//! closed, and one that has not logged in within the handshake timeout is closed too.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue};
use libgssapi::context::ServerCtx;
use tokio_util::sync::CancellationToken;
use virtgate_proto::AuthMethod;

use super::error::{self, ApiError};
use super::State;
use crate::authn::kerberos::{Acceptor, Step};
use crate::authn::Identity;

/// Refused tokens per connection before it is closed.
pub const MAX_FAILURES: u32 = 3;

/// A decoded Negotiate token larger than this is refused (Kerberos tokens with a large PAC
/// stay well under it).
const MAX_TOKEN_BYTES: usize = 64 << 10;

/// How a connection's peer is (or will be) known.
#[derive(Debug)]
pub enum ConnAuth {
    /// Authenticated before HTTP started (client certificate, unix peer uid).
    Known(Arc<Identity>),
    /// TLS without a client certificate: waits for a Negotiate login.
    Pending(Arc<Pending>),
}

/// A certificate-less TLS connection's Negotiate state, shared by all its requests.
#[derive(Debug)]
pub struct Pending {
    /// The gateway's acceptor; none without `[kerberos]` (a browser with a session cookie).
    acceptor: Option<Arc<Acceptor>>,
    /// `ip:port`, for the identity and the log.
    peer: String,
    /// Set once, when a context completes; from then on the connection's identity.
    identity: OnceLock<Arc<Identity>>,
    /// A context waiting for the next leg (multi-leg mechanisms); the lock also serialises
    /// concurrent logins on one HTTP/2 connection.
    ctx: tokio::sync::Mutex<Option<ServerCtx>>,
    /// Refused tokens so far.
    failures: AtomicU32,
    /// Set once a request carried a valid session cookie: the connection is a browser's,
    /// logged in per request, and is not closed for want of a Kerberos login.
    web: AtomicBool,
    /// Fired to close the connection (too many failures).
    close: CancellationToken,
    /// Its place among the pending connections ([`crate::pending`]), given back at login
    /// (or the first valid session cookie).
    slot: std::sync::Mutex<Option<crate::pending::Slot>>,
    /// Fires when the pending budget sheds this connection before it logged in.
    shed: CancellationToken,
    /// Its place in the user's `limits.max_connections_per_user`, from its login on.
    quota: OnceLock<crate::quota::Held>,
}

/// Why an `Authorization: Negotiate` header gives no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// `Negotiate` with nothing after it.
    #[error("the Negotiate header carries no token")]
    Empty,
    /// Not base64.
    #[error("the Negotiate token is not valid base64")]
    NotBase64,
    /// Over 64 KiB once decoded.
    #[error("the Negotiate token is too large ({0} bytes)")]
    TooLarge(usize),
}

/// The token of the first `Authorization: Negotiate <base64>` header, `None` when the
/// request has no Negotiate authorization (no header, or another scheme such as Basic).
pub fn negotiate_token(headers: &HeaderMap) -> Option<Result<Vec<u8>, TokenError>> {
    headers.get_all(header::AUTHORIZATION).iter().find_map(|v| {
        let text = v.to_str().ok()?.trim();
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("Negotiate") {
            return None;
        }
        let b64 = rest.trim();
        if b64.is_empty() {
            return Some(Err(TokenError::Empty));
        }
        if b64.len() > MAX_TOKEN_BYTES / 3 * 4 + 4 {
            return Some(Err(TokenError::TooLarge(b64.len() / 4 * 3)));
        }
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| TokenError::NotBase64),
        )
    })
}

/// `Negotiate <base64 token>` as a header value.
pub fn negotiate_header(token: &[u8]) -> Option<HeaderValue> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    HeaderValue::from_str(&format!("Negotiate {b64}")).ok()
}

impl ConnAuth {
    /// A connection that must log in with Negotiate.
    /// `slot`: its place among the pending connections, kept until it logs in.
    pub fn pending(
        acceptor: Option<Arc<Acceptor>>,
        peer: String,
        slot: Option<crate::pending::Slot>,
    ) -> ConnAuth {
        let shed = slot.as_ref().map(|s| s.shed.clone()).unwrap_or_default();
        ConnAuth::Pending(Arc::new(Pending {
            acceptor,
            peer,
            identity: OnceLock::new(),
            ctx: tokio::sync::Mutex::new(None),
            failures: AtomicU32::new(0),
            web: AtomicBool::new(false),
            close: CancellationToken::new(),
            slot: std::sync::Mutex::new(slot),
            shed,
            quota: OnceLock::new(),
        }))
    }

    /// The identity for a request, logging in with its Negotiate token when the connection
    /// is still pending. `Ok` carries the mutual-authentication header for the response of
    /// the request that completed the login.
    pub async fn identity(
        &self,
        state: &State,
        headers: &HeaderMap,
    ) -> Result<(Arc<Identity>, Option<HeaderValue>), ApiError> {
        match self {
            ConnAuth::Known(id) => Ok((id.clone(), None)),
            ConnAuth::Pending(p) => p.identity(state, headers).await,
        }
    }

    /// The identity the connection itself carries (certificate, unix peer, a completed
    /// Kerberos login), if any: it wins over a session cookie.
    pub fn bound(&self) -> Option<Arc<Identity>> {
        match self {
            ConnAuth::Known(id) => Some(id.clone()),
            ConnAuth::Pending(p) => p.identity.get().cloned(),
        }
    }

    /// A request of this connection carried a valid session cookie (keeps a certificate-less
    /// connection open past the login deadline).
    pub fn note_session(&self) {
        if let ConnAuth::Pending(p) = self {
            p.web.store(true, Relaxed);
            p.leave_budget();
        }
    }

    /// Resolves when the connection must close: too many refused tokens, or no login within
    /// `deadline`. Never resolves for connections authenticated otherwise.
    pub async fn must_close(&self, deadline: Duration) {
        let ConnAuth::Pending(p) = self else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = p.close.cancelled() => {}
            _ = p.shed.cancelled() => {
                tracing::info!(peer = %p.peer, "no login yet and the pending budget is full (limits.max_pending_handshakes): shed for a newer connection");
            }
            _ = tokio::time::sleep(deadline) => {
                if p.identity.get().is_some() || p.web.load(Relaxed) {
                    return std::future::pending().await;
                }
                tracing::info!(peer = %p.peer, timeout_s = deadline.as_secs(), "no Kerberos login in time; closing");
            }
        }
    }
}

impl Pending {
    async fn identity(
        &self,
        state: &State,
        headers: &HeaderMap,
    ) -> Result<(Arc<Identity>, Option<HeaderValue>), ApiError> {
        if let Some(id) = self.identity.get() {
            return Ok((id.clone(), None));
        }
        let mut ctx_slot = self.ctx.lock().await;
        // Another request on this connection may have logged in while we waited.
        if let Some(id) = self.identity.get() {
            return Ok((id.clone(), None));
        }
        let Some(acceptor) = self.acceptor.clone() else {
            return Err(crate::web::session::login_required());
        };
        let token = match negotiate_token(headers) {
            None => return Err(error::authentication_required()),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                *ctx_slot = None;
                return Err(self.refuse(state, e.to_string(), "", RETRY));
            }
        };
        let mut ctx = ctx_slot.take().unwrap_or_else(|| acceptor.new_context());
        let stepper = acceptor.clone();
        let stepped = tokio::task::spawn_blocking(move || {
            let step = stepper.step(&mut ctx, &token);
            (ctx, step)
        })
        .await;
        let (ctx, step) = match stepped {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "the Kerberos acceptor task failed");
                return Err(self.refuse(
                    state,
                    "internal error in the Kerberos acceptor".into(),
                    "",
                    RETRY,
                ));
            }
        };
        match step {
            Step::Complete { principal, token } => {
                let user = acceptor.user_for(&principal);
                let id = Arc::new(Identity {
                    groups: crate::authn::groups::groups_for_user(&user),
                    user,
                    method: AuthMethod::Kerberos,
                    principal: Some(principal),
                    peer: Some(self.peer.clone()),
                });
                // over the user's quota: refused (429 naming it), and the connection closes
                let quota = state
                    .quota(&id.user, crate::quota::Kind::Connections)
                    .inspect_err(|_| self.close.cancel())?;
                let _ = self.quota.set(quota);
                self.leave_budget();
                let id = self.identity.get_or_init(|| id).clone();
                state
                    .metrics
                    .connections_authenticated
                    .fetch_add(1, Relaxed);
                tracing::Span::current().record("user", tracing::field::display(&id.user));
                tracing::info!(method = %id.method, principal = id.principal.as_deref(), "authenticated");
                Ok((id, token.as_deref().and_then(negotiate_header)))
            }
            Step::Continue { token } => {
                *ctx_slot = Some(ctx);
                let mut e = error::authentication_required();
                e.problem.detail = Some("the Kerberos exchange needs another round trip".into());
                e.www_authenticate = negotiate_header(&token);
                Err(e)
            }
            Step::Failed(f) => Err(self.refuse(state, f.detail, &f.gss, &f.hint)),
        }
    }

    /// Logged in: no longer pending, its place in the budget is free for others.
    fn leave_budget(&self) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Count and log a refused token; close the connection after [`MAX_FAILURES`].
    fn refuse(&self, state: &State, detail: String, gss: &str, hint: &str) -> ApiError {
        state
            .metrics
            .auth_failed(crate::metrics::AuthFailure::Kerberos);
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        tracing::info!(peer = %self.peer, reason = %detail, gss, attempt = n, "Kerberos login refused");
        if n >= MAX_FAILURES {
            tracing::info!(peer = %self.peer, attempts = n, "too many refused Kerberos logins; closing");
            self.close.cancel();
        }
        error::kerberos_failed(detail, hint)
    }
}

const RETRY: &str = "run kinit, then retry; the gateway log has details";

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn negotiate_headers_are_parsed() {
        assert_eq!(negotiate_token(&headers(&[])), None);
        assert_eq!(negotiate_token(&headers(&["Basic YTpi"])), None);
        assert_eq!(
            negotiate_token(&headers(&["Negotiate YWJj"])),
            Some(Ok(b"abc".to_vec()))
        );
        assert_eq!(
            negotiate_token(&headers(&["Basic YTpi", "negotiate   YWJj  "])),
            Some(Ok(b"abc".to_vec()))
        );
        assert_eq!(
            negotiate_token(&headers(&["Negotiate"])),
            Some(Err(TokenError::Empty))
        );
        assert_eq!(
            negotiate_token(&headers(&["Negotiate not*base64"])),
            Some(Err(TokenError::NotBase64))
        );
        let huge = format!("Negotiate {}", "A".repeat(100_000));
        assert!(matches!(
            negotiate_token(&headers(&[&huge])),
            Some(Err(TokenError::TooLarge(_)))
        ));
    }

    #[test]
    fn tokens_round_trip_through_the_header() {
        let v = negotiate_header(&[0x60, 0x81, 0xff]).unwrap();
        assert_eq!(v, "Negotiate YIH/");
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v);
        assert_eq!(negotiate_token(&h), Some(Ok(vec![0x60, 0x81, 0xff])));
    }
}
