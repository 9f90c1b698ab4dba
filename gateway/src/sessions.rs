//! Who is connected and which streams are open, so that a reload can take rights back
//! from people already connected.
//!
//! Every authenticated connection registers ([`Registry::connection`]) with its client
//! certificate chain when it has one; every long-lived stream (tunnels, descriptor
//! streams, the events feed) registers with the identity, domain and action it was
//! allowed for ([`Registry::stream`]). Both hold a [`CancellationToken`] that their task
//! selects on, and a guard that unregisters on drop.
//!
//! [`Registry::reevaluate`] runs after a reload: a connection whose certificate the new
//! verifier refuses (revoked by the new CRL, expired, another CA) is closed whole with its
//! streams; a stream whose action the new rules no longer allow is closed alone. Each
//! closure is written to the audit log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::authn::Identity;
use crate::authz::Action;
use crate::live::Live;

/// A registered connection.
#[derive(Debug)]
struct Conn {
    /// The client certificate chain (leaf first) of a certificate login.
    certs: Option<Vec<CertificateDer<'static>>>,
    /// Who, for the audit line when it is closed (certificate logins).
    identity: Option<Identity>,
    /// Cancelled to close the connection.
    close: CancellationToken,
}

/// A registered stream (its token is a child of its connection's: closed with it).
#[derive(Debug)]
struct Stream {
    /// Who opened it.
    identity: Identity,
    /// The domain it is for (none: libvirt, events).
    domain: Option<String>,
    /// What it was allowed as.
    action: Action,
    /// Cancelled to close the stream.
    close: CancellationToken,
}

/// Every live connection and stream.
#[derive(Debug, Default)]
pub struct Registry {
    /// Numbers connections and streams (one sequence).
    next: AtomicU64,
    /// By id.
    conns: Mutex<HashMap<u64, Conn>>,
    /// By id.
    streams: Mutex<HashMap<u64, Stream>>,
    /// Browser tickets and session cookies: re-checked with the connections.
    pub web: crate::web::session::Store,
    /// Connections and streams per user, against `limits.max_*_per_user`.
    pub quotas: Arc<crate::quota::Quotas>,
}

/// A registered connection: its id, and the token that closes it. Unregisters on drop.
#[derive(Debug)]
pub struct ConnGuard {
    /// The connection's id (streams name it).
    pub id: u64,
    /// Cancelled when the connection must close (its certificate was revoked).
    pub close: CancellationToken,
    /// Where it is registered.
    registry: Arc<Registry>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        lock(&self.registry.conns).remove(&self.id);
    }
}

/// A registered stream; unregisters on drop.
#[derive(Debug)]
pub struct StreamGuard {
    /// Cancelled when the stream lost its right (or its connection closed).
    pub close: CancellationToken,
    /// Its id.
    id: u64,
    /// Where it is registered.
    registry: Arc<Registry>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        lock(&self.registry.streams).remove(&self.id);
    }
}

/// What [`Registry::reevaluate`] closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Whole connections (certificate no longer accepted).
    pub connections: usize,
    /// Single streams (right taken back), not counting those of closed connections.
    pub streams: usize,
}

/// A poisoned lock still holds consistent data here (plain inserts and removes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Register a connection (`certs`: its client certificate chain, leaf first).
    pub fn connection(
        self: &Arc<Self>,
        identity: Option<&Identity>,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> ConnGuard {
        let id = self.next.fetch_add(1, Relaxed);
        let close = CancellationToken::new();
        lock(&self.conns).insert(
            id,
            Conn {
                certs: certs.map(|c| c.iter().map(|d| d.clone().into_owned()).collect()),
                identity: identity.cloned(),
                close: close.clone(),
            },
        );
        ConnGuard {
            id,
            close,
            registry: self.clone(),
        }
    }

    /// Register a stream of connection `conn`, allowed to `identity` as `action` on `domain`.
    pub fn stream(
        self: &Arc<Self>,
        conn: u64,
        identity: &Identity,
        domain: Option<&str>,
        action: Action,
    ) -> StreamGuard {
        let id = self.next.fetch_add(1, Relaxed);
        // a stream of a connection that is closing already starts closed
        let close = lock(&self.conns)
            .get(&conn)
            .map(|c| c.close.child_token())
            .unwrap_or_default();
        lock(&self.streams).insert(
            id,
            Stream {
                identity: identity.clone(),
                domain: domain.map(str::to_owned),
                action,
                close: close.clone(),
            },
        );
        StreamGuard {
            close,
            id,
            registry: self.clone(),
        }
    }

    /// The client certificate chain of connection `conn` (a browser ticket keeps it, so a
    /// reload can end the session when the certificate is revoked).
    pub fn certs(&self, conn: u64) -> Option<Vec<CertificateDer<'static>>> {
        lock(&self.conns).get(&conn).and_then(|c| c.certs.clone())
    }

    /// How many connections and streams are registered (metrics, tests).
    pub fn counts(&self) -> (usize, usize) {
        (lock(&self.conns).len(), lock(&self.streams).len())
    }

    /// Check every connection and stream against `live` (the configuration now in force)
    /// and close what it no longer allows; each closure is audited.
    pub fn reevaluate(&self, live: &Live) -> Closed {
        let mut closed = Closed::default();
        let now = UnixTime::now();
        for conn in lock(&self.conns).values() {
            let (Some(certs), Some(verifier)) = (&conn.certs, &live.verifier) else {
                continue;
            };
            let Some((leaf, chain)) = certs.split_first() else {
                continue;
            };
            if let Err(e) = verifier.verify_client_cert(leaf, chain, now) {
                let reason = format!("closed on reload: certificate no longer accepted ({e})");
                tracing::info!(user = ?conn.identity.as_ref().map(|i| &i.user), %reason, "closing a connection");
                if let Some(id) = &conn.identity {
                    live.audit.closed(id, "connection", None, &reason);
                }
                // cancels its streams too (child tokens)
                conn.close.cancel();
                closed.connections += 1;
            }
        }
        for stream in lock(&self.streams).values() {
            if stream.close.is_cancelled() {
                continue;
            }
            let allowed = match stream.action {
                // the event feed needs a role on some domain, not on `*`
                Action::Events => live.policy.any_role(&stream.identity).is_some(),
                a => {
                    live.policy
                        .decide(&stream.identity, stream.domain.as_deref(), a)
                        .allowed
                }
            };
            if !allowed {
                tracing::info!(user = %stream.identity.user, action = stream.action.as_str(), domain = ?stream.domain, "closing a stream: right taken back by the new rules");
                live.audit.closed(
                    &stream.identity,
                    stream.action.as_str(),
                    stream.domain.as_deref(),
                    "closed on reload: no longer allowed by the rules",
                );
                stream.close.cancel();
                closed.streams += 1;
            }
        }
        self.web.reevaluate(live);
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Role};
    use virtgate_proto::AuthMethod;

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            method: AuthMethod::Unix,
            principal: None,
            groups: vec![],
            peer: None,
        }
    }

    fn live(rules: &[(&str, &str, Role)]) -> Live {
        let rules: Vec<config::Rule> = rules
            .iter()
            .map(|(who, dom, role)| config::Rule {
                who: vec![(*who).into()],
                domains: vec![(*dom).into()],
                role: *role,
            })
            .collect();
        Live {
            policy: crate::authz::Policy::new(&rules),
            audit: crate::audit::AuditLog::default(),
            kerberos: None,
            tls: None,
            verifier: None,
            crl_next_update: None,
            generation: 2,
        }
    }

    #[test]
    fn streams_that_lost_their_right_close_others_stay() {
        let r = Arc::new(Registry::default());
        let c = r.connection(Some(&alice()), None);
        let web = r.stream(c.id, &alice(), Some("web1"), Action::Vnc);
        let db = r.stream(c.id, &alice(), Some("db1"), Action::Vnc);
        let closed = r.reevaluate(&live(&[("alice", "web*", Role::Operator)]));
        assert_eq!(
            closed,
            Closed {
                connections: 0,
                streams: 1
            }
        );
        assert!(!web.close.is_cancelled());
        assert!(db.close.is_cancelled());
        drop(db);
        assert_eq!(r.counts(), (1, 1));
        // closing the connection closes its streams
        c.close.cancel();
        assert!(web.close.is_cancelled());
        drop((web, c));
        assert_eq!(r.counts(), (0, 0));
    }
}
