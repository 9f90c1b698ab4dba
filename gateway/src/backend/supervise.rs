//! QEMU processes the gateway starts itself (`command` in `[[backend.domain]]`).
//!
//! Start: spawn the program with its arguments (no shell), in its own process group so a
//! Ctrl-C in the gateway's terminal does not reach it, with stdout/stderr forwarded to the
//! log; then poll the QMP socket until QEMU answers, bounded by `backend.start_timeout_s`
//! (an early exit or the timeout is an error naming the command). Run: a task waits for the
//! process; an exit on its own is logged and remembered (the domain then lists as
//! `unavailable` with that reason). Stop: QMP `quit`, then SIGKILL after a grace period;
//! `kill_on_drop` is the last resort if the gateway unwinds without stopping.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::qmp::Qmp;
use super::BackendError;
use crate::config::DomainConfig;

/// How often the QMP socket is tried while QEMU starts.
const POLL: Duration = Duration::from_millis(25);
/// How long QEMU gets to quit after QMP `quit` before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Why a supervised QEMU is gone (`None` while it runs), shared with the backend.
pub type ExitReason = Arc<Mutex<Option<String>>>;

/// A running QEMU the gateway owns.
#[derive(Debug)]
pub struct Supervised {
    /// The domain it serves, for logs.
    domain: String,
    /// Tells the watcher task to stop QEMU.
    stop: CancellationToken,
    /// The watcher task; finishes when QEMU is gone.
    task: JoinHandle<()>,
    /// Set when QEMU exited: how, for the domain's `state_reason`.
    exited: ExitReason,
}

impl Supervised {
    /// Why QEMU is gone, if it exited; the handle stays current.
    pub fn exit_reason_handle(&self) -> ExitReason {
        self.exited.clone()
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
    let span = tracing::info_span!("qemu", domain = %d.name);
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
    let exited = Arc::new(Mutex::new(None));
    let task =
        tokio::spawn(watch(child, d.qmp.clone(), stop.clone(), exited.clone()).instrument(span));
    Ok(Supervised {
        domain: d.name.clone(),
        stop,
        task,
        exited,
    })
}

/// Wait for QEMU to exit by itself, or stop it when told to.
async fn watch(mut child: Child, qmp: PathBuf, stop: CancellationToken, exited: ExitReason) {
    let status = tokio::select! {
        status = child.wait() => {
            let reason = match &status {
                Ok(s) => format!("QEMU exited ({s})"),
                Err(e) => format!("QEMU: cannot wait for it: {e}"),
            };
            tracing::warn!(reason = %reason, "QEMU exited on its own; the domain is unavailable now");
            if let Ok(mut g) = exited.lock() {
                *g = Some(reason);
            }
            return;
        }
        _ = stop.cancelled() => quit(&mut child, &qmp).await,
    };
    if let Ok(mut g) = exited.lock() {
        *g = Some(format!("QEMU stopped by the gateway ({status})"));
    }
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
