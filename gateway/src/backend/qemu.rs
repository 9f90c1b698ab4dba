//! The QEMU backend: domains listed in the config, each reached through its unix sockets.
//!
//! State, UUID, vCPU count and memory come from QMP (a new short-lived QMP connection per
//! call, bounded by [`QMP_TIMEOUT`]; QMP allows several monitors at once only if configured,
//! so we never hold one open and the admin's own `-qmp` use is not blocked for long).
//! QEMU's QMP socket accepts one client at a time (and a listen backlog of one), so the
//! gateway's own QMP conversations with a domain take turns (a lock per domain):
//! a listing, the event poller and a lifecycle call at the same moment would otherwise see
//! a refused connection and report the domain `unavailable` for a moment.
//! Consoles are plain connections to the `vnc`/`spice`/`serial` sockets (a new one per
//! tunnel; SPICE opens one per channel). Domains with `command` are started (or, when their
//! QEMU still runs from an earlier gateway run, taken over: `supervise.rs`) at construction;
//! [`Hypervisor::shutdown`] stops those whose `stop_on_exit` (default
//! `backend.stop_domains_on_exit`, false) is on and leaves the others running.
//!
//! Lifecycle: `shutdown` is QMP `system_powerdown` (the ACPI power button), `reboot` is
//! `system_reset`, `destroy` is `quit` (a supervised QEMU is then reaped, or, when taken
//! over, watched until it is gone). `start` re-spawns
//! the `command` of a supervised domain; a domain without `command` cannot be started by the
//! gateway ([`BackendError::Unmanaged`]). A supervised QEMU that exited lists as `shut_off`
//! (exit status 0: guest power-off, `quit`), `crashed` (killed by a signal) or `unavailable`
//! (other status); one without `command` whose sockets are gone is `unavailable`.
//! Screenshots: QMP `screendump` with `format: png` (QEMU ≥ 7.1) into a 0600 file in a fresh
//! 0700 folder under the gateway's temp dir, read back, then both removed
//! (`qemu/screenshot.rs`).

use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use virtgate_proto::{ConsoleKind, Domain, DomainState};

use super::qmp::{Qmp, QmpError};
use super::supervise::{self, ExitWatch, Settings, Supervised};
use super::{BackendError, BoxedStream, Hypervisor, Lifecycle};
use crate::config::{self, DomainConfig};

mod query;
mod screenshot;

use query::query;

/// Bound on one QMP conversation (connect + queries).
const QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a screendump (QEMU encodes the PNG synchronously).
const SCREENDUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to a console socket.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed QMP query of a supervised domain waits for its exit to be noticed, so a
/// QEMU that just quit lists as `shut_off` and not, for a moment, as `unavailable`.
const EXIT_GRACE: Duration = Duration::from_millis(300);

/// Domains from `[[backend.domain]]`.
pub struct QemuBackend {
    /// The configured domains, in config order (listing order).
    domains: Vec<DomainConfig>,
    /// `backend.start_timeout_s` and `backend.runtime_dir`, for starting supervised QEMUs.
    settings: Settings,
    /// Whether the gateway's exit stops the QEMU of each domain (same index as `domains`).
    stop_on_exit: Vec<bool>,
    /// The QEMU we supervise for each domain (same index as `domains`); `None` for domains
    /// without `command` and after a destroy. Held across a start so two starts do not race.
    supervised: Vec<Mutex<Option<Supervised>>>,
    /// How the supervised QEMU of each domain ended, readable without the locks above (so a
    /// listing never waits for a start); `None` for domains without `command`.
    exits: Vec<std::sync::Mutex<Option<ExitWatch>>>,
    /// One per domain: held for each QMP conversation, so ours never overlap.
    qmp_locks: Vec<Mutex<()>>,
}

impl std::fmt::Debug for QemuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuBackend")
            .field("domains", &self.domains.len())
            .finish()
    }
}

impl QemuBackend {
    /// Set up the backend, starting (or taking over) every domain that has a `command`. If
    /// one fails, those already up are stopped or left running as on the gateway's exit,
    /// and the error is returned.
    pub async fn start(config: &config::Backend) -> Result<QemuBackend, BackendError> {
        let settings = Settings::from_config(config);
        let stop_on_exit: Vec<bool> = config
            .domains
            .iter()
            .map(|d| config.stops_on_exit(d))
            .collect();
        let mut supervised: Vec<Option<Supervised>> = Vec::new();
        for d in &config.domains {
            if d.command.is_none() {
                supervised.push(None);
                continue;
            }
            match supervise::start(d, &settings).await {
                Ok(s) => supervised.push(Some(s)),
                Err(e) => {
                    release(supervised.into_iter().zip(&stop_on_exit)).await;
                    return Err(e);
                }
            }
        }
        let exits = supervised
            .iter()
            .map(|s| std::sync::Mutex::new(s.as_ref().map(Supervised::exit_watch)))
            .collect();
        Ok(QemuBackend {
            domains: config.domains.clone(),
            settings,
            stop_on_exit,
            qmp_locks: config.domains.iter().map(|_| Mutex::new(())).collect(),
            supervised: supervised.into_iter().map(Mutex::new).collect(),
            exits,
        })
    }

    fn find(&self, name: &str) -> Result<(usize, &DomainConfig), BackendError> {
        self.domains
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == name)
            .ok_or_else(|| BackendError::NotFound(name.to_owned()))
    }

    /// The exit watch of domain `i` (supervised domains only).
    fn exit_watch(&self, i: usize) -> Option<ExitWatch> {
        self.exits
            .get(i)
            .and_then(|m| m.lock().ok().and_then(|g| g.clone()))
    }

    /// How the supervised QEMU of domain `i` ended, if it did.
    fn exited(&self, i: usize) -> Option<supervise::Exit> {
        self.exit_watch(i).and_then(|w| w.borrow().clone())
    }

    async fn describe(&self, i: usize, d: &DomainConfig) -> Domain {
        let mut consoles = Vec::new();
        consoles.extend(console_kinds(d));
        let mut domain = Domain {
            name: d.name.clone(),
            uuid: None,
            state: DomainState::Unavailable,
            state_reason: None,
            vcpus: None,
            memory_mib: None,
            consoles,
            role: None,
        };
        if let Some(exit) = self.exited(i) {
            domain.state = exit.state;
            domain.state_reason = Some(exit.reason);
            return domain;
        }
        let queried = async {
            let _turn = self.qmp_locks[i].lock().await;
            query(d).await
        };
        let failure = match tokio::time::timeout(QMP_TIMEOUT, queried).await {
            Ok(Ok(q)) => {
                domain.state = q.state;
                domain.uuid = q.uuid;
                domain.vcpus = q.vcpus;
                domain.memory_mib = q.memory_mib;
                return domain;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "QMP socket {} did not answer within {} s",
                d.qmp.display(),
                QMP_TIMEOUT.as_secs()
            ),
        };
        // A supervised QEMU that just quit: its watcher reports the exit in a moment.
        if let Some(mut w) = self.exit_watch(i) {
            if let Ok(Ok(exit)) =
                tokio::time::timeout(EXIT_GRACE, w.wait_for(Option::is_some)).await
            {
                if let Some(exit) = exit.clone() {
                    domain.state = exit.state;
                    domain.state_reason = Some(exit.reason);
                    return domain;
                }
            }
        }
        domain.state_reason = Some(failure);
        domain
    }

    /// One QMP command on domain `i`, with the errors a caller can act on: a supervised QEMU
    /// that has exited is [`BackendError::NotRunning`], an unreachable socket
    /// [`BackendError::Unavailable`], a refused command [`BackendError::Failed`].
    async fn qmp_command(
        &self,
        i: usize,
        d: &DomainConfig,
        what: &str,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, BackendError> {
        if self.exited(i).is_some() {
            return Err(BackendError::NotRunning {
                domain: d.name.clone(),
            });
        }
        let run = async {
            let _turn = self.qmp_locks[i].lock().await;
            let mut q = Qmp::connect(&d.qmp).await?;
            q.execute_with(command, arguments).await
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(v)) => Ok(v),
            // `quit` closes the connection before (or instead of) answering.
            Ok(Err(QmpError::Closed)) if command == "quit" => Ok(Value::Null),
            Ok(Err(e @ QmpError::Connect { .. })) => Err(BackendError::Unavailable {
                domain: d.name.clone(),
                reason: e.to_string(),
            }),
            Ok(Err(e)) => Err(BackendError::Failed {
                domain: d.name.clone(),
                what: what.to_owned(),
                reason: e.to_string(),
            }),
            Err(_) => Err(BackendError::Unavailable {
                domain: d.name.clone(),
                reason: format!(
                    "QMP socket {} did not answer within {} s",
                    d.qmp.display(),
                    timeout.as_secs()
                ),
            }),
        }
    }

    /// Start the supervised QEMU of domain `i` again (nothing to do while it runs).
    async fn start_supervised(&self, i: usize, d: &DomainConfig) -> Result<(), BackendError> {
        let mut slot = self.supervised[i].lock().await;
        if slot.as_ref().is_some_and(|s| !s.has_exited()) {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            old.stop().await; // already exited: this only joins its watcher
        }
        let s = supervise::start(d, &self.settings).await?;
        if let Ok(mut w) = self.exits[i].lock() {
            *w = Some(s.exit_watch());
        }
        *slot = Some(s);
        Ok(())
    }

    /// Stop the supervised QEMU of domain `i` (QMP quit, reap, kill after a grace period).
    async fn destroy_supervised(&self, i: usize) {
        let taken = self.supervised[i].lock().await.take();
        if let Some(s) = taken {
            let _turn = self.qmp_locks[i].lock().await;
            s.stop().await;
        }
    }
}

/// Let go of supervised QEMUs as the gateway exits: stop those whose flag is set (all at
/// once), leave the others running for the next gateway run.
async fn release(supervised: impl Iterator<Item = (Option<Supervised>, &bool)>) {
    let mut stopping = Vec::new();
    for (s, stop) in supervised {
        match s {
            Some(s) if *stop => stopping.push(s.stop()),
            Some(s) => s.leave(),
            None => {}
        }
    }
    join_all(stopping).await;
}

/// The consoles a domain offers: one for each socket its `[[backend.domain]]` names.
fn console_kinds(d: &DomainConfig) -> impl Iterator<Item = ConsoleKind> + '_ {
    [ConsoleKind::Vnc, ConsoleKind::Spice, ConsoleKind::Serial]
        .into_iter()
        .filter(|k| console_socket(d, *k).is_some())
}

/// The unix socket of a console (`vnc`, `spice`, `serial` keys); a SPICE tunnel connects to
/// it once per SPICE channel.
fn console_socket(d: &DomainConfig, kind: ConsoleKind) -> Option<&std::path::PathBuf> {
    match kind {
        ConsoleKind::Vnc => d.vnc.as_ref(),
        ConsoleKind::Spice => d.spice.as_ref(),
        ConsoleKind::Serial => d.serial.as_ref(),
        _ => None,
    }
}

impl Hypervisor for QemuBackend {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Domain>, BackendError>> {
        Box::pin(async move {
            Ok(join_all(
                self.domains
                    .iter()
                    .enumerate()
                    .map(|(i, d)| self.describe(i, d)),
            )
            .await)
        })
    }

    fn domain<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Domain, BackendError>> {
        Box::pin(async move {
            let (i, d) = self.find(name)?;
            Ok(self.describe(i, d).await)
        })
    }

    fn open_console<'a>(
        &'a self,
        name: &'a str,
        kind: ConsoleKind,
    ) -> BoxFuture<'a, Result<BoxedStream, BackendError>> {
        Box::pin(async move {
            let (_, d) = self.find(name)?;
            let path = console_socket(d, kind).ok_or_else(|| BackendError::NoConsole {
                domain: name.to_owned(),
                kind: kind.as_str(),
            })?;
            let kind = kind.as_str();
            let err = |reason: String| BackendError::Console {
                domain: name.to_owned(),
                kind,
                path: path.clone(),
                reason,
            };
            match tokio::time::timeout(CONSOLE_TIMEOUT, UnixStream::connect(path)).await {
                Ok(Ok(s)) => Ok(Box::new(s) as BoxedStream),
                Ok(Err(e)) => Err(err(e.to_string())),
                Err(_) => Err(err(format!(
                    "no answer within {} s",
                    CONSOLE_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn lifecycle<'a>(
        &'a self,
        name: &'a str,
        op: Lifecycle,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let (i, d) = self.find(name)?;
            let supervised = d.command.is_some();
            match op {
                Lifecycle::Start if supervised => self.start_supervised(i, d).await,
                Lifecycle::Start => {
                    // Running already is fine (the API answers `already_in_state`).
                    let queried = async {
                        let _turn = self.qmp_locks[i].lock().await;
                        query(d).await
                    };
                    match tokio::time::timeout(QMP_TIMEOUT, queried).await {
                        Ok(Ok(_)) => Ok(()),
                        _ => Err(BackendError::Unmanaged {
                            domain: name.to_owned(),
                            what: "start",
                        }),
                    }
                }
                Lifecycle::Shutdown => self
                    .qmp_command(i, d, "shutdown", "system_powerdown", None, QMP_TIMEOUT)
                    .await
                    .map(drop),
                Lifecycle::Reboot => self
                    .qmp_command(i, d, "reboot", "system_reset", None, QMP_TIMEOUT)
                    .await
                    .map(drop),
                Lifecycle::Destroy if supervised => {
                    if self.exited(i).is_none() {
                        self.destroy_supervised(i).await;
                    }
                    Ok(())
                }
                Lifecycle::Destroy => self
                    .qmp_command(i, d, "destroy", "quit", None, QMP_TIMEOUT)
                    .await
                    .map(drop),
                #[allow(unreachable_patterns)]
                other => Err(BackendError::NotSupported {
                    what: format!("{other:?}").to_lowercase(),
                    backend: "qemu",
                }),
            }
        })
    }

    fn screenshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, BackendError>> {
        Box::pin(async move {
            let (i, d) = self.find(name)?;
            let file = screenshot::TempFile::create().map_err(|e| BackendError::Failed {
                domain: name.to_owned(),
                what: "screenshot".into(),
                reason: e.to_string(),
            })?;
            let args = json!({ "filename": file.path(), "format": "png" });
            self.qmp_command(
                i,
                d,
                "screenshot",
                "screendump",
                Some(args),
                SCREENDUMP_TIMEOUT,
            )
            .await?;
            file.read_png().map_err(|e| BackendError::Failed {
                domain: name.to_owned(),
                what: "screenshot".into(),
                reason: e.to_string(),
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut taken = Vec::new();
            for slot in &self.supervised {
                taken.push(slot.lock().await.take());
            }
            release(taken.into_iter().zip(&self.stop_on_exit)).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_config(qmp: &str) -> config::Backend {
        config::Backend {
            kind: config::BackendKind::Qemu,
            uri: None,
            libvirt_socket: None,
            libvirt_socket_ro: None,
            start_timeout_s: 2,
            runtime_dir: None,
            stop_domains_on_exit: false,
            domains: vec![DomainConfig {
                name: "gone".into(),
                qmp: qmp.into(),
                vnc: Some("/nonexistent/vnc.sock".into()),
                spice: None,
                serial: None,
                command: None,
                stop_on_exit: None,
            }],
        }
    }

    #[tokio::test]
    async fn missing_sockets_make_a_domain_unavailable_not_an_error() {
        let b = QemuBackend::start(&backend_config("/nonexistent/qmp.sock"))
            .await
            .unwrap();
        let list = b.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DomainState::Unavailable);
        assert!(list[0]
            .state_reason
            .as_deref()
            .unwrap()
            .contains("/nonexistent/qmp.sock"));
        assert_eq!(list[0].consoles, [ConsoleKind::Vnc]);
        let e = b
            .open_console("gone", ConsoleKind::Vnc)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, BackendError::Console { .. }), "{e}");
        let e = b
            .open_console("gone", ConsoleKind::Serial)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, BackendError::NoConsole { .. }), "{e}");
        assert!(matches!(
            b.domain("nope").await,
            Err(BackendError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn spice_is_listed_and_opened_like_vnc() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("spice.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let mut c = backend_config("/nonexistent/qmp.sock");
        c.domains[0].spice = Some(sock.clone());
        c.domains[0].serial = Some("/nonexistent/serial.sock".into());
        let b = QemuBackend::start(&c).await.unwrap();
        let d = b.domain("gone").await.unwrap();
        assert_eq!(
            d.consoles,
            [ConsoleKind::Vnc, ConsoleKind::Spice, ConsoleKind::Serial]
        );
        // Every open is a connection of its own (one per SPICE channel).
        for _ in 0..2 {
            let opened = b.open_console("gone", ConsoleKind::Spice);
            let (opened, accepted) = tokio::join!(opened, listener.accept());
            assert!(opened.is_ok() && accepted.is_ok());
        }
        drop(listener);
        std::fs::remove_file(&sock).unwrap();
        let e = b
            .open_console("gone", ConsoleKind::Spice)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(e, BackendError::Console { kind: "spice", .. }),
            "{e}"
        );
        c.domains[0].spice = None;
        let b = QemuBackend::start(&c).await.unwrap();
        assert_eq!(
            b.domain("gone").await.unwrap().consoles,
            [ConsoleKind::Vnc, ConsoleKind::Serial]
        );
        let e = b
            .open_console("gone", ConsoleKind::Spice)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("has no spice console"), "{e}");
        assert!(e.hint().unwrap().contains("`spice = PATH`"), "{e}");
    }

    #[tokio::test]
    async fn a_command_that_does_not_exist_is_named() {
        let run = tempfile::tempdir().unwrap();
        let mut c = backend_config("/nonexistent/qmp.sock");
        c.runtime_dir = Some(run.path().to_owned());
        c.domains[0].command = Some(vec!["/nonexistent/qemu-system-x86_64".into()]);
        let e = QemuBackend::start(&c).await.unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/qemu-system-x86_64"),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("qemu"));
    }

    #[tokio::test]
    async fn a_command_that_exits_early_is_reported() {
        let run = tempfile::tempdir().unwrap();
        let mut c = backend_config("/nonexistent/qmp.sock");
        c.runtime_dir = Some(run.path().to_owned());
        c.domains[0].command = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo no disk >&2; exit 1".into(),
        ]);
        let e = QemuBackend::start(&c).await.unwrap_err();
        assert!(matches!(e, BackendError::ExitedEarly { .. }), "{e}");
        // Its output went to its log in the runtime folder; no pidfile is left.
        let log = std::fs::read_to_string(run.path().join("domains/gone.log")).unwrap();
        assert!(
            log.contains("virtgated starts QEMU: sh -c") && log.ends_with("no disk\n"),
            "{log}"
        );
        assert!(!run.path().join("domains/gone.pid").exists());
    }
}
