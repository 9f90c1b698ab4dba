//! File descriptors that libvirt passes through a libvirt tunnel, gateway side.
//!
//! libvirtd hands out a socket to a domain's display (`virDomainOpenGraphicsFD`: a REPLY
//! with descriptors) or takes one from the client (`virDomainOpenGraphics`: a CALL with
//! descriptors). Inside the tunnel each descriptor is an id ([`virtgate_rpc`] relays the
//! messages); the descriptor itself waits in this connection's [`Table`] until the client
//! opens a stream for it on the SAME HTTP/2 connection:
//!
//! - `CONNECT /v1/libvirt/fds/{id}` claims a descriptor libvirtd handed out: the stream is
//!   spliced to it (the display), [`Parked::FromLibvirt`];
//! - `CONNECT /v1/libvirt/fds` makes a socketpair, splices one end to the stream and parks
//!   the other under a new id (response header `virtgate-descriptor`), which the client
//!   then names in its `virDomainOpenGraphics` call: [`Parked::ToLibvirt`].
//!
//! Both need the authorization of the libvirt tunnel they belong to (rw or ro) and are
//! audited. A descriptor not claimed within [`EXPIRY`] is closed; so is every descriptor
//! still parked when the connection ends (the table is dropped with it). At most
//! [`MAX_PARKED`] wait at once per connection.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use virtgate_rpc::frame::{domain_name, Header, CALL, PROC_DOMAIN_OPEN_GRAPHICS_FD};
use virtgate_rpc::reply::{VIR_ERR_OPERATION_FAILED, VIR_ERR_OPERATION_UNSUPPORTED};
use virtgate_rpc::{Descriptors, Refusal, Whole};

use super::State;
use crate::authn::Identity;

/// How long a descriptor waits for its stream.
pub const EXPIRY: Duration = Duration::from_secs(30);

/// Descriptors waiting per connection (a viewer needs a handful at once).
pub const MAX_PARKED: usize = 64;

/// Calls remembered per tunnel while their reply is pending (for the audit's domain).
const MAX_PENDING_CALLS: usize = 256;

/// Which way a parked descriptor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// libvirtd handed it out; the client claims it with `/v1/libvirt/fds/{id}`.
    FromLibvirt,
    /// Made for the client's stream; a `virDomainOpenGraphics` call passes it to libvirtd.
    ToLibvirt,
}

/// One waiting descriptor.
#[derive(Debug)]
struct Entry {
    /// The descriptor (a socket).
    fd: OwnedFd,
    /// Which way it goes: a claim must not take one meant for libvirtd and vice versa.
    way: Parked,
    /// The libvirt tunnel's kind: a read-only tunnel's client cannot claim a read-write one's.
    read_only: bool,
    /// The domain whose display it is, when known (audit).
    domain: Option<String>,
}

/// What a claim took out of the table.
#[derive(Debug)]
pub struct Claimed {
    /// The descriptor.
    pub fd: OwnedFd,
    /// The domain, when known.
    pub domain: Option<String>,
}

/// One connection's waiting descriptors.
#[derive(Debug)]
pub struct Table {
    /// By id.
    entries: Mutex<HashMap<u64, Entry>>,
    /// The last id given (ids start at 1 and are never reused on a connection).
    last: Mutex<u64>,
    /// How long a descriptor waits ([`EXPIRY`]; shorter in tests).
    expiry: Duration,
}

impl Default for Table {
    fn default() -> Self {
        Table::with_expiry(EXPIRY)
    }
}

impl Table {
    /// An empty table whose descriptors wait `expiry` for their stream.
    pub fn with_expiry(expiry: Duration) -> Table {
        Table {
            entries: Mutex::default(),
            last: Mutex::default(),
            expiry,
        }
    }

    /// Park `fd` and return its id; refused when [`MAX_PARKED`] wait already.
    pub fn park(
        self: &Arc<Self>,
        fd: OwnedFd,
        way: Parked,
        read_only: bool,
        domain: Option<String>,
    ) -> Result<u64, Refusal> {
        let id = {
            let mut entries = lock(&self.entries);
            if entries.len() >= MAX_PARKED {
                return Err(Refusal::new(
                    VIR_ERR_OPERATION_FAILED,
                    format!("more than {MAX_PARKED} graphics descriptors wait on this virtgate connection; close some consoles"),
                ));
            }
            let mut last = lock(&self.last);
            *last += 1;
            entries.insert(
                *last,
                Entry {
                    fd,
                    way,
                    read_only,
                    domain,
                },
            );
            *last
        };
        let table: Weak<Table> = Arc::downgrade(self);
        let expiry = self.expiry;
        tokio::spawn(async move {
            tokio::time::sleep(expiry).await;
            if let Some(t) = table.upgrade() {
                if lock(&t.entries).remove(&id).is_some() {
                    tracing::info!(descriptor = id, "descriptor not claimed in time; closed");
                }
            }
        });
        Ok(id)
    }

    /// Take descriptor `id` if it goes `way` and belongs to a tunnel of the same kind.
    pub fn take(&self, id: u64, way: Parked, read_only: bool) -> Option<Claimed> {
        let mut entries = lock(&self.entries);
        match entries.get(&id) {
            Some(e) if e.way == way && e.read_only == read_only => {
                entries.remove(&id).map(|e| Claimed {
                    fd: e.fd,
                    domain: e.domain,
                })
            }
            _ => None,
        }
    }

    /// How many descriptors wait (tests, metrics).
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock still holds consistent data here (plain inserts and removes).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The gateway's half of one libvirt tunnel's descriptor passing.
pub struct TunnelFds {
    /// Everything shared: the audit log above all.
    pub state: Arc<State>,
    /// Who opened the tunnel.
    pub identity: Identity,
    /// The connection's table.
    pub table: Arc<Table>,
    /// Whether the tunnel goes to libvirtd's read-only socket.
    pub read_only: bool,
    /// `virDomainOpenGraphicsFD` calls in flight: serial → domain, so the descriptor in the
    /// reply can be audited with its domain.
    pub calls: Mutex<HashMap<u32, String>>,
}

impl TunnelFds {
    /// Record what happened to a descriptor.
    fn audit(&self, domain: Option<&str>, outcome: &str) {
        self.state
            .live
            .get()
            .audit
            .descriptor(&self.identity, self.read_only, domain, outcome);
    }
}

impl Descriptors for TunnelFds {
    async fn export(&self, message: &Whole, fds: Vec<OwnedFd>) -> Result<Vec<u64>, Refusal> {
        // libvirtd's reply to virDomainOpenGraphicsFD (the relay allows nothing else)
        let domain = lock(&self.calls).remove(&message.header.serial);
        let mut ids = Vec::with_capacity(fds.len());
        for fd in fds {
            match self
                .table
                .park(fd, Parked::FromLibvirt, self.read_only, domain.clone())
            {
                Ok(id) => {
                    self.audit(
                        domain.as_deref(),
                        &format!("descriptor {id} from virDomainOpenGraphicsFD"),
                    );
                    ids.push(id);
                }
                Err(refusal) => {
                    self.audit(domain.as_deref(), &format!("failed: {}", refusal.message));
                    for id in ids {
                        self.table.take(id, Parked::FromLibvirt, self.read_only);
                    }
                    return Err(refusal);
                }
            }
        }
        Ok(ids)
    }

    async fn import(&self, message: &Whole, ids: Vec<u64>) -> Result<Vec<OwnedFd>, Refusal> {
        // the client's virDomainOpenGraphics call: its sockets were parked by /v1/libvirt/fds
        let domain = domain_name(message);
        let mut fds = Vec::with_capacity(ids.len());
        for id in ids {
            match self.table.take(id, Parked::ToLibvirt, self.read_only) {
                Some(c) => fds.push(c.fd),
                None => {
                    let why = format!(
                        "descriptor {id} is not waiting on this virtgate connection (expired after {} s, or never made)",
                        EXPIRY.as_secs()
                    );
                    self.audit(domain.as_deref(), &format!("failed: {why}"));
                    return Err(Refusal::new(VIR_ERR_OPERATION_UNSUPPORTED, why));
                }
            }
        }
        self.audit(
            domain.as_deref(),
            &format!(
                "{} descriptor(s) passed to virDomainOpenGraphics",
                fds.len()
            ),
        );
        Ok(fds)
    }

    fn watch(header: &Header) -> bool {
        header.kind == CALL && header.proc == PROC_DOMAIN_OPEN_GRAPHICS_FD
    }

    fn observe(&self, message: &Whole) {
        if let Some(name) = domain_name(message) {
            let mut calls = lock(&self.calls);
            if calls.len() >= MAX_PENDING_CALLS {
                calls.clear();
            }
            calls.insert(message.header.serial, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock() -> OwnedFd {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.into()
    }

    #[tokio::test]
    async fn claims_match_way_and_kind_and_ids_are_not_reused() {
        let t = Arc::new(Table::default());
        let a = t
            .park(sock(), Parked::FromLibvirt, false, Some("web1".into()))
            .unwrap();
        let b = t.park(sock(), Parked::ToLibvirt, false, None).unwrap();
        assert_ne!(a, b);
        assert!(t.take(a, Parked::ToLibvirt, false).is_none());
        assert!(t.take(a, Parked::FromLibvirt, true).is_none());
        let c = t.take(a, Parked::FromLibvirt, false).unwrap();
        assert_eq!(c.domain.as_deref(), Some("web1"));
        assert!(t.take(a, Parked::FromLibvirt, false).is_none());
        assert_eq!(t.len(), 1);
        assert!(t.take(b, Parked::ToLibvirt, false).is_some());
        assert!(t.is_empty());
        let d = t.park(sock(), Parked::ToLibvirt, false, None).unwrap();
        assert!(d > b);
    }

    #[tokio::test]
    async fn the_table_is_bounded_and_forgets_unclaimed_descriptors() {
        let expiry = Duration::from_millis(100);
        let t = Arc::new(Table::with_expiry(expiry));
        for _ in 0..MAX_PARKED {
            t.park(sock(), Parked::FromLibvirt, false, None).unwrap();
        }
        let e = t
            .park(sock(), Parked::FromLibvirt, false, None)
            .unwrap_err();
        assert!(e.message.contains("close some consoles"), "{}", e.message);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !t.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(expiry).await;
        }
        assert!(t.is_empty());
    }
}
