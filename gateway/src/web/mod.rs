//! The browser console: `/` and everything under `/ui/`, on the API's own listeners.
//!
//! [`route`] is called by [`crate::api`]'s router before it parses an API path, with the
//! identity already resolved exactly as for the API (a client certificate, a Kerberos
//! login; no identity is a 401 before this is reached). The pages ([`pages`]) are plain
//! HTML whose scripts ([`assets`], embedded) call the JSON API and open the consoles'
//! WebSockets under `/v1/`. Every answer for these paths, refusals included, carries
//! [`SECURITY_HEADERS`] (set by [`secure`] in `api::handle`):
//! a strict Content-Security-Policy (only this origin's scripts, styles and sockets, no
//! framing), `nosniff` and no referrer.

pub mod assets;
// C: the CSRF token and rule (browser sessions)
pub mod csrf;
pub mod pages;
pub mod socket;
// C (browser sessions): tickets, cookies, CSRF; `/ui/login` is answered before the identity
// is resolved (api::handle), `/ui/logout` in route below.
pub mod session;

use std::sync::Arc;

use crate::api::ReqBody;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use crate::api::error::{self, ApiError};
use crate::api::{Body, State};
use crate::authn::Identity;

/// The Content-Security-Policy of every `/ui` answer (the contract in docs/DESIGN.md,
/// "Browser console"): scripts, styles and images from this origin only (screenshots are
/// `/v1/…` PNGs; noVNC draws cursors from `data:`/`blob:`), WebSockets to this origin.
pub const CSP: &str = "default-src 'self'; connect-src 'self' wss: ; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Headers set on every answer under `/` and `/ui/`.
pub const SECURITY_HEADERS: [(HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// Whether `path` belongs to the browser console rather than the API.
pub fn is_web(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Set [`SECURITY_HEADERS`] on an answer (`api::handle` does it for every request
/// [`is_web`] accepts, refusals included).
pub fn secure<B>(resp: &mut Response<B>) {
    for (name, value) in SECURITY_HEADERS {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
}

/// Answer a request for `/` or `/ui/…` (see [`is_web`]); the caller adds [`secure`]'s
/// headers.
pub async fn route(
    state: &Arc<State>,
    id: &Identity,
    req: &mut Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    // `/ui/logout` (POST) belongs to the browser sessions (session.rs) and takes its own
    // method, so it comes before the GET-only check below (`/ui/login` needs no identity:
    // api::handle answers it before this is reached).
    if path == "/ui/logout" {
        return session::logout(state, id, req).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(error::method_not_allowed(
            &method,
            &path,
            &[Method::GET, Method::HEAD],
            "the pages are read with GET; actions are POST /v1/domains/NAME/ACTION",
        ));
    }
    match path.as_str() {
        "/" | "/ui" => Ok(redirect("/ui/")),
        "/ui/" => Ok(pages::list()),
        _ => {
            let rest = path.strip_prefix("/ui/").unwrap_or_default();
            if let Some(file) = rest.strip_prefix("assets/") {
                assets::serve(file, req.headers())
            } else if let Some(name) = rest.strip_prefix("vnc/") {
                pages::console(state, id, name, pages::Console::Vnc)
            } else if let Some(name) = rest.strip_prefix("serial/") {
                pages::console(state, id, name, pages::Console::Serial)
            } else {
                Err(not_found(&path))
            }
        }
    }
}

/// 303 See Other to `to` (a path on this gateway).
pub fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(error::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

/// No page at this path.
fn not_found(path: &str) -> ApiError {
    virtgate_proto::Problem::new(404, "not-found", "no such page")
        .detail(format!("nothing at {path}"))
        .hint("the browser console is at /ui/: the domain list, /ui/vnc/NAME and /ui/serial/NAME")
        .into()
}
