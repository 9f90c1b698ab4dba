//! What can go wrong supervising a QEMU beyond starting the program itself: the runtime
//! files, and a QEMU of the domain that runs but cannot be taken over.

use std::path::PathBuf;

/// A failure of the gateway's supervision of a domain's QEMU (wrapped by
/// [`BackendError::Supervise`](crate::backend::BackendError::Supervise)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// `RUNTIME_DIR/domains` could not be created.
    #[error("cannot create the runtime folder {} for QEMU pidfiles and logs: {source}", dir.display())]
    RuntimeDir {
        /// The folder.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A pidfile could not be read or written.
    #[error("domain `{domain}`: cannot {op} the pidfile {}: {source}", path.display())]
    Pidfile {
        /// The domain.
        domain: String,
        /// The pidfile.
        path: PathBuf,
        /// `read` or `write`.
        op: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// QEMU's log file could not be opened or written.
    #[error("domain `{domain}`: cannot write QEMU's log {}: {source}", path.display())]
    Log {
        /// The domain.
        domain: String,
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The pidfile names a live process running the domain's QEMU program that is not the
    /// domain's QEMU as configured (other command line, does not serve the QMP socket):
    /// most likely the domain's QEMU started with an older config. Starting another could
    /// run two QEMUs on one disk.
    #[error("domain `{domain}`: its pidfile {} names process {pid}, a running `{program}` that is not started with the configured `command` and does not serve the QMP socket {}; not starting a second QEMU for this domain", pidfile.display(), qmp.display())]
    Suspect {
        /// The domain.
        domain: String,
        /// The process.
        pid: u32,
        /// The pidfile.
        pidfile: PathBuf,
        /// Its program (`argv[0]`).
        program: String,
        /// The configured QMP socket.
        qmp: PathBuf,
    },
    /// A process listens on the domain's QMP socket but cannot be identified or does not
    /// speak QMP; a new QEMU would take its socket away from it.
    #[error("domain `{domain}`: the QMP socket {} is in use ({reason}); not starting a QEMU that would replace it", qmp.display())]
    QmpInUse {
        /// The domain.
        domain: String,
        /// The QMP socket.
        qmp: PathBuf,
        /// Who holds it, as far as we can tell.
        reason: String,
    },
}

impl SuperviseError {
    /// What the admin can do about it.
    pub fn hint(&self) -> String {
        match self {
            SuperviseError::RuntimeDir { dir, .. } => format!(
                "create {} for the gateway's user (the packages do), or set `runtime_dir` in [backend] to a folder it may write",
                dir.display()
            ),
            SuperviseError::Pidfile { path, .. } | SuperviseError::Log { path, .. } => format!(
                "let the gateway's user write in {} (or set `runtime_dir` in [backend])",
                path.parent().map_or_else(String::new, |p| p.display().to_string())
            ),
            SuperviseError::Suspect { pid, pidfile, .. } => format!(
                "if process {pid} is this domain's QEMU, stop it (`kill {pid}`) or restore the `qmp` path it was started with; if it is not, remove {}",
                pidfile.display()
            ),
            SuperviseError::QmpInUse { qmp, .. } => format!(
                "find the process with `ss -xlp | grep {}` and stop it, then start the domain again",
                qmp.display()
            ),
        }
    }
}
