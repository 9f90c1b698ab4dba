//! The HTTP API: one [`Service`](conn::Service) per connection.
//!
//! [`serve_connection`] ([`conn`]) serves a connection whose peer is already known
//! ([`Identity`]) or will log in with HTTP Negotiate first ([`negotiate`]): HTTP/2 on h2
//! directly ([`h2conn`]: extended CONNECT tunnels become [`virtgate_tunnel::Tunnel`]s with
//! per-stream flow control), HTTP/1.1 on hyper, told apart by the first bytes ([`sniff`]).
//! [`handle`] resolves the identity, routes each request through [`ApiPath::parse`] (proto
//! owns the paths), checks the method, asks [`authz`](crate::authz) and then the backend,
//! and answers JSON ([`domains`], [`lifecycle`]), a PNG ([`domains::screenshot`]), an NDJSON
//! stream ([`events`]), Prometheus text, a tunnel ([`tunnel`]: consoles and libvirt RPC,
//! whose file descriptors wait per connection in [`descriptors`]; the stream arrives through
//! [`upgrade`] once the 200 is out) or a problem ([`error`]). Every response carries
//! `virtgate-protocol: 1`.

mod conn;
mod copy;
pub mod descriptors;
pub mod domains;
pub mod error;
pub mod events;
mod h2conn;
pub mod lifecycle;
pub mod liveness;
pub mod negotiate;
mod sniff;
pub mod tunnel;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::combinators::BoxBody;
use tokio_util::task::TaskTracker;
use virtgate_proto::{
    ApiPath, PathError, TunnelKind, PROTOCOL_HEADER, PROTOCOL_VERSION, TUNNEL_PROTOCOL,
};

use crate::authn::Identity;
use crate::authz::{Action, Role};
use crate::backend::Hypervisor;
use crate::config::Limits;
use crate::live::LiveCell;
use crate::metrics::Metrics;
use crate::sessions::{Registry, StreamGuard};
use crate::shutdown::Shutdown;
pub(crate) use conn::linger;
pub use conn::serve_connection;
use conn::Service;
use error::ApiError;
pub use negotiate::ConnAuth;

/// Response body type of every handler.
pub type Body = BoxBody<Bytes, Infallible>;

/// Why a request's body could not be read (h2's or hyper's error, as an I/O error: a boxed
/// `dyn Error` here keeps rustc from proving the handlers' futures `Send`).
pub type BodyError = std::io::Error;

/// Request body type of every handler: h2's stream ([`virtgate_tunnel::RecvBody`]) on
/// HTTP/2, hyper's on HTTP/1.1; empty for a CONNECT, whose stream becomes the tunnel
/// ([`upgrade`]).
pub type ReqBody = BoxBody<Bytes, BodyError>;

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

/// Answer one request: identity (a Negotiate login on a pending connection), then route.
pub async fn handle(
    state: Arc<State>,
    auth: Arc<ConnAuth>,
    conn: Arc<ConnCtx>,
    mut req: Request<ReqBody>,
) -> Response<Body> {
    let _busy = conn.live.busy();
    state.metrics.requests.fetch_add(1, Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // a browser session's cookie counts on a connection without an identity of its own;
    // `/ui/login` needs none (its ticket is one); unsafe browser requests pass the CSRF rule
    let (result, mutual) = if path == "/ui/login" {
        (crate::web::session::login(&state, &req), None)
    } else {
        // bound first: a future in the scrutinee would live on across `route` below
        let who = crate::web::session::identity(&state, &auth, &mut req).await;
        match who {
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
    resp
}

async fn route(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
    req: &mut Request<ReqBody>,
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
    match parsed {
        ApiPath::WhoAmI => {
            get_only(&method, &path, "use GET")?;
            Ok(domains::json(&id.whoami()))
        }
        ApiPath::Domains => {
            get_only(&method, &path, "use GET")?;
            domains::list(state, id).await
        }
        ApiPath::Domain(name) => {
            get_only(&method, &path, "use GET; lifecycle calls are POST /v1/domains/NAME/{start,shutdown,reboot,destroy}")?;
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
            get_only(&method, &path, "use GET (`virtgate events`)")?;
            events::handle(state, id, conn).await
        }
        ApiPath::WebTicket => crate::web::session::ticket(state, id, conn, req).await,
        ApiPath::WebSession => crate::web::session::session_info(state, id, req).await,
        ApiPath::Metrics => {
            get_only(&method, &path, "use GET")?;
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

/// `GET` and `HEAD` only, or 405 with `hint`.
fn get_only(method: &Method, path: &str, hint: &str) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(error::method_not_allowed(
            method,
            path,
            &[Method::GET, Method::HEAD],
            hint,
        ))
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
