//! Reloading the configuration without dropping anyone.
//!
//! One task ([`Reloader::start`]) owns reloading; it is asked by SIGHUP (what admins type,
//! and what `systemctl reload` / `rc-service … reload` send), by the control socket
//! (`[listen] control`, used by `virtgated reload`, which gets the outcome back), and by a
//! change of the CRL file on disk (polled every second: no signal needed after
//! `virtgate-pki revoke`). Requests that arrive while one reload runs are answered by the
//! next one, so a storm of signals costs at most two reloads.
//!
//! A reload re-reads the file and every file it names, checks them like `check-config`,
//! and only then swaps the [`Live`] configuration: a configuration that does not check is
//! refused, logged with its hint, and the old one stays in force. After the swap every live
//! connection and stream is re-checked ([`crate::sessions::Registry::reevaluate`]).
//! Changes to `[listen]`, `[backend]` and `[limits]` are reported as needing a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::api::State;
use crate::config::{self, Config};
use crate::live::{self, Live};
use crate::service::Service;
use crate::Error;

/// How often the CRL file is looked at.
const CRL_POLL: Duration = Duration::from_secs(1);

/// How long a control client may take to send its command.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one reload: a summary, or the error and its hint.
pub type Outcome = Result<String, (String, Option<String>)>;

/// Asks the reload task for a reload.
#[derive(Debug, Clone)]
pub struct Reloader {
    /// Requests, each with where to send the outcome.
    tx: mpsc::Sender<oneshot::Sender<Outcome>>,
}

/// What the reload task keeps between reloads.
struct Task {
    /// The gateway's shared state (the live cell, the registry, metrics).
    state: Arc<State>,
    /// The configuration the gateway started with: `[listen]`, `[backend]` and `[limits]`
    /// changes are measured against it.
    started: Config,
    /// The file to re-read (`None`: a generated configuration, e.g. the demo's).
    path: Option<PathBuf>,
    /// The CRL file in force and how it looked (modified time, length) when loaded.
    crl: Option<(PathBuf, Option<(SystemTime, u64)>)>,
    /// Whether the CRL's staleness was reported already.
    stale_reported: bool,
}

impl Reloader {
    /// Start the reload task for a gateway started with `config` (read from `path`).
    pub fn start(state: Arc<State>, config: Config, path: Option<PathBuf>) -> Reloader {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Outcome>>(64);
        let mut task = Task {
            crl: crl_of(&config),
            state,
            started: config,
            path,
            stale_reported: false,
        };
        let stop = task.state.shutdown.begin.clone();
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; reload with `virtgated reload`");
                None
            }
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CRL_POLL);
            loop {
                let mut waiting = Vec::new();
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                    Some(reply) = rx.recv() => { waiting.push(reply); "virtgated reload" }
                    _ = tick.tick() => match task.crl_changed() {
                        true => "tls.crl changed on disk",
                        false => continue,
                    },
                };
                // everyone who asked meanwhile gets this reload's outcome
                while let Ok(reply) = rx.try_recv() {
                    waiting.push(reply);
                }
                let outcome = task.reload(why);
                for reply in waiting {
                    let _ = reply.send(outcome.clone());
                }
            }
        });
        Reloader { tx }
    }

    /// Ask for a reload and wait for its outcome.
    pub async fn reload(&self) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        let gone = || ("the gateway is stopping".to_owned(), None);
        self.tx.send(reply).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    /// Serve the control socket at `path` (mode 0600): one command per connection,
    /// `reload`, answered `ok: SUMMARY` or `error: MESSAGE` (and `hint: HINT`).
    pub async fn serve_control(&self, path: &Path) -> Result<(), Error> {
        let listener = bind_control(path).map_err(|source| Error::Control {
            path: path.to_owned(),
            source,
        })?;
        let me = self.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut line = String::new();
                    let mut reader = BufReader::new(r.take(256));
                    let read =
                        tokio::time::timeout(CONTROL_TIMEOUT, reader.read_line(&mut line)).await;
                    let answer = match (read, line.trim()) {
                        (Ok(Ok(_)), "reload") => match me.reload().await {
                            Ok(summary) => format!("ok: {summary}\n"),
                            Err((e, Some(h))) => format!("error: {e}\nhint: {h}\n"),
                            Err((e, None)) => format!("error: {e}\n"),
                        },
                        (Ok(Ok(_)), other) => format!(
                            "error: unknown command `{other}`\nhint: the control socket understands `reload`\n"
                        ),
                        _ => return,
                    };
                    let _ = w.write_all(answer.as_bytes()).await;
                });
            }
        });
        tracing::info!(path = %path.display(), "control socket ready (`virtgated reload`)");
        Ok(())
    }
}

/// Where `virtgated reload` finds the gateway when neither the configuration nor
/// `--pidfile` says.
pub const DEFAULT_PIDFILE: &str = "/run/virtgate/virtgated.pid";

/// `virtgated reload`: ask the gateway running `config` for a reload. Through
/// `[listen] control` the gateway's own outcome comes back (a refusal is an error);
/// otherwise the pid in `pidfile` (or [`DEFAULT_PIDFILE`]) gets SIGHUP and the outcome is
/// in the gateway's log.
pub fn request(config: &Config, pidfile: Option<&Path>) -> Result<String, Error> {
    use std::io::{Read as _, Write as _};
    if let Some(path) = &config.listen.control {
        let no = |e: std::io::Error| Error::NoGateway {
            why: format!(
                "nothing answers on the control socket {} ({e})",
                path.display()
            ),
        };
        let mut s = std::os::unix::net::UnixStream::connect(path).map_err(no)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(no)?;
        s.write_all(b"reload\n").map_err(no)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(no)?;
        let mut lines = answer.lines();
        let first = lines.next().unwrap_or_default();
        if let Some(ok) = first.strip_prefix("ok: ") {
            return Ok(format!("reloaded: {ok}"));
        }
        let message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
        let hint = lines
            .find_map(|l| l.strip_prefix("hint: "))
            .map(str::to_owned);
        return Err(Error::ReloadRefused { message, hint });
    }
    let path = pidfile.unwrap_or(Path::new(DEFAULT_PIDFILE));
    let pid = crate::service::running_pid(path).map_err(|why| Error::NoGateway { why })?;
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| Error::NoGateway {
        why: format!("{} holds pid {pid}", path.display()),
    })?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        Error::NoGateway {
            why: format!("cannot signal pid {pid} from {}: {e}", path.display()),
        }
    })?;
    Ok(format!(
        "reload requested (SIGHUP to pid {pid}); the gateway's log has the outcome (set [listen] control to get it here)"
    ))
}

/// Bind the control socket: a stale socket file is replaced, the mode is 0600.
fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)?;
        }
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The CRL file of `config` and how it looks now.
fn crl_of(config: &Config) -> Option<(PathBuf, Option<(SystemTime, u64)>)> {
    let path = config.tls.as_ref()?.crl.clone()?;
    let seen = stamp(&path);
    Some((path, seen))
}

/// Modified time and length of a file (`None`: cannot be read).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Task {
    /// Whether the CRL file changed since it was loaded; also reports a CRL that went
    /// past its nextUpdate while the gateway runs.
    fn crl_changed(&mut self) -> bool {
        let live = self.state.live.get();
        if live.crl_stale() && !self.stale_reported {
            self.stale_reported = true;
            tracing::warn!(next_update = ?live.crl_next_update, "tls.crl is past its nextUpdate: refresh it (`virtgate-pki crl`)");
        }
        match &self.crl {
            Some((path, seen)) => stamp(path) != *seen,
            None => false,
        }
    }

    /// Reload now; the outcome is logged, counted, audited and returned.
    fn reload(&mut self, why: &str) -> Outcome {
        Service::reloading();
        let outcome = self.try_reload();
        let metrics = &self.state.metrics;
        match &outcome {
            Ok(summary) => {
                metrics.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(trigger = why, %summary, "configuration reloaded");
                Service::reloaded(&format!("reloaded: {summary}"));
            }
            Err((e, hint)) => {
                metrics.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!(trigger = why, error = %e, hint = hint.as_deref().unwrap_or(""), "reload refused; the previous configuration stays in force");
                Service::reloaded(&format!("reload refused: {e}"));
            }
        }
        let live = self.state.live.get();
        let text = match &outcome {
            Ok(s) => format!("reloaded ({why}): {s}"),
            Err((e, _)) => format!("failed ({why}): {e}"),
        };
        live.audit.system("reload", &text);
        outcome
    }

    fn try_reload(&mut self) -> Outcome {
        let fail = |e: Error| (crate::error_text(&e), e.hint());
        let Some(path) = &self.path else {
            return Err((
                "this gateway runs a generated configuration (`virtgated demo`), which cannot be reloaded".into(),
                Some("restart it instead".into()),
            ));
        };
        let new = config::load(path).map_err(|e| fail(e.into()))?;
        crate::check_files(&new).map_err(fail)?;
        let generation = self.state.live.get().generation + 1;
        let live = Live::build(&new, generation).map_err(fail)?;
        let stale = live.crl_stale();
        let restart = live::restart_needed(&self.started, &new);
        self.crl = crl_of(&new);
        self.stale_reported = stale;
        self.state
            .metrics
            .crl_next_update
            .store(live.crl_timestamp(), Relaxed);
        self.state.live.swap(live);
        self.state
            .registry
            .web
            .configure(&new.web, new.kerberos.is_some());
        let live = self.state.live.get();
        let closed = self.state.registry.reevaluate(&live);
        let mut summary = format!(
            "configuration {generation} in force; closed {} connection(s) and {} stream(s) that lost their right",
            closed.connections, closed.streams
        );
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; {} changed and take effect on restart",
                restart.join(", ")
            ));
        }
        if stale {
            summary.push_str(
                "; warning: tls.crl is past its nextUpdate (`virtgate-pki crl` writes a fresh one)",
            );
        }
        Ok(summary)
    }
}
