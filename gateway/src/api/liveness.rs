//! Dead and idle clients on one connection: a watch ([`Watched`]) on the connection's
//! plaintext byte stream (under TLS, above the socket) that [`super::serve_connection`] asks
//! through [`Liveness`].
//!
//! - Dead: the gateway sends an HTTP/2 PING after `limits.keepalive_interval_s` without a frame;
//!   a live client answers within a round trip, so it is never silent for longer than the
//!   interval plus `limits.keepalive_timeout_s`. Once nothing has been read for that long,
//!   [`Liveness::dead`] resolves and the connection is dropped: every stream on it fails
//!   at once (broken pipe), so every tunnel ends, and the socket is closed. (A GOAWAY would
//!   hand the tunnels an end of stream instead, which a backend that does not read never
//!   notices, and cannot get out to a frozen client whose socket buffers are full.) Only
//!   HTTP/2 clients are pinged: the watch looks at the first 24
//!   bytes for the client preface and at nothing else.
//! - Idle: `limits.idle_timeout_s` closes (GOAWAY) a connection that has had nothing going
//!   on for that long. What goes on is counted where it is known, not read off the wire:
//!   every request holds a [`Busy`] while it is answered, every tunnel and event stream for
//!   its whole life ([`super::ConnCtx::hold`]).
//!
//! [`peer_went_away`] tells a tunnel's I/O error that only says the client left (a reset
//! stream, a connection closed without TLS close_notify) from a real failure, for the log.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::sniff::PREFACE;

/// What the watch and the request handlers know about one connection, shared with whoever
/// waits on it.
#[derive(Debug)]
pub struct Liveness {
    /// When the watch started; the zero of the millisecond counters.
    born: Instant,
    /// Milliseconds after `born` at which bytes last arrived from the client.
    last_read_ms: AtomicU64,
    /// Whether the client sent the HTTP/2 preface (only those are pinged).
    h2: AtomicBool,
    /// Requests being answered plus tunnels and event streams open.
    busy: AtomicUsize,
    /// Milliseconds after `born` at which `busy` last dropped to zero.
    idle_since_ms: AtomicU64,
    /// Woken when `busy` drops to zero.
    changed: Notify,
}

/// Keeps its connection from being idle while held.
#[derive(Debug)]
pub struct Busy(Arc<Liveness>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since_ms.store(self.0.now_ms(), Relaxed);
            self.0.changed.notify_waiters();
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Something starts on the connection; it is busy until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Relaxed);
        Busy(self.clone())
    }

    /// How long nothing has arrived from the client.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_read_ms.load(Relaxed)),
        )
    }

    /// Whether the client speaks HTTP/2 (sent the preface).
    pub fn is_h2(&self) -> bool {
        self.h2.load(Relaxed)
    }

    /// Resolves once an HTTP/2 client has sent nothing for `bound` (it would have answered a
    /// PING by then); never for HTTP/1.1.
    pub async fn dead(&self, bound: Duration) {
        loop {
            let silent = self.silent_for();
            if self.h2.load(Relaxed) && silent >= bound {
                return;
            }
            let rest = bound.saturating_sub(silent).max(Duration::from_millis(50));
            tokio::time::sleep(rest).await;
        }
    }

    /// Resolves once nothing has been going on for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.busy.load(Relaxed) > 0 {
                notified.await;
                continue;
            }
            let since = self.idle_since_ms.load(Relaxed);
            let idle_for = Duration::from_millis(self.now_ms().saturating_sub(since));
            if idle_for >= limit {
                // something may have started meanwhile
                if self.busy.load(Relaxed) == 0 {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(limit - idle_for) => {}
            }
        }
    }
}

/// The connection's byte stream, watched: when bytes arrive, and whether it starts with the
/// HTTP/2 preface. Writes pass untouched.
pub struct Watched<IO> {
    /// The stream h2 or hyper serves.
    inner: IO,
    /// Shared with [`super::serve_connection`].
    shared: Arc<Liveness>,
    /// Bytes of the preface seen so far; `None` once decided.
    preface: Option<usize>,
}

/// Watch `io`; the [`Liveness`] is for the connection's keeper and its requests.
pub fn watch<IO>(io: IO) -> (Watched<IO>, Arc<Liveness>) {
    let shared = Arc::new(Liveness {
        born: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        h2: AtomicBool::new(false),
        busy: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
        changed: Notify::new(),
    });
    let w = Watched {
        inner: io,
        shared: shared.clone(),
        preface: Some(0),
    };
    (w, shared)
}

impl<IO> Watched<IO> {
    /// Follow the preface through the first bytes read.
    fn preface(&mut self, data: &[u8]) {
        let Some(seen) = self.preface else { return };
        let n = (PREFACE.len() - seen).min(data.len());
        if data[..n] != PREFACE[seen..seen + n] {
            self.preface = None;
        } else if seen + n == PREFACE.len() {
            self.preface = None;
            self.shared.h2.store(true, Relaxed);
        } else {
            self.preface = Some(seen + n);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                let now = self.shared.now_ms();
                self.shared.last_read_ms.store(now, Relaxed);
                if self.preface.is_some() {
                    self.preface(&buf.filled()[before..]);
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The next cause: what an `io::Error` wraps, else `source()` (see [`crate::error_text`]).
pub fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    match err.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|i| i as &(dyn std::error::Error + 'static)),
        None => err.source(),
    }
}

/// Whether a tunnel's I/O error only says that the client left: the connection closed
/// without TLS close_notify, reset or broken, or the client reset the stream or sent a
/// GOAWAY (h2's "... error received: ..."). Such an end is no error of the gateway's.
pub fn peer_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{
        BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected, UnexpectedEof,
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                UnexpectedEof | BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
            ) {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("close_notify")
            || text.starts_with("stream error received")
            || text.starts_with("connection error received")
            // h2's NO_ERROR: the connection ended without a fault (its keepalive ran out);
            // CANCEL: the client dropped the stream (left the console)
            || text.ends_with("not a result of an error")
            || text.ends_with("stream no longer needed")
        {
            return true;
        }
        cur = causes(err);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A watched end and the client's end of an in-memory connection.
    fn pair() -> (
        Watched<tokio::io::DuplexStream>,
        Arc<Liveness>,
        tokio::io::DuplexStream,
    ) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (w, live) = watch(ours);
        (w, live, theirs)
    }

    async fn client_sends(
        w: &mut Watched<tokio::io::DuplexStream>,
        c: &mut tokio::io::DuplexStream,
        bytes: &[u8],
    ) {
        c.write_all(bytes).await.unwrap();
        let mut buf = vec![0u8; bytes.len()];
        // split reads on purpose: a preface cut in the middle must still be found
        for chunk in buf.chunks_mut(7) {
            w.read_exact(chunk).await.unwrap();
        }
    }

    #[tokio::test]
    async fn idle_waits_for_what_is_held_and_dead_for_silence() {
        let (mut w, live, mut c) = pair();
        let t = Instant::now();
        client_sends(&mut w, &mut c, PREFACE).await;
        assert!(live.h2.load(Relaxed));
        live.idle(Duration::from_millis(200)).await;
        assert!(t.elapsed() >= Duration::from_millis(200));
        let tunnel = live.busy();
        let busy = tokio::time::timeout(
            Duration::from_millis(300),
            live.idle(Duration::from_millis(100)),
        );
        assert!(busy.await.is_err(), "an open tunnel is not idle");
        let released = Instant::now();
        drop(tunnel);
        live.idle(Duration::from_millis(100)).await;
        assert!(released.elapsed() >= Duration::from_millis(100));
        client_sends(&mut w, &mut c, &[0; 3]).await;
        live.dead(Duration::from_millis(200)).await;
        assert!(live.silent_for() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn http1_is_never_dead() {
        let (mut w, live, mut c) = pair();
        client_sends(&mut w, &mut c, b"GET /v1/whoami HTTP/1.1\r\n\r\n").await;
        assert!(!live.h2.load(Relaxed));
        let never = tokio::time::timeout(
            Duration::from_millis(150),
            live.dead(Duration::from_millis(50)),
        );
        assert!(never.await.is_err());
    }

    #[test]
    fn a_client_leaving_is_told_from_a_failure() {
        use std::io::{Error, ErrorKind};
        let gone = [
            Error::new(
                ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            ),
            Error::from(ErrorKind::ConnectionReset),
            Error::other("stream error received: stream no longer needed"),
            Error::other(Error::other(
                "connection error received: not a result of an error",
            )),
        ];
        for e in gone {
            assert!(peer_went_away(&e), "{e}");
        }
        let no_error = Error::other(
            "error writing a body to connection: protocol error: not a result of an error",
        );
        assert!(peer_went_away(&no_error));
        let cancel = Error::other(
            "error writing a body to connection: protocol error: stream no longer needed",
        );
        assert!(peer_went_away(&cancel));
        for e in [
            Error::from(ErrorKind::PermissionDenied),
            Error::other("stream error detected: protocol error"),
        ] {
            assert!(!peer_went_away(&e), "{e}");
        }
    }
}
