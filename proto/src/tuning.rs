//! Transport tuning shared by both ends, chosen from the benchmarks (docs/benchmarks.md).
//!
//! One HTTP/2 connection carries bulk tunnels and interactive ones side by side. h2 sends
//! the streams' frames in turn, so a small frame waits for at most one big frame — but
//! only if the data waits in h2's queues. Whatever sits in the kernel's send buffer is sent
//! in order, and on a fast link the kernel happily buffers megabytes (0.5–5 ms of data
//! measured in front of an echo). So both ends cap the unsent bytes in the kernel
//! ([`NOTSENT_LOWAT`]) and keep frames moderate ([`MAX_FRAME`]), while windows stay large
//! so bulk streams are never starved by flow control.

/// `TCP_NOTSENT_LOWAT` of the TLS/TCP socket: unsent bytes the kernel may hold. A few
/// TLS records' worth keeps the pipe full on loopback without queueing behind bulk data.
pub const NOTSENT_LOWAT: u32 = 128 << 10;

/// Largest HTTP/2 frame either end accepts (and so the largest it is sent): one frame of
/// bulk data in front of an interactive frame costs ~0.1 ms at 600 MB/s.
pub const MAX_FRAME: u32 = 64 << 10;

/// Buffer of each direction when splicing a tunnel to a socket: big reads make full
/// frames and full 16 KiB TLS records instead of one 8 KiB frame per syscall.
pub const SPLICE_BUFFER: usize = 256 << 10;

/// Per-stream HTTP/2 receive window of both ends.
///
/// Measured (docs/benchmarks.md): when the machine is CPU-bound, a bulk stream's bytes in
/// flight wait in the RECEIVER's socket buffer, in front of every other stream's frames,
/// and the stream window bounds them. 1 MiB gave ~920 MB/s but 3–5 ms p99 for a 64-byte
/// echo beside it; 128 KiB gave < 0.9 ms p99 but ~770 MB/s; 256 KiB keeps ~900 MB/s
/// (≈ ssh -L aes128-gcm, above stunnel) with a p99 near 1 ms. Lowering it further trades
/// bulk rate for latency on every stream; see the benchmark notes for what would lift it.
pub const STREAM_WINDOW: u32 = 256 << 10;

/// Per-stream HTTP/2 receive window of connections that cross a relay: the SSH transport
/// (client → sshd → the gateway's unix socket) and so every connection of the gateway's
/// unix listener.
///
/// Over SSH each WINDOW_UPDATE crosses three processes each way, several wake-ups on a busy
/// host, and 256 KiB drains faster than that round trip: the stream waited for credit and
/// moved ~0.75× what `ssh -L` moves (bench/src/analysis.md). 1 MiB keeps the pipe full; the
/// price is more bulk in flight ahead of an interactive frame on the same connection.
pub const RELAYED_STREAM_WINDOW: u32 = 1 << 20;

/// Connection receive window: many streams' windows, so a few bulk streams never use up
/// the connection and stall an interactive one waiting for connection credit.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
