//! QEMU processes the gateway supervises (`command` in `[[backend.domain]]`); they outlive
//! the gateway.
//!
//! Start ([`start`]): first look for the domain's QEMU that is still running (its pidfile
//! in `backend.runtime_dir`, checked against /proc and the QMP socket: `supervise/
//! pidfile.rs`); if there is one, take it over, never start a second. Otherwise spawn the
//! program with its arguments (no shell) detached from the gateway: its own process group
//! (a Ctrl-C in the gateway's terminal does not reach it), stdin `/dev/null`, stdout and
//! stderr appended to `RUNTIME_DIR/domains/NAME.log` (no pipe that dies with the gateway),
//! not killed when the gateway's handle is dropped; write `RUNTIME_DIR/domains/NAME.pid`;
//! then poll the QMP socket until QEMU answers, bounded by `backend.start_timeout_s` (an
//! early exit or the timeout is an error naming the command; the end of QEMU's log goes to
//! the gateway log).
//!
//! Run: a task watches the process. A QEMU we spawned is our child: `wait` gives its exit
//! status. One taken over is not: its pid and start time are polled in /proc every
//! [`WATCH_POLL`] (`supervise/procfs.rs`; a zombie still tells its status). The exit is
//! logged, the pidfile removed, and it is published as an [`Exit`] on a watch channel:
//! status 0 (the guest powered off, or someone sent QMP `quit`) is `shut_off`, death by a
//! signal is `crashed`, any other status `unavailable`; an adopted QEMU reaped before we
//! saw its status is `shut_off`, with a reason saying so.
//!
//! Stop ([`Supervised::stop`]: destroy, or the gateway exiting with `stop_on_exit`): QMP
//! `quit`, then SIGKILL after [`GRACE`], `shut_off`. Leave ([`Supervised::leave`]: the
//! gateway exiting without `stop_on_exit`): the watcher ends, QEMU and its pidfile stay, and
//! the next gateway start takes it over. The backend starts a stopped domain again with a
//! new [`start`].

mod pidfile;
mod procfs;

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use virtgate_proto::DomainState;

pub use pidfile::Files;

use super::qmp::Qmp;
use super::BackendError;
use crate::config::{self, DomainConfig};

/// How often the QMP socket is tried while QEMU starts.
const POLL: Duration = Duration::from_millis(25);
/// How long QEMU gets to quit after QMP `quit` before it is killed.
const GRACE: Duration = Duration::from_secs(5);
/// How often /proc is checked for a QEMU taken over from an earlier gateway run.
pub const WATCH_POLL: Duration = Duration::from_millis(100);
/// How much of the end of QEMU's log is copied to the gateway log when it fails.
const LOG_TAIL: u64 = 4096;

mod error;
pub use error::SuperviseError;

/// How a supervised QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The domain's state from now on: `shut_off`, `crashed` or `unavailable`.
    pub state: DomainState,
    /// How it ended, in words, for the domain's `state_reason`.
    pub reason: String,
}

impl Exit {
    /// Classify an exit status QEMU ended with by itself.
    pub fn from_status(status: &ExitStatus) -> Exit {
        if status.success() {
            Exit {
                state: DomainState::ShutOff,
                reason: "QEMU exited normally (the guest powered off or QEMU was told to quit)"
                    .into(),
            }
        } else if let Some(sig) = status.signal() {
            Exit {
                state: DomainState::Crashed,
                reason: format!("QEMU was killed by signal {sig}"),
            }
        } else {
            Exit {
                state: DomainState::Unavailable,
                reason: format!("QEMU exited ({status})"),
            }
        }
    }
}

/// `None` while QEMU runs, then how it ended; the backend keeps a receiver per domain.
pub type ExitWatch = watch::Receiver<Option<Exit>>;

/// Where and how long: what [`start`] needs from `[backend]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `backend.runtime_dir`: pidfiles and QEMU logs.
    pub runtime_dir: PathBuf,
    /// `backend.start_timeout_s`.
    pub start_timeout: Duration,
}

impl Settings {
    /// The settings of `[backend]`, defaults applied.
    pub fn from_config(b: &config::Backend) -> Settings {
        Settings {
            runtime_dir: b.runtime_dir_path().to_owned(),
            start_timeout: Duration::from_secs(b.start_timeout_s),
        }
    }
}

/// A running QEMU the gateway supervises.
#[derive(Debug)]
pub struct Supervised {
    /// The domain it serves, for logs.
    domain: String,
    /// Its pid.
    pid: u32,
    /// Whether this gateway run spawned it (else it took it over).
    spawned: bool,
    /// Its pidfile and log.
    files: Files,
    /// Tells the watcher task to stop QEMU.
    stop: CancellationToken,
    /// The watcher task; finishes when QEMU is gone.
    task: JoinHandle<()>,
    /// Set when QEMU exited.
    exited: ExitWatch,
}

impl Supervised {
    /// How QEMU ended, once it has; the receiver stays current (and keeps the last value
    /// after the watcher is gone).
    pub fn exit_watch(&self) -> ExitWatch {
        self.exited.clone()
    }

    /// Whether QEMU has exited.
    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this gateway run started it (`false`: taken over).
    pub fn spawned(&self) -> bool {
        self.spawned
    }

    /// Stop QEMU (QMP quit, then kill) and wait until it is gone.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(domain = %self.domain, error = %e, "QEMU watcher task failed");
        }
    }

    /// Stop watching and leave QEMU running, pidfile in place, for the next gateway run.
    pub fn leave(self) {
        self.task.abort();
        if self.has_exited() {
            return;
        }
        tracing::info!(
            domain = %self.domain,
            pid = self.pid,
            pidfile = %self.files.pidfile.display(),
            log = %self.files.log.display(),
            "QEMU keeps running after the gateway exits (stop_on_exit is off); the next gateway start takes it over"
        );
    }
}

/// Start the domain's QEMU, or take over the one that still runs; return once its QMP
/// socket answers (a taken-over QEMU whose QMP does not answer is taken over anyway).
pub async fn start(d: &DomainConfig, settings: &Settings) -> Result<Supervised, BackendError> {
    let files = Files::new(&settings.runtime_dir, &d.name);
    files.create_dir()?;
    // A root span: a QEMU started during a request outlives its connection.
    let span = tracing::info_span!(parent: None, "qemu", domain = %d.name);
    match pidfile::find_running(d, &files)
        .instrument(span.clone())
        .await?
    {
        Some(found) => adopt(d, files, found, span).await,
        None => spawn(d, files, settings.start_timeout, span).await,
    }
}

/// Take over a QEMU found running.
async fn adopt(
    d: &DomainConfig,
    files: Files,
    found: pidfile::Found,
    span: tracing::Span,
) -> Result<Supervised, BackendError> {
    files.write_pid(found.pid)?;
    let pid = found.pid;
    span.in_scope(|| {
        tracing::info!(pid, evidence = found.evidence, pidfile = %files.pidfile.display(), "took over the QEMU that was still running (no second one is started)");
        if !found.same_command {
            tracing::warn!(pid, "this QEMU runs another command line than the configured `command` (an older config?); it keeps it until the domain is destroyed and started again");
        }
    });
    let answered = tokio::time::timeout(Duration::from_secs(2), Qmp::connect(&d.qmp)).await;
    if !matches!(answered, Ok(Ok(_))) {
        span.in_scope(|| tracing::warn!(pid, qmp = %d.qmp.display(), "the QEMU taken over does not answer on its QMP socket; the domain lists as unavailable until it does"));
    }
    let log_from = std::fs::metadata(&files.log).map_or(0, |m| m.len());
    let process = Process::Adopted {
        pid,
        start_time: found.start_time,
    };
    Ok(supervise(d, process, pid, false, files, log_from, span))
}

/// Spawn the domain's `command`, detached from the gateway, and wait for its QMP socket.
async fn spawn(
    d: &DomainConfig,
    files: Files,
    timeout: Duration,
    span: tracing::Span,
) -> Result<Supervised, BackendError> {
    let argv = d.command.clone().unwrap_or_default();
    let command_line = argv.join(" ");
    let program = argv.first().cloned().unwrap_or_default();
    let mut log = files.open_log()?;
    let log_err = |source| SuperviseError::Log {
        domain: d.name.clone(),
        path: files.log.clone(),
        source,
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    writeln!(log, "--- {now} virtgated starts QEMU: {command_line}").map_err(log_err)?;
    let log_from = log.stream_position().map_err(log_err)?;
    let stdout = log.try_clone().map_err(log_err)?;
    let mut child = Command::new(&program)
        .args(argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|source| BackendError::Spawn {
            domain: d.name.clone(),
            program: program.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    if let Err(e) = files.write_pid(pid) {
        let _ = child.kill().await;
        return Err(e.into());
    }
    span.in_scope(
        || tracing::info!(pid, command = %command_line, log = %files.log.display(), "started QEMU"),
    );

    let deadline = tokio::time::Instant::now() + timeout;
    let failed = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break BackendError::ExitedEarly {
                domain: d.name.clone(),
                status: status.to_string(),
                qmp: d.qmp.clone(),
                command: command_line,
            };
        }
        let last = match tokio::time::timeout(Duration::from_secs(1), Qmp::connect(&d.qmp)).await {
            Ok(Ok(_)) => {
                span.in_scope(|| tracing::info!(pid, qmp = %d.qmp.display(), "QEMU is ready"));
                return Ok(supervise(
                    d,
                    Process::Child(child),
                    pid,
                    true,
                    files,
                    log_from,
                    span,
                ));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "QMP did not answer within 1 s".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            break BackendError::StartTimeout {
                domain: d.name.clone(),
                qmp: d.qmp.clone(),
                secs: timeout.as_secs(),
                last,
                command: command_line,
            };
        }
        tokio::time::sleep(POLL).await;
    };
    files.remove_if(Some(pid));
    span.in_scope(|| log_tail(&files.log, log_from));
    Err(failed)
}

/// Start the watcher task of a running QEMU.
fn supervise(
    d: &DomainConfig,
    process: Process,
    pid: u32,
    spawned: bool,
    files: Files,
    log_from: u64,
    span: tracing::Span,
) -> Supervised {
    let stop = CancellationToken::new();
    let (tx, exited) = watch::channel(None);
    let task = tokio::spawn(
        watch(
            process,
            d.qmp.clone(),
            files.clone(),
            log_from,
            stop.clone(),
            tx,
        )
        .instrument(span),
    );
    Supervised {
        domain: d.name.clone(),
        pid,
        spawned,
        files,
        stop,
        task,
        exited,
    }
}

/// A supervised QEMU process: our child, or one taken over (known by pid and start time).
#[derive(Debug)]
enum Process {
    /// Spawned by this gateway run.
    Child(Child),
    /// Taken over from an earlier run.
    Adopted {
        /// Its pid.
        pid: u32,
        /// Its start time (`/proc/PID/stat` field 22).
        start_time: u64,
    },
}

impl Process {
    /// Wait until it exits; how it ended.
    async fn wait(&mut self) -> Exit {
        match self {
            Process::Child(child) => match child.wait().await {
                Ok(s) => Exit::from_status(&s),
                Err(e) => Exit {
                    state: DomainState::Unavailable,
                    reason: format!("QEMU: cannot wait for it: {e}"),
                },
            },
            Process::Adopted { pid, start_time } => loop {
                match procfs::liveness(*pid, *start_time) {
                    procfs::Liveness::Alive => tokio::time::sleep(WATCH_POLL).await,
                    procfs::Liveness::Exited(status) => return Exit::from_status(&status),
                    procfs::Liveness::Gone => return Exit {
                        state: DomainState::ShutOff,
                        reason: "QEMU exited (it was taken over from an earlier gateway run and reaped before its exit status could be read)".into(),
                    },
                }
            },
        }
    }

    /// SIGKILL, and wait for it to be gone.
    async fn kill(&mut self) {
        match self {
            Process::Child(child) => {
                let _ = child.kill().await;
            }
            Process::Adopted { pid, start_time } => {
                if let Err(e) = procfs::signal(*pid, *start_time, "KILL").await {
                    tracing::error!(pid = *pid, error = %e, "cannot kill QEMU");
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), self.wait()).await;
            }
        }
    }
}

/// Wait for QEMU to exit by itself, or stop it when told to; remove the pidfile and publish
/// how it ended.
async fn watch(
    mut process: Process,
    qmp: PathBuf,
    files: Files,
    log_from: u64,
    stop: CancellationToken,
    tx: watch::Sender<Option<Exit>>,
) {
    let pid = match &process {
        Process::Child(c) => c.id(),
        Process::Adopted { pid, .. } => Some(*pid),
    };
    let exit = tokio::select! {
        exit = process.wait() => {
            if exit.state == DomainState::ShutOff {
                tracing::info!(reason = %exit.reason, "QEMU exited; the domain is shut off");
            } else {
                tracing::warn!(reason = %exit.reason, state = %exit.state, "QEMU ended unexpectedly");
                log_tail(&files.log, log_from);
            }
            exit
        }
        _ = stop.cancelled() => {
            let how = quit(&mut process, &qmp).await;
            Exit { state: DomainState::ShutOff, reason: format!("QEMU stopped by the gateway ({how})") }
        }
    };
    files.remove_if(pid);
    tx.send_replace(Some(exit));
}

/// QMP `quit`, wait up to [`GRACE`], then kill. Returns how it ended, for the log.
async fn quit(process: &mut Process, qmp: &Path) -> String {
    let asked = tokio::time::timeout(Duration::from_secs(2), async {
        let mut q = Qmp::connect(qmp).await?;
        q.execute("quit").await
    })
    .await;
    match asked {
        Ok(Ok(_)) | Ok(Err(super::qmp::QmpError::Closed)) => tracing::debug!("sent QMP quit"),
        Ok(Err(e)) => tracing::warn!(error = %e, "QMP quit failed; killing QEMU"),
        Err(_) => tracing::warn!("QMP quit timed out; killing QEMU"),
    }
    match tokio::time::timeout(GRACE, process.wait()).await {
        Ok(exit) => {
            tracing::info!(reason = %exit.reason, "QEMU stopped");
            exit.reason
        }
        Err(_) => {
            tracing::warn!(
                grace_s = GRACE.as_secs(),
                "QEMU did not quit in time; killing it"
            );
            process.kill().await;
            "killed".into()
        }
    }
}

/// Copy the end of QEMU's log (what it printed since `from`) to the gateway log.
fn log_tail(log: &Path, from: u64) {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(log)?;
        let len = f.metadata()?.len();
        f.seek(std::io::SeekFrom::Start(
            from.max(len.saturating_sub(LOG_TAIL)),
        ))?;
        let mut bytes = Vec::new();
        f.take(LOG_TAIL).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::warn!(log = %log.display(), "QEMU: {line}");
            }
        }
        Err(e) => tracing::warn!(log = %log.display(), error = %e, "cannot read QEMU's log"),
    }
}

#[cfg(test)]
mod tests;
