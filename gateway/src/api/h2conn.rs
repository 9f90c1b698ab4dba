//! HTTP/2 connections served on `h2` directly: every virtgate client and browsers over
//! HTTP/2 (HTTP/1.1 stays with hyper, see [`super::serve_connection`]).
//!
//! hyper's HTTP/2 server hides what per-stream flow control needs: it returns a tunnel's
//! receive window as soon as bytes are copied out of the stream, and it sends through a
//! channel to a task of its own, copying every write. Here the accept loop ([`serve`]) hands
//! each request to a task of its own ([`answer`]): the request's body is a
//! [`RecvBody`]; the handler's answer goes out with its body pumped as the window allows
//! ([`pump`]); a 2xx to an extended CONNECT hands h2's two halves of the stream, as a
//! [`Tunnel`] sharing the connection's [`Flow`], to the tunnel task that waits on
//! [`upgrade::Pending`]. The tunnel then moves bytes as they come (`Bytes`, no copy), and
//! returns window only as the backend consumes them, keeping some back from bulk tunnels
//! while an interactive one is busy (`virtgate_tunnel::flow`, the same policy as the
//! client's).
//!
//! What hyper did besides: PINGs after `limits.keepalive_interval_s` of silence
//! ([`keep_alive`]; [`super::liveness`] still judges), a graceful GOAWAY on request,
//! a 16 KiB header list limit, `date` and `content-length` on answers, connection-specific
//! headers stripped, a handler dropped when its client resets the stream.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use virtgate_proto::tuning::{CONNECTION_WINDOW, MAX_FRAME};
use virtgate_tunnel::{Flow, RecvBody, Tunnel};

use super::liveness::Liveness;
use super::upgrade;
use super::{Body, ReqBody, Service};

/// Largest header list a request may bring (hyper's default, which the limits tests pin).
const MAX_HEADER_LIST: u32 = 16 << 10;

/// What one connection is served with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    /// `limits.max_streams_per_connection`.
    pub max_streams: u32,
    /// Receive window per stream (larger on relayed connections).
    pub stream_window: u32,
    /// Silence before a PING.
    pub ping_after: Duration,
}

impl Settings {
    /// h2's send buffer per stream ([`virtgate_tunnel::stream::send_buffer`]).
    fn send_buffer(&self) -> usize {
        virtgate_tunnel::stream::send_buffer(self.stream_window)
    }
}

/// Serve the HTTP/2 connection `io` (its preface not read yet) until the client leaves,
/// or `graceful` fires and the open streams are done (GOAWAY first). `io` is borrowed: the
/// caller lingers on it after h2 is done.
pub(super) async fn serve<IO>(
    io: &mut IO,
    service: Arc<Service>,
    settings: Settings,
    graceful: CancellationToken,
    live: Arc<Liveness>,
) -> Result<(), h2::Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin,
{
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(settings.max_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(settings.send_buffer());
    let mut conn = tokio::select! {
        c = builder.handshake::<_, Bytes>(io) => c?,
        _ = graceful.cancelled() => return Ok(()),
    };
    let flow = Arc::new(Flow::default());
    let pinger = keep_alive(conn.ping_pong(), live, settings.ping_after);
    tokio::pin!(pinger);
    let span = tracing::Span::current();
    let mut stopping = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok((req, respond))) => {
                    let task = answer(req, respond, service.clone(), flow.clone(), settings);
                    tokio::spawn(task.instrument(span.clone()));
                }
            },
            _ = graceful.cancelled(), if !stopping => {
                stopping = true;
                conn.graceful_shutdown();
            }
            () = &mut pinger => {}
        }
    }
}

/// PING the client after `after` without a byte from it (it answers within a round trip;
/// [`Liveness::dead`] gives the connection up when it does not). Never returns.
async fn keep_alive(ping_pong: Option<h2::PingPong>, live: Arc<Liveness>, after: Duration) {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        let silent = live.silent_for();
        if silent < after {
            tokio::time::sleep(after - silent).await;
            continue;
        }
        // the answer (or a refusal: a PING still out) is not the point, the bytes are
        let sent = tokio::time::timeout(after, ping_pong.ping(h2::Ping::opaque())).await;
        if !matches!(sent, Ok(Ok(_))) {
            tokio::time::sleep(after).await;
        }
    }
}

/// Answer one request: the handler runs until it answers (or the client resets the stream),
/// then the answer goes out: a body pumped, or a tunnel handed over.
async fn answer(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    service: Arc<Service>,
    flow: Arc<Flow>,
    settings: Settings,
) {
    let (mut parts, recv) = req.into_parts();
    let head_only = parts.method == Method::HEAD;
    // hyper's name for `:protocol`, which the handlers look for
    if let Some(p) = parts.extensions.remove::<h2::ext::Protocol>() {
        parts
            .extensions
            .insert(hyper::ext::Protocol::from(p.as_str()));
    }
    let (body, tunnel) = if parts.method == Method::CONNECT {
        let (tx, rx) = oneshot::channel();
        parts.extensions.insert(upgrade::Pending::new(rx));
        (ReqBody::default(), Some((tx, recv)))
    } else {
        let body = RecvBody::new(recv).map_err(std::io::Error::other).boxed();
        (body, None)
    };
    let handled = service.call(Request::from_parts(parts, body));
    let resp = tokio::select! {
        r = handled => r,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => {
            tracing::debug!("the client reset the stream before its answer");
            return;
        }
    };
    let (mut head, body) = resp.into_parts();
    strip_connection_headers(&mut head.headers);
    head.headers
        .entry(header::DATE)
        .or_insert_with(|| http_date(SystemTime::now()));
    if let Some((tx, recv)) = tunnel {
        if head.status.is_success() {
            head.headers.remove(header::CONTENT_LENGTH);
            let send = match respond.send_response(Response::from_parts(head, ()), false) {
                Ok(s) => s,
                Err(e) => return tracing::debug!(error = %e, "cannot answer the tunnel"),
            };
            let t = Tunnel::new(
                send,
                recv,
                flow,
                settings.send_buffer(),
                settings.stream_window,
            );
            // nobody waiting (the handler kept no tunnel): dropping it resets the stream
            let _ = tx.send(t);
            return;
        }
    }
    let no_body = head_only || body.is_end_stream() || !may_have_body(head.status);
    if let Some(len) = body.size_hint().exact() {
        if may_have_body(head.status) && !head.headers.contains_key(header::CONTENT_LENGTH) {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    match respond.send_response(Response::from_parts(head, ()), no_body) {
        Ok(send) if !no_body => {
            if let Err(e) = pump(send, body).await {
                tracing::debug!(error = %e, "the answer's body broke off");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot answer"),
    }
}

/// Whether an answer with `status` may carry a body at all.
fn may_have_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Send `body` as the client's window allows, until it ends or the client resets the stream
/// (an event feed the client left: the body is dropped).
async fn pump(mut send: h2::SendStream<Bytes>, mut body: Body) -> Result<(), h2::Error> {
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            r = poll_fn(|cx| send.poll_reset(cx)) => {
                tracing::debug!(reason = ?r.ok(), "the client left the answer");
                return Ok(());
            }
        };
        let frame = match frame {
            None => return send.send_data(Bytes::new(), true),
            Some(Ok(f)) => f,
            Some(Err(never)) => match never {},
        };
        match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let room = match send.capacity() {
                        0 => match poll_fn(|cx| send.poll_capacity(cx)).await {
                            Some(r) => r?,
                            None => return Err(h2::Error::from(h2::Reason::STREAM_CLOSED)),
                        },
                        n => n,
                    };
                    if room > 0 {
                        send.send_data(data.split_to(room.min(data.len())), false)?;
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return send.send_trailers(trailers);
                }
            }
        }
    }
}

/// Headers HTTP/2 forbids in an answer (RFC 9113 §8.2.2); h2 refuses an answer with them.
fn strip_connection_headers(h: &mut http::HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(name);
    }
}

/// `t` as an HTTP date (the `date` header the client's `doctor` compares clocks with).
fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::try_from(httpdate::fmt_http_date(t))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}
