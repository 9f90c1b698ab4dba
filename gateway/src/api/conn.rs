//! One connection, from its first byte to its end: [`serve_connection`] tells HTTP/2 from
//! HTTP/1.1 ([`sniff`](super::sniff)), serves HTTP/2 on h2 ([`h2conn`](super::h2conn)) and
//! HTTP/1.1 on hyper (browsers without h2, WebSockets over HTTP/1.1), and ends the
//! connection when its client stops answering, its right is taken back, it stays idle, the
//! gateway stops, or it was only let in to be told which limit it hit. Every request goes
//! through one [`Service`] per connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use virtgate_proto::{Problem, PROTOCOL_HEADER, PROTOCOL_VERSION};

use super::error::ApiError;
use super::{descriptors, h2conn, liveness, sniff, Body, ConnAuth, ConnCtx, ReqBody, State};
use crate::config::Limits;
use crate::sessions::ConnGuard;

/// `limits.keepalive_interval_s` and `limits.keepalive_timeout_s`.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    /// Silence before a PING.
    interval: Duration,
    /// How long its answer may take.
    timeout: Duration,
}

impl Keepalive {
    fn of(limits: &Limits) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(limits.keepalive_interval_s),
            timeout: Duration::from_secs(limits.keepalive_timeout_s),
        }
    }

    /// The longest a live client stays silent: PINGed after `interval`, it answers within
    /// `timeout`.
    fn bound(&self) -> Duration {
        self.interval + self.timeout
    }
}

/// What answers the requests of one connection.
pub(super) struct Service {
    /// Shared by every connection.
    state: Arc<State>,
    /// Who the peer is, or its pending Negotiate login.
    auth: Arc<ConnAuth>,
    /// This connection's streams, descriptors and liveness.
    conn: Arc<ConnCtx>,
    /// The limit the connection is over: every request is answered with it.
    refused: Option<Problem>,
    /// Fired once a refused connection has been told (it then closes).
    answered: CancellationToken,
}

impl Service {
    /// The answer to `req`. (Boxed: the handlers' future is too deep for the compiler to
    /// prove `Send` for every lifetime through a generic connection task.)
    pub(super) fn call(
        &self,
        req: Request<ReqBody>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + 'static>> {
        if let Some(p) = &self.refused {
            // over a limit: say which; once told, the connection closes
            self.answered.cancel();
            let mut r = ApiError::from(p.clone()).into_response();
            r.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
            return Box::pin(std::future::ready(r));
        }
        Box::pin(super::handle(
            self.state.clone(),
            self.auth.clone(),
            self.conn.clone(),
            req,
        ))
    }
}

/// Serve HTTP (h2 or HTTP/1.1, decided by the preface ALPN led the client to send) on a
/// connection until the peer leaves or `shutdown.begin` fires (then GOAWAY/close and let open
/// requests finish, until `shutdown.force`). A connection still waiting for its Negotiate
/// login is closed the same way after too many refused tokens or when
/// `limits.handshake_timeout_s` pass without a login.
///
/// `stream_window`: HTTP/2 receive window per stream (`virtgate_proto::tuning`: a relayed
/// connection — SSH, through the unix listener — needs more in flight than a direct one).
///
/// `refused`: the connection is over a limit (`limits.max_connections`, or its user's
/// `max_connections_per_user`): every request is answered with that problem, and the
/// connection closes after the first answer, so the client learns which limit it hit.
pub async fn serve_connection<IO>(
    io: IO,
    state: Arc<State>,
    auth: ConnAuth,
    registered: ConnGuard,
    refused: Option<ApiError>,
    stream_window: u32,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let auth = Arc::new(auth);
    let login_deadline = Duration::from_secs(state.limits.handshake_timeout_s);
    let keepalive = Keepalive::of(&state.limits);
    let idle_limit = state.limits.idle_timeout_s.map(Duration::from_secs);
    let (io, live) = liveness::watch(io);
    let settings = h2conn::Settings {
        max_streams: state.limits.max_streams_per_connection,
        stream_window,
        ping_after: keepalive.interval,
    };
    let shutdown = state.shutdown.clone();
    let close = registered.close.clone();
    // However the connection ends, its tunnels end with it: a tunnel sees only an end of
    // stream when its connection goes, and a console that sends nothing (a serial line)
    // would keep the tunnel open forever.
    let _end_streams = registered.close.clone().drop_guard();
    let is_refused = refused.is_some();
    let answered = CancellationToken::new();
    let service = Arc::new(Service {
        state,
        auth: auth.clone(),
        conn: Arc::new(ConnCtx {
            id: registered.id,
            // descriptors libvirt passes through this connection's libvirt tunnels wait
            // here for their streams; dropped (and closed) with the connection
            fds: Arc::new(descriptors::Table::default()),
            live: live.clone(),
        }),
        refused: refused.map(|e| *e.problem),
        answered: answered.clone(),
    });
    let graceful = CancellationToken::new();
    let serving = serve_http(io, service, settings, graceful.clone(), live.clone());
    tokio::pin!(serving);
    let result = tokio::select! {
        r = serving.as_mut() => r,
        _ = close.cancelled() => {
            tracing::info!("closing the connection: its certificate is no longer accepted");
            return;
        }
        _ = live.dead(keepalive.bound()) => {
            tracing::info!(keepalive_timeout_s = keepalive.timeout.as_secs(), "closing the connection: the client stopped answering (no reply to keepalive); its tunnels end");
            return;
        }
        _ = async {
            tokio::select! {
                _ = shutdown.begin.cancelled() => {}
                _ = refusal_told(is_refused, &answered, login_deadline) => {}
                _ = auth.must_close(login_deadline) => {}
                _ = async {
                    match idle_limit {
                        Some(limit) => live.idle(limit).await,
                        None => std::future::pending().await,
                    }
                } => tracing::info!(idle_timeout_s = idle_limit.map(|l| l.as_secs()), "closing the connection: no request or stream for limits.idle_timeout_s"),
            }
        } => {
            graceful.cancel();
            tokio::select! {
                r = serving.as_mut() => r,
                _ = shutdown.force.cancelled() => {
                    tracing::info!("closing the connection: gateway stops");
                    return;
                }
            }
        }
    };
    // An HTTP/1.1 connection upgraded to a WebSocket console (web::socket): hyper is done
    // with it, the console is not. It stays registered (revocation, reload) until then.
    if result.is_ok() && !live.is_h2() {
        tokio::select! {
            _ = live.idle(Duration::ZERO) => {}
            _ = close.cancelled() => {
                tracing::info!("closing the connection: its certificate is no longer accepted");
                return;
            }
            _ = shutdown.force.cancelled() => return,
        }
    }
    match result {
        _ if live.silent_for() >= keepalive.bound() => tracing::info!(
            keepalive_timeout_s = keepalive.timeout.as_secs(),
            "connection closed: the client stopped answering (no reply to keepalive); its tunnels end"
        ),
        Ok(()) => tracing::debug!("connection closed"),
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// Tell HTTP/2 from HTTP/1.1 and serve it until the client leaves, or `graceful` fires
/// and what is open is done.
async fn serve_http<IO>(
    io: IO,
    service: Arc<Service>,
    settings: h2conn::Settings,
    graceful: CancellationToken,
    live: Arc<liveness::Liveness>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (h2, io) = tokio::select! {
        s = sniff::sniff(io) => s?,
        _ = graceful.cancelled() => return Ok(()),
    };
    if h2 {
        let mut io = io;
        let served = h2conn::serve(&mut io, service, settings, graceful, live).await;
        linger(&mut io).await;
        return Ok(served?);
    }
    // hyper runs nothing in tasks of its own on HTTP/1.1: the span stays
    let span = tracing::Span::current();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let service = service.clone();
        async move {
            let req = req.map(|b| b.map_err(std::io::Error::other).boxed());
            Ok::<_, Infallible>(service.call(req).await)
        }
        .instrument(span.clone())
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return Ok(r?),
        _ = graceful.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    Ok(conn.await?)
}

/// How long [`linger`] waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// After this side closed a connection (h2's GOAWAY and TLS close_notify are out, or a
/// refused handshake), read what the client still sends until it closes too — at most
/// 256 KiB, for up to [`LINGER`]: a socket closed with bytes unread is reset by the kernel,
/// and a client whose last write crossed the close would see a broken pipe (and say "lost
/// the connection") instead of the gateway's orderly close and its reason.
pub(crate) async fn linger<IO: AsyncRead + Unpin>(io: &mut IO) {
    use tokio::io::AsyncReadExt as _;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Resolves once a refused connection has been told why (its first answer), or has had
/// `deadline` to ask; never for a connection that was not refused.
async fn refusal_told(refused: bool, answered: &CancellationToken, deadline: Duration) {
    if !refused {
        return std::future::pending().await;
    }
    tokio::select! {
        _ = answered.cancelled() => {}
        _ = tokio::time::sleep(deadline) => {}
    }
}
