//! QEMU processes the gateway starts itself (`command` in `[[backend.domain]]`).
//!
//! Start: spawn the program with its arguments (no shell), in its own process group so a
//! Ctrl-C in the gateway's terminal does not reach it, with stdout/stderr forwarded to the
//! log; then poll the QMP socket until QEMU answers, bounded by `backend.start_timeout_s`
//! (an early exit or the timeout is an error naming the command). Run: a task waits for the
//! process; its exit is logged and published as an [`Exit`] on a watch channel: exit status
//! 0 (the guest powered off, or someone sent QMP `quit`) is `shut_off`, death by a signal is
//! `crashed`, any other status `unavailable`. Stop (destroy, gateway exit): QMP `quit`, then
//! SIGKILL after a grace period, reaped, `shut_off`; `kill_on_drop` is the last resort if
//! the gateway unwinds without stopping. The backend starts a stopped domain again with a
//! new [`start`].

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use virtgate_proto::DomainState;

use super::qmp::Qmp;
use super::BackendError;
use crate::config::DomainConfig;

/// How often the QMP socket is tried while QEMU starts.
const POLL: Duration = Duration::from_millis(25);
/// How long QEMU gets to quit after QMP `quit` before it is killed.
const GRACE: Duration = Duration::from_secs(5);

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

/// A running QEMU the gateway owns.
#[derive(Debug)]
pub struct Supervised {
    /// The domain it serves, for logs.
    domain: String,
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

    /// Stop QEMU (QMP quit, then kill) and wait until it is gone.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(domain = %self.domain, error = %e, "QEMU watcher task failed");
        }
    }
}

/// Start the domain's `command` and wait until its QMP socket answers.
pub async fn start(d: &DomainConfig, timeout: Duration) -> Result<Supervised, BackendError> {
    let argv = d.command.clone().unwrap_or_default();
    let command_line = argv.join(" ");
    let program = argv.first().cloned().unwrap_or_default();
    // A root span: a QEMU started during a request outlives its connection.
    let span = tracing::info_span!(parent: None, "qemu", domain = %d.name);
    let mut child = Command::new(&program)
        .args(argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BackendError::Spawn {
            domain: d.name.clone(),
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    span.in_scope(|| tracing::info!(pid, command = %command_line, "started QEMU"));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, "stdout").instrument(span.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, "stderr").instrument(span.clone()));
    }

    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BackendError::ExitedEarly {
                domain: d.name.clone(),
                status: status.to_string(),
                qmp: d.qmp.clone(),
                command: command_line,
            });
        }
        let last = match tokio::time::timeout(Duration::from_secs(1), Qmp::connect(&d.qmp)).await {
            Ok(Ok(_)) => break,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "QMP did not answer within 1 s".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(BackendError::StartTimeout {
                domain: d.name.clone(),
                qmp: d.qmp.clone(),
                secs: timeout.as_secs(),
                last,
                command: command_line,
            });
        }
        tokio::time::sleep(POLL).await;
    }
    span.in_scope(|| tracing::info!(pid, qmp = %d.qmp.display(), "QEMU is ready"));

    let stop = CancellationToken::new();
    let (tx, exited) = watch::channel(None);
    let task = tokio::spawn(supervise(child, d.qmp.clone(), stop.clone(), tx).instrument(span));
    Ok(Supervised {
        domain: d.name.clone(),
        stop,
        task,
        exited,
    })
}

/// Wait for QEMU to exit by itself, or stop it when told to; publish how it ended.
async fn supervise(
    mut child: Child,
    qmp: PathBuf,
    stop: CancellationToken,
    tx: watch::Sender<Option<Exit>>,
) {
    let exit = tokio::select! {
        status = child.wait() => {
            let exit = match &status {
                Ok(s) => Exit::from_status(s),
                Err(e) => Exit { state: DomainState::Unavailable, reason: format!("QEMU: cannot wait for it: {e}") },
            };
            if exit.state == DomainState::ShutOff {
                tracing::info!(reason = %exit.reason, "QEMU exited; the domain is shut off");
            } else {
                tracing::warn!(reason = %exit.reason, state = %exit.state, "QEMU ended unexpectedly");
            }
            exit
        }
        _ = stop.cancelled() => {
            let how = quit(&mut child, &qmp).await;
            Exit { state: DomainState::ShutOff, reason: format!("QEMU stopped by the gateway ({how})") }
        }
    };
    tx.send_replace(Some(exit));
}

/// QMP `quit`, wait up to [`GRACE`], then kill. Returns how it ended, for the log.
async fn quit(child: &mut Child, qmp: &std::path::Path) -> String {
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
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(Ok(status)) => {
            tracing::info!(%status, "QEMU stopped");
            status.to_string()
        }
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            tracing::warn!(
                grace_s = GRACE.as_secs(),
                "QEMU did not quit in time; killing it"
            );
            let _ = child.kill().await;
            "killed".into()
        }
    }
}

/// Log each line QEMU prints.
async fn forward(stream: impl AsyncRead + Unpin, name: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(stream = name, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_classified() {
        let ok = Exit::from_status(&ExitStatus::from_raw(0));
        assert_eq!(ok.state, DomainState::ShutOff);
        let killed = Exit::from_status(&ExitStatus::from_raw(9));
        assert_eq!(killed.state, DomainState::Crashed);
        assert!(killed.reason.contains("signal 9"), "{}", killed.reason);
        let failed = Exit::from_status(&ExitStatus::from_raw(1 << 8));
        assert_eq!(failed.state, DomainState::Unavailable);
        assert!(failed.reason.contains('1'), "{}", failed.reason);
    }
}
