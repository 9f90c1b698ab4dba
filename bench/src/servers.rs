//! The benchmark's own servers, in the bench process: one "bench server" on TCP and on a
//! unix socket, and a minimal QMP responder standing in for QEMU.
//!
//! The bench server speaks a tiny protocol so that ONE endpoint (and so one `virtgate vnc`
//! forwarder, one `ssh -L`, one stunnel pair) serves every measurement; the first byte of
//! a connection picks the mode:
//! - `S` id:u64le len:u64le — SINK: reads `len` bytes (or until EOF when `len` is
//!   [`UNBOUNDED`]), checks them against [`pattern`], adds them to the stream's counter
//!   `id` in the [`Registry`], then answers `verified:u64le ok:u8`.
//! - `R` id:u64le len:u64le — SOURCE: writes `len` pattern bytes (or until the peer goes);
//!   the client checks them.
//! - `E` — ECHO: writes back whatever it reads (TCP_NODELAY on TCP), on an OS thread of its
//!   own with blocking I/O, so that its answers never wait behind bulk tasks on the
//!   runtime's two workers (the kernel scheduler preempts; tokio's cannot).
//!
//! The QMP responder answers just enough for the gateway's QEMU backend to list the domain
//! as `running`: the greeting, `qmp_capabilities`, `query-status`, `query-uuid`,
//! `query-cpus-fast`, `query-memory-size-summary`; any other command gets an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use std::io::{Read as _, Write as _};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::pattern::{self, Verifier, CHUNK};

/// Mode byte: the server checks what it reads.
pub const MODE_SINK: u8 = b'S';
/// Mode byte: the server writes the pattern.
pub const MODE_SOURCE: u8 = b'R';
/// Mode byte: the server echoes.
pub const MODE_ECHO: u8 = b'E';
/// Length meaning "until the peer closes".
pub const UNBOUNDED: u64 = u64::MAX;

/// Counters the sinks update, shared with the measuring code in the same process.
#[derive(Debug, Default)]
pub struct Registry {
    /// Per-stream verified byte counts, by the id the client sent.
    streams: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    /// Next id handed out.
    next: AtomicU64,
    /// Bytes verified by all sinks (and by clients reading from sources).
    pub verified: AtomicU64,
    /// Streams whose bytes did not match the pattern, or that ended early.
    pub failures: AtomicU64,
}

impl Registry {
    /// A new stream id and its counter.
    pub fn register(&self) -> (u64, Arc<AtomicU64>) {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        let c = Arc::new(AtomicU64::new(0));
        if let Ok(mut m) = self.streams.lock() {
            m.insert(id, c.clone());
        }
        (id, c)
    }

    /// Forget a stream's counter.
    pub fn forget(&self, id: u64) {
        if let Ok(mut m) = self.streams.lock() {
            m.remove(&id);
        }
    }

    fn counter(&self, id: u64) -> Arc<AtomicU64> {
        self.streams
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .unwrap_or_default()
    }
}

/// The running servers (tasks on the bench's runtime; they end with it).
#[derive(Debug, Clone)]
pub struct Servers {
    /// The bench server on TCP (127.0.0.1).
    pub tcp: SocketAddr,
    /// The bench server on a unix socket (the domain's `vnc`).
    pub unix: PathBuf,
    /// The QMP responder (the domain's `qmp`).
    pub qmp: PathBuf,
    pub registry: Arc<Registry>,
}

impl Servers {
    /// Bind everything in `dir` and start serving.
    pub async fn start(dir: &Path) -> Result<Servers> {
        let registry = Arc::new(Registry::default());
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the bench server's TCP port")?;
        let tcp_addr = tcp.local_addr()?;
        let unix = dir.join("bench.sock");
        let ul = UnixListener::bind(&unix).context("binding the bench server's unix socket")?;
        let qmp = dir.join("qmp.sock");
        let ql = UnixListener::bind(&qmp).context("binding the QMP socket")?;
        let r = registry.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = tcp.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(s, r.clone()));
            }
        });
        let r = registry.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = ul.accept().await {
                tokio::spawn(serve(s, r.clone()));
            }
        });
        tokio::spawn(async move {
            while let Ok((s, _)) = ql.accept().await {
                tokio::spawn(qmp_session(s));
            }
        });
        Ok(Servers {
            tcp: tcp_addr,
            unix,
            qmp,
            registry,
        })
    }

    /// The `[[backend.domain]]` table of a domain named `name` served by these servers.
    pub fn domain_toml(&self, name: &str) -> String {
        format!(
            "[[backend.domain]]\nname = {name:?}\nqmp = {:?}\nvnc = {:?}\n",
            self.qmp.display().to_string(),
            self.unix.display().to_string()
        )
    }
}

/// A blocking std stream (the echo thread's end).
trait StdStream: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> StdStream for T {}

/// A tokio stream that can be handed to a thread as a blocking std stream.
trait IntoBlocking: AsyncRead + AsyncWrite + Unpin {
    fn into_blocking(self) -> std::io::Result<Box<dyn StdStream>>;
}

impl IntoBlocking for tokio::net::TcpStream {
    fn into_blocking(self) -> std::io::Result<Box<dyn StdStream>> {
        let s = self.into_std()?;
        s.set_nonblocking(false)?;
        Ok(Box::new(s))
    }
}

impl IntoBlocking for tokio::net::UnixStream {
    fn into_blocking(self) -> std::io::Result<Box<dyn StdStream>> {
        let s = self.into_std()?;
        s.set_nonblocking(false)?;
        Ok(Box::new(s))
    }
}

/// One bench-server connection; errors only end it (a failure to verify is counted).
async fn serve<S: IntoBlocking>(mut s: S, reg: Arc<Registry>) {
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).await.is_err() {
        return; // a readiness probe
    }
    match mode[0] {
        MODE_ECHO => match s.into_blocking() {
            Ok(mut b) => {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = b.read(&mut buf) {
                        if n == 0 || b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(_) => {
                reg.failures.fetch_add(1, Relaxed);
            }
        },
        MODE_SINK | MODE_SOURCE => {
            let mut hdr = [0u8; 16];
            if s.read_exact(&mut hdr).await.is_err() {
                reg.failures.fetch_add(1, Relaxed);
                return;
            }
            let id = u64::from_le_bytes(hdr[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(hdr[8..].try_into().unwrap_or_default());
            if mode[0] == MODE_SINK {
                sink(s, &reg, id, len).await;
            } else {
                source(s, len).await;
            }
        }
        _ => {
            reg.failures.fetch_add(1, Relaxed);
        }
    }
}

async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, reg: &Registry, id: u64, len: u64) {
    let counter = reg.counter(id);
    let mut v = Verifier::default();
    // no bigger than the stream: P5 runs 10,000 short ones at once
    let mut buf = vec![0u8; len.min(CHUNK as u64) as usize];
    let mut ok = true;
    while v.offset < len {
        let want = (len - v.offset).min(CHUNK as u64) as usize;
        let n = match s.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => {
                ok = len == UNBOUNDED;
                break;
            }
            Ok(n) => n,
        };
        if !v.check(&buf[..n]) {
            ok = false;
            break;
        }
        counter.fetch_add(n as u64, Relaxed);
        reg.verified.fetch_add(n as u64, Relaxed);
    }
    if !ok {
        reg.failures.fetch_add(1, Relaxed);
    }
    if len != UNBOUNDED || !ok {
        let mut reply = [0u8; 9];
        reply[..8].copy_from_slice(&v.offset.to_le_bytes());
        reply[8] = ok as u8;
        let _ = s.write_all(&reply).await;
        let _ = s.flush().await;
    }
}

async fn source<S: AsyncWrite + Unpin>(mut s: S, len: u64) {
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        if s.write_all(pattern::slice(off, n)).await.is_err() {
            return;
        }
        off += n as u64;
    }
    let _ = s.flush().await;
}

/// One QMP conversation, like QEMU's monitor (one command per line, CRLF answers).
async fn qmp_session(s: tokio::net::UnixStream) {
    let (r, mut w) = s.into_split();
    let greeting = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"virtgate-bench\"}, \"capabilities\": []}}\r\n";
    if w.write_all(greeting).await.is_err() {
        return;
    }
    let mut lines = tokio::io::BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = qmp_answer(&line);
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The answer line to one QMP command line.
fn qmp_answer(line: &str) -> String {
    let cmd = line
        .split("\"execute\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or("");
    let ret = match cmd {
        "qmp_capabilities" => "{}",
        "query-status" => "{\"status\": \"running\", \"singlestep\": false, \"running\": true}",
        "query-uuid" => "{\"UUID\": \"6f1e0c2a-7d4b-4e3a-9b1c-b3e4c5d6e7f8\"}",
        "query-cpus-fast" => "[{\"cpu-index\": 0, \"thread-id\": 1, \"target\": \"x86_64\"}]",
        "query-memory-size-summary" => "{\"base-memory\": 67108864, \"plugged-memory\": 0}",
        other => {
            return format!(
                "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command {other} has not been found\"}}}}\r\n"
            )
        }
    };
    format!("{{\"return\": {ret}}}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_answers() {
        assert!(qmp_answer("{\"execute\": \"query-status\"}").contains("\"running\""));
        assert!(qmp_answer("{\"execute\":\"quit\"}").contains("CommandNotFound"));
    }
}
