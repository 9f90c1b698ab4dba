//! `virtgate web` over SSH or a unix socket: the browser cannot reach the gateway's port, so
//! the command serves the gateway's pages on `http://127.0.0.1:PORT` and passes every request
//! (WebSockets included) over the command's one gateway connection, until Ctrl-C.
//!
//! The connection carries the user's identity (the SSH login), so the local port must not
//! lend it to anyone else on the machine or to another site in the browser:
//! - the printed link carries a one-time ticket of 32 random bytes; its first use sets an
//!   HttpOnly, SameSite=Strict cookie of 32 other random bytes, and every other request
//!   without that cookie is refused (401);
//! - a request with an `Origin` must come from `http://127.0.0.1:PORT` (403 otherwise); a
//!   POST or WebSocket must carry one. The Origin is then rewritten to the gateway's own,
//!   so the gateway's CSRF rule applies as for a browser on its port: POSTs need
//!   `X-Virtgate-CSRF` (the pages take it from `GET /v1/web/session`);
//! - the local cookie never reaches the gateway.
//!
//! A browser WebSocket (HTTP/1.1 `Upgrade: websocket`) becomes an RFC 8441 extended CONNECT
//! (`:protocol websocket`) on the gateway connection; the 101 and its
//! `Sec-WebSocket-Accept` are made here, and the frames pass through unchanged.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::net::TcpListener;

use super::print;
use super::web::Page;
use crate::error::Error;
use crate::session::{Raw, Session};

/// The local cookie's name.
const COOKIE: &str = "virtgate_local";

/// Largest request body passed on (the API's bodies are small JSON).
const MAX_BODY: usize = 1 << 20;

/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Answers to the browser: the gateway's bodies or our own.
type Body = BoxBody<Bytes, h2::Error>;

/// What every local request shares.
struct Local {
    /// The gateway connection.
    session: Session,
    /// The printed link's ticket; taken by its first use.
    ticket: Mutex<Option<String>>,
    /// The cookie value that login gives the browser.
    cookie: String,
    /// `http://127.0.0.1:PORT`, the only Origin accepted.
    origin: String,
}

fn random() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        Error::Output(std::io::Error::other(
            "the system's random generator failed",
        ))
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Serve the pages locally; print the link first and open it unless `print_only`.
pub async fn run(session: Session, page: &Page, print_only: bool) -> Result<(), Error> {
    let addr = "127.0.0.1:0";
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.into(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.into(),
        source,
    })?;
    let ticket = random()?;
    let local = Arc::new(Local {
        session: session.clone(),
        ticket: Mutex::new(Some(ticket.clone())),
        cookie: random()?,
        origin: format!("http://{bound}"),
    });
    let path = page.path();
    let next = percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC);
    let link = format!("{}/ui/login?ticket={ticket}&next={next}", local.origin);
    print(&format!("{link}\n"))?;
    let note =
        "the link works once; the pages are served here through this connection until Ctrl-C";
    if print_only {
        eprintln!("{note}");
    } else {
        match super::web::open(&link) {
            Ok(opener) => eprintln!("opened with {opener}; {note}"),
            Err(why) => eprintln!("{why}: open the link above in your browser; {note}"),
        }
    }
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            e = session.closed() => return Err(e),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Ok((stream, _)) = accepted else { continue };
        let local = local.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let local = local.clone();
                async move { Ok::<_, Infallible>(answer(&local, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn full(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One `key=value` of a query.
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Whether the request carries the local session cookie.
fn has_cookie(local: &Local, req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|kv| kv.trim().split_once('=') == Some((COOKIE, local.cookie.as_str())))
}

async fn answer(local: &Local, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/ui/login" {
        return login(local, &req);
    }
    if !has_cookie(local, &req) {
        return full(
            StatusCode::UNAUTHORIZED,
            "not logged in here: open the link `virtgate web` printed (it works once; run `virtgate web` again for a new one)",
        );
    }
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
    match origin {
        Some(o) if o == local.origin.as_bytes() => {}
        Some(_) => {
            return full(
                StatusCode::FORBIDDEN,
                "this request comes from another site's page; only the pages served here may act",
            )
        }
        None if websocket || req.method() == Method::POST => {
            return full(
                StatusCode::FORBIDDEN,
                "a POST or WebSocket without an Origin header; use the pages in a current browser",
            )
        }
        None => {}
    }
    let result = if websocket {
        upgrade(local, req).await
    } else {
        forward(local, req).await
    };
    result.unwrap_or_else(|e| {
        let hint = e.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default();
        full(
            StatusCode::BAD_GATEWAY,
            &format!("error: {}{hint}", crate::error::chain_text(&e)),
        )
    })
}

/// `/ui/login?ticket=T&next=/ui/...`: the printed link's first use sets the cookie.
fn login(local: &Local, req: &Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    let given = param(query, "ticket").unwrap_or("");
    let mut slot = local.ticket.lock().unwrap_or_else(|p| p.into_inner());
    if given.is_empty() || slot.as_deref() != Some(given) {
        return full(
            StatusCode::FORBIDDEN,
            "this login link is unknown or was used already; run `virtgate web` again for a fresh one",
        );
    }
    *slot = None;
    let next = param(query, "next")
        .map(|n| {
            percent_encoding::percent_decode_str(n)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with("/ui/") && n.is_ascii() && !n.contains("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/ui/".into());
    let mut r = full(StatusCode::SEE_OTHER, "");
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        local.cookie
    );
    for (name, value) in [(header::LOCATION, next), (header::SET_COOKIE, cookie)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

/// Request headers that stay here: hop-by-hop, the local cookie, the local Host and Origin.
fn stays(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::COOKIE,
        header::ORIGIN,
        header::CONNECTION,
        header::UPGRADE,
        header::TRANSFER_ENCODING,
        header::TE,
        header::CONTENT_LENGTH,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_EXTENSIONS,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .contains(name)
}

/// The gateway's request for a browser request: `method`, the same path, query and headers
/// (less [`stays`]), the gateway's own Origin when the browser sent one.
fn outgoing(
    local: &Local,
    method: Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Request<Bytes> {
    let mut out = Request::new(body);
    *out.method_mut() = method;
    *out.uri_mut() = uri.clone();
    for (name, value) in headers {
        if !stays(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    if headers.contains_key(header::ORIGIN) {
        if let Ok(v) = HeaderValue::from_str(&format!("https://{}", local.session.authority())) {
            out.headers_mut().insert(header::ORIGIN, v);
        }
    }
    out
}

async fn forward(local: &Local, req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
    else {
        return Ok(full(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large or broke off",
        ));
    };
    let out = outgoing(local, parts.method, &parts.uri, &parts.headers, bytes);
    let (mut parts, body) = local.session.raw(out).await?.into_parts();
    parts.headers.remove(header::CONNECTION);
    parts.headers.remove(header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A browser WebSocket: extended CONNECT to the gateway, 101 here, then the bytes both ways.
async fn upgrade(local: &Local, mut req: Request<Incoming>) -> Result<Response<Body>, Error> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return Ok(full(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade without Sec-WebSocket-Key",
        ));
    };
    let mut out = outgoing(
        local,
        Method::CONNECT,
        req.uri(),
        req.headers(),
        Bytes::new(),
    );
    out.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (headers, tunnel) = match local.session.raw_tunnel(out).await? {
        Raw::Tunnel(headers, tunnel) => (headers, tunnel),
        Raw::Answer(resp) => {
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, body.boxed()));
        }
    };
    let mut digest = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    digest.update(key.as_bytes());
    digest.update(WS_GUID);
    let accept = STANDARD.encode(digest.finish());
    let protocol = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let browser = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(b) = browser.await else {
            return;
        };
        let _ = tunnel.splice(TokioIo::new(b)).await;
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "");
    *r.body_mut() = Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed();
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(r)
}
