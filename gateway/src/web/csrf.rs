//! CSRF for browser requests: the token (`GET /v1/web/session`) and the rule every unsafe
//! request passes before it is routed ([`check_unsafe`]).
//!
//! The token is an HMAC-SHA256 (ring) under a key made once per gateway process
//! ([`Key`]) of the session id for a cookie session ([`Via`]), or of `cert:USER`
//! (`kerberos:USER`, `unix:USER`) for an identity of the connection itself. The rule: an
//! unsafe request (POST, a WebSocket upgrade or RFC 8441 CONNECT) that carries an `Origin`
//! header or a session cookie must have the gateway's own origin (`https://` + Host or
//! `:authority`), and a POST must carry `X-Virtgate-CSRF` equal to the token (checked in
//! constant time); else 403 `csrf`. Requests without `Origin` and cookie (the CLI, curl)
//! pass unchanged.

use std::sync::OnceLock;

use crate::api::ReqBody;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, HeaderValue, Method, Request, Response};
use ring::hmac;
use ring::rand::SystemRandom;
use virtgate_proto::{AuthMethod, Problem, WebSession};

use super::session::{cookie, internal, Via};
use crate::api::error::{self, ApiError};
use crate::api::{Body, State};
use crate::authn::Identity;

/// The header a browser POST carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-virtgate-csrf";

/// The per-process CSRF key, made on first use (a restart makes every token stale).
#[derive(Default)]
pub struct Key {
    /// The HMAC key.
    key: OnceLock<hmac::Key>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    fn key(&self) -> Result<&hmac::Key, ApiError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let k = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| internal("the system's random generator failed"))?;
        Ok(self.key.get_or_init(|| k))
    }

    /// The CSRF token of `subject` (a session id, or `cert:USER`).
    pub fn token(&self, subject: &str) -> Result<String, ApiError> {
        let tag = hmac::sign(self.key()?, subject.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` is the CSRF token of `subject` (constant time).
    pub fn ok(&self, subject: &str, token: &str) -> Result<bool, ApiError> {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return Ok(false);
        };
        Ok(hmac::verify(self.key()?, subject.as_bytes(), &tag).is_ok())
    }
}

/// What a request's CSRF token is made from: its session, or its other identity.
pub fn csrf_subject(id: &Identity, req: &Request<ReqBody>) -> String {
    match req.extensions().get::<Via>() {
        Some(Via(sid)) => sid.clone(),
        None => match id.method {
            AuthMethod::Certificate => format!("cert:{}", id.user),
            m => format!("{}:{}", m.as_str(), id.user),
        },
    }
}

/// A refused unsafe request from a browser.
pub fn refused(detail: String, hint: &str) -> ApiError {
    Problem::new(403, "csrf", "cross-site request refused")
        .detail(detail)
        .hint(hint)
        .into()
}

/// Whether a request asks for a WebSocket (HTTP/1.1 Upgrade or RFC 8441 CONNECT).
fn is_websocket(req: &Request<ReqBody>) -> bool {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connect = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    upgrade || connect
}

/// `https://` + the request's :authority (HTTP/2) or Host (HTTP/1.1).
pub fn own_origin(req: &Request<ReqBody>) -> Option<String> {
    let host = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_owned(),
    };
    Some(format!("https://{host}"))
}

/// The CSRF rule for every request (see the module doc); safe methods pass.
pub fn check_unsafe(state: &State, id: &Identity, req: &Request<ReqBody>) -> Result<(), ApiError> {
    let websocket = is_websocket(req);
    if req.method() != Method::POST && !websocket {
        return Ok(());
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let with_cookie = cookie(req.headers()).is_some();
    if origin.is_none() && !with_cookie {
        return Ok(());
    }
    let own = own_origin(req).unwrap_or_default();
    match origin {
        Some(o) if o == own => {}
        Some(o) => {
            return Err(refused(
                format!("the request comes from the page of {o}, not from this gateway ({own})"),
                "use the gateway's own pages (open them with `virtgate web`); other sites may not act in your name",
            ))
        }
        None => {
            return Err(refused(
                "a request with a session cookie carries no Origin header".into(),
                "use the gateway's pages in a current browser; scripts and the CLI send no cookie",
            ))
        }
    }
    if websocket || req.uri().path() == "/ui/logout" {
        // a WebSocket needs only its origin; logout checks its form field itself
        return Ok(());
    }
    let subject = csrf_subject(id, req);
    match req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        None => Err(refused(
            format!("{} {} carries no {CSRF_HEADER} header", req.method(), req.uri().path()),
            "the pages send the token of GET /v1/web/session; reload the page",
        )),
        Some(t) if state.registry.web.csrf.ok(&subject, t)? => Ok(()),
        Some(_) => Err(refused(
            format!("the {CSRF_HEADER} header of {} {} is not this session's token", req.method(), req.uri().path()),
            "the pages send the token of GET /v1/web/session; reload the page (a session from before a restart or logout needs a new `virtgate web`)",
        )),
    }
}

/// A 200 with a JSON body and no caching.
pub(super) fn json<T: serde::Serialize>(value: &T) -> Response<Body> {
    let mut r = crate::api::domains::json(value);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /v1/web/session`: the current identity and its CSRF token.
pub async fn session_info(
    state: &State,
    id: &Identity,
    req: &Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(error::method_not_allowed(
            req.method(),
            req.uri().path(),
            &[Method::GET, Method::HEAD],
            "use GET",
        ));
    }
    Ok(json(&WebSession {
        user: id.user.clone(),
        csrf: state.registry.web.csrf.token(&csrf_subject(id, req))?,
        session: req.extensions().get::<Via>().is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_their_subject() {
        let s = Key::default();
        let t = s.token("session-a").unwrap();
        assert!(s.ok("session-a", &t).unwrap());
        assert!(!s.ok("session-b", &t).unwrap());
        assert!(!s.ok("session-a", "forged").unwrap());
        assert!(!s.ok("session-a", "").unwrap());
    }
}
