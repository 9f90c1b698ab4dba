//! Per-user quotas: how many connections and long-lived streams each user holds.
//!
//! One authenticated user must not be able to take what every other user needs: a script
//! that opens connections or tunnels in a loop stops at `limits.max_connections_per_user`
//! and `limits.max_tunnels_per_user`, and is told so by name (429, [`Exceeded`]). A place is
//! taken with [`Quotas::take`] and given back when its [`Held`] drops (the connection or
//! the stream ends), so nothing leaks when a peer vanishes.
//!
//! The limits come from the configuration at each call: a reload that raises or lowers one
//! applies to the next connection or stream (open ones are never closed for it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What is counted per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Authenticated connections (`limits.max_connections_per_user`).
    Connections,
    /// Tunnels, consoles and event streams over all connections
    /// (`limits.max_tunnels_per_user`).
    Tunnels,
}

impl Kind {
    /// The `[limits]` key that bounds it, as the error names it.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Connections => "limits.max_connections_per_user",
            Kind::Tunnels => "limits.max_tunnels_per_user",
        }
    }
}

/// A quota was full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Which.
    pub kind: Kind,
    /// Whose.
    pub user: String,
    /// The limit in force.
    pub limit: usize,
}

/// Counts per user; users with nothing open are forgotten.
#[derive(Debug, Default)]
pub struct Quotas {
    /// User → (connections, tunnels).
    users: Mutex<HashMap<String, [usize; 2]>>,
}

/// One counted connection or stream; gives its place back on drop.
#[derive(Debug)]
pub struct Held {
    /// Whose place.
    user: String,
    /// Which count.
    kind: Kind,
    /// Where it is counted.
    quotas: Arc<Quotas>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut users = lock(&self.quotas.users);
        if let Some(counts) = users.get_mut(&self.user) {
            let n = &mut counts[self.kind as usize];
            *n = n.saturating_sub(1);
            if *counts == [0, 0] {
                users.remove(&self.user);
            }
        }
    }
}

/// A poisoned lock still holds consistent counts (plain increments and decrements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Quotas {
    /// Count one more `kind` for `user`, unless `limit` of them are open already.
    pub fn take(self: &Arc<Self>, user: &str, kind: Kind, limit: usize) -> Result<Held, Exceeded> {
        let mut users = lock(&self.users);
        let counts = users.entry(user.to_owned()).or_default();
        let n = &mut counts[kind as usize];
        if *n >= limit {
            let empty = *counts == [0, 0];
            if empty {
                users.remove(user);
            }
            return Err(Exceeded {
                kind,
                user: user.to_owned(),
                limit,
            });
        }
        *n += 1;
        Ok(Held {
            user: user.to_owned(),
            kind,
            quotas: self.clone(),
        })
    }

    /// How many `kind` `user` holds now.
    #[cfg(test)]
    fn count(&self, user: &str, kind: Kind) -> usize {
        lock(&self.users).get(user).map_or(0, |c| c[kind as usize])
    }
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            Kind::Connections => "connections",
            Kind::Tunnels => "tunnels, consoles and event streams",
        };
        write!(
            f,
            "{} already has {} {what} open ({} = {})",
            self.user,
            self.limit,
            self.kind.key(),
            self.limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_stops_at_the_limit_and_gets_places_back() {
        let q = Arc::new(Quotas::default());
        let a = q.take("alice", Kind::Tunnels, 2).unwrap();
        let _b = q.take("alice", Kind::Tunnels, 2).unwrap();
        let e = q.take("alice", Kind::Tunnels, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "alice already has 2 tunnels, consoles and event streams open (limits.max_tunnels_per_user = 2)"
        );
        // other users and the other count are apart
        assert!(q.take("bob", Kind::Tunnels, 2).is_ok());
        assert!(q.take("alice", Kind::Connections, 1).is_ok());
        drop(a);
        assert!(q.take("alice", Kind::Tunnels, 2).is_ok());
    }

    #[test]
    fn users_with_nothing_open_are_forgotten() {
        let q = Arc::new(Quotas::default());
        let c = q.take("alice", Kind::Connections, 1).unwrap();
        assert!(q.take("alice", Kind::Connections, 1).is_err());
        assert_eq!(q.count("alice", Kind::Connections), 1);
        drop(c);
        assert!(lock(&q.users).is_empty());
        assert!(q.take("nobody", Kind::Tunnels, 0).is_err());
        assert!(lock(&q.users).is_empty());
    }
}
