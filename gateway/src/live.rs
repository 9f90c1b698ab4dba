//! What a reload replaces, in one piece: the authorization rules, the audit log, the TLS
//! set-up (certificate, key, client CA, CRL), the Kerberos acceptor. [`Live::build`] makes
//! it from a checked [`Config`]; [`LiveCell`] holds the current one, and every request or
//! handshake takes the one in force when it starts (`cell.get()`, an `Arc` clone), so a
//! reload never changes anything under a request that is half done.
//!
//! What a reload does NOT replace (listeners, backend, limits) is compared by
//! [`restart_needed`] and reported.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::authn::kerberos::Acceptor;
use crate::authn::tls;
use crate::authz::Policy;
use crate::config::Config;
use crate::Error;

/// One configuration's reloadable parts.
pub struct Live {
    /// Authorization rules.
    pub policy: Policy,
    /// Where decisions are recorded (reopened on reload, so a rotated file is followed).
    pub audit: AuditLog,
    /// The Kerberos acceptor when `[kerberos]` is configured.
    pub kerberos: Option<Arc<Acceptor>>,
    /// TLS for TCP connections, when `[tls]` is configured.
    pub tls: Option<TlsAcceptor>,
    /// The client certificate verifier of `tls`, to re-check live connections.
    pub verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// The CRL's nextUpdate (reported when past).
    pub crl_next_update: Option<time::OffsetDateTime>,
    /// Counts configurations: 1 at start, +1 per successful reload.
    pub generation: u64,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.generation)
            .field("tls", &self.tls.is_some())
            .field("kerberos", &self.kerberos.is_some())
            .field("crl_next_update", &self.crl_next_update)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Build everything from `config`; any file that does not load is an error (the
    /// caller keeps what it had).
    pub fn build(config: &Config, generation: u64) -> Result<Live, Error> {
        let (tls, verifier, crl_next_update) = match &config.tls {
            Some(t) if !config.listen.tcp.is_empty() => {
                let s = tls::server_tls(t, config.kerberos.is_some() || config.web.ticket_login)?;
                (
                    Some(TlsAcceptor::from(s.config)),
                    Some(s.verifier),
                    s.crl_next_update,
                )
            }
            _ => (None, None, None),
        };
        let kerberos = match &config.kerberos {
            Some(k) => Some(Arc::new(Acceptor::from_config(k)?)),
            None => None,
        };
        let audit = AuditLog::open(config.audit.as_ref().map(|a| a.path.as_path()))?;
        Ok(Live {
            policy: Policy::new(&config.rules),
            audit,
            kerberos,
            tls,
            verifier,
            crl_next_update,
            generation,
        })
    }

    /// The CRL's nextUpdate as a Unix timestamp, 0 without one (for the metric).
    pub fn crl_timestamp(&self) -> i64 {
        self.crl_next_update.map_or(0, |t| t.unix_timestamp())
    }

    /// Whether the CRL is past its nextUpdate now (clients revoked since are not known).
    pub fn crl_stale(&self) -> bool {
        self.crl_next_update
            .is_some_and(|t| t < time::OffsetDateTime::now_utc())
    }
}

/// The configuration in force.
#[derive(Debug)]
pub struct LiveCell(RwLock<Arc<Live>>);

impl LiveCell {
    /// A cell holding `live`.
    pub fn new(live: Live) -> LiveCell {
        LiveCell(RwLock::new(Arc::new(live)))
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Live> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Put `live` in force; returns the one it replaces.
    pub fn swap(&self, live: Live) -> Arc<Live> {
        let new = Arc::new(live);
        match self.0.write() {
            Ok(mut g) => std::mem::replace(&mut *g, new),
            Err(p) => std::mem::replace(&mut *p.into_inner(), new),
        }
    }
}

/// The settings that changed between `old` and `new` but only take effect on a restart.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("[listen]");
    }
    if old.backend != new.backend {
        changed.push("[backend]");
    }
    if old.limits != new.limits {
        changed.push("[limits]");
    }
    changed
}
