//! virtgated, the virtgate gateway: one daemon on the hypervisor host that carries the
//! management API, VNC and serial consoles over one authenticated HTTP/2 connection.
//!
//! # Layout
//!
//! Data flows down through the modules in one direction:
//!
//! ```text
//! main.rs ─▶ cli.rs (clap) ─▶ lib.rs run(): config → TLS → Kerberos keytab → bind → backend → serve
//!   config/   gateway.toml → Config (deny_unknown_fields, FILE:LINE:COL errors) → validate
//!   listen/   TCP [::]:PORT dual-stack (socket2) and unix socket; accept loops, connection
//!             limit, per-connection span; TLS handshake with a timeout
//!   authn/    who is it: TLS client certificate CN (tls.rs), unix peer uid (peercred.rs),
//!             Kerberos principal (kerberos.rs: acceptor, token steps, strip_realm;
//!             keytab.rs: search order and why each keytab failed; gss_ffi.rs: the only
//!             unsafe code, gss_acquire_cred_from; groups.rs: the user's unix groups from
//!             /etc/passwd + /etc/group, for every login method) → Identity
//!   api/      hyper auto server (HTTP/1.1 + HTTP/2, extended CONNECT) per connection:
//!             negotiate.rs binds a certificate-less TLS connection to the principal of
//!             its first `Authorization: Negotiate` (401 + WWW-Authenticate until then);
//!             router over virtgate_proto::ApiPath → authz → backend; problem+json errors
//!             (error.rs); domains.rs list/info/screenshot; lifecycle.rs start/shutdown
//!             (ACPI, wait, force)/reboot/destroy; events.rs NDJSON stream per subscriber; tunnel.rs splices extended CONNECT streams to console sockets
//!             and libvirtd's RPC sockets
//!   authz/    pure: Identity × domain × Action → Decision (rules, roles, globs)
//!   backend/  trait Hypervisor; qemu.rs (QMP state and lifecycle, unix consoles;
//!             qemu/screenshot.rs private screendump file), qmp.rs (client),
//!             supervise.rs (QEMUs the gateway starts and stops); libvirt.rs (every
//!             libvirtd domain over one `virt` connection; libvirt/conn.rs keepalive and
//!             reconnect, xml.rs consoles from the live XML, console.rs serial stream
//!             bridge, image.rs PPM screenshots to PNG)
//!   events.rs one shared poller (only while someone listens): list → diff → broadcast
//!   audit.rs  one JSON line per authorization decision and per lifecycle outcome
//!   metrics.rs counters for GET /v1/metrics
//!   shutdown.rs SIGTERM/SIGINT → stop accepting, GOAWAY, drain, stop QEMUs
//!   demo.rs   `virtgated demo`: throwaway PKI, a demo VM, a client profile, then run
//! ```
//!
//! Backends know no HTTP, authz does no I/O, and the wire types live in `virtgate-proto`,
//! shared with the client.

#![deny(unsafe_code)]

pub mod api;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod backend;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod listen;
pub mod metrics;
pub mod shutdown;

use std::io::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use listen::Listeners;
pub use shutdown::Shutdown;

use crate::backend::Hypervisor;

/// Everything that can stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS material (certificate, key, CA, CRL).
    #[error(transparent)]
    Tls(#[from] authn::tls::TlsError),
    /// Kerberos: no usable keytab for the service, or no host name.
    #[error(transparent)]
    Kerberos(#[from] authn::kerberos::KerberosError),
    /// A listener.
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    /// The backend (e.g. a supervised QEMU that does not start).
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// `virtgated demo` set-up.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot set up the runtime or signal handlers: {0}")]
    Runtime(std::io::Error),
}

impl Error {
    /// What the user can do about it, printed as `hint: ...`.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(e) => e.hint(),
            Error::Tls(e) => e.hint(),
            Error::Kerberos(e) => e.hint(),
            Error::Listen(e) => e.hint(),
            Error::Backend(e) => e.hint(),
            Error::Audit(e) => Some(format!(
                "create the folder of {} and let the gateway's user write there, or remove [audit]",
                e.path.display()
            )),
            Error::Demo(e) => e.hint(),
            Error::Runtime(_) => None,
        }
    }
}

/// Check what `check-config` can check beyond the file itself: the TLS material loads and,
/// with `[kerberos]`, the keytab gives the acceptor credential.
pub fn check(config: &Config) -> Result<(), Error> {
    if let Some(t) = &config.tls {
        authn::tls::server_config(t, config.kerberos.is_some())?;
    }
    if let Some(k) = &config.kerberos {
        authn::kerberos::Acceptor::from_config(k)?;
    }
    Ok(())
}

/// Remarks for `check-config` that are not errors: with the libvirt backend, whether
/// libvirtd answers now (the gateway starts without it and connects when it is up).
pub fn check_notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if config.backend.kind == config::BackendKind::Libvirt {
        let uri = config.backend.libvirt_uri();
        notes.push(
            match backend::libvirt::probe(uri, Duration::from_secs(5)) {
                Ok(n) => format!("libvirtd at {uri} answers ({n} domains defined)"),
                Err(e) => format!(
                    "libvirtd at {uri} is not reachable now ({e}); the gateway starts anyway and connects when it is up"
                ),
            },
        );
    }
    notes
}

/// Run the gateway until `shutdown`: load TLS, bind, start the backend, print one
/// `listening on ADDR` line per listener on stdout, call `ready` (the demo writes its files
/// there), then serve. Returns after the drain, with supervised QEMUs stopped.
pub async fn run(
    config: &Config,
    shutdown: Shutdown,
    ready: impl FnOnce(&Listeners) -> Result<(), Error>,
) -> Result<(), Error> {
    let tls = match &config.tls {
        Some(t) if !config.listen.tcp.is_empty() => Some(TlsAcceptor::from(
            authn::tls::server_config(t, config.kerberos.is_some())?,
        )),
        _ => None,
    };
    let kerberos = match &config.kerberos {
        Some(k) => Some(Arc::new(authn::kerberos::Acceptor::from_config(k)?)),
        None => None,
    };
    let audit = audit::AuditLog::open(config.audit.as_ref().map(|a| a.path.as_path()))?;
    let listeners = Listeners::bind(&config.listen).await?;
    let backend: Arc<dyn Hypervisor> = match config.backend.kind {
        config::BackendKind::Qemu => {
            Arc::new(backend::qemu::QemuBackend::start(&config.backend).await?)
        }
        config::BackendKind::Libvirt => {
            Arc::new(backend::libvirt::LibvirtBackend::start(&config.backend).await)
        }
    };
    for addr in listeners.addresses() {
        tracing::info!(%addr, "listening");
        println!("listening on {addr}");
    }
    let _ = std::io::stdout().flush();
    if let Err(e) = ready(&listeners) {
        backend.shutdown().await;
        return Err(e);
    }
    let state = Arc::new(api::State {
        policy: authz::Policy::new(&config.rules),
        backend: backend.clone(),
        audit,
        metrics: Arc::new(metrics::Metrics::default()),
        tracker: TaskTracker::new(),
        next_tunnel: AtomicU64::new(0),
        limits: config.limits.clone(),
        shutdown: shutdown.clone(),
        kerberos,
        events: events::Hub::new(backend.clone(), shutdown.begin.clone()),
    });
    serve(listeners, state, tls, &config.limits).await;
    backend.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Accept on every listener until `state.shutdown.begin`, then drain for up to
/// `limits.drain_timeout_s` (or until `shutdown.force`), then fire `force` so whatever is
/// left closes.
pub async fn serve(
    listeners: Listeners,
    state: Arc<api::State>,
    tls: Option<TlsAcceptor>,
    limits: &config::Limits,
) {
    let shutdown = state.shutdown.clone();
    let connections = TaskTracker::new();
    let ctx = Arc::new(listen::Accept {
        tls,
        state: state.clone(),
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        next_id: AtomicU64::new(0),
        handshake_timeout: Duration::from_secs(limits.handshake_timeout_s),
        tracker: connections.clone(),
        shutdown: shutdown.begin.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    for (_, l) in listeners.tcp {
        loops.spawn(listen::accept_tcp(l, ctx.clone()));
    }
    let unix_path = listeners.unix.as_ref().map(|(p, _)| p.clone());
    if let Some((_, l)) = listeners.unix {
        loops.spawn(listen::accept_unix(l, ctx.clone()));
    }
    // Accept loops return once shutdown begins; their listeners close with them.
    while loops.join_next().await.is_some() {}
    if let Some(p) = unix_path {
        let _ = std::fs::remove_file(p);
    }
    connections.close();
    state.tracker.close();
    let open = connections.len();
    tracing::info!(
        open,
        drain_timeout_s = limits.drain_timeout_s,
        "listeners closed; draining"
    );
    let drain = async {
        connections.wait().await;
        state.tracker.wait().await;
    };
    tokio::select! {
        _ = drain => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(Duration::from_secs(limits.drain_timeout_s)) => {
            tracing::warn!(open = connections.len(), "drain timeout: closing the remaining connections");
        }
        _ = shutdown.force.cancelled() => {
            tracing::warn!(open = connections.len(), "closing the remaining connections now");
        }
    }
    shutdown.force.cancel();
}
