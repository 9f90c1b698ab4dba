//! Dead and idle clients on one connection: a watch ([`Watched`]) on the connection's
//! plaintext byte stream (under TLS, above the socket) that [`super::serve_connection`] asks
//! through [`Liveness`].
//!
//! - Dead: hyper sends an HTTP/2 PING after `limits.keepalive_interval_s` without a frame;
//!   a live client answers within a round trip, so it is never silent for longer than the
//!   interval plus `limits.keepalive_timeout_s`. Once nothing has been read for that long,
//!   [`Liveness::dead`] resolves and the connection is dropped: every stream on it fails
//!   at once (broken pipe), so every tunnel ends, and the socket is closed. (hyper's own
//!   give-up, a GOAWAY, would hand the tunnels an end of stream instead, which a backend
//!   that does not read never notices, and cannot get out to a frozen client whose socket
//!   buffers are full.)
//! - Idle: `limits.idle_timeout_s` closes (GOAWAY) a connection that has had no open stream
//!   for that long. hyper does not say how many streams are open, so the watch reads the
//!   frame headers going by (9 bytes each; payloads are skipped, not copied): a client's
//!   HEADERS opens a stream, END_STREAM from both sides or a RST_STREAM from either closes
//!   it. Tunnels (extended CONNECT) are streams like any other, open until both sides
//!   closed them.
//!
//! Both need the HTTP/2 client preface at the start of the stream; HTTP/1.1 connections
//! (curl without `--http2`) have no PINGs and no streams and are left alone.
//!
//! [`peer_went_away`] tells a tunnel's I/O error that only says the client left (a reset
//! stream, a connection closed without TLS close_notify) from a real failure, for the log.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `idle_since_ms` while a stream is open (or the connection is not HTTP/2).
const BUSY: u64 = u64::MAX;

/// What the watch knows about one connection, shared with whoever waits on it.
#[derive(Debug)]
pub struct Liveness {
    /// When the watch started; the zero of the millisecond counters.
    born: Instant,
    /// Milliseconds after `born` at which bytes last arrived from the client.
    last_read_ms: AtomicU64,
    /// Whether the client sent the HTTP/2 preface.
    h2: AtomicBool,
    /// Milliseconds after `born` since which no stream has been open, or [`BUSY`].
    idle_since_ms: AtomicU64,
    /// Woken when `idle_since_ms` changes between busy and idle.
    changed: Notify,
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(BUSY - 1)
    }

    /// How long nothing has arrived from the client.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_read_ms.load(Relaxed)),
        )
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

    /// Resolves once an HTTP/2 connection has had no open stream for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let since = self.idle_since_ms.load(Relaxed);
            if since == BUSY {
                notified.await;
                continue;
            }
            let idle_for = Duration::from_millis(self.now_ms().saturating_sub(since));
            if idle_for >= limit {
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(limit - idle_for) => {}
            }
        }
    }

    /// Record a change between "some stream open" and "none".
    fn set_idle(&self, idle: bool) {
        let now = if idle { self.now_ms() } else { BUSY };
        self.idle_since_ms.store(now, Relaxed);
        self.changed.notify_waiters();
    }
}

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    /// DATA 0, HEADERS 1, RST_STREAM 3, ...
    kind: u8,
    /// END_STREAM is 0x1 on DATA and HEADERS.
    flags: u8,
    /// 0 for the connection itself.
    stream: u32,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;

/// Finds frame headers in one direction of the byte stream, skipping payloads.
#[derive(Debug, Default)]
struct Parser {
    /// The header being gathered.
    head: [u8; 9],
    /// How much of it has arrived.
    have: usize,
    /// Payload bytes still to skip.
    skip: usize,
}

impl Parser {
    fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(Frame)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 9 {
                let h = self.head;
                self.have = 0;
                self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                each(Frame {
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                });
            }
        }
    }
}

/// Which side has finished a stream.
#[derive(Debug, Default, Clone, Copy)]
struct Halves {
    /// The client sent END_STREAM.
    client: bool,
    /// We sent END_STREAM.
    server: bool,
}

/// The open streams of one connection, from the frames both ways.
#[derive(Debug, Default)]
struct Streams {
    /// Open streams by id.
    open: HashMap<u32, Halves>,
    /// The highest stream id the client opened (ids only grow).
    last_client: u32,
}

impl Streams {
    fn frame(&mut self, f: Frame, from_client: bool) {
        if f.stream == 0 {
            return;
        }
        if from_client && f.kind == HEADERS && f.stream > self.last_client {
            self.last_client = f.stream;
            self.open.insert(f.stream, Halves::default());
        }
        if f.kind == RST_STREAM {
            self.open.remove(&f.stream);
            return;
        }
        let ends = (f.kind == DATA || f.kind == HEADERS) && f.flags & END_STREAM != 0;
        if let (true, Some(h)) = (ends, self.open.get_mut(&f.stream)) {
            if from_client {
                h.client = true;
            } else {
                h.server = true;
            }
            if h.client && h.server {
                self.open.remove(&f.stream);
            }
        }
    }
}

/// How far the client's preface has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// This many bytes of it so far.
    Preface(usize),
    /// HTTP/2: frames are followed.
    H2,
    /// Not HTTP/2: nothing is followed.
    Other,
}

/// The connection's byte stream, watched.
pub struct Watched<IO> {
    /// The stream hyper serves.
    inner: IO,
    /// Shared with [`super::serve_connection`].
    shared: Arc<Liveness>,
    /// Where the preface detection is.
    mode: Mode,
    /// Frame headers from the client.
    from_client: Parser,
    /// Frame headers to the client.
    to_client: Parser,
    /// The streams they open and close.
    streams: Streams,
}

/// Watch `io`; the [`Liveness`] is for the connection's keeper.
pub fn watch<IO>(io: IO) -> (Watched<IO>, Arc<Liveness>) {
    let shared = Arc::new(Liveness {
        born: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        h2: AtomicBool::new(false),
        idle_since_ms: AtomicU64::new(BUSY),
        changed: Notify::new(),
    });
    let w = Watched {
        inner: io,
        shared: shared.clone(),
        mode: Mode::Preface(0),
        from_client: Parser::default(),
        to_client: Parser::default(),
        streams: Streams::default(),
    };
    (w, shared)
}

impl<IO> Watched<IO> {
    fn read(&mut self, mut data: &[u8]) {
        let mut was_idle = self.mode == Mode::H2 && self.streams.open.is_empty();
        if let Mode::Preface(seen) = self.mode {
            let n = (PREFACE.len() - seen).min(data.len());
            if data[..n] != PREFACE[seen..seen + n] {
                self.mode = Mode::Other;
                return;
            }
            data = &data[n..];
            if seen + n < PREFACE.len() {
                self.mode = Mode::Preface(seen + n);
                return;
            }
            self.mode = Mode::H2;
            self.shared.h2.store(true, Relaxed);
            self.shared.set_idle(true);
            was_idle = true;
        }
        if self.mode == Mode::H2 {
            let streams = &mut self.streams;
            self.from_client.feed(data, |f| streams.frame(f, true));
            self.publish(was_idle);
        }
    }

    fn wrote(&mut self, data: &[u8]) {
        if self.mode != Mode::H2 {
            return;
        }
        let was_idle = self.streams.open.is_empty();
        let streams = &mut self.streams;
        self.to_client.feed(data, |f| streams.frame(f, false));
        self.publish(was_idle);
    }

    fn publish(&self, was_idle: bool) {
        let idle = self.streams.open.is_empty();
        if idle != was_idle {
            self.shared.set_idle(idle);
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
                if self.mode != Mode::Other {
                    self.read(&buf.filled()[before..]);
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
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(&buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                self.wrote(&b[..take]);
                n -= take;
            }
        }
        polled
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

/// An I/O error with every cause behind it (`a: b: c`): hyper and h2 hide the telling part
/// (`stream error received: ...`) behind "error writing a body to connection".
pub fn chain(e: &std::io::Error) -> String {
    let mut out = e.to_string();
    let mut cur = causes(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = causes(err);
    }
    out
}

/// The next cause: what an `io::Error` wraps, else `source()`.
fn causes<'a>(
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

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

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
        // split reads on purpose: headers cut in the middle must still be found
        for chunk in buf.chunks_mut(7) {
            w.read_exact(chunk).await.unwrap();
        }
    }

    fn idle(live: &Liveness) -> bool {
        live.idle_since_ms.load(Relaxed) != BUSY
    }

    #[tokio::test]
    async fn streams_open_and_close_with_the_frames_both_ways() {
        let (mut w, live, mut c) = pair();
        assert!(!idle(&live), "not HTTP/2 yet");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(0x4, 0, 0, &[0; 6])); // SETTINGS
        client_sends(&mut w, &mut c, &hello).await;
        assert!(live.h2.load(Relaxed) && idle(&live));
        // a tunnel: HEADERS without END_STREAM, data both ways, half-closes
        client_sends(&mut w, &mut c, &frame(HEADERS, 0x4, 1, &[0; 40])).await;
        assert!(!idle(&live));
        w.write_all(&frame(HEADERS, 0x4, 1, &[0; 3])).await.unwrap();
        client_sends(&mut w, &mut c, &frame(DATA, 0, 1, &[1; 100])).await;
        client_sends(&mut w, &mut c, &frame(DATA, END_STREAM, 1, &[])).await;
        assert!(!idle(&live), "half-closed is still open");
        // a call on stream 3 comes and goes meanwhile
        client_sends(
            &mut w,
            &mut c,
            &frame(HEADERS, 0x4 | END_STREAM, 3, &[0; 9]),
        )
        .await;
        w.write_all(&frame(HEADERS, 0x4 | END_STREAM, 3, &[0; 5]))
            .await
            .unwrap();
        assert!(!idle(&live));
        let mut end = frame(DATA, 0, 1, &[2; 10]);
        end.extend(frame(DATA, END_STREAM, 1, &[]));
        // vectored writes count only what was written
        let slices = [
            std::io::IoSlice::new(&end[..12]),
            std::io::IoSlice::new(&end[12..]),
        ];
        let n = w.write_vectored(&slices).await.unwrap();
        assert!(!idle(&live) || n == end.len());
        w.write_all(&end[n..]).await.unwrap();
        assert!(idle(&live));
        // a reset closes at once
        client_sends(&mut w, &mut c, &frame(HEADERS, 0x4, 5, &[0; 9])).await;
        assert!(!idle(&live));
        client_sends(&mut w, &mut c, &frame(RST_STREAM, 0, 5, &[0, 0, 0, 8])).await;
        assert!(idle(&live));
        // old stream ids do not come back
        client_sends(&mut w, &mut c, &frame(HEADERS, END_STREAM, 3, &[])).await;
        assert!(idle(&live));
    }

    #[tokio::test]
    async fn idle_and_dead_resolve_after_their_time() {
        let (mut w, live, mut c) = pair();
        let t = Instant::now();
        client_sends(&mut w, &mut c, PREFACE).await;
        live.idle(Duration::from_millis(200)).await;
        assert!(t.elapsed() >= Duration::from_millis(200));
        client_sends(&mut w, &mut c, &frame(HEADERS, 0x4, 1, &[])).await;
        let busy = tokio::time::timeout(
            Duration::from_millis(300),
            live.idle(Duration::from_millis(100)),
        );
        assert!(busy.await.is_err(), "an open stream is not idle");
        client_sends(&mut w, &mut c, &frame(DATA, 0, 1, &[0; 3])).await;
        live.dead(Duration::from_millis(200)).await;
        assert!(live.silent_for() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn http1_is_left_alone() {
        let (mut w, live, mut c) = pair();
        client_sends(&mut w, &mut c, b"GET /v1/whoami HTTP/1.1\r\n\r\n").await;
        assert!(!live.h2.load(Relaxed) && !idle(&live));
        w.write_all(&frame(HEADERS, END_STREAM, 1, &[]))
            .await
            .unwrap();
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
