//! Finding a domain's QEMU that outlived a gateway: the pidfile, checked against /proc and
//! the QMP socket.
//!
//! Files, under `backend.runtime_dir` (default `/run/virtgate`): `domains/NAME.pid` (one
//! line, the pid, as `kill $(cat ...)` and start-stop-daemon expect; written when QEMU is
//! spawned or taken over, removed when it exits) and `domains/NAME.log` (QEMU's stdout and
//! stderr, appended; moved to `NAME.log.1` once it passes 1 MiB).
//!
//! [`find_running`] decides, before anything is started, whether the domain's QEMU runs:
//! 1. The pidfile names a live process (not a zombie) whose command line IS the domain's
//!    `command`, or which serves the domain's QMP socket (the socket's peer credentials
//!    name it: `SO_PEERCRED`, whatever it answers): that is the QEMU; take it over.
//! 2. The pidfile names a dead pid, or a live process that is none of that (a pid reused
//!    by something else): stale; it is removed and the log says why.
//!    Exception: a process running the same program (`command[0]`) that does not serve
//!    the QMP socket is most likely this domain's QEMU started with an older config; the
//!    gateway refuses to start a second one ([`SuperviseError::Suspect`]).
//! 3. No (valid) pidfile, but a process serves the QMP socket and speaks QMP (a QEMU
//!    started by a gateway killed before it wrote the pidfile, or by an older virtgated
//!    without pidfiles): take that one over. A QMP socket that accepts but does not speak
//!    QMP, or cannot be probed, stops the start ([`SuperviseError::QmpInUse`]): QEMU would
//!    replace the socket of a process it cannot see and two QEMUs would share one disk.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use super::procfs;
use super::SuperviseError;
use crate::backend::qmp::Qmp;
use crate::config::DomainConfig;

/// A log larger than this is moved aside (`NAME.log.1`) before QEMU starts again.
const LOG_ROTATE_BYTES: u64 = 1 << 20;
/// Bound on probing the QMP socket (connect + greeting).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The runtime files of one domain.
#[derive(Debug, Clone)]
pub struct Files {
    /// The domain, for messages.
    domain: String,
    /// `RUNTIME_DIR/domains`.
    dir: PathBuf,
    /// `RUNTIME_DIR/domains/NAME.pid`.
    pub pidfile: PathBuf,
    /// `RUNTIME_DIR/domains/NAME.log`.
    pub log: PathBuf,
}

/// A running QEMU of the domain, found by [`find_running`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Its pid.
    pub pid: u32,
    /// Its start time (`/proc/PID/stat` field 22), to know it again.
    pub start_time: u64,
    /// How we know it is the domain's QEMU, for the log.
    pub evidence: &'static str,
    /// Whether its command line is the configured `command` (else it was started with
    /// an older one).
    pub same_command: bool,
}

impl Files {
    /// The files of domain `domain` under `runtime_dir`.
    pub fn new(runtime_dir: &Path, domain: &str) -> Files {
        let dir = runtime_dir.join("domains");
        Files {
            domain: domain.to_owned(),
            pidfile: dir.join(format!("{domain}.pid")),
            log: dir.join(format!("{domain}.log")),
            dir,
        }
    }

    /// Create `RUNTIME_DIR/domains` (0750) if needed.
    pub fn create_dir(&self) -> Result<(), SuperviseError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.dir)
            .map_err(|source| SuperviseError::RuntimeDir {
                dir: self.dir.clone(),
                source,
            })
    }

    fn pidfile_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SuperviseError {
        let (domain, path) = (self.domain.clone(), self.pidfile.clone());
        move |source| SuperviseError::Pidfile {
            domain,
            path,
            op,
            source,
        }
    }

    /// The pid in the pidfile: `None` when there is none, `Some(Err(text))` when its
    /// content is not a pid.
    pub fn read_pid(&self) -> Result<Option<Result<u32, String>>, SuperviseError> {
        match std::fs::read_to_string(&self.pidfile) {
            Ok(text) => {
                let first = text.lines().next().unwrap_or("").trim();
                Ok(Some(
                    first
                        .parse::<u32>()
                        .ok()
                        .filter(|p| *p > 1)
                        .ok_or_else(|| first.chars().take(40).collect()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.pidfile_err("read")(e)),
        }
    }

    /// Write the pidfile (0644) atomically: a temporary file renamed over it.
    pub fn write_pid(&self, pid: u32) -> Result<(), SuperviseError> {
        let tmp = self.dir.join(format!(".{}.pid.tmp", self.domain));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            writeln!(f, "{pid}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.pidfile)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.pidfile_err("write")(e)
        })
    }

    /// Remove the pidfile if it still names `pid` (or anything that is not a pid); a
    /// failure is logged, not returned: QEMU is gone either way.
    pub fn remove_if(&self, pid: Option<u32>) {
        if let (Some(pid), Ok(Some(Ok(named)))) = (pid, self.read_pid()) {
            if named != pid {
                return;
            }
        }
        match std::fs::remove_file(&self.pidfile) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pidfile = %self.pidfile.display(), error = %e, "cannot remove the pidfile")
            }
        }
    }

    /// Open QEMU's log for appending (0640), moving a large one aside first.
    pub fn open_log(&self) -> Result<std::fs::File, SuperviseError> {
        if std::fs::metadata(&self.log).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = std::fs::rename(&self.log, self.log.with_extension("log.1"));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.log)
            .map_err(|source| SuperviseError::Log {
                domain: self.domain.clone(),
                path: self.log.clone(),
                source,
            })
    }
}

/// Who answers on a QMP socket.
#[derive(Debug)]
enum QmpOwner {
    /// Nobody: no socket file, or nobody listening (refused).
    Nobody,
    /// The process that listens on it.
    Pid(u32),
    /// Something we cannot identify (why).
    Unknown(String),
}

/// Connect to the QMP socket and read its listener's pid from the peer credentials.
async fn qmp_owner(qmp: &Path) -> QmpOwner {
    use std::io::ErrorKind;
    let mut last = String::new();
    // A QEMU busy with another QMP client queues one more connection; beyond that a
    // connect fails with EAGAIN for a moment.
    for _ in 0..20 {
        match UnixStream::connect(qmp).await {
            Ok(s) => {
                return match s.peer_cred().ok().and_then(|c| c.pid()) {
                    Some(pid) if pid > 0 => QmpOwner::Pid(pid.unsigned_abs()),
                    _ => QmpOwner::Unknown("the kernel does not name its listener".into()),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                return QmpOwner::Nobody
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => last = "its listen queue is full".into(),
            Err(e) => return QmpOwner::Unknown(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    QmpOwner::Unknown(last)
}

/// The domain's QEMU, if one runs (see the module documentation for the rules).
pub async fn find_running(
    d: &DomainConfig,
    files: &Files,
) -> Result<Option<Found>, SuperviseError> {
    let command = d.command.as_deref().unwrap_or_default();
    match files.read_pid()? {
        None => {}
        Some(Err(text)) => {
            tracing::warn!(pidfile = %files.pidfile.display(), content = %text.escape_debug(), "stale pidfile: it holds no pid; removing it");
            files.remove_if(None);
        }
        Some(Ok(pid)) => match procfs::stat(pid).filter(|s| !s.is_exited()) {
            None => {
                tracing::info!(pid, pidfile = %files.pidfile.display(), "stale pidfile: its QEMU is gone; removing it");
                files.remove_if(Some(pid));
            }
            Some(stat) => {
                let argv = procfs::cmdline(pid).unwrap_or_default();
                let same_command = argv == command;
                let serves_qmp = !same_command
                    && matches!(qmp_owner(&d.qmp).await, QmpOwner::Pid(p) if p == pid);
                if same_command || serves_qmp {
                    return Ok(Some(Found {
                        pid,
                        start_time: stat.start_time,
                        evidence: if same_command {
                            "the pidfile names it and its command line is the domain's `command`"
                        } else {
                            "the pidfile names it and it serves the domain's QMP socket"
                        },
                        same_command,
                    }));
                }
                if !argv.is_empty() && argv.first() == command.first() {
                    return Err(SuperviseError::Suspect {
                        domain: d.name.clone(),
                        pid,
                        pidfile: files.pidfile.clone(),
                        program: argv.first().cloned().unwrap_or_default(),
                        qmp: d.qmp.clone(),
                    });
                }
                tracing::warn!(
                    pid,
                    pidfile = %files.pidfile.display(),
                    process = %argv.first().map(String::as_str).unwrap_or("?"),
                    "stale pidfile: its pid now belongs to another program; removing it"
                );
                files.remove_if(Some(pid));
            }
        },
    }
    let pid = match qmp_owner(&d.qmp).await {
        QmpOwner::Nobody => return Ok(None),
        QmpOwner::Pid(pid) => pid,
        QmpOwner::Unknown(reason) => {
            return Err(SuperviseError::QmpInUse {
                domain: d.name.clone(),
                qmp: d.qmp.clone(),
                reason,
            })
        }
    };
    let argv = procfs::cmdline(pid).unwrap_or_default();
    let program = argv.first().cloned().unwrap_or_else(|| "?".into());
    let speaks_qmp = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, Qmp::connect(&d.qmp)).await,
        Ok(Ok(_))
    );
    match procfs::stat(pid).filter(|s| !s.is_exited()) {
        Some(stat) if speaks_qmp => Ok(Some(Found {
            pid,
            start_time: stat.start_time,
            evidence: "it serves the domain's QMP socket (there was no valid pidfile)",
            same_command: argv == command,
        })),
        _ => Err(SuperviseError::QmpInUse {
            domain: d.name.clone(),
            qmp: d.qmp.clone(),
            reason: format!("process {pid} (`{program}`) listens on it but does not answer QMP"),
        }),
    }
}
