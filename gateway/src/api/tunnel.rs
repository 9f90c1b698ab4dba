//! Byte tunnels: extended CONNECT `/v1/domains/{name}/vnc` and `/serial` (operator), and
//! `/v1/libvirt` (admin on `*`) and `/v1/libvirt?ro` (viewer on `*`) to libvirtd's RPC
//! sockets as [`Hypervisor::libvirt_socket`](crate::backend::Hypervisor::libvirt_socket)
//! names them (404 `libvirt-not-available` without a libvirt backend).
//!
//! Order matters for good errors: authorize, then connect to the backend socket, and only
//! then answer 200. A client therefore sees a problem+json (404/403/503 with a hint) instead
//! of a tunnel that opens and dies. After the 200, hyper hands over the stream
//! (`hyper::upgrade::on`) and `copy_bidirectional` splices it to the backend, propagating
//! half-closes both ways (END_STREAM <-> `shutdown(Write)`). Each tunnel runs in its own task
//! with a `tunnel` span (id, domain, kind); its close is logged with the byte counts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tracing::Instrument as _;
use virtgate_proto::tuning::SPLICE_BUFFER;
use virtgate_proto::{ConsoleKind, Problem, TunnelKind};

use super::error::{self, ApiError};
use super::{authorize, Body, State};
use crate::authn::Identity;
use crate::authz::Action;
use crate::backend::BoxedStream;

/// Bound on connecting to libvirtd's socket.
const LIBVIRT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open a console tunnel to domain `name`.
pub async fn open(
    state: &State,
    id: &Identity,
    req: &mut Request<Incoming>,
    name: &str,
    kind: TunnelKind,
) -> Result<Response<Body>, ApiError> {
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
    Ok(splice(state, req, backend, span))
}

/// Open a libvirt RPC tunnel (`read_only`: libvirtd's read-only socket).
pub async fn open_libvirt(
    state: &State,
    id: &Identity,
    req: &mut Request<Incoming>,
    read_only: bool,
) -> Result<Response<Body>, ApiError> {
    let action = if read_only {
        Action::LibvirtRo
    } else {
        Action::LibvirtRw
    };
    authorize(state, id, None, action)?;
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
    Ok(splice(state, req, Box::new(stream), span))
}

/// Answer 200 and, once hyper hands over the stream, copy both ways between it and
/// `backend` in a tracked task (until either side closes or the gateway stops hard).
fn splice(
    state: &State,
    req: &mut Request<Incoming>,
    mut backend: BoxedStream,
    span: tracing::Span,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(req);
    let metrics = state.metrics.clone();
    let force = state.shutdown.force.clone();
    state.tracker.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "client went away before the tunnel opened");
                    return;
                }
            };
            let _open = metrics.tunnel_open();
            tracing::info!("tunnel opened");
            let mut client = TokioIo::new(upgraded);
            let copied = tokio::select! {
                r = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut backend,
                    SPLICE_BUFFER,
                    SPLICE_BUFFER,
                ) => r,
                _ = force.cancelled() => {
                    tracing::info!("tunnel closed: gateway stops");
                    return;
                }
            };
            match copied {
                Ok((up, down)) => {
                    metrics.tunnel_bytes_up.fetch_add(up, Relaxed);
                    metrics.tunnel_bytes_down.fetch_add(down, Relaxed);
                    tracing::info!(bytes_up = up, bytes_down = down, "tunnel closed");
                }
                Err(e) => tracing::info!(error = %e, "tunnel ended with an error"),
            }
        }
        .instrument(span),
    );
    let mut r = Response::new(error::full(""));
    *r.status_mut() = StatusCode::OK;
    r
}
