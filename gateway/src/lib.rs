//! virtgated, the virtgate gateway: one daemon on the hypervisor host that carries the
//! management API, VNC and serial consoles over one authenticated HTTP/2 connection.
//!
//! # Layout
//!
//! Data flows down through the modules in one direction:
//!
//! ```text
//! main.rs ─▶ cli.rs (clap) ─▶ lib.rs run(): config → live (TLS, Kerberos, rules, audit) →
//!   bind → backend → reload task → pidfile + READY → serve
//!   config/   gateway.toml → Config (deny_unknown_fields, FILE:LINE:COL errors) → validate
//!             → perms.rs (keys others may read, trusted files others may write: refused)
//!   listen/   TCP [::]:PORT dual-stack (socket2) and unix socket; accept loops, connection
//!             limits, per-connection span; TLS handshake with a timeout
//!   pending.rs the budget of unauthenticated connections: per address, shed the oldest
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
//!   web/      the browser console: `/` and `/ui/` (mod.rs router + security headers),
//!             pages.rs (domain list, noVNC and xterm.js pages), assets.rs (every file
//!             under gateway/web/, vendored noVNC and xterm.js included, embedded by
//!             build.rs; ETag, 304)
//!             session.rs (one-time `virtgate web` tickets → session cookies, in memory,
//!             re-checked on reload), csrf.rs (the CSRF token and the Origin/token rule),
//!             socket.rs (the VNC and serial consoles as WebSockets: HTTP/1.1 upgrade and
//!             RFC 8441 CONNECT, authorized and registered like tunnel.rs's tunnels)
//!   authz/    pure: Identity × domain × Action → Decision (rules, roles, globs)
//!   backend/  trait Hypervisor; qemu.rs (QMP state and lifecycle, unix consoles;
//!             qemu/screenshot.rs private screendump file), qmp.rs (client),
//!             supervise.rs (QEMUs the gateway starts and stops); libvirt.rs (every
//!             libvirtd domain over one `virt` connection; libvirt/conn.rs keepalive and
//!             reconnect, xml.rs consoles from the live XML, console.rs serial stream
//!             bridge, image.rs PPM screenshots to PNG)
//!   live.rs   what a reload swaps (rules, audit log, TLS, Kerberos), read once per request
//!   reload.rs the reload task: SIGHUP, the control socket, the CRL file watch; checks the
//!             new configuration before swapping, then has sessions re-checked
//!   sessions.rs live connections (with their certificates) and streams, each with a token
//!             that closes it when a reload takes its right back
//!   quota.rs  per-user counts of connections and tunnels (limits.max_*_per_user)
//!   service.rs  systemd notify (READY/RELOADING/STOPPING/watchdog) and the pidfile
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
pub mod live;
pub mod metrics;
pub mod pending;
pub mod quota;
pub mod reload;
pub mod service;
pub mod sessions;
pub mod shutdown;
pub mod web;

use std::io::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
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
    /// `run` or `demo` as root (effective uid 0) without `--allow-root`.
    #[error(
        "virtgated {command} refuses to run as root: a flaw in a network-facing service \
         running as root gives away the whole host"
    )]
    Root {
        /// The subcommand (`run`, `demo`).
        command: &'static str,
    },
    /// A rule names a group that this host does not have.
    #[error("a [[rule]] names group `{group}`, which does not exist on this host")]
    UnknownGroup {
        /// The group name after `group:`.
        group: String,
    },
    /// A folder the gateway must write in does not exist.
    #[error("{key}: the folder {} does not exist", path.display())]
    MissingFolder {
        /// The setting (`audit.path`, `listen.unix`, `listen.control`).
        key: &'static str,
        /// The folder.
        path: std::path::PathBuf,
    },
    /// The control socket cannot be bound.
    #[error("cannot listen on the control socket {}: {source}", path.display())]
    Control {
        /// `listen.control`.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `--pidfile` cannot be written.
    #[error(transparent)]
    Pidfile(#[from] service::PidfileError),
    /// `virtgated reload` found no running gateway.
    #[error("no running gateway to reload: {why}")]
    NoGateway {
        /// What was tried and what it said.
        why: String,
    },
    /// The running gateway refused the new configuration (and keeps the old one).
    #[error("the gateway refused the new configuration: {message}")]
    ReloadRefused {
        /// The gateway's error.
        message: String,
        /// The gateway's hint.
        hint: Option<String>,
    },
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
            Error::Root { command: "demo" } => Some(
                "run it as an ordinary user (the demo needs no privilege: `runuser -u USER -- \
                 virtgated demo`); or pass --allow-root to run it as root anyway"
                    .into(),
            ),
            Error::Root { command } => Some(format!(
                "run it as its own user: the package's virtgated.service has User=virtgate \
                 (by hand: `runuser -u virtgate -- virtgated {command}`); or pass --allow-root \
                 to run it as root anyway"
            )),
            Error::UnknownGroup { group } => Some(format!(
                "create it (`groupadd {group}`) or fix the rule; `getent group` lists this host's groups"
            )),
            Error::MissingFolder { path, .. } => Some(format!(
                "create it (`install -d -o virtgate {}`) for the gateway's user, or change the setting",
                path.display()
            )),
            Error::Control { path, .. } => Some(format!(
                "the folder of {} must exist and be writable by the gateway's user; is another gateway running?",
                path.display()
            )),
            Error::Pidfile(e) => Some(e.hint()),
            Error::NoGateway { .. } => Some(
                "start it (`systemctl start virtgated` or `rc-service virtgated start`); a running gateway is found through [listen] control, or --pidfile".into(),
            ),
            Error::ReloadRefused { hint, .. } => hint
                .clone()
                .map(|h| format!("{h}; the previous configuration stays in force")),
        }
    }
}

/// An error and its causes on one line (like anyhow's `{:#}`), leaving out causes whose
/// text the message already carries; an `io::Error` is looked into (hyper and h2 hide the
/// telling part, `stream error received: ...`, in one).
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = api::liveness::causes(e);
    while let Some(c) = cause {
        let text = c.to_string();
        let core = text
            .split(" (os error")
            .next()
            .unwrap_or(&text)
            .to_lowercase();
        if !msg.to_lowercase().contains(&core) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = api::liveness::causes(c);
    }
    msg
}

/// What `check-config` and every reload check in the files and the host beyond the TOML:
/// groups the rules name exist, folders the gateway writes in exist.
pub fn check_files(config: &Config) -> Result<(), Error> {
    let groups = authn::groups::read(std::path::Path::new("/etc/group"));
    for rule in &config.rules {
        for who in &rule.who {
            if let Some(g) = who.strip_prefix("group:") {
                let known = groups.lines().any(|l| l.split(':').next() == Some(g));
                if !known {
                    return Err(Error::UnknownGroup {
                        group: g.to_owned(),
                    });
                }
            }
        }
    }
    let folders = [
        (
            "audit.path",
            config.audit.as_ref().map(|a| a.path.as_path()),
        ),
        ("listen.unix", config.listen.unix.as_deref()),
        ("listen.control", config.listen.control.as_deref()),
    ];
    for (key, file) in folders {
        if let Some(dir) = file.and_then(std::path::Path::parent) {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(Error::MissingFolder {
                    key,
                    path: dir.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Check what `check-config` can check beyond the file itself: the TLS material loads and,
/// with `[kerberos]`, the keytab gives the acceptor credential.
pub fn check(config: &Config) -> Result<(), Error> {
    check_files(config)?;
    if let Some(t) = &config.tls {
        authn::tls::server_config(t, config.kerberos.is_some() || config.web.ticket_login)?;
    }
    if let Some(k) = &config.kerberos {
        authn::kerberos::Acceptor::from_config(k)?;
    }
    Ok(())
}

/// Remarks for `check-config` that are not errors: a CRL past its nextUpdate, rule users
/// without a local account, and with the libvirt backend whether libvirtd answers now
/// (the gateway starts without it and connects when it is up).
pub fn check_notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(crl) = config.tls.as_ref().and_then(|t| t.crl.as_ref()) {
        if let Ok(Some(next)) = authn::tls::crl_next_update(crl) {
            if next < time::OffsetDateTime::now_utc() {
                notes.push(format!(
                    "tls.crl {} is past its nextUpdate ({next}): it is still used, but certificates revoked since are not known; write a fresh one with `virtgate-pki crl`",
                    crl.display()
                ));
            }
        }
    }
    let passwd = authn::groups::read(std::path::Path::new("/etc/passwd"));
    for rule in &config.rules {
        for who in &rule.who {
            let local = !who.contains('@') && !who.starts_with("group:") && who != "*";
            if local
                && passwd
                    .lines()
                    .all(|l| l.split(':').next() != Some(who.as_str()))
            {
                notes.push(format!(
                    "rule user `{who}` has no account on this host: fine for certificate and Kerberos logins (the certificate's CN / principal), but SSH and unix-socket logins need one"
                ));
            }
        }
    }
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

/// Run the gateway until `shutdown`: load TLS, bind, start the backend, call `ready` (the
/// demo writes its files there), start the reload task and the control socket, write the
/// pidfile and tell systemd, print one `listening on ADDR` line per listener on stdout,
/// then serve. Returns after the drain, with supervised QEMUs stopped.
pub async fn run(
    config: &Config,
    options: &RunOptions,
    shutdown: Shutdown,
    ready: impl FnOnce(&Listeners) -> Result<(), Error>,
) -> Result<(), Error> {
    check_files(config)?;
    let live = live::Live::build(config, 1)?;
    if live.crl_stale() {
        tracing::warn!(next_update = ?live.crl_next_update, "tls.crl is past its nextUpdate: certificates revoked since it was written are still accepted; refresh it (`virtgate-pki crl`)");
    }
    let listeners = Listeners::bind(&config.listen).await?;
    let backend: Arc<dyn Hypervisor> = match config.backend.kind {
        config::BackendKind::Qemu => {
            Arc::new(backend::qemu::QemuBackend::start(&config.backend).await?)
        }
        config::BackendKind::Libvirt => {
            Arc::new(backend::libvirt::LibvirtBackend::start(&config.backend).await)
        }
    };
    if let Err(e) = ready(&listeners) {
        backend.shutdown().await;
        return Err(e);
    }
    let registry = Arc::new(sessions::Registry::default());
    registry
        .web
        .configure(&config.web, config.kerberos.is_some());
    let state = Arc::new(api::State {
        live: Arc::new(live::LiveCell::new(live)),
        registry,
        backend: backend.clone(),
        metrics: Arc::new(metrics::Metrics::default()),
        tracker: TaskTracker::new(),
        next_tunnel: AtomicU64::new(0),
        limits: config.limits.clone(),
        shutdown: shutdown.clone(),
        events: events::Hub::new(backend.clone(), shutdown.begin.clone()),
    });
    state.metrics.crl_next_update.store(
        state.live.get().crl_timestamp(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let reloads =
        reload::Reloader::start(state.clone(), config.clone(), options.config_path.clone());
    if let Some(path) = &config.listen.control {
        if let Err(e) = reloads.serve_control(path).await {
            backend.shutdown().await;
            return Err(e);
        }
    }
    // ready: pidfile and READY=1 first, then the `listening on` lines scripts wait for
    let addresses = listeners.addresses();
    let status = format!(
        "listening on {}; {}",
        addresses.join(", "),
        config.summary()
    );
    let service = match service::Service::ready(options.pidfile.as_deref(), &status) {
        Ok(s) => s,
        Err(e) => {
            backend.shutdown().await;
            return Err(e.into());
        }
    };
    for addr in addresses {
        tracing::info!(%addr, "listening");
        println!("listening on {addr}");
    }
    let _ = std::io::stdout().flush();
    serve(listeners, state, &config.limits).await;
    service.stopping();
    if let Some(path) = &config.listen.control {
        let _ = std::fs::remove_file(path);
    }
    backend.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// How `run` was started: what a reload re-reads and where the pidfile goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file (`None`: a generated one, e.g. the demo's; not reloadable).
    pub config_path: Option<std::path::PathBuf>,
    /// `--pidfile`: written once the gateway listens, removed when it stops.
    pub pidfile: Option<std::path::PathBuf>,
}

/// Accept on every listener until `state.shutdown.begin`, then drain for up to
/// `limits.drain_timeout_s` (or until `shutdown.force`), then fire `force` so whatever is
/// left closes.
pub async fn serve(listeners: Listeners, state: Arc<api::State>, limits: &config::Limits) {
    listen::raise_descriptor_limit(limits);
    let shutdown = state.shutdown.clone();
    let connections = TaskTracker::new();
    let ctx = Arc::new(listen::Accept {
        state: state.clone(),
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        pending: pending::Budget::new(
            limits.max_pending_handshakes,
            limits.max_pending_per_address,
        ),
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
