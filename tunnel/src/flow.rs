//! Per-stream flow control that keeps interactive tunnels ahead of bulk ones on the one
//! HTTP/2 connection.
//!
//! Every byte of a tunnel already on its way — in a kernel's socket buffer, or read by the
//! receiver but not yet processed — is in front of any frame sent after it: TCP delivers
//! the connection in order. How much a stream may have on its way is its HTTP/2 window
//! (`virtgate_proto::tuning::STREAM_WINDOW`, 256 KiB: what a bulk stream needs to run at
//! full speed). On a busy host a 64-byte keystroke echo then waits for up to a window of
//! someone else's bulk data to be decrypted and handled first (1–4 ms measured).
//!
//! [`Flow`] is shared by the tunnels of one connection. Each tunnel keeps a [`Meter`]: it
//! counts the bytes it moves per [`EPOCH`] and is *bulk* while it moved more than
//! [`BULK_BYTES`] in the current or the last epoch. A tunnel that is not bulk and moves
//! bytes marks the connection *interactive* for [`INTERACTIVE_HOLD`]. While it is, a bulk
//! tunnel (other than the one that marked it) returns the window of what it received and
//! consumed only beyond [`hold_back`] (5/8 of its window, [`Flow::to_release`]), so its
//! sender may have at most 3/8 of the window on its way ahead of the interactive frames.
//!
//! The receiver decides, at both ends: the gateway for bulk up, the client for bulk down.
//! Senders send what the window allows. (Throttling the sender as well was tried: with
//! the receiver keeping 5/8 back and the sender keeping under a third in flight, neither
//! ever moves and the bulk tunnel stalls at a few MB/s — the benchmark fails on that.)
//!
//! Nothing changes on a connection without interactive traffic, so a lone bulk stream
//! keeps its full speed. The price is paid only while someone types: fewer bytes in flight
//! means a window round trip per fewer bytes, and on a CPU-bound host the bulk tunnel then
//! moves ~2/3 of its solo rate (measured with the 256 KiB window: see [`hold_back`]). Less
//! than a third of the window in flight would not work: h2 announces window only once half
//! of what the peer may send is free again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Length of a metering epoch.
pub const EPOCH: Duration = Duration::from_millis(20);

/// More than this in an epoch (≈ 100 MB/s) makes a tunnel bulk: a console, a display's
/// input events or a keystroke echo stay far below it.
pub const BULK_BYTES: u64 = 2 << 20;

/// How long an interactive exchange keeps bulk tunnels throttled.
pub const INTERACTIVE_HOLD: Duration = Duration::from_millis(250);

/// Window a receiving bulk tunnel keeps back while the connection is interactive: 5/8 of
/// its receive `window` (of 256 KiB on TLS: 160 KiB held, 96 KiB in flight; of 1 MiB over
/// SSH, 384 KiB in flight).
///
/// Measured (`virtgate-bench --quick --before`, 64-byte echo beside bulk down, 2 busy
/// cores): nothing held, echo p99 1.8–2.5 ms; 128 KiB, 0.9–1.25 ms with the bulk stream at
/// 69–86 % of its solo rate; 160 KiB, 0.9–1.15 ms at 65–70 %; 192 KiB, 0.9–1.0 ms but the
/// bulk stream at 45–47 %. Fewer bytes in flight means a round trip per fewer bytes.
pub fn hold_back(window: u64) -> u64 {
    window / 8 * 5
}

/// The connection's shared state: until when it counts as interactive, and which tunnel
/// made it so.
#[derive(Debug)]
pub struct Flow {
    /// The clock's origin; times below are nanoseconds since it.
    start: Instant,
    /// Interactive until this time (0: never was).
    interactive_until: AtomicU64,
    /// The tunnel whose exchange marked it last (it does not throttle itself).
    marked_by: AtomicU64,
    /// Tunnel ids.
    next_id: AtomicU64,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            start: Instant::now(),
            interactive_until: AtomicU64::new(0),
            marked_by: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        }
    }
}

/// One tunnel's view: its id and how much it moved lately.
#[derive(Debug)]
pub struct Meter {
    /// This tunnel's id on the connection.
    id: u64,
    /// The epoch `bytes` counts (its number since [`Flow`]'s start).
    epoch: u64,
    /// Bytes moved in `epoch`.
    bytes: u64,
    /// Bytes moved in the epoch before.
    last: u64,
}

impl Flow {
    fn now(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// A meter for a new tunnel.
    pub fn meter(&self) -> Meter {
        Meter {
            id: self.next_id.fetch_add(1, Relaxed),
            epoch: 0,
            bytes: 0,
            last: 0,
        }
    }

    /// Count `n` bytes moved by `m` (either way) at `at`; a tunnel that is not bulk marks
    /// the connection interactive.
    pub fn moved(&self, m: &mut Meter, n: usize, at: Instant) {
        let now = self.now(at);
        let epoch = now / EPOCH.as_nanos() as u64;
        if epoch != m.epoch {
            m.last = if epoch == m.epoch + 1 { m.bytes } else { 0 };
            m.epoch = epoch;
            m.bytes = 0;
        }
        m.bytes += n as u64;
        if n > 0 && !m.is_bulk() {
            self.interactive_until
                .store(now + INTERACTIVE_HOLD.as_nanos() as u64, Relaxed);
            self.marked_by.store(m.id, Relaxed);
        }
    }

    /// Whether `m` should give way now: it is bulk, and another tunnel is interactive.
    pub fn throttled(&self, m: &Meter, at: Instant) -> bool {
        m.is_bulk()
            && self.now(at) < self.interactive_until.load(Relaxed)
            && self.marked_by.load(Relaxed) != m.id
    }

    /// Receiving: of `debt` consumed bytes whose window is not yet returned, how many to
    /// return now (`window`: this end's receive window for the stream).
    pub fn to_release(&self, m: &Meter, debt: u64, window: u64, at: Instant) -> u64 {
        if self.throttled(m, at) {
            debt.saturating_sub(hold_back(window))
        } else {
            debt
        }
    }
}

impl Meter {
    /// A meter for the other direction of the same tunnel (same id, own counts).
    pub fn twin(&self) -> Meter {
        Meter {
            id: self.id,
            epoch: 0,
            bytes: 0,
            last: 0,
        }
    }

    fn is_bulk(&self) -> bool {
        self.bytes.max(self.last) > BULK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS stream window.
    const W: u64 = 256 << 10;

    fn bulk(flow: &Flow, m: &mut Meter, at: Instant) {
        flow.moved(m, (BULK_BYTES + 1) as usize, at);
    }

    #[test]
    fn a_lone_bulk_stream_is_never_throttled() {
        let flow = Flow::default();
        let t = Instant::now();
        let mut b = flow.meter();
        bulk(&flow, &mut b, t);
        assert!(!flow.throttled(&b, t));
        assert_eq!(flow.to_release(&b, 300 << 10, W, t), 300 << 10);
    }

    #[test]
    fn a_small_exchange_throttles_the_bulk_stream_for_a_while() {
        let flow = Flow::default();
        let t = Instant::now();
        let mut b = flow.meter();
        let mut echo = flow.meter();
        bulk(&flow, &mut b, t);
        flow.moved(&mut echo, 64, t);
        assert!(flow.throttled(&b, t));
        assert!(!flow.throttled(&echo, t), "the interactive one never waits");
        // receiving: window beyond 5/8 of it goes back, the rest is kept
        assert_eq!(flow.to_release(&b, (160 << 10) + 10, W, t), 10);
        assert_eq!(flow.to_release(&b, 1000, W, t), 0);
        assert_eq!(
            flow.to_release(&b, (640 << 10) + 1, 1 << 20, t),
            1,
            "scaled to the window"
        );
        // once the interactive stream has been quiet long enough, all goes back
        let later = t + INTERACTIVE_HOLD + Duration::from_millis(1);
        bulk(&flow, &mut b, later);
        assert!(!flow.throttled(&b, later));
        assert_eq!(flow.to_release(&b, 1000, W, later), 1000);
    }

    #[test]
    fn a_bulk_stream_does_not_throttle_itself_while_it_starts() {
        let flow = Flow::default();
        let t = Instant::now();
        let mut b = flow.meter();
        // its first small read marks the connection, then it grows
        flow.moved(&mut b, 100, t);
        bulk(&flow, &mut b, t);
        assert!(!flow.throttled(&b, t));
    }

    #[test]
    fn bulk_ends_two_epochs_after_the_last_big_one() {
        let flow = Flow::default();
        let t = Instant::now();
        let mut b = flow.meter();
        bulk(&flow, &mut b, t);
        flow.moved(&mut b, 10, t + EPOCH);
        assert!(b.is_bulk(), "the epoch before still counts");
        flow.moved(&mut b, 10, t + EPOCH * 3);
        assert!(!b.is_bulk());
    }
}
