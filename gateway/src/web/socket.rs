//! WebSocket consoles for browsers: `GET /v1/domains/{name}/vnc` and `/serial` with
//! `Upgrade: websocket` on HTTP/1.1 (RFC 6455), or HTTP/2 extended CONNECT with
//! `:protocol = websocket` (RFC 8441), for noVNC and xterm.js.
//!
//! A WebSocket console is the CLI's byte tunnel ([`tunnel`]) in frames: the same
//! authorization, backend console, connection registration (reload/revocation and the
//! connection's end close it), metrics by kind and `tunnel` span ([`tunnel::console`],
//! [`tunnel::run_tunnel`]); only the handshake and the relay ([`relay`]) are its own.
//!
//! Order of checks, so a browser gets one problem with a hint before anything opens: the
//! handshake headers (400, 426), the `Origin` (403: absent is fine, since only browsers send
//! it and they cannot forge it; present it must be this gateway's `https://` + Host or
//! `:authority`, so a page elsewhere cannot drive a console with the user's certificate or
//! cookie), then authorization (404/403 like the API) and the backend (503). Then 101
//! (HTTP/1.1, with `Sec-WebSocket-Accept` from tungstenite's `derive_accept_key`) or 200
//! (HTTP/2, no key), with `Sec-WebSocket-Protocol: binary` when the browser offers it
//! (noVNC does).
//!
//! Framing is tokio-tungstenite's over the answered stream ([`crate::api::upgrade`]: an
//! HTTP/2 tunnel, or hyper's upgraded HTTP/1.1 connection). Browser → console: binary
//! and text messages (xterm.js sends text) become bytes; console → browser: what one read
//! of up to [`READ_BUFFER`] returns becomes one binary message. tungstenite answers pings
//! and close frames; the console's end of file becomes a close frame (1000), after which
//! the browser's reply is awaited for at most [`CLOSE_WAIT`]. Messages are capped at
//! [`MAX_MESSAGE`]: a bigger one gets a close frame 1009 and ends the console.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::api::ReqBody;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use virtgate_proto::{ApiPath, Problem, TunnelKind};

use crate::api::error::{self, ApiError};
use crate::api::tunnel;
use crate::api::{Body, ConnCtx, State};
use crate::authn::Identity;
use crate::backend::BoxedStream;

/// The `:protocol` of an HTTP/2 WebSocket (RFC 8441) and the `Upgrade` token of HTTP/1.1.
pub const PROTOCOL: &str = "websocket";
/// The subprotocol noVNC asks for: raw bytes in binary messages.
const SUBPROTOCOL: &str = "binary";
/// The only WebSocket version (RFC 6455).
const VERSION: &str = "13";
/// Largest message (and frame) a browser may send: far above what a keyboard, a mouse or
/// a pasted line makes, small enough that nobody makes the gateway buffer much.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Most console bytes one binary message carries.
pub const READ_BUFFER: usize = 64 * 1024;
/// How long the browser has to answer our close frame after the console ended.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A WebSocket handshake, as the request asked for it.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// HTTP/1.1 `Upgrade: websocket`.
    Http1 {
        /// `Sec-WebSocket-Key`, from which the accept key is derived (absent: 400).
        key: Option<HeaderValue>,
    },
    /// HTTP/2 extended CONNECT with `:protocol = websocket`.
    Http2,
}

/// Whether `req` asks for a WebSocket (then [`open`] answers it, whatever its path).
pub fn requested(req: &Request<ReqBody>) -> Option<Handshake> {
    if req.method() == Method::CONNECT {
        return match req.extensions().get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str().eq_ignore_ascii_case(PROTOCOL) => Some(Handshake::Http2),
            _ => None,
        };
    }
    let h = req.headers();
    let upgrade =
        has_token(h, header::CONNECTION, "upgrade") && has_token(h, header::UPGRADE, PROTOCOL);
    (upgrade && req.version() <= Version::HTTP_11).then(|| Handshake::Http1 {
        key: h.get(header::SEC_WEBSOCKET_KEY).cloned(),
    })
}

/// Whether the comma-separated header `name` lists `token` (case-insensitively).
fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answer a WebSocket request for `path`: check the handshake and the origin, open the
/// console like a tunnel, and relay it in frames once the stream arrives.
pub async fn open(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
    path: ApiPath,
    handshake: Handshake,
) -> Result<Response<Body>, ApiError> {
    let (name, kind) = match path {
        ApiPath::Tunnel {
            domain: Some(name),
            kind: kind @ (TunnelKind::Vnc | TunnelKind::Serial),
        } => (name, kind),
        _ => {
            return Err(Problem::new(404, "not-found", "no WebSocket here")
                .detail(format!("{} has no WebSocket", req.uri().path()))
                .hint("WebSocket consoles are /v1/domains/NAME/vnc and /v1/domains/NAME/serial")
                .into())
        }
    };
    let accept = match check_handshake(req, &handshake)? {
        Ok(accept) => accept,
        Err(refusal) => return Ok(*refusal),
    };
    check_origin(req)?;
    let subprotocol = offers_binary(req.headers());
    let c = tunnel::console(state, id, conn, &name, kind).await?;
    let backend = c.backend;
    let mut r = tunnel::run_tunnel(state, req, c.span, c.guard, kind, move |client| {
        relay(client, backend)
    });
    // HTTP/2: the 200 of `run_tunnel` accepts (RFC 8441 §5); HTTP/1.1 switches protocols
    if let Some(accept) = accept {
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if subprotocol {
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(r)
}

/// Version 13 and, on HTTP/1.1, a key: the accept key to answer (None on HTTP/2). Another
/// version is refused with 426 and the version we speak (RFC 6455 §4.4), which needs a
/// header a problem does not carry: that refusal is the inner `Err`, a whole response.
#[allow(clippy::type_complexity)]
fn check_handshake(
    req: &Request<ReqBody>,
    handshake: &Handshake,
) -> Result<Result<Option<HeaderValue>, Box<Response<Body>>>, ApiError> {
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.map(|v| v.as_bytes()) != Some(VERSION.as_bytes()) {
        let problem = Problem::new(426, "websocket-version", "unsupported WebSocket version")
            .detail(format!(
                "Sec-WebSocket-Version is {}; the gateway speaks 13 (RFC 6455)",
                version
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!("`{v}`"))
                    .unwrap_or_else(|| "missing".into())
            ))
            .hint("use a current browser or WebSocket library (version 13)");
        tracing::info!(path = %req.uri().path(), status = 426, kind = problem.kind_name(), "request refused");
        let mut r = error::response(&problem);
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(VERSION),
        );
        return Ok(Err(Box::new(r)));
    }
    match handshake {
        Handshake::Http2 => Ok(Ok(None)),
        Handshake::Http1 { key: Some(key) } => {
            // base64 only: always a valid header value
            Ok(Ok(HeaderValue::from_str(&derive_accept_key(
                key.as_bytes(),
            ))
            .ok()))
        }
        Handshake::Http1 { key: None } => Err(error::bad_request(
            "a WebSocket upgrade without Sec-WebSocket-Key",
            "the client's WebSocket handshake is incomplete (RFC 6455 §4.1)",
        )),
    }
}

/// Absent `Origin`: fine (not a browser). Present: it must be `https://` + the request's
/// Host (HTTP/1.1) or `:authority` (HTTP/2); the default port is the same origin with or
/// without `:443`.
fn check_origin(req: &Request<ReqBody>) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let origin = origin.to_str().unwrap_or("(not text)");
    if let Some(host) = &host {
        if same_origin(origin, host) {
            return Ok(());
        }
    }
    Err(Problem::new(403, "cross-origin", "WebSocket from another origin")
        .detail(format!(
            "the page asking for this console is from `{origin}`, not from this gateway (https://{})",
            host.as_deref().unwrap_or("(no Host)")
        ))
        .hint("open the console from the gateway's own pages (https://GATEWAY/ui/); other sites may not use your certificate or session")
        .into())
}

/// `origin` is `https://` + `host`, ignoring case and a default `:443`.
fn same_origin(origin: &str, host: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        s.strip_suffix(":443").map(str::to_owned).unwrap_or(s)
    };
    match origin.trim().get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https://") => {
            norm(&origin.trim()[8..]) == norm(host)
        }
        _ => false,
    }
}

/// Whether the client lists subprotocol `binary` in `Sec-WebSocket-Protocol`.
fn offers_binary(h: &HeaderMap) -> bool {
    has_token(h, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
}

/// Relay between the WebSocket on `client` and the console `backend` until the browser
/// closes or leaves (then the console is dropped), or the console ends (then a close frame,
/// and the browser's reply awaited): the bytes carried up (to the console) and down.
async fn relay(
    client: crate::api::upgrade::Upgraded,
    backend: BoxedStream,
) -> std::io::Result<(u64, u64)> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await;
    let (sink, mut stream) = ws.split();
    // both directions send: console bytes, and a close frame for a message too big
    let sink = tokio::sync::Mutex::new(sink);
    let (mut from_console, mut to_console) = tokio::io::split(backend);
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    // browser → console; ends when the browser closes or leaves (tungstenite answers its
    // pings and its close frame while we read)
    let up = async {
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(WsError::Capacity(e)) => {
                    // tell the browser why (1009) before the connection goes
                    let close = CloseFrame {
                        code: CloseCode::Size,
                        reason: format!("messages are {MAX_MESSAGE} bytes at most").into(),
                    };
                    let _ = sink.lock().await.send(Message::Close(Some(close))).await;
                    return Err(std::io::Error::other(format!(
                        "the browser sent too big a message: {e}"
                    )));
                }
                Err(e) => return Err(ws_error(e)),
            };
            let data: Bytes = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::from(t),
                Message::Close(_) => {
                    tracing::debug!("the browser closed the WebSocket");
                    continue;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            to_console.write_all(&data).await?;
            to_console.flush().await?;
            up_bytes.fetch_add(data.len() as u64, Relaxed);
        }
        std::io::Result::Ok(())
    };
    // console → browser; ends with a close frame when the console ends
    let down = async {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = from_console.read(&mut buf).await?;
            if n == 0 {
                tracing::debug!("the console ended; closing the WebSocket");
                let close = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "console closed".into(),
                };
                return sink
                    .lock()
                    .await
                    .send(Message::Close(Some(close)))
                    .await
                    .map_err(ws_error);
            }
            sink.lock()
                .await
                .send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
                .await
                .map_err(ws_error)?;
            down_bytes.fetch_add(n as u64, Relaxed);
        }
    };
    tokio::pin!(up, down);
    let result = tokio::select! {
        r = &mut up => r,
        r = &mut down => match r {
            Ok(()) => match tokio::time::timeout(CLOSE_WAIT, &mut up).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(close_wait_s = CLOSE_WAIT.as_secs(), "the browser did not answer the close frame");
                    Ok(())
                }
            },
            Err(e) => Err(e),
        },
    };
    result.map(|()| (up_bytes.load(Relaxed), down_bytes.load(Relaxed)))
}

/// A tungstenite error as an I/O error (its source stays reachable, so a client that
/// left is told from a real failure); a normal close is no error.
fn ws_error(e: WsError) -> std::io::Error {
    match e {
        WsError::Io(e) => e,
        e => std::io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_must_be_the_gateway() {
        assert!(same_origin("https://gw.example", "gw.example"));
        assert!(same_origin("https://GW.example:443", "gw.example"));
        assert!(same_origin("https://gw.example:8443", "gw.example:8443"));
        assert!(!same_origin("http://gw.example", "gw.example"));
        assert!(!same_origin("https://evil.example", "gw.example"));
        assert!(!same_origin("https://gw.example:8443", "gw.example"));
        assert!(!same_origin("null", "gw.example"));
    }
}
