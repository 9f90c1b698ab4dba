//! The HTTP API: one hyper service per connection.
//!
//! [`serve_connection`] runs hyper's auto (HTTP/1.1 + HTTP/2) server on a connection whose
//! peer is already known ([`Identity`]) or will log in with HTTP Negotiate first
//! ([`negotiate`]); HTTP/2 has extended CONNECT enabled for tunnels. [`handle`] resolves the
//! identity, routes each request through [`ApiPath::parse`] (proto owns the paths), checks
//! the method, asks [`authz`](crate::authz) and then the backend, and answers JSON
//! ([`domains`], [`lifecycle`]), a PNG ([`domains::screenshot`]), an NDJSON stream
//! ([`events`]), Prometheus text, a tunnel ([`tunnel`]: consoles and libvirt RPC, whose
//! file descriptors wait per connection in [`descriptors`]) or a problem ([`error`]). Every response carries `virtgate-protocol: 1`.

mod copy;
pub mod descriptors;
pub mod domains;
pub mod error;
pub mod events;
pub mod lifecycle;
pub mod liveness;
pub mod negotiate;
pub mod tunnel;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use virtgate_proto::{
    ApiPath, PathError, Problem, TunnelKind, PROTOCOL_HEADER, PROTOCOL_VERSION, TUNNEL_PROTOCOL,
};

use crate::authn::Identity;
use crate::authz::{Action, Role};
use crate::backend::Hypervisor;
use crate::config::Limits;
use crate::live::LiveCell;
use crate::metrics::Metrics;
use crate::sessions::{ConnGuard, Registry, StreamGuard};
use crate::shutdown::Shutdown;
use error::ApiError;
pub use negotiate::ConnAuth;

/// Response body type of every handler.
pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
pub struct State {
    /// What a reload replaces: rules, audit log, TLS, Kerberos (take `live.get()` once
    /// per request).
    pub live: Arc<LiveCell>,
    /// Live connections and streams, re-checked after a reload.
    pub registry: Arc<Registry>,
    /// The hypervisor.
    pub backend: Arc<dyn Hypervisor>,
    /// Counters for `/v1/metrics`.
    pub metrics: Arc<Metrics>,
    /// Tracks tunnel tasks so shutdown can wait for them (up to the drain timeout).
    pub tracker: TaskTracker,
    /// Numbers tunnels for their log spans.
    pub next_tunnel: AtomicU64,
    /// Per-connection limits for the HTTP/2 server.
    pub limits: Limits,
    /// Graceful stop (`begin`: GOAWAY) and hard stop (`force`: drop connections and tunnels).
    pub shutdown: Shutdown,
    /// Domain lifecycle events for `GET /v1/events`.
    pub events: crate::events::Hub,
}

/// What the requests of one connection share.
#[derive(Debug)]
pub struct ConnCtx {
    /// The connection's id in [`State::registry`] (its streams register under it).
    pub id: u64,
    /// Descriptors libvirt passed through this connection's libvirt tunnels.
    pub fds: Arc<descriptors::Table>,
    /// Dead and idle detection: requests and streams hold it busy.
    pub live: Arc<liveness::Liveness>,
}

/// A long-lived stream of a connection (tunnel, event feed): registered for reloads, and
/// keeping its connection from counting as idle.
#[derive(Debug)]
pub struct Held {
    /// Closes the stream when its right is taken back or its connection ends.
    pub guard: StreamGuard,
    /// The connection is busy while the stream lives.
    _busy: liveness::Busy,
    /// Its place in the user's `limits.max_tunnels_per_user`.
    _quota: crate::quota::Held,
}

impl ConnCtx {
    /// Register a stream that `id` may open as `action` on `domain`, unless the user holds
    /// `limits.max_tunnels_per_user` already (429, named). Call it before opening anything
    /// on the backend: a refusal then leaves nothing to close.
    pub fn hold(
        &self,
        state: &State,
        id: &Identity,
        domain: Option<&str>,
        action: Action,
    ) -> Result<Held, ApiError> {
        let quota = state.quota(&id.user, crate::quota::Kind::Tunnels)?;
        Ok(Held {
            guard: state.registry.stream(self.id, id, domain, action),
            _busy: self.live.busy(),
            _quota: quota,
        })
    }
}

impl State {
    /// A place in `user`'s quota of `kind` (its limit from `[limits]`), or the 429 that
    /// names the limit (logged and counted).
    pub fn quota(
        &self,
        user: &str,
        kind: crate::quota::Kind,
    ) -> Result<crate::quota::Held, ApiError> {
        let limit = match kind {
            crate::quota::Kind::Connections => self.limits.max_connections_per_user,
            crate::quota::Kind::Tunnels => self.limits.max_tunnels_per_user,
        };
        self.registry.quotas.take(user, kind, limit).map_err(|e| {
            if kind == crate::quota::Kind::Connections {
                self.metrics.connections_refused.fetch_add(1, Relaxed);
            }
            tracing::warn!(user, limit, "{} reached; refused", kind.key());
            error::quota_exceeded(&e)
        })
    }
}

/// HTTP/2 flow control and frames: shared with the client, chosen from the benchmarks
/// (see `virtgate_proto::tuning`).
use virtgate_proto::tuning::{CONNECTION_WINDOW, MAX_FRAME};

/// How much later than [`liveness`] hyper's own keepalive would give up: hyper only sends
/// the PINGs. Its way of giving up (a GOAWAY) hands every tunnel an end of stream, which a
/// backend that does not read (a quiet serial console) never notices, and cannot get out to
/// a frozen client with full buffers; `liveness` drops the connection instead, which fails
/// every stream on it at once.
const HYPER_SLACK: Duration = Duration::from_secs(1);

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(state.limits.max_streams_per_connection)
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        // hyper PINGs a silent peer (idle connections too); `liveness` gives it up when no
        // answer came (see HYPER_SLACK), and its tunnels end
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout + keepalive.interval + HYPER_SLACK);
    let shutdown = state.shutdown.clone();
    // hyper runs HTTP/2 streams in tasks of their own: carry the connection's span over.
    let span = tracing::Span::current();
    let conn_auth = auth.clone();
    let close = registered.close.clone();
    // However the connection ends, its tunnels end with it: hyper hands an upgraded stream
    // only an end of file when its connection goes, and a console that sends nothing (a
    // serial line) would keep the tunnel open forever.
    let _end_streams = registered.close.clone().drop_guard();
    let conn_ctx = Arc::new(ConnCtx {
        id: registered.id,
        // descriptors libvirt passes through this connection's libvirt tunnels wait here
        // for their streams; dropped (and closed) with the connection
        fds: Arc::new(descriptors::Table::default()),
        live: live.clone(),
    });
    let is_refused = refused.is_some();
    let refused = refused.map(|e| Arc::new(e.problem));
    let answered = tokio_util::sync::CancellationToken::new();
    let answered_by_service = answered.clone();
    let service = hyper::service::service_fn(move |req| {
        // over a limit: say which, once told the connection closes (below)
        let refusal = refused.as_ref().map(|p| {
            answered_by_service.cancel();
            let mut r = ApiError::from(Problem::clone(p)).into_response();
            r.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
            r
        });
        let (state, auth, conn) = (state.clone(), conn_auth.clone(), conn_ctx.clone());
        async move {
            match refusal {
                Some(r) => Ok(r),
                None => handle(state, auth, conn, req).await,
            }
        }
        .instrument(span.clone())
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
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
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
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
        // hyper ended it (with an error or not) because the keepalive ran out
        _ if live.silent_for() >= keepalive.bound() => tracing::info!(
            keepalive_timeout_s = keepalive.timeout.as_secs(),
            "connection closed: the client stopped answering (no reply to keepalive); its tunnels end"
        ),
        Ok(()) => tracing::debug!("connection closed"),
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
}

/// Resolves once a refused connection has been told why (its first answer), or has had
/// `deadline` to ask; never for a connection that was not refused.
async fn refusal_told(
    refused: bool,
    answered: &tokio_util::sync::CancellationToken,
    deadline: Duration,
) {
    if !refused {
        return std::future::pending().await;
    }
    tokio::select! {
        _ = answered.cancelled() => {}
        _ = tokio::time::sleep(deadline) => {}
    }
}

/// Answer one request: identity (a Negotiate login on a pending connection), then route.
pub async fn handle(
    state: Arc<State>,
    auth: Arc<ConnAuth>,
    conn: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let _busy = conn.live.busy();
    state.metrics.requests.fetch_add(1, Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // a browser session's cookie counts on a connection without an identity of its own;
    // `/ui/login` needs none (its ticket is one); unsafe browser requests pass the CSRF rule
    let (result, mutual) = if path == "/ui/login" {
        (crate::web::session::login(&state, &req), None)
    } else {
        match crate::web::session::identity(&state, &auth, &mut req).await {
            Ok((id, mutual)) => match crate::web::session::check_unsafe(&state, &id, &req) {
                Ok(()) => (route(&state, &id, &conn, &mut req).await, mutual),
                Err(e) => (Err(e), mutual),
            },
            Err(e) => (Err(e), None),
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%method, path = %path, status = e.problem.status, kind = e.problem.kind_name(), "request refused");
            e.into_response()
        }
    };
    if let Some(token) = mutual {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, token);
    }
    resp.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    if crate::web::is_web(&path) {
        // the browser console's policy on every answer there, refusals (401) included
        crate::web::secure(&mut resp);
    }
    Ok(resp)
}

async fn route(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    // a browser's console WebSocket (HTTP/1.1 upgrade or RFC 8441 CONNECT): web::socket
    let websocket = crate::web::socket::requested(req);
    let is_connect = method == Method::CONNECT && websocket.is_none();
    if is_connect {
        match req.extensions().get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str() == TUNNEL_PROTOCOL => {}
            Some(p) => {
                return Err(error::bad_request(
                    format!("unknown tunnel protocol `{}`", p.as_str()),
                    "tunnels use :protocol virtgate-stream; update the client",
                ))
            }
            None => {
                return Err(error::bad_request(
                    "plain CONNECT is not supported",
                    "tunnels are HTTP/2 extended CONNECT with :protocol virtgate-stream (use `virtgate vnc`)",
                ))
            }
        }
    }
    let path = req.uri().path().to_owned();
    if !is_connect && crate::web::is_web(&path) {
        return crate::web::route(state, id, req).await;
    }
    let tunnel_like = is_connect || websocket.is_some();
    let parsed = ApiPath::parse(&path, req.uri().query(), tunnel_like).map_err(|e| match e {
        PathError::BadName(_) => {
            error::bad_request(e.to_string(), "domain names are percent-encoded UTF-8")
        }
        _ => error::not_found(&path),
    })?;
    if let Some(handshake) = websocket {
        return crate::web::socket::open(state, id, conn, req, parsed, handshake).await;
    }
    let get_only = |hint: &str| -> Result<(), ApiError> {
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(error::method_not_allowed(
                &method,
                &path,
                &[Method::GET, Method::HEAD],
                hint,
            ))
        }
    };
    match parsed {
        ApiPath::WhoAmI => {
            get_only("use GET")?;
            Ok(domains::json(&id.whoami()))
        }
        ApiPath::Domains => {
            get_only("use GET")?;
            domains::list(state, id).await
        }
        ApiPath::Domain(name) => {
            get_only("use GET; lifecycle calls are POST /v1/domains/NAME/{start,shutdown,reboot,destroy}")?;
            domains::info(state, id, &name).await
        }
        ApiPath::DomainAction(name, action) => {
            domains::action(state, id, req, &name, &action).await
        }
        ApiPath::Tunnel {
            domain: Some(name),
            kind,
        } => tunnel::open(state, id, conn, req, &name, kind).await,
        ApiPath::Tunnel {
            domain: None,
            kind: TunnelKind::Libvirt { read_only },
        } => tunnel::open_libvirt(state, id, conn, req, read_only).await,
        ApiPath::Tunnel {
            domain: None,
            kind: TunnelKind::LibvirtFd { read_only, id: fd },
        } => tunnel::open_descriptor(state, id, conn, req, read_only, fd).await,
        ApiPath::Events => {
            get_only("use GET (`virtgate events`)")?;
            events::handle(state, id, conn).await
        }
        ApiPath::WebTicket => crate::web::session::ticket(state, id, conn, req).await,
        ApiPath::WebSession => crate::web::session::session_info(state, id, req).await,
        ApiPath::Metrics => {
            get_only("use GET")?;
            let mut r = Response::new(error::full(state.metrics.render()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        _ => Err(error::not_found(&path)),
    }
}

/// Decide, record the decision, and turn a refusal into the right problem: no role at all is
/// "domain not found", a role too low is "forbidden".
pub fn authorize(
    state: &State,
    id: &Identity,
    domain: Option<&str>,
    action: Action,
) -> Result<Role, ApiError> {
    let live = state.live.get();
    let d = live.policy.decide(id, domain, action);
    live.audit.decision(id, action, domain, &d);
    tracing::debug!(user = %id.user, action = action.as_str(), domain, allowed = d.allowed, "authorization");
    match (d.allowed, d.role, domain) {
        (true, Some(role), _) => Ok(role),
        (_, None, Some(name)) => Err(error::domain_not_found(name)),
        _ => Err(error::forbidden(domain, action, d.role, d.required)),
    }
}
