//! Backends: the hypervisor behind the gateway, as one trait, [`Hypervisor`].
//!
//! The API layer only speaks to `dyn Hypervisor`; it knows nothing of QMP or libvirt, and
//! backends know nothing of HTTP. There is [`qemu::QemuBackend`] (domains from the config,
//! QMP for state, unix sockets for consoles) and [`libvirt::LibvirtBackend`] (domains of a
//! libvirtd, consoles from their live XML). Consoles are VNC, SPICE (one stream per SPICE
//! channel: every `open_console` connects anew) and serial.
//! Methods return boxed futures so the trait stays object-safe without a macro crate.
//!
//! Failures of one domain never fail a listing: a domain whose QEMU is gone is listed with
//! state `unavailable` and a `state_reason`; only calls on that domain fail.

pub mod libvirt;
pub mod qemu;
pub mod qmp;
pub mod supervise;

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use virtgate_proto::{ConsoleKind, Domain};

/// A byte stream to a console (VNC server, serial port, libvirtd socket).
pub trait ConsoleStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ConsoleStream for T {}

/// An open console, whatever the backend connected to.
pub type BoxedStream = Box<dyn ConsoleStream>;

/// Power operations (`POST /v1/domains/{name}/{op}`); implemented by later backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// Power on.
    Start,
    /// ACPI power button.
    Shutdown,
    /// Reset.
    Reboot,
    /// Pull the plug.
    Destroy,
}

impl Lifecycle {
    /// Parse an action segment of the API path.
    pub fn parse(s: &str) -> Option<Lifecycle> {
        Some(match s {
            "start" => Lifecycle::Start,
            "shutdown" => Lifecycle::Shutdown,
            "reboot" => Lifecycle::Reboot,
            "destroy" => Lifecycle::Destroy,
            _ => return None,
        })
    }
}

/// What went wrong in a backend call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend has no domain of that name.
    #[error("no domain named `{0}`")]
    NotFound(String),
    /// The domain exists but offers no such console (QEMU backend: its `[[backend.domain]]`
    /// has no socket for it).
    #[error("domain `{domain}` has no {kind} console")]
    NoConsole {
        /// The domain.
        domain: String,
        /// `vnc`, `spice` or `serial`.
        kind: &'static str,
    },
    /// The domain's own definition offers no console of this kind the gateway can use
    /// (libvirt: no `<graphics type='spice'>` in the domain XML, TLS-only SPICE, listen
    /// type `none`); unlike [`BackendError::NoConsole`] the fix is in the domain, not in
    /// the gateway config, so the backend words the hint.
    #[error("domain `{domain}` has no usable {kind} console: {reason}")]
    ConsoleNotOffered {
        /// The domain.
        domain: String,
        /// `vnc`, `spice` or `serial`.
        kind: &'static str,
        /// Why not, from the domain's definition (the end of the message).
        reason: String,
        /// What the admin can change in the domain's definition.
        hint: String,
    },
    /// The console socket could not be reached (QEMU not running, socket gone).
    #[error("cannot connect to the {kind} socket {} of domain `{domain}`: {reason}", path.display())]
    Console {
        /// The domain.
        domain: String,
        /// `vnc`, `spice` or `serial`.
        kind: &'static str,
        /// The socket (or, libvirt over TCP, `tcp HOST:PORT`).
        path: PathBuf,
        /// What failed (OS error or timeout).
        reason: String,
    },
    /// The operation exists in the API but this backend does not offer it (yet).
    #[error("{what} is not supported by the {backend} backend yet")]
    NotSupported {
        /// The operation.
        what: String,
        /// The backend's kind.
        backend: &'static str,
    },
    /// A QEMU the gateway should start could not be started.
    #[error("cannot start QEMU for domain `{domain}` (`{program}`): {source}")]
    Spawn {
        /// The domain.
        domain: String,
        /// `command[0]`.
        program: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A QEMU the gateway started exited before it was ready.
    #[error("QEMU for domain `{domain}` exited ({status}) before its QMP socket {} was ready; command: {command}", qmp.display())]
    ExitedEarly {
        /// The domain.
        domain: String,
        /// Exit status.
        status: String,
        /// The QMP socket we waited for.
        qmp: PathBuf,
        /// The command line, for the message.
        command: String,
    },
    /// The hypervisor cannot be reached for this call right now (a domain's QEMU socket is
    /// gone, libvirtd is down or restarting): 503, try again later.
    #[error("{}{reason}", if domain.is_empty() { String::new() } else { format!("domain `{domain}`: ") })]
    Unavailable {
        /// The domain the call was about (empty for domain-less calls).
        domain: String,
        /// What failed, for the message.
        reason: String,
    },
    /// The call needs a running domain and this one is not running: 409.
    #[error("domain `{domain}` is not running")]
    NotRunning {
        /// The domain.
        domain: String,
    },
    /// The gateway cannot do this for this domain because it does not own its process
    /// (QEMU backend: start of a domain without `command`): 409.
    #[error("cannot {what} domain `{domain}`: the gateway does not manage its QEMU process (no `command`)")]
    Unmanaged {
        /// The domain.
        domain: String,
        /// The operation (`start`).
        what: &'static str,
    },
    /// The hypervisor refused or failed an operation (QMP error, libvirt error, I/O): 502.
    #[error("{what} of domain `{domain}` failed: {reason}")]
    Failed {
        /// The domain.
        domain: String,
        /// The operation (`shutdown`, `screenshot`, ...).
        what: String,
        /// What the hypervisor said.
        reason: String,
    },
    /// Supervising a domain's QEMU failed beyond the program itself: its pidfile or log in
    /// `backend.runtime_dir`, or a QEMU of the domain that runs and cannot be taken over.
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    /// A QEMU the gateway started did not open its QMP socket in time.
    #[error("QEMU for domain `{domain}` did not answer on its QMP socket {} within {secs} s (last: {last}); command: {command}", qmp.display())]
    StartTimeout {
        /// The domain.
        domain: String,
        /// The QMP socket we waited for.
        qmp: PathBuf,
        /// `backend.start_timeout_s`.
        secs: u64,
        /// The last connection error.
        last: String,
        /// The command line, for the message.
        command: String,
    },
}

impl BackendError {
    /// What the user (or the admin, for start-up errors) can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            BackendError::NotFound(_) => "run `virtgate list` to see the domains you may use".into(),
            BackendError::NoConsole { kind, .. } => {
                format!("the admin can add `{kind} = PATH` to the domain's [[backend.domain]] in the gateway config")
            }
            BackendError::ConsoleNotOffered { hint, .. } => hint.clone(),
            BackendError::Console { domain, .. } => {
                format!("is domain `{domain}` running? `virtgate info {domain}` shows its state; the gateway log has details")
            }
            BackendError::NotSupported { .. } => "update the gateway, or use a backend that offers it".into(),
            BackendError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "install QEMU (Debian: apt-get install qemu-system-x86) or fix `command` in the config".into()
            }
            BackendError::Spawn { .. } => "check `command` of the domain in the config".into(),
            BackendError::ExitedEarly { .. } => "run the command by hand to see why QEMU stops; the end of its output is in the log above (all of it in RUNTIME_DIR/domains/NAME.log)".into(),
            BackendError::Unavailable { .. } => "try again in a moment; if it persists, the gateway log says why the hypervisor cannot be reached".into(),
            BackendError::NotRunning { domain } => format!("start it first: `virtgate start {domain}`"),
            BackendError::Unmanaged { domain, .. } => format!(
                "start `{domain}` outside the gateway, or let the gateway supervise it (`command` in its [[backend.domain]])"
            ),
            BackendError::Failed { .. } => "see the gateway log".into(),
            BackendError::Supervise(e) => e.hint(),
            BackendError::StartTimeout { .. } => {
                "check that `command` opens the `qmp` socket of the domain (-qmp unix:PATH,server=on,wait=off), or raise backend.start_timeout_s".into()
            }
        })
    }
}

/// A hypervisor: lists domains, describes them, and opens their consoles.
pub trait Hypervisor: Send + Sync + 'static {
    /// Short name for logs and messages (`qemu`, `libvirt`).
    fn kind(&self) -> &'static str;

    /// Every domain, each with its current state (never fails for one broken domain).
    fn list(&self) -> BoxFuture<'_, Result<Vec<Domain>, BackendError>>;

    /// One domain, or [`BackendError::NotFound`].
    fn domain<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Domain, BackendError>>;

    /// A byte stream to a console of the domain.
    fn open_console<'a>(
        &'a self,
        name: &'a str,
        kind: ConsoleKind,
    ) -> BoxFuture<'a, Result<BoxedStream, BackendError>>;

    /// Power operations; not offered unless a backend overrides this.
    fn lifecycle<'a>(
        &'a self,
        name: &'a str,
        op: Lifecycle,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = name;
        let backend = self.kind();
        Box::pin(async move {
            Err(BackendError::NotSupported {
                what: format!("{op:?}").to_lowercase(),
                backend,
            })
        })
    }

    /// A PNG of the domain's screen; not offered unless a backend overrides this.
    fn screenshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, BackendError>> {
        let _ = name;
        let backend = self.kind();
        Box::pin(async move {
            Err(BackendError::NotSupported {
                what: "screenshot".into(),
                backend,
            })
        })
    }

    /// libvirtd's RPC socket for the `/v1/libvirt` passthrough (`read_only`: the read-only
    /// socket); `None` when this backend has no libvirtd behind it.
    fn libvirt_socket(&self, read_only: bool) -> Option<PathBuf> {
        let _ = read_only;
        None
    }

    /// Called once when the gateway exits: supervised QEMUs are stopped, or left running for
    /// the next gateway run (`stop_domains_on_exit`, a domain's `stop_on_exit`).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
