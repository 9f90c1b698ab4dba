//! The client side of every measurement, over any byte stream (a TCP connection to a
//! path's local endpoint, or a tunnel of the bench's own HTTP/2 client).
//!
//! - [`bulk`]: one verified transfer of `len` bytes, up (we write, the sink checks and
//!   answers) or down (the source writes, we check); the writer and the reader are separate
//!   tasks; the time runs from the first header byte to the sink's answer (up) or the last
//!   byte (down).
//! - [`echo`]: 64-byte round trips on an echo stream, each answer compared with what was
//!   sent; returns the round-trip times in nanoseconds.
//! - [`Background`]: an unbounded bulk stream that runs until stopped, whose verified byte
//!   count can be sampled (the sink's counter up, our own down) to get its rate during an
//!   echo measurement.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::pattern::{self, Verifier, CHUNK};
use crate::servers::{Registry, MODE_ECHO, MODE_SINK, MODE_SOURCE, UNBOUNDED};

/// Direction of a bulk stream, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server (to the sink).
    Up,
    /// Server → client (from the source).
    Down,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// A byte stream the measurements run on.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Connect to a path's local endpoint (TCP_NODELAY, as a VNC client would).
pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn header(mode: u8, id: u64, len: u64) -> [u8; 17] {
    let mut h = [0u8; 17];
    h[0] = mode;
    h[1..9].copy_from_slice(&id.to_le_bytes());
    h[9..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Write `len` pattern bytes (header first), or until `stop` when `len` is [`UNBOUNDED`].
async fn write_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    hdr: [u8; 17],
    len: u64,
    stop: Option<&AtomicBool>,
) -> std::io::Result<()> {
    w.write_all(&hdr).await?;
    let mut off = 0u64;
    while off < len && !stop.is_some_and(|s| s.load(Relaxed)) {
        let n = (len - off).min(CHUNK as u64) as usize;
        w.write_all(pattern::slice(off, n)).await?;
        off += n as u64;
    }
    w.flush().await
}

/// Read and check pattern bytes until `len` (or EOF / `stop` when unbounded), counting
/// them into `counter` and the registry; returns the bytes checked.
async fn read_pattern<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u64,
    counter: &AtomicU64,
    reg: &Registry,
    stop: Option<&AtomicBool>,
) -> Result<u64> {
    let mut v = Verifier::default();
    // no bigger than the stream: P5's 10,000 short streams would hold 2.5 GB of buffers
    let mut buf = vec![0u8; len.min(CHUNK as u64) as usize];
    while v.offset < len && !stop.is_some_and(|s| s.load(Relaxed)) {
        let want = (len - v.offset).min(CHUNK as u64) as usize;
        let n = r
            .read(&mut buf[..want])
            .await
            .context("reading bulk data")?;
        if n == 0 {
            if len == UNBOUNDED {
                break;
            }
            reg.failures.fetch_add(1, Relaxed);
            bail!("the stream ended after {} of {len} bytes", v.offset);
        }
        if !v.check(&buf[..n]) {
            reg.failures.fetch_add(1, Relaxed);
            bail!(
                "received bytes differ from the pattern at offset {}",
                v.offset
            );
        }
        counter.fetch_add(n as u64, Relaxed);
        reg.verified.fetch_add(n as u64, Relaxed);
    }
    Ok(v.offset)
}

/// One verified bulk transfer of `len` bytes; returns how long it took.
pub async fn bulk<S: Stream>(s: S, dir: Dir, len: u64, reg: &Arc<Registry>) -> Result<Duration> {
    let (id, _counter) = reg.register();
    let (mut r, mut w) = tokio::io::split(s);
    let start = Instant::now();
    let result = match dir {
        Dir::Up => {
            let writer = tokio::spawn(async move {
                let res = write_pattern(&mut w, header(MODE_SINK, id, len), len, None).await;
                (res, w)
            });
            let mut reply = [0u8; 9];
            let got = r.read_exact(&mut reply).await;
            let elapsed = start.elapsed();
            let (wres, _w) = writer.await.context("the writer task")?;
            wres.context("writing bulk data")?;
            got.context("reading the sink's answer")?;
            let verified = u64::from_le_bytes(reply[..8].try_into().unwrap_or_default());
            if reply[8] != 1 || verified != len {
                bail!(
                    "the sink verified {verified} of {len} bytes (ok={})",
                    reply[8]
                );
            }
            Ok(elapsed)
        }
        Dir::Down => {
            w.write_all(&header(MODE_SOURCE, id, len))
                .await
                .context("writing the source header")?;
            let counter = AtomicU64::new(0);
            let got = read_pattern(&mut r, len, &counter, reg, None).await?;
            let elapsed = start.elapsed();
            if got != len {
                bail!("received {got} of {len} bytes");
            }
            Ok(elapsed)
        }
    };
    reg.forget(id);
    result
}

/// `count` 64-byte round trips to the echo server at `addr` after `warmup` unrecorded ones,
/// stopping early once `limit` has passed; returns the round-trip times in nanoseconds.
/// Runs on a thread of its own with blocking I/O (like the echo server), so the bench's
/// bulk tasks never delay a round trip: what is measured is the path.
pub async fn echo(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    limit: Duration,
) -> Result<Vec<u64>> {
    tokio::task::spawn_blocking(move || echo_blocking(addr, count, warmup, limit))
        .await
        .context("the echo thread")?
}

fn echo_blocking(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    limit: Duration,
) -> Result<Vec<u64>> {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&[MODE_ECHO])?;
    let mut rtts = Vec::with_capacity(count);
    let mut back = [0u8; 64];
    let mut started: Option<Instant> = None;
    for i in 0..warmup + count {
        if i == warmup {
            started = Some(Instant::now());
        }
        let msg = pattern::slice(i as u64 * 64, 64);
        let t = Instant::now();
        s.write_all(msg).context("echo write")?;
        s.read_exact(&mut back).context("echo read")?;
        let dt = t.elapsed();
        if back != *msg {
            bail!("echo answer {i} differs from what was sent");
        }
        if i >= warmup {
            rtts.push(dt.as_nanos() as u64);
        }
        if started.is_some_and(|s| s.elapsed() > limit) {
            break;
        }
    }
    Ok(rtts)
}

/// An unbounded bulk stream running in its own task until [`Background::finish`].
pub struct Background {
    stop: Arc<AtomicBool>,
    /// Verified bytes so far (the sink's count for up, ours for down).
    counter: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<()>>,
    id: u64,
    reg: Arc<Registry>,
}

impl Background {
    /// Start moving data over `s` in direction `dir`.
    pub fn start<S: Stream>(s: S, dir: Dir, reg: &Arc<Registry>) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let (id, counter) = reg.register();
        let (st, c, r2) = (stop.clone(), counter.clone(), reg.clone());
        let task = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            match dir {
                Dir::Up => {
                    write_pattern(
                        &mut w,
                        header(MODE_SINK, id, UNBOUNDED),
                        UNBOUNDED,
                        Some(&st),
                    )
                    .await
                    .context("background bulk write")?;
                    let _ = w.shutdown().await;
                }
                Dir::Down => {
                    w.write_all(&header(MODE_SOURCE, id, UNBOUNDED)).await?;
                    read_pattern(&mut r, UNBOUNDED, &c, &r2, Some(&st)).await?;
                }
            }
            Ok(())
        });
        Background {
            stop,
            counter,
            task,
            id,
            reg: reg.clone(),
        }
    }

    /// Verified bytes so far.
    pub fn bytes(&self) -> u64 {
        self.counter.load(Relaxed)
    }

    /// Stop and check that the stream ran without error.
    pub async fn finish(mut self) -> Result<()> {
        self.stop.store(true, Relaxed);
        self.reg.forget(self.id);
        match tokio::time::timeout(Duration::from_secs(60), &mut self.task).await {
            Ok(r) => r.context("background bulk task")?,
            Err(_) => {
                self.task.abort();
                bail!("the background bulk stream did not stop within 60 s")
            }
        }
    }
}

/// Run `f`, failing with a clear message if it takes longer than `secs` (a stalled path
/// must fail the benchmark, not hang CI).
pub async fn within<T>(
    secs: u64,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(r) => r,
        Err(_) => bail!("{what} did not finish within {secs} s: the path stalled"),
    }
}

/// Median of a list (`NaN` when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (0–100, nearest rank) of nanosecond samples, in microseconds.
pub fn percentile_us(ns: &[u64], p: f64) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    let mut s = ns.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1] as f64 / 1000.0
}

/// MB/s (10^6 bytes per second).
pub fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}
