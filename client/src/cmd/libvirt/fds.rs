//! The laptop half of libvirt's descriptor passing: every local libvirt connection of
//! `virtgate libvirt` runs [`virtgate_rpc::relay`] instead of a byte copy, with
//! [`StreamFds`] turning descriptors into HTTP/2 streams of the same session:
//!
//! - a `virDomainOpenGraphicsFD` reply names the id the gateway parked libvirtd's display
//!   socket under: open `/v1/libvirt/fds/{id}`, make a socketpair, splice one end to the
//!   stream and hand the other to the local libvirt client (virt-manager, virt-viewer) with
//!   the reply, as libvirtd would have;
//! - a `virDomainOpenGraphics` call brings the client's own socket: open `/v1/libvirt/fds`
//!   (the gateway parks the other end of a socketpair and says its id), splice the client's
//!   socket to that stream, and send the id in the call.
//!
//! A stream that cannot be opened turns into a libvirt error for that one call (the local
//! client keeps its connection), with the gateway's own message and hint.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::net::UnixStream;
use virtgate_proto::{ApiPath, TunnelKind, DESCRIPTOR_HEADER};
use virtgate_rpc::fdio::stream_from_fd;
use virtgate_rpc::reply::VIR_ERR_OPERATION_FAILED;
use virtgate_rpc::{Descriptors, Refusal, Whole};

use super::super::relay;
use crate::error::{chain_text, Error};
use crate::session::{Session, Tunnel};

/// How long opening one descriptor stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Descriptors of one local libvirt connection, as streams on `session`.
pub struct StreamFds {
    /// The gateway connection every stream goes over.
    pub session: Session,
    /// Whether the libvirt tunnel is read-only (the descriptor streams say the same).
    pub read_only: bool,
    /// The local connection's number, for messages.
    pub conn: u64,
}

impl StreamFds {
    /// Open the stream for descriptor `id` (`None`: a new one for libvirtd); returns the
    /// stream and the id the gateway gave.
    async fn open(&self, id: Option<u64>) -> Result<(u64, Tunnel), Refusal> {
        let path = ApiPath::Tunnel {
            domain: None,
            kind: TunnelKind::LibvirtFd {
                read_only: self.read_only,
                id,
            },
        };
        let refusal = |e: Error| {
            let hint = e
                .hint()
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default();
            Refusal::new(
                VIR_ERR_OPERATION_FAILED,
                format!("virtgate: {}{hint}", chain_text(&e)),
            )
        };
        let (headers, stream) =
            tokio::time::timeout(OPEN_TIMEOUT, self.session.open_tunnel_with_headers(&path))
                .await
                .map_err(|_| {
                    Refusal::new(
                        VIR_ERR_OPERATION_FAILED,
                        format!(
                            "virtgate: the gateway did not open a console stream within {} s",
                            OPEN_TIMEOUT.as_secs()
                        ),
                    )
                })?
                .map_err(refusal)?;
        let id = match id {
            Some(n) => n,
            None => headers
                .get(DESCRIPTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    Refusal::new(
                        VIR_ERR_OPERATION_FAILED,
                        "virtgate: the gateway gave no descriptor id (is it older than this client?)",
                    )
                })?,
        };
        Ok((id, stream))
    }

    /// Splice a local socket to a descriptor stream until both sides close.
    fn splice(&self, id: u64, local: UnixStream, stream: Tunnel) {
        tracing::debug!(conn = self.conn, descriptor = id, "descriptor stream open");
        tokio::spawn(async move {
            relay::splice(local, stream, "descriptor stream", id).await;
        });
    }
}

/// A local socket could not be set up: a libvirt error for the call.
fn local_failure(e: std::io::Error) -> Refusal {
    Refusal::new(
        VIR_ERR_OPERATION_FAILED,
        format!("virtgate: cannot set up a local socket for the console: {e}"),
    )
}

impl Descriptors for StreamFds {
    async fn export(&self, _message: &Whole, fds: Vec<OwnedFd>) -> Result<Vec<u64>, Refusal> {
        // virDomainOpenGraphics: the local client's sockets go to libvirtd
        let mut ids = Vec::with_capacity(fds.len());
        for fd in fds {
            let local = stream_from_fd(fd).map_err(local_failure)?;
            let (id, stream) = self.open(None).await?;
            tracing::debug!(
                conn = self.conn,
                descriptor = id,
                "passing a socket to libvirtd"
            );
            self.splice(id, local, stream);
            ids.push(id);
        }
        Ok(ids)
    }

    async fn import(&self, _message: &Whole, ids: Vec<u64>) -> Result<Vec<OwnedFd>, Refusal> {
        // virDomainOpenGraphicsFD: a socket to the display for the local client
        let mut fds = Vec::with_capacity(ids.len());
        for id in ids {
            let (_, stream) = self.open(Some(id)).await?;
            let (theirs, ours) = std::os::unix::net::UnixStream::pair().map_err(local_failure)?;
            let ours = stream_from_fd(ours.into()).map_err(local_failure)?;
            tracing::debug!(
                conn = self.conn,
                descriptor = id,
                "display socket for the local client"
            );
            self.splice(id, ours, stream);
            fds.push(theirs.into());
        }
        Ok(fds)
    }
}

/// One local libvirt connection ⇄ one libvirt tunnel, descriptors included.
pub async fn carry(session: Session, tunnel: ApiPath, local: UnixStream, peer: String, id: u64) {
    let read_only = matches!(
        tunnel,
        ApiPath::Tunnel {
            kind: TunnelKind::Libvirt { read_only: true },
            ..
        }
    );
    let Some(stream) = relay::open_for(&session, &tunnel, &peer, id).await else {
        return;
    };
    let fds = std::sync::Arc::new(StreamFds {
        session,
        read_only,
        conn: id,
    });
    match virtgate_rpc::relay(local, stream, fds).await {
        Ok(c) => tracing::debug!(
            id,
            %peer,
            up = c.socket_to_tunnel,
            down = c.tunnel_to_socket,
            "libvirt connection closed"
        ),
        Err(e) => tracing::debug!(id, %peer, error = %e, "libvirt connection ended with an error"),
    }
}
