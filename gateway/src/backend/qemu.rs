//! The QEMU backend: domains listed in the config, each reached through its unix sockets.
//!
//! State, UUID, vCPU count and memory come from QMP (a new short-lived QMP connection per
//! call, bounded by [`QMP_TIMEOUT`]; QMP allows several monitors at once only if configured,
//! so we never hold one open and the admin's own `-qmp` use is not blocked for long).
//! Consoles are plain connections to the `vnc`/`serial` sockets. Domains with `command` are
//! started at construction and stopped by [`Hypervisor::shutdown`].

use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::Mutex;
use virtgate_proto::{ConsoleKind, Domain, DomainState};

use super::qmp::{Qmp, QmpError};
use super::supervise::{self, ExitReason, Supervised};
use super::{BackendError, BoxedStream, Hypervisor};
use crate::config::{self, DomainConfig};

/// Bound on one QMP conversation (connect + queries).
const QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on connecting to a console socket.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Domains from `[[backend.domain]]`.
pub struct QemuBackend {
    /// The configured domains, in config order (listing order).
    domains: Vec<DomainConfig>,
    /// QEMUs we started, by index into `domains`; taken out on shutdown.
    supervised: Mutex<Vec<(usize, Supervised)>>,
    /// Exit reasons of supervised QEMUs by domain index, readable without the lock above.
    exits: Vec<Option<ExitReason>>,
}

impl std::fmt::Debug for QemuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuBackend")
            .field("domains", &self.domains.len())
            .finish()
    }
}

impl QemuBackend {
    /// Set up the backend, starting every domain that has a `command`. If one fails to start,
    /// those already started are stopped again and the error is returned.
    pub async fn start(config: &config::Backend) -> Result<QemuBackend, BackendError> {
        let timeout = Duration::from_secs(config.start_timeout_s);
        let mut supervised = Vec::new();
        let mut exits: Vec<Option<ExitReason>> = vec![None; config.domains.len()];
        for (i, d) in config.domains.iter().enumerate() {
            if d.command.is_none() {
                continue;
            }
            match supervise::start(d, timeout).await {
                Ok(s) => {
                    exits[i] = Some(s.exit_reason_handle());
                    supervised.push((i, s));
                }
                Err(e) => {
                    for (_, s) in supervised {
                        s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(QemuBackend {
            domains: config.domains.clone(),
            supervised: Mutex::new(supervised),
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

    async fn describe(&self, i: usize, d: &DomainConfig) -> Domain {
        let mut consoles = Vec::new();
        if d.vnc.is_some() {
            consoles.push(ConsoleKind::Vnc);
        }
        if d.serial.is_some() {
            consoles.push(ConsoleKind::Serial);
        }
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
        match tokio::time::timeout(QMP_TIMEOUT, query(d)).await {
            Ok(Ok(q)) => {
                domain.state = q.state;
                domain.uuid = q.uuid;
                domain.vcpus = q.vcpus;
                domain.memory_mib = q.memory_mib;
            }
            Ok(Err(e)) => {
                let exited = self
                    .exits
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|r| r.lock().ok().and_then(|g| g.clone()));
                domain.state_reason = Some(match exited {
                    Some(why) => format!("{why}; {e}"),
                    None => e.to_string(),
                });
            }
            Err(_) => {
                domain.state_reason = Some(format!(
                    "QMP socket {} did not answer within {} s",
                    d.qmp.display(),
                    QMP_TIMEOUT.as_secs()
                ))
            }
        }
        domain
    }
}

/// What QMP tells about a domain.
struct Queried {
    /// From `query-status`.
    state: DomainState,
    /// From `query-uuid`; `None` for the nil UUID QEMU reports when none was set.
    uuid: Option<String>,
    /// Number of entries of `query-cpus-fast`.
    vcpus: Option<u32>,
    /// `base-memory` (+ `plugged-memory`) of `query-memory-size-summary`, in MiB.
    memory_mib: Option<u64>,
}

async fn query(d: &DomainConfig) -> Result<Queried, QmpError> {
    let mut qmp = Qmp::connect(&d.qmp).await?;
    let status = qmp.execute("query-status").await?;
    let state = state_from_status(status.get("status").and_then(Value::as_str).unwrap_or(""));
    // The rest is best effort: older QEMUs lack some commands.
    let uuid = qmp
        .execute("query-uuid")
        .await
        .ok()
        .and_then(|v| v.get("UUID").and_then(Value::as_str).map(str::to_owned))
        .filter(|u| u != "00000000-0000-0000-0000-000000000000");
    let vcpus = qmp
        .execute("query-cpus-fast")
        .await
        .ok()
        .and_then(|v| v.as_array().map(|a| a.len() as u32));
    let memory_mib = qmp
        .execute("query-memory-size-summary")
        .await
        .ok()
        .and_then(|v| {
            let base = v.get("base-memory").and_then(Value::as_u64)?;
            let plugged = v.get("plugged-memory").and_then(Value::as_u64).unwrap_or(0);
            Some((base + plugged) / (1024 * 1024))
        });
    Ok(Queried {
        state,
        uuid,
        vcpus,
        memory_mib,
    })
}

/// QMP `RunState` names to API states.
fn state_from_status(status: &str) -> DomainState {
    match status {
        "running" => DomainState::Running,
        "paused" | "suspended" | "prelaunch" | "inmigrate" | "postmigrate" | "finish-migrate"
        | "save-vm" | "restore-vm" | "colo" | "debug" | "io-error" | "watchdog" => {
            DomainState::Paused
        }
        "shutdown" => DomainState::ShutOff,
        "guest-panicked" | "internal-error" => DomainState::Crashed,
        _ => DomainState::Other,
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
            let (path, kind) = match kind {
                ConsoleKind::Vnc => (d.vnc.as_ref(), "vnc"),
                ConsoleKind::Serial => (d.serial.as_ref(), "serial"),
                _ => (None, "unknown"),
            };
            let path = path.ok_or_else(|| BackendError::NoConsole {
                domain: name.to_owned(),
                kind,
            })?;
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

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let all = std::mem::take(&mut *self.supervised.lock().await);
            join_all(all.into_iter().map(|(_, s)| s.stop())).await;
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
            domains: vec![DomainConfig {
                name: "gone".into(),
                qmp: qmp.into(),
                vnc: Some("/nonexistent/vnc.sock".into()),
                serial: None,
                command: None,
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
    async fn a_command_that_does_not_exist_is_named() {
        let mut c = backend_config("/nonexistent/qmp.sock");
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
        let mut c = backend_config("/nonexistent/qmp.sock");
        c.domains[0].command = Some(vec!["false".into()]);
        let e = QemuBackend::start(&c).await.unwrap_err();
        assert!(matches!(e, BackendError::ExitedEarly { .. }), "{e}");
    }

    #[test]
    fn run_states_map() {
        assert_eq!(state_from_status("running"), DomainState::Running);
        assert_eq!(state_from_status("paused"), DomainState::Paused);
        assert_eq!(state_from_status("shutdown"), DomainState::ShutOff);
        assert_eq!(state_from_status("guest-panicked"), DomainState::Crashed);
        assert_eq!(state_from_status("whatever"), DomainState::Other);
    }
}
