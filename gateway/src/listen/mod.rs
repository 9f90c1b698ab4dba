//! Listeners and the accept loops: admission, per-connection span, TLS handshake with a
//! timeout, authentication, then the HTTP server of [`api`](crate::api).
//!
//! One task per listener accepts; one task per connection does the rest, inside a `conn`
//! span with `id`, `peer` and (once known) `user` fields. Admission comes in two steps, so
//! that peers who proved nothing cannot lock out those who did:
//! 1. at `accept`, a TCP connection takes a place in the budget of pending connections
//!    ([`crate::pending`]: per address, shedding the oldest) or is closed at once;
//! 2. once authenticated it leaves that budget and takes one of `limits.max_connections`
//!    and one of its user's `limits.max_connections_per_user`; over either, its requests
//!    are answered with a problem naming the limit (503/429), then it closes.
//!
//! A TLS client without a certificate (allowed only with `[kerberos]` or `[web]
//! ticket_login`) stays pending until it logs in with HTTP Negotiate on a request
//! ([`crate::api::negotiate`]) or shows a session cookie. A failed handshake is logged with
//! its reason and counted; the loop goes on serving others.

mod bind;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

pub use bind::ListenError;

use crate::api::{self, error, ConnAuth, State};
use crate::authn::{peercred, tls, Identity};
use crate::config;
use crate::metrics::AuthFailure;
use crate::pending;
use crate::quota;

/// The bound sockets, before serving.
#[derive(Debug)]
pub struct Listeners {
    /// TCP listeners with their actual local addresses (port 0 resolved).
    pub tcp: Vec<(SocketAddr, TcpListener)>,
    /// The unix socket, if configured.
    pub unix: Option<(PathBuf, UnixListener)>,
}

impl Listeners {
    /// Bind everything in `[listen]`; the first failure is returned (earlier sockets close).
    pub async fn bind(listen: &config::Listen) -> Result<Listeners, ListenError> {
        let mut tcp = Vec::new();
        for text in &listen.tcp {
            tcp.push(bind::tcp(text)?);
        }
        let unix = match &listen.unix {
            Some(path) => Some((path.clone(), bind::unix(path).await?)),
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    /// The addresses as printed on `listening on ...` lines: `[::]:16520`, `unix:/path`.
    pub fn addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tcp.iter().map(|(a, _)| a.to_string()).collect();
        if let Some((p, _)) = &self.unix {
            v.push(format!("unix:{}", p.display()));
        }
        v
    }
}

/// Raise the soft descriptor limit to the hard one (a shell's soft limit is often 1,024,
/// fewer than `limits.max_connections` plus the pending budget need), and warn when even
/// the hard limit is too low for the configured limits.
pub fn raise_descriptor_limit(limits: &config::Limits) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let was = getrlimit(Resource::Nofile);
    let mut now = was.current;
    if was.current < was.maximum {
        let raised = rustix::process::Rlimit {
            current: was.maximum,
            maximum: was.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now = was.maximum,
            Err(e) => tracing::debug!(error = %e, "cannot raise the descriptor limit"),
        }
    }
    // each connection is one descriptor, each tunnel one or two more (its backend socket);
    // leave room for the listeners, the log and libvirt
    let need = (limits.max_connections + limits.max_pending_handshakes + 64) as u64;
    match now {
        Some(n) if n < need => tracing::warn!(
            descriptors = n,
            needed = need,
            "the descriptor limit (RLIMIT_NOFILE) is below limits.max_connections + limits.max_pending_handshakes: raise it (LimitNOFILE= in the unit, ulimit -n) or lower those limits"
        ),
        _ => tracing::debug!(descriptors = ?now, "descriptor limit"),
    }
}

/// What every accept loop shares (TLS and Kerberos come from the configuration in force,
/// `state.live`, at each handshake).
pub struct Accept {
    /// The API's state.
    pub state: Arc<State>,
    /// Permits for `limits.max_connections`.
    pub permits: Arc<Semaphore>,
    /// Unauthenticated TCP connections (`limits.max_pending_handshakes`,
    /// `limits.max_pending_per_address`).
    pub pending: Arc<pending::Budget>,
    /// Numbers connections for their spans.
    pub next_id: AtomicU64,
    /// `limits.handshake_timeout_s`.
    pub handshake_timeout: Duration,
    /// Tracks connection tasks so shutdown can drain them.
    pub tracker: TaskTracker,
    /// Fires on SIGTERM/SIGINT: stop accepting.
    pub shutdown: CancellationToken,
}

impl Accept {
    /// Take a permit for a new unix connection, or count and log a refusal.
    fn permit(&self, peer: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.state.metrics.connections_refused.fetch_add(1, Relaxed);
                tracing::warn!(
                    peer,
                    "connection limit reached (limits.max_connections); closing"
                );
                None
            }
        }
    }

    /// The places an authenticated connection holds for its life: one of
    /// `limits.max_connections` and one of its user's `limits.max_connections_per_user`;
    /// `Err` is what its requests are answered with.
    fn places(&self, id: Option<&Identity>) -> Result<Places, error::ApiError> {
        let limits = &self.state.limits;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.state.metrics.connections_refused.fetch_add(1, Relaxed);
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached (limits.max_connections); answering 503"
            );
            return Err(error::over_capacity(limits.max_connections));
        };
        let quota = match id {
            Some(id) => Some(self.state.quota(&id.user, quota::Kind::Connections)?),
            None => None,
        };
        Ok(Places {
            _permit: permit,
            _quota: quota,
        })
    }
}

/// The places to hold for the connection's life, or the refusal its requests are answered.
fn split<T>(places: Result<T, error::ApiError>) -> (Option<T>, Option<error::ApiError>) {
    match places {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    }
}

/// What an admitted connection holds until it ends.
struct Places {
    /// Its place in `limits.max_connections`.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Its place in its user's `limits.max_connections_per_user` (none for a connection
    /// that logs in later: it takes it then).
    _quota: Option<quota::Held>,
}

/// Accept TCP connections until shutdown.
pub async fn accept_tcp(listener: TcpListener, ctx: Arc<Accept>) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let slot = match ctx.pending.admit(peer.ip()) {
            Ok((slot, admitted)) => {
                if admitted.shed {
                    ctx.state.metrics.handshakes_shed.fetch_add(1, Relaxed);
                }
                if admitted.log_shed > 0 {
                    tracing::warn!(
                        shed = admitted.log_shed,
                        limit = ctx.state.limits.max_pending_handshakes,
                        "pending connections full (limits.max_pending_handshakes): shed the oldest of the busiest address for newer ones"
                    );
                }
                slot
            }
            Err((pending::Refused::PerAddress, log)) => {
                ctx.state.metrics.connections_refused.fetch_add(1, Relaxed);
                if log > 0 {
                    tracing::warn!(
                        peer = %peer,
                        refused = log,
                        limit = ctx.state.limits.max_pending_per_address,
                        "too many unauthenticated connections from this address (limits.max_pending_per_address); closing new ones"
                    );
                }
                continue;
            }
        };
        let open = ctx.state.metrics.connection_open();
        let id = ctx.next_id.fetch_add(1, Relaxed);
        let span = tracing::info_span!("conn", id, peer = %peer, user = tracing::field::Empty);
        let c = ctx.clone();
        ctx.tracker.spawn(
            async move {
                let _open = open;
                tls_connection(stream, peer, slot, c).await;
            }
            .instrument(span),
        );
    }
}

/// Close a connection whose handshake failed so that the client reads our alert.
///
/// In TLS 1.3 a client sends its first request right after its Finished, before it learns
/// that we refused its certificate. Closing a socket with that request unread makes the
/// kernel send a RST, and the client then fails with "broken pipe" or "connection reset"
/// instead of reading the alert that says why (revoked, expired, unknown CA). So: send FIN
/// after the alert, and read and discard what the client still sends, for a short while.
async fn lingering_close(mut io: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let _ = io.shutdown().await;
    api::linger(&mut io).await;
}

async fn tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: pending::Slot,
    ctx: Arc<Accept>,
) {
    let live = ctx.state.live.get();
    let Some(acceptor) = live.tls.clone() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    // Keep bulk data queued in h2 (which interleaves streams), not in the kernel.
    let _ = socket2::SockRef::from(&stream)
        .set_tcp_notsent_lowat(virtgate_proto::tuning::NOTSENT_LOWAT);
    let metrics = &ctx.state.metrics;
    // The TLS stream (rustls' connection, ~1.2 KiB) lives on the heap, once: moved by value
    // it would also stay behind, dead, in each async frame it passed through (`handshake`
    // and `tls` here, serve_connection's `io`), and a connection's task is as big as its
    // largest state (bench/src/analysis.md, P4).
    let accept =
        futures_util::FutureExt::map(acceptor.accept(stream).into_fallible(), |r| r.map(Box::new));
    let shed = slot.shed.clone();
    let handshake = tokio::select! {
        r = tokio::time::timeout(ctx.handshake_timeout, accept) => r,
        _ = shed.cancelled() => {
            metrics.auth_failed(AuthFailure::Tls);
            tracing::info!("TLS handshake unfinished and the pending budget is full (limits.max_pending_handshakes): shed for a newer connection");
            return;
        }
    };
    let tls = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err((e, io))) => {
            metrics.auth_failed(AuthFailure::Tls);
            let reason = tls::handshake_failure_reason(&e);
            tracing::warn!(%reason, "TLS handshake failed");
            live.audit.refused(
                &peer.to_string(),
                &format!("TLS handshake failed: {reason}"),
            );
            // boxed: its 4 KiB drain buffer would otherwise size every connection's task
            Box::pin(lingering_close(io)).await;
            return;
        }
        Err(_) => {
            metrics.auth_failed(AuthFailure::Tls);
            tracing::warn!(
                timeout_s = ctx.handshake_timeout.as_secs(),
                "TLS handshake timed out (limits.handshake_timeout_s)"
            );
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "none".into());
    let certs = conn.peer_certificates();
    let auth = match tls::identity_from_certs(certs, Some(peer.to_string())) {
        Ok(identity) => {
            // authenticated: no longer pending, its place is free for others
            drop(slot);
            metrics.connections_authenticated.fetch_add(1, Relaxed);
            tracing::Span::current().record("user", tracing::field::display(&identity.user));
            tracing::info!(method = %identity.method, alpn = %alpn, "authenticated");
            ConnAuth::Known(Arc::new(identity))
        }
        // Only possible with [kerberos] or [web] ticket_login: the verifier then lets
        // certificate-less clients in (to log in with Negotiate, or carry a session cookie).
        Err(tls::CertIdentityError::NoCertificate) => {
            tracing::debug!(alpn = %alpn, "no client certificate; waiting for a Kerberos login or a session cookie");
            ConnAuth::pending(live.kerberos.clone(), peer.to_string(), Some(slot))
        }
        Err(e) => {
            tracing::warn!(reason = %e, "client certificate gives no identity; closing");
            return;
        }
    };
    let known = match &auth {
        ConnAuth::Known(id) => Some(id.as_ref()),
        _ => None,
    };
    let (_held, refused) = split(ctx.places(known));
    let registered = ctx.state.registry.connection(known, certs);
    drop(live);
    api::serve_connection(
        tls,
        ctx.state.clone(),
        auth,
        registered,
        refused,
        virtgate_proto::tuning::STREAM_WINDOW,
    )
    .await;
}

/// Accept unix socket connections until shutdown; the peer's uid is its identity.
pub async fn accept_unix(listener: UnixListener, ctx: Arc<Accept>) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let open = ctx.state.metrics.connection_open();
        let Some(permit) = ctx.permit("unix") else {
            continue;
        };
        let id = ctx.next_id.fetch_add(1, Relaxed);
        let span = tracing::info_span!("conn", id, peer = "unix", user = tracing::field::Empty);
        let c = ctx.clone();
        ctx.tracker.spawn(
            async move {
                let _held = (permit, open);
                unix_connection(stream, c).await;
            }
            .instrument(span),
        );
    }
}

async fn unix_connection(stream: UnixStream, ctx: Arc<Accept>) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
            return;
        }
    };
    // the peer is known from here on: its idle connections count against its own quota
    let identity = peercred::identity_for_uid(uid);
    let quota = ctx.state.quota(&identity.user, quota::Kind::Connections);
    // Anyone on the host may connect: bound the wait for the HTTP/2 preface (or HTTP/1.1
    // request) like a TLS handshake, so idle peers cannot hold connection slots.
    if tokio::time::timeout(ctx.handshake_timeout, stream.readable())
        .await
        .is_err()
    {
        ctx.state.metrics.auth_failed(AuthFailure::Unix);
        tracing::warn!(
            uid,
            timeout_s = ctx.handshake_timeout.as_secs(),
            "peer sent nothing; closing"
        );
        return;
    }
    ctx.state
        .metrics
        .connections_authenticated
        .fetch_add(1, Relaxed);
    tracing::Span::current().record("user", tracing::field::display(&identity.user));
    tracing::info!(uid, method = %identity.method, "authenticated");
    let registered = ctx.state.registry.connection(Some(&identity), None);
    let (_held, refused) = split(quota);
    api::serve_connection(
        stream,
        ctx.state.clone(),
        ConnAuth::Known(Arc::new(identity)),
        registered,
        refused,
        // the unix socket is where SSH connections arrive (through sshd)
        virtgate_proto::tuning::RELAYED_STREAM_WINDOW,
    )
    .await;
}
