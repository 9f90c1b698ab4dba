//! The descriptor-aware relay between a unix socket that speaks libvirt RPC with real
//! descriptors (libvirtd's socket on the gateway, the local libvirt client on the laptop)
//! and a virtgate tunnel stream in which every descriptor slot is an 8-byte id.
//!
//! Two directions run at once, each with its own [`Framer`]:
//!
//! ```text
//!            socket → tunnel                           tunnel → socket
//! recvmsg (bytes + SCM_RIGHTS queue)            read (bytes; slots are ids)
//!   plain bytes ─────────────────▶ write          plain bytes ────────────────▶ send
//!   message + N fds ─ export ─▶ message + N ids   message + N ids ─ import ─▶ message, N × sendmsg(0x00 + fd)
//!   refused CALL  ─ error reply ─▶ (other direction, back to the caller)
//!   refused REPLY ─ error reply ─▶ in its place
//! ```
//!
//! What an id means is the [`Descriptors`] implementation's business: the gateway keeps
//! descriptors in a per-connection table, the client opens one HTTP/2 stream per
//! descriptor. What may pass at all is decided here, the same on both ends: only
//! `virDomainOpenGraphics` (a CALL with sockets) and `virDomainOpenGraphicsFD` (a REPLY with
//! sockets). Any other message with descriptors, a descriptor that is not a socket, or a
//! descriptor that did not arrive is answered with a libvirt error ([`crate::reply`]), so
//! the libvirt client raises an error and keeps its connection.
//!
//! An error reply for a refused CALL travels the other way; it is written only between two
//! messages of that direction ([`Framer::at_boundary`]). Plain bytes are collected per read
//! and written at once.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::fdio::{is_socket, recv_with_fds, send_all, send_fd, shutdown_write};
use crate::frame::{
    Event, FrameError, Framer, Header, Whole, CALL_WITH_FDS, PROC_DOMAIN_OPEN_GRAPHICS,
    PROC_DOMAIN_OPEN_GRAPHICS_FD, REMOTE_PROGRAM, REPLY_WITH_FDS, TOKEN_LEN,
};
use crate::reply::{error_reply, Refusal, VIR_ERR_NO_SUPPORT, VIR_ERR_OPERATION_FAILED};

/// Read buffer per direction (what `virtgate_proto::tuning::SPLICE_BUFFER` is for the
/// plain tunnels; libvirt traffic is mostly small).
const BUFFER: usize = 64 * 1024;

/// Error replies waiting to be written in a direction.
const INJECT_QUEUE: usize = 16;

/// What turns descriptors into ids and back, on one end of the tunnel.
pub trait Descriptors: Send + Sync + 'static {
    /// `fds` arrived on the socket with `message` (already checked: an allowed procedure,
    /// every descriptor a socket, as many as the message declares). Give the ids that stand
    /// for them in the tunnel, in order, or refuse.
    fn export(
        &self,
        message: &Whole,
        fds: Vec<OwnedFd>,
    ) -> impl Future<Output = Result<Vec<u64>, Refusal>> + Send;

    /// `ids` arrived in the tunnel with `message` (an allowed procedure). Give the
    /// descriptors to send on the socket, in order, or refuse.
    fn import(
        &self,
        message: &Whole,
        ids: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<OwnedFd>, Refusal>> + Send;

    /// Which plain messages to read whole and show to [`Descriptors::observe`] (e.g. the
    /// gateway notes which domain a `virDomainOpenGraphicsFD` call names).
    fn watch(_header: &Header) -> bool {
        false
    }

    /// A message chosen by [`Descriptors::watch`] passes by (in either direction).
    fn observe(&self, _message: &Whole) {}
}

/// Why a relay ended other than by both sides closing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading or writing either side.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The stream is not libvirt RPC.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Bytes carried each way, for the logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// From the socket into the tunnel.
    pub socket_to_tunnel: u64,
    /// From the tunnel onto the socket.
    pub tunnel_to_socket: u64,
}

/// Relay until both sides have closed (half-closes pass through), or either fails.
pub async fn relay<T, H>(
    socket: UnixStream,
    tunnel: T,
    handler: Arc<H>,
) -> Result<Carried, RelayError>
where
    T: AsyncRead + AsyncWrite + Send,
    H: Descriptors,
{
    let (tunnel_r, tunnel_w) = tokio::io::split(tunnel);
    // errors for the socket (refused calls from the socket), and for the tunnel
    let (to_socket_tx, to_socket_rx) = mpsc::channel(INJECT_QUEUE);
    let (to_tunnel_tx, to_tunnel_rx) = mpsc::channel(INJECT_QUEUE);
    let up = socket_to_tunnel(&socket, tunnel_w, &*handler, to_tunnel_rx, to_socket_tx);
    let down = tunnel_to_socket(tunnel_r, &socket, &*handler, to_socket_rx, to_tunnel_tx);
    let (up, down) = tokio::try_join!(up, down)?;
    Ok(Carried {
        socket_to_tunnel: up,
        tunnel_to_socket: down,
    })
}

/// Socket → tunnel: descriptors become ids.
async fn socket_to_tunnel<W, H>(
    socket: &UnixStream,
    mut tunnel: W,
    handler: &H,
    mut inject: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<Vec<u8>>,
) -> Result<u64, RelayError>
where
    W: AsyncWrite + Unpin,
    H: Descriptors,
{
    let mut framer = Framer::new(1, H::watch);
    let mut fds = VecDeque::new();
    let mut buf = vec![0u8; BUFFER];
    let mut out = Vec::with_capacity(BUFFER);
    let mut carried = 0u64;
    loop {
        let n = tokio::select! {
            Some(reply) = inject.recv(), if framer.at_boundary() => {
                tunnel.write_all(&reply).await?;
                continue;
            }
            r = recv_with_fds(socket, &mut buf, &mut fds) => r?,
        };
        if n == 0 {
            tunnel.shutdown().await?;
            return Ok(carried);
        }
        carried += n as u64;
        let mut input = &buf[..n];
        while let Some(whole) = pass_plain(&mut framer, &mut input, &mut out, handler)? {
            // descriptors: what came before goes first, then the (slow) export
            flush(&mut tunnel, &mut out).await?;
            let take = whole.slots.len().min(fds.len());
            let mine: Vec<OwnedFd> = fds.drain(..take).collect();
            let result = match check(&whole) {
                Err(r) => Err(r),
                Ok(()) if mine.len() < whole.slots.len() => Err(Refusal::new(
                    VIR_ERR_OPERATION_FAILED,
                    "a descriptor did not arrive with its message (virtgate relay)",
                )),
                Ok(()) if !mine.iter().all(is_socket) => Err(Refusal::new(
                    VIR_ERR_NO_SUPPORT,
                    "virtgate carries only sockets (graphical consoles) as descriptors",
                )),
                Ok(()) => handler.export(&whole, mine).await,
            };
            match result {
                Ok(ids) => {
                    out.extend_from_slice(&whole.bytes);
                    for id in ids {
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                }
                Err(refusal) => refuse(&whole, &refusal, &mut out, &back).await,
            }
        }
        flush(&mut tunnel, &mut out).await?;
    }
}

/// Tunnel → socket: ids become descriptors.
async fn tunnel_to_socket<R, H>(
    mut tunnel: R,
    socket: &UnixStream,
    handler: &H,
    mut inject: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<Vec<u8>>,
) -> Result<u64, RelayError>
where
    R: AsyncRead + Unpin,
    H: Descriptors,
{
    let mut framer = Framer::new(TOKEN_LEN, H::watch);
    let mut buf = vec![0u8; BUFFER];
    let mut out = Vec::with_capacity(BUFFER);
    let mut carried = 0u64;
    loop {
        let n = tokio::select! {
            Some(reply) = inject.recv(), if framer.at_boundary() => {
                send_all(socket, &reply).await?;
                continue;
            }
            r = tunnel.read(&mut buf) => r?,
        };
        if n == 0 {
            shutdown_write(socket)?;
            return Ok(carried);
        }
        carried += n as u64;
        let mut input = &buf[..n];
        while let Some(whole) = pass_plain(&mut framer, &mut input, &mut out, handler)? {
            send_all(socket, &out).await?;
            out.clear();
            let ids = whole
                .slots
                .iter()
                .map(|s| u64::from_be_bytes(s.as_slice().try_into().unwrap_or([0xff; 8])))
                .collect();
            let result = match check(&whole) {
                Err(r) => Err(r),
                Ok(()) => handler.import(&whole, ids).await,
            };
            match result {
                Ok(fds) => {
                    send_all(socket, &whole.bytes).await?;
                    for fd in fds {
                        send_fd(socket, fd).await?;
                    }
                }
                Err(refusal) => refuse(&whole, &refusal, &mut out, &back).await,
            }
        }
        send_all(socket, &out).await?;
        out.clear();
    }
}

/// Feed `input` to `framer`, collecting what passes unchanged in `out` (messages read
/// whole but without descriptors are shown to the handler first); stop at the next
/// message with descriptors, or when `input` is used up (`None`).
fn pass_plain<H: Descriptors>(
    framer: &mut Framer,
    input: &mut &[u8],
    out: &mut Vec<u8>,
    handler: &H,
) -> Result<Option<Whole>, FrameError> {
    while let Some(event) = framer.next(input)? {
        match event {
            Event::Bytes(b) => out.extend_from_slice(b),
            Event::Header(_, raw) => out.extend_from_slice(&raw),
            Event::Whole(w) if w.header.has_fds() => return Ok(Some(w)),
            Event::Whole(w) => {
                handler.observe(&w);
                out.extend_from_slice(&w.bytes);
            }
        }
    }
    Ok(None)
}

/// Write and clear what was collected.
async fn flush<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        w.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Answer a refused message: a refused REPLY is replaced by the error (same direction,
/// `out`); a refused CALL is answered to its caller (the other direction, `back`).
async fn refuse(whole: &Whole, refusal: &Refusal, out: &mut Vec<u8>, back: &mpsc::Sender<Vec<u8>>) {
    tracing::info!(
        procedure = whole.header.proc,
        kind = whole.header.kind,
        reason = %refusal.message,
        "libvirt message with descriptors refused"
    );
    let reply = error_reply(&whole.header, refusal);
    if whole.header.kind == REPLY_WITH_FDS {
        out.extend_from_slice(&reply);
    } else if back.send(reply).await.is_err() {
        tracing::debug!("the caller has gone; error reply dropped");
    }
}

/// The procedures whose descriptors virtgate carries.
fn check(whole: &Whole) -> Result<(), Refusal> {
    let h = &whole.header;
    let allowed = h.prog == REMOTE_PROGRAM
        && matches!(
            (h.kind, h.proc),
            (CALL_WITH_FDS, PROC_DOMAIN_OPEN_GRAPHICS)
                | (REPLY_WITH_FDS, PROC_DOMAIN_OPEN_GRAPHICS_FD)
        );
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(
            VIR_ERR_NO_SUPPORT,
            format!(
                "virtgate does not pass file descriptors for remote procedure {} \
                 (only graphical consoles: virDomainOpenGraphics and virDomainOpenGraphicsFD)",
                h.proc
            ),
        ))
    }
}
