//! The budget of unauthenticated connections, kept apart from the authenticated ones.
//!
//! Every TCP connection is pending from `accept` until it has an identity: its TLS handshake
//! is under way, or (certificate-less, with `[kerberos]` or `[web] ticket_login`) it has not
//! logged in yet. Such a peer has proven nothing, so it must not be able to hold what
//! authenticated users need. Three rules, all in [`Budget::admit`]:
//!
//! - at most `limits.max_pending_per_address` pending connections per IPv4 address or IPv6
//!   /64: more from there are closed at once, before any TLS work;
//! - at most `limits.max_pending_handshakes` pending connections in all: when full, the
//!   oldest pending connection of the address holding the most is shed (its [`Slot`]'s token
//!   fires) to make room, so a flood from many addresses wears itself out while a user's
//!   single handshake, which lasts milliseconds, goes through;
//! - a pending connection takes no slot of `limits.max_connections` before its handshake
//!   ends, so idle or trickling peers cannot fill it (the listener takes that permit after, [`crate::listen`]).
//!
//! Refusals and sheds are logged at most once per [`LOG_EVERY`] per rule, with how many there
//! were since: a flood must not flood the log too.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often a refusal or a shed is logged at most (per rule).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why [`Budget::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds `limits.max_pending_per_address` pending connections.
    PerAddress,
}

/// The pending connections, by address group.
pub struct Budget {
    /// `limits.max_pending_handshakes`.
    max_total: usize,
    /// `limits.max_pending_per_address`.
    max_per_address: usize,
    /// Everything that changes.
    inner: Mutex<Inner>,
}

/// The mutable part of a [`Budget`].
#[derive(Default)]
struct Inner {
    /// Numbers slots (to find a slot again when it is dropped).
    next: u64,
    /// Pending connections per address group, oldest first.
    by_address: HashMap<IpAddr, VecDeque<Entry>>,
    /// Sum of the queues' lengths.
    total: usize,
    /// Refusals and sheds not logged yet, and when each rule was last logged.
    log: Quiet,
}

/// One pending connection in its address's queue.
struct Entry {
    /// The slot's number.
    id: u64,
    /// Fired to shed it.
    shed: CancellationToken,
}

/// Rate limit of the log lines of [`Budget`].
#[derive(Default)]
struct Quiet {
    /// Refusals (per address) since the last line.
    refused: u64,
    /// When that line was written.
    refused_at: Option<Instant>,
    /// Sheds since the last line.
    shed: u64,
    /// When that line was written.
    shed_at: Option<Instant>,
}

/// A pending connection's place in the budget; leaving it (drop) frees the place.
pub struct Slot {
    /// Its number in its queue.
    id: u64,
    /// Its address group.
    group: IpAddr,
    /// Fires when the budget sheds this connection for a newer one.
    pub shed: CancellationToken,
    /// Where it is counted.
    budget: Arc<Budget>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("group", &self.group)
            .field("shed", &self.shed.is_cancelled())
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = lock(&self.budget.inner);
        let Some(queue) = inner.by_address.get_mut(&self.group) else {
            return;
        };
        // a shed slot is no longer in its queue
        let Some(at) = queue.iter().position(|e| e.id == self.id) else {
            return;
        };
        queue.remove(at);
        if queue.is_empty() {
            inner.by_address.remove(&self.group);
        }
        inner.total -= 1;
    }
}

/// A poisoned lock still holds consistent data here (pushes and pops only).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The group an address counts in: itself (IPv4, IPv4-mapped), or its /64 (IPv6: one host
/// usually has a whole /64).
pub fn group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// What [`Budget::admit`] did besides admitting, for the caller's log and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// A pending connection was shed to make room.
    pub shed: bool,
    /// Sheds not logged yet to write now in one line (0: do not log).
    pub log_shed: u64,
}

impl Budget {
    /// A budget of `max_total` pending connections, `max_per_address` per address group.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Count a new connection from `ip` as pending, shedding the oldest pending connection
    /// of the busiest address when the budget is full. `Err` carries the rule and how many
    /// refusals to log now (0: stay quiet, one was logged less than [`LOG_EVERY`] ago).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, Admitted), (Refused, u64)> {
        let group = group(ip);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let held = inner.by_address.get(&group).map_or(0, VecDeque::len);
        if held >= self.max_per_address {
            let log = &mut inner.log;
            log.refused += 1;
            let due = log.refused_at.is_none_or(|t| now - t >= LOG_EVERY);
            let n = if due {
                log.refused_at = Some(now);
                std::mem::take(&mut log.refused)
            } else {
                0
            };
            return Err((Refused::PerAddress, n));
        }
        let mut admitted = Admitted::default();
        if inner.total >= self.max_total {
            if let Some(victim) = inner.busiest() {
                if let Some(queue) = inner.by_address.get_mut(&victim) {
                    if let Some(e) = queue.pop_front() {
                        e.shed.cancel();
                        admitted.shed = true;
                    }
                    if queue.is_empty() {
                        inner.by_address.remove(&victim);
                    }
                }
                inner.total -= 1;
            }
            let log = &mut inner.log;
            log.shed += 1;
            if log.shed_at.is_none_or(|t| now - t >= LOG_EVERY) {
                log.shed_at = Some(now);
                admitted.log_shed = std::mem::take(&mut log.shed);
            }
        }
        let id = inner.next;
        inner.next += 1;
        let shed = CancellationToken::new();
        inner.by_address.entry(group).or_default().push_back(Entry {
            id,
            shed: shed.clone(),
        });
        inner.total += 1;
        drop(inner);
        let slot = Slot {
            id,
            group,
            shed,
            budget: self.clone(),
        };
        Ok((slot, admitted))
    }

    /// How many connections are pending now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        lock(&self.inner).total
    }
}

impl Inner {
    /// The address group holding the most pending connections (ties: the one whose oldest
    /// is oldest, i.e. smallest id).
    fn busiest(&self) -> Option<IpAddr> {
        self.by_address
            .iter()
            .filter_map(|(g, q)| q.front().map(|e| (q.len(), std::cmp::Reverse(e.id), *g)))
            .max()
            .map(|(_, _, g)| g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(group(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(group(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(group(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(group(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(group(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn one_address_is_held_to_its_share() {
        let b = Budget::new(10, 2);
        let a1 = b.admit(ip("10.0.0.1")).unwrap();
        let _a2 = b.admit(ip("10.0.0.1")).unwrap();
        let (rule, log) = b.admit(ip("10.0.0.1")).unwrap_err();
        assert_eq!((rule, log), (Refused::PerAddress, 1));
        // the second refusal within LOG_EVERY is not logged again
        assert_eq!(b.admit(ip("10.0.0.1")).unwrap_err().1, 0);
        // another address is not affected, and a place freed is free again
        assert!(b.admit(ip("10.0.0.2")).is_ok());
        drop(a1);
        assert!(b.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_full_budget_sheds_the_oldest_of_the_busiest_address() {
        let b = Budget::new(4, 3);
        let (user, _) = b.admit(ip("192.0.2.7")).unwrap();
        let (first, _) = b.admit(ip("10.0.0.1")).unwrap();
        let (second, _) = b.admit(ip("10.0.0.1")).unwrap();
        let (other, _) = b.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(b.pending(), 4);
        let (_new, admitted) = b.admit(ip("10.0.0.3")).unwrap();
        assert!(admitted.shed && admitted.log_shed == 1);
        assert!(
            first.shed.is_cancelled(),
            "the busiest address's oldest goes"
        );
        assert!(!second.shed.is_cancelled() && !user.shed.is_cancelled());
        assert!(!other.shed.is_cancelled());
        assert_eq!(b.pending(), 4);
        // dropping the shed slot does not free a second place
        drop(first);
        assert_eq!(b.pending(), 4);
        drop(second);
        assert_eq!(b.pending(), 3);
    }

    #[test]
    fn a_flood_from_some_addresses_never_sheds_a_single_handshake() {
        // 5 addresses × 4 fill the 16 places and keep them full: whatever arrives, the
        // busiest address is one of them, never the user's one connection
        let b = Budget::new(16, 4);
        let mut flood = Vec::new();
        let mut user = None;
        for i in 0..2000u32 {
            if i == 100 {
                user = Some(b.admit(ip("192.0.2.7")).unwrap().0);
            }
            if let Ok((slot, _)) = b.admit(IpAddr::from([10, 0, 0, (i % 5) as u8 + 1])) {
                flood.push(slot);
            }
        }
        assert_eq!(b.pending(), 16);
        assert!(!user.unwrap().shed.is_cancelled());
    }

    #[test]
    fn ties_shed_the_oldest() {
        let b = Budget::new(2, 2);
        let (a, _) = b.admit(ip("10.0.0.1")).unwrap();
        let (c, _) = b.admit(ip("10.0.0.2")).unwrap();
        let _ = b.admit(ip("10.0.0.3")).unwrap();
        assert!(a.shed.is_cancelled() && !c.shed.is_cancelled());
    }
}
