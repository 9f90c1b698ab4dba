//! The piece the local forwarders share: a local listener (TCP for `vnc`, a unix socket for
//! `libvirt`) whose every accepted connection is carried as one tunnel stream (extended
//! CONNECT) on the session's single HTTP/2 connection.
//!
//! [`serve`] runs until Ctrl-C, SIGTERM or SIGHUP (`Ok`), until the gateway connection ends
//! (`Err`), or until a command-specific future (`until`, e.g. "the viewer exited") resolves.
//! A tunnel that fails is reported on stderr and only its local connection is closed; the
//! streams still open are dropped when [`serve`] returns.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use virtgate_proto::{ApiPath, TunnelKind};

use crate::error::{report, Error};
use crate::session::{Session, Tunnel};

/// A bound local listener.
#[derive(Debug)]
pub enum Local {
    /// A TCP listener (`vnc`).
    Tcp(TcpListener),
    /// A unix socket listener (`libvirt`).
    Unix(UnixListener),
}

/// One accepted local connection.
enum Accepted {
    /// From the TCP listener.
    Tcp(tokio::net::TcpStream),
    /// From the unix listener.
    Unix(tokio::net::UnixStream),
}

impl Local {
    /// Wait for the next local connection; returns it and a peer description for messages.
    async fn accept(&self) -> std::io::Result<(Accepted, String)> {
        match self {
            Local::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Accepted::Tcp(s), peer.to_string()))
            }
            Local::Unix(l) => {
                let (s, _) = l.accept().await?;
                let peer = match s.peer_cred() {
                    Ok(c) => match c.pid() {
                        Some(pid) => format!("pid {pid} (uid {})", c.uid()),
                        None => format!("uid {}", c.uid()),
                    },
                    Err(_) => "a local process".to_owned(),
                };
                Ok((Accepted::Unix(s), peer))
            }
        }
    }
}

/// The signals that end a forwarder normally.
pub struct Stop {
    /// SIGINT (Ctrl-C).
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM.
    terminate: tokio::signal::unix::Signal,
    /// SIGHUP (the terminal went away).
    hangup: tokio::signal::unix::Signal,
}

impl Stop {
    /// Install the handlers (from now on these signals no longer kill the process).
    pub fn install() -> Result<Stop, Error> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt()).map_err(Error::Runtime)?,
            terminate: signal(SignalKind::terminate()).map_err(Error::Runtime)?,
            hangup: signal(SignalKind::hangup()).map_err(Error::Runtime)?,
        })
    }

    /// Resolves when one of the signals arrives.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Accept local connections and carry each over its own `tunnel` stream until a signal
/// (`Ok`), the gateway going away (`Err`), or `until` resolving (its result).
pub async fn serve(
    session: &Session,
    local: Local,
    tunnel: ApiPath,
    mut stop: Stop,
    until: impl Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    tokio::pin!(until);
    let mut streams = JoinSet::new();
    let mut next_id: u64 = 0;
    let result = loop {
        tokio::select! {
            accepted = local.accept() => match accepted {
                Ok((conn, peer)) => {
                    next_id += 1;
                    let (session, tunnel, id) = (session.clone(), tunnel.clone(), next_id);
                    let libvirt = matches!(tunnel, ApiPath::Tunnel { kind: TunnelKind::Libvirt { .. }, .. });
                    match conn {
                        Accepted::Tcp(s) => streams.spawn(carry(session, tunnel, s, peer, id)),
                        // libvirt passes descriptors over its unix socket: not a byte copy
                        Accepted::Unix(s) if libvirt => streams.spawn(super::libvirt::fds::carry(session, tunnel, s, peer, id)),
                        Accepted::Unix(s) => streams.spawn(carry(session, tunnel, s, peer, id)),
                    };
                }
                Err(e) => tracing::warn!(error = %e, "accepting a local connection failed"),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            () = stop.wait() => break Ok(()),
            err = session.closed() => break Err(err),
            r = &mut until => break r,
        }
    };
    streams.abort_all();
    result
}

/// One local connection ⇄ one tunnel stream, with half-close in both directions.
pub async fn carry<S>(session: Session, tunnel: ApiPath, local: S, peer: String, id: u64)
where
    S: AsyncRead + AsyncWrite,
{
    if let Some(stream) = open_for(&session, &tunnel, &peer, id).await {
        splice(local, stream, "stream", id).await;
    }
}

/// Open `tunnel` for local connection `id` from `peer`; a failure is reported on stderr
/// (`None`: only that local connection closes).
pub async fn open_for(session: &Session, tunnel: &ApiPath, peer: &str, id: u64) -> Option<Tunnel> {
    tracing::debug!(id, %peer, "local connection; opening tunnel");
    match session.open_tunnel(tunnel).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("connection {id} from {peer}:\n{}", report(&e));
            None
        }
    }
}

/// Copy both ways between a local connection and its tunnel until both sides have closed
/// (half-closes pass through); the end is logged as `what` number `id`.
pub async fn splice<A>(local: A, tunnel: Tunnel, what: &str, id: u64)
where
    A: AsyncRead + AsyncWrite,
{
    match tunnel.splice(local).await {
        Ok((up, down)) => tracing::debug!(id, up, down, "{what} closed"),
        Err(e) => tracing::debug!(id, error = %e, "{what} ended with an error"),
    }
}
