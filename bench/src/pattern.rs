//! The deterministic byte stream every bulk sender writes and every receiver checks.
//!
//! Byte `i` of a stream is `TABLE[i mod PERIOD]`, where `TABLE` is an xorshift64* sequence
//! and `PERIOD` is a prime a little under 1 MiB: a lost, duplicated or reordered chunk of
//! any power-of-two size shifts the stream against the period and fails the comparison.
//! The table is made once and extended by [`CHUNK`] bytes past the period, so both sides
//! work on contiguous slices: the sender writes `slice(offset, n)` straight from it (no
//! generation in the timed loop) and the receiver `memcmp`s what it read against the same
//! slice (several GB/s, so checking never limits a tunnel).

use std::sync::OnceLock;

/// Length of one period of the stream: the largest prime below 2^20.
pub const PERIOD: usize = 1_048_573;

/// The size of one write by a bulk sender and of a receiver's read buffer (256 KiB).
pub const CHUNK: usize = 256 << 10;

/// The pattern table: `PERIOD + CHUNK` bytes.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Vec::with_capacity(PERIOD + CHUNK);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while t.len() < PERIOD {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.truncate(PERIOD);
        let head = t[..CHUNK].to_vec();
        t.extend_from_slice(&head);
        t
    })
}

/// The `n` (≤ [`CHUNK`]) stream bytes starting at stream offset `offset`.
pub fn slice(offset: u64, n: usize) -> &'static [u8] {
    assert!(n <= CHUNK, "pattern slices are at most one chunk");
    let start = (offset % PERIOD as u64) as usize;
    &table()[start..start + n]
}

/// Checks a received stream piece by piece against the pattern.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Bytes checked so far (the stream offset of the next byte).
    pub offset: u64,
}

impl Verifier {
    /// Check the next received bytes; `false` at the first mismatch.
    pub fn check(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            if data[..n] != *slice(self.offset, n) {
                return false;
            }
            self.offset += n as u64;
            data = &data[n..];
        }
        true
    }
}

/// Make the table now, outside any timed section.
pub fn warm() {
    let _ = table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_verifies_and_a_shift_does_not() {
        let mut v = Verifier::default();
        let mut off = 0u64;
        for n in [1usize, 7, CHUNK, 100_000, CHUNK - 3, 5] {
            let s = slice(off, n).to_vec();
            assert!(v.check(&s));
            off += n as u64;
        }
        // Skipping 64 KiB (a lost frame) is noticed.
        let mut v = Verifier {
            offset: PERIOD as u64 * 3,
        };
        assert!(!v.check(slice(PERIOD as u64 * 3 + 65_536, 4096)));
    }

    #[test]
    fn slices_wrap_at_the_period_and_long_reads_split() {
        // The bytes past the period repeat its start, so a slice may cross the boundary.
        let across = slice(PERIOD as u64 - 10, 20);
        assert_eq!(&across[10..], slice(0, 10));
        // A read longer than one chunk is checked chunk by chunk.
        let mut long = slice(5, CHUNK).to_vec();
        long.extend_from_slice(slice(5 + CHUNK as u64, 1000));
        let mut v = Verifier { offset: 5 };
        assert!(v.check(&long));
        assert_eq!(v.offset, 5 + CHUNK as u64 + 1000);
    }
}
