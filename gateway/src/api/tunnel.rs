//! Byte tunnels: extended CONNECT `/v1/domains/{name}/vnc`, `/serial` and `/spice`
//! (operator), and `/v1/libvirt` (admin on `*`) and `/v1/libvirt?ro` (viewer on `*`) to
//! libvirtd's RPC sockets as
//! [`Hypervisor::libvirt_socket`](crate::backend::Hypervisor::libvirt_socket) names them
//! (404 `libvirt-not-available` without a libvirt backend).
//!
//! A libvirt tunnel is not a plain copy: [`virtgate_rpc::relay`] reads libvirtd's socket
//! with `recvmsg`, so the descriptors of `virDomainOpenGraphicsFD` replies reach the
//! connection's [`descriptors::Table`] (the tunnel carries their ids), and the client's
//! `/v1/libvirt/fds[/{id}]` streams ([`open_descriptor`]) carry what flows through them.
//!
//! Order matters for good errors: authorize, then connect to the backend socket, and only
//! then answer 200. A client therefore sees a problem+json (404/403/503 with a hint) instead
//! of a tunnel that opens and dies. After the 200, the stream arrives ([`upgrade::on`]) and is
//! spliced to the backend — an HTTP/2 [`virtgate_tunnel::Tunnel`] by its own `splice` (no
//! copy, window returned as the backend takes the bytes), an HTTP/1.1 upgrade by
//! [`copy::both_ways`] — propagating half-closes both ways (END_STREAM <-> `shutdown(Write)`). Each tunnel runs in its own task
//! with a `tunnel` span (id, domain, kind); its close is logged with the byte counts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::api::ReqBody;
use http::{Request, Response, StatusCode};
use tokio::net::UnixStream;
use tracing::Instrument as _;
use virtgate_proto::{ConsoleKind, Problem, TunnelKind};

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::copy;
use super::descriptors::{self, Parked, TunnelFds};
use super::error::{self, ApiError};
use super::upgrade::{self, Upgraded};
use super::{authorize, Body, ConnCtx, Held, State};
use crate::authn::Identity;
use crate::authz::Action;
use crate::backend::BoxedStream;
use tokio_util::either::Either;

/// Bound on connecting to libvirtd's socket.
const LIBVIRT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open a console tunnel to domain `name`.
pub async fn open(
    state: &State,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
    name: &str,
    kind: TunnelKind,
) -> Result<Response<Body>, ApiError> {
    let c = console(state, id, conn, name, kind).await?;
    Ok(splice(state, req, c.backend, c.span, c.guard, kind))
}

/// A console the caller may open, opened on the backend and registered on its connection;
/// what the byte tunnel and the browser's WebSocket ([`crate::web::socket`]) carry.
pub(crate) struct Console {
    /// The domain's console socket.
    pub backend: BoxedStream,
    /// The `tunnel` span its task runs in (id, domain, kind).
    pub span: tracing::Span,
    /// Closes it on reload/revocation and when its connection ends.
    pub guard: Held,
}

/// Authorize `id` for console `kind` of domain `name`, open it on the backend and register
/// it on the connection: the same checks, span and registration for every transport.
pub(crate) async fn console(
    state: &State,
    id: &Identity,
    conn: &ConnCtx,
    name: &str,
    kind: TunnelKind,
) -> Result<Console, ApiError> {
    let (console, action) = match kind {
        TunnelKind::Vnc => (ConsoleKind::Vnc, Action::Vnc),
        TunnelKind::Serial => (ConsoleKind::Serial, Action::Serial),
        TunnelKind::Spice => (ConsoleKind::Spice, Action::Spice),
        other => {
            return Err(error::not_implemented(&format!(
                "the {} tunnel",
                other.as_str()
            )))
        }
    };
    authorize(state, id, Some(name), action)?;
    let guard = conn.hold(state, id, Some(name), action)?;
    let tunnel_id = state.next_tunnel.fetch_add(1, Relaxed);
    let span = tracing::info_span!("tunnel", id = tunnel_id, domain = %name, kind = kind.as_str());
    let backend = match state
        .backend
        .open_console(name, console)
        .instrument(span.clone())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            span.in_scope(|| tracing::warn!(error = %e, "cannot open the backend console"));
            return Err(error::backend(&e));
        }
    };
    Ok(Console {
        backend,
        span,
        guard,
    })
}

/// The action a libvirt tunnel (and its descriptors) needs.
fn libvirt_action(read_only: bool) -> Action {
    if read_only {
        Action::LibvirtRo
    } else {
        Action::LibvirtRw
    }
}

/// Open a libvirt RPC tunnel (`read_only`: libvirtd's read-only socket); descriptors
/// libvirt passes through it wait in `fds`, the connection's table.
pub async fn open_libvirt(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
    read_only: bool,
) -> Result<Response<Body>, ApiError> {
    authorize(state, id, None, libvirt_action(read_only))?;
    let guard = conn.hold(state, id, None, libvirt_action(read_only))?;
    let path = state
        .backend
        .libvirt_socket(read_only)
        .ok_or_else(|| error::no_libvirt(state.backend.kind()))?;
    let tunnel_id = state.next_tunnel.fetch_add(1, Relaxed);
    let kind = TunnelKind::Libvirt { read_only };
    let span = tracing::info_span!("tunnel", id = tunnel_id, kind = kind.as_str());
    let unavailable = |reason: String| {
        span.in_scope(|| tracing::warn!(socket = %path.display(), error = %reason, "cannot connect to libvirtd"));
        ApiError::from(
            Problem::new(503, "backend-unavailable", "libvirtd unavailable")
                // The socket path is the admin's business; the log has it.
                .detail("libvirtd's RPC socket cannot be reached")
                .hint("is libvirtd running on the gateway host? try again in a moment; the gateway log has details"),
        )
    };
    let stream =
        match tokio::time::timeout(LIBVIRT_CONNECT_TIMEOUT, UnixStream::connect(&path)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => {
                return Err(unavailable(format!(
                    "no answer within {} s",
                    LIBVIRT_CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
    let handler = Arc::new(TunnelFds {
        state: state.clone(),
        identity: id.clone(),
        table: conn.fds.clone(),
        read_only,
        calls: Mutex::new(Default::default()),
    });
    Ok(run_tunnel(
        state,
        req,
        span,
        guard,
        kind,
        move |client| async move {
            match virtgate_rpc::relay(stream, client, handler).await {
                Ok(c) => Ok((c.tunnel_to_socket, c.socket_to_tunnel)),
                Err(virtgate_rpc::RelayError::Io(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e)),
            }
        },
    ))
}

/// A stream for a descriptor of a libvirt tunnel on this connection: `fd: Some(n)` claims
/// descriptor `n` that libvirtd handed out; `None` makes a socketpair whose other end waits
/// under a new id (in the `virtgate-descriptor` header) for the client's
/// `virDomainOpenGraphics` call. Same authorization as the libvirt tunnel.
pub async fn open_descriptor(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
    read_only: bool,
    fd: Option<u64>,
) -> Result<Response<Body>, ApiError> {
    authorize(state, id, None, libvirt_action(read_only))?;
    let fds = &conn.fds;
    let guard = conn.hold(state, id, None, libvirt_action(read_only))?;
    let tunnel_id = state.next_tunnel.fetch_add(1, Relaxed);
    let kind = TunnelKind::LibvirtFd { read_only, id: fd };
    let span = tracing::info_span!(
        "tunnel",
        id = tunnel_id,
        kind = kind.as_str(),
        descriptor = fd
    );
    let stream_of = |fd: OwnedFd| {
        virtgate_rpc::fdio::stream_from_fd(fd).map_err(|e| {
            ApiError::from(
                Problem::new(500, "descriptor-unusable", "the descriptor cannot be used")
                    .detail(e.to_string())
                    .hint("try again; the gateway log has details"),
            )
        })
    };
    match fd {
        Some(n) => {
            let Some(claimed) = fds.take(n, Parked::FromLibvirt, read_only) else {
                return Err(Problem::new(404, "descriptor-not-found", "no such descriptor")
                    .detail(format!(
                        "descriptor {n} is not waiting on this connection (claimed already, expired after {} s, or from another connection)",
                        descriptors::EXPIRY.as_secs()
                    ))
                    .hint("descriptors are claimed by `virtgate libvirt` on the connection whose libvirt tunnel received them")
                    .into());
            };
            state.live.get().audit.descriptor(
                id,
                read_only,
                claimed.domain.as_deref(),
                &format!("descriptor {n} claimed"),
            );
            let stream = stream_of(claimed.fd)?;
            Ok(splice(state, req, Box::new(stream), span, guard, kind))
        }
        None => {
            let (theirs, ours) = std::os::unix::net::UnixStream::pair().map_err(|e| {
                ApiError::from(
                    Problem::new(503, "descriptor-unavailable", "cannot make a socket pair")
                        .detail(e.to_string())
                        .hint("the gateway may be out of file descriptors; try again"),
                )
            })?;
            let ours = stream_of(ours.into())?;
            let n = fds
                .park(theirs.into(), Parked::ToLibvirt, read_only, None)
                .map_err(|r| {
                    ApiError::from(
                        Problem::new(429, "too-many-descriptors", "too many descriptors wait")
                            .detail(r.message)
                            .hint("close some consoles, or open a new connection"),
                    )
                })?;
            span.record("descriptor", n);
            let mut r = splice(state, req, Box::new(ours), span, guard, kind);
            r.headers_mut().insert(
                virtgate_proto::DESCRIPTOR_HEADER,
                http::HeaderValue::from(n),
            );
            Ok(r)
        }
    }
}

/// Answer 200 and, once the stream arrives, carry bytes both ways between it and `backend`
/// in a tracked task (until either side closes or the gateway stops hard).
fn splice(
    state: &State,
    req: &mut Request<ReqBody>,
    backend: BoxedStream,
    span: tracing::Span,
    guard: Held,
    kind: TunnelKind,
) -> Response<Body> {
    run_tunnel(state, req, span, guard, kind, move |client| async move {
        match client {
            Either::Left(tunnel) => tunnel.splice(backend).await,
            Either::Right(io) => copy::both_ways(io, backend).await,
        }
    })
}

/// Answer 200 and, once the stream arrives ([`upgrade::on`]), run `carry` on it in a tracked task
/// (until it returns the bytes carried up and down, the gateway stops hard, or a reload
/// takes the right back: `guard`). The caller may change the response (a WebSocket
/// answers 101 on HTTP/1.1).
pub(crate) fn run_tunnel<F, Fut>(
    state: &State,
    req: &mut Request<ReqBody>,
    span: tracing::Span,
    guard: Held,
    kind: TunnelKind,
    carry: F,
) -> Response<Body>
where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<(u64, u64)>> + Send,
{
    let on_upgrade = upgrade::on(req);
    let metrics = state.metrics.clone();
    let force = state.shutdown.force.clone();
    state.tracker.spawn(
        async move {
            // the whole guard, its busy mark included: naming only `guard.guard` below
            // would move just that field in, and the connection would look idle
            let guard = guard;
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "client went away before the tunnel opened");
                    return;
                }
            };
            let _open = metrics.tunnel_open(kind.as_str());
            tracing::info!("tunnel opened");
            let copied = tokio::select! {
                r = carry(upgraded) => r,
                _ = force.cancelled() => {
                    tracing::info!("tunnel closed: gateway stops");
                    return;
                }
                _ = guard.guard.close.cancelled() => {
                    tracing::info!("tunnel closed: its connection ended, or a reload took its right back");
                    return;
                }
            };
            match copied {
                Ok((up, down)) => {
                    metrics.tunnel_bytes_up.fetch_add(up, Relaxed);
                    metrics.tunnel_bytes_down.fetch_add(down, Relaxed);
                    tracing::info!(bytes_up = up, bytes_down = down, "tunnel closed");
                }
                // a client that left without closing its stream (reset, no close_notify)
                // is no error of ours
                Err(e) if super::liveness::peer_went_away(&e) => {
                    tracing::debug!(error = %crate::error_text(&e), "tunnel closed: the client went away")
                }
                Err(e) => tracing::info!(error = %crate::error_text(&e), "tunnel ended with an error"),
            }
        }
        .instrument(span),
    );
    let mut r = Response::new(error::full(""));
    *r.status_mut() = StatusCode::OK;
    r
}
