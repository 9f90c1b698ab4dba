//! The one libvirt connection of the gateway, kept alive and re-opened by itself.
//!
//! libvirt calls block, so every call runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) with its own `Arc<Connect>` clone and is bounded by
//! [`CALL_TIMEOUT`]; a libvirt `Connect` is thread-safe, so calls run in parallel and no lock is
//! held while one runs (the slot below is a `std` mutex held for a pointer copy only).
//!
//! Noticing that libvirtd went away:
//! - libvirt's default event loop runs on one process-wide thread (`libvirt-events`), which
//!   lets the remote driver watch its socket between calls (a killed libvirtd is seen at once)
//!   and send keepalive probes ([`KEEPALIVE_INTERVAL_S`] × [`KEEPALIVE_COUNT`]: a hung
//!   libvirtd is dropped after about 20 s);
//! - the supervisor task checks `virConnectIsAlive` (local, no RPC) every [`ALIVE_CHECK`];
//! - a call failing with a connection-class error (see [`is_connection_error`]) drops the
//!   connection at once.
//!
//! A dropped connection is re-opened by the supervisor with backoff ([`BACKOFF_MIN`] doubling
//! to [`BACKOFF_MAX`]). Meanwhile calls fail at once with [`BackendError::Unavailable`] naming
//! the URI and the last error; nothing waits for libvirtd to come back. A call made while
//! disconnected also asks the supervisor for an early attempt (at most one per
//! [`BACKOFF_MIN`]), so a retrying user does not wait out a 5 s backoff.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};

use crate::backend::BackendError;

/// Upper bound on one libvirt call as the API sees it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on opening the connection.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the supervisor asks libvirt whether the connection is still open.
const ALIVE_CHECK: Duration = Duration::from_secs(1);
/// First wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Seconds of silence before libvirt sends a keepalive probe.
const KEEPALIVE_INTERVAL_S: i32 = 5;
/// Unanswered probes after which libvirt closes the connection.
const KEEPALIVE_COUNT: u32 = 3;

/// Start libvirt's default event loop on a thread of its own, once per process, and stop
/// libvirt from printing errors on stderr (the gateway reports them itself).
fn init_libvirt() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e, "cannot register libvirt's event loop: keepalive is off, a dead libvirtd is noticed at the next call");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!(error = %e, "libvirt event loop iteration failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start libvirt's event loop thread");
        }
    });
}

/// Whether `e` means the connection itself is gone (as opposed to a refused operation).
pub fn is_connection_error(e: &VirtError) -> bool {
    let code = e.code();
    if code.is_any(vec![
        ErrorNumber::SystemError,
        ErrorNumber::Rpc,
        ErrorNumber::NoConnect,
        ErrorNumber::InvalidConn,
    ]) {
        return true;
    }
    let m = e.message().to_ascii_lowercase();
    [
        "cannot write data",
        "cannot recv data",
        "connection closed",
        "client socket is closed",
        "no connection driver",
        "end of file while reading data",
        "broken pipe",
        "connection reset",
        "is not connected",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// What the slot holds.
struct Slot {
    /// The open connection, if any.
    conn: Option<Arc<Connect>>,
    /// Bumped on every (re)connect, so a failure seen on an old connection does not drop
    /// a newer one.
    generation: u64,
    /// Why there is no connection (shown in `Unavailable` errors).
    last_error: String,
}

/// Shared state of the connection manager.
struct Inner {
    /// The libvirt URI (`backend.uri`).
    uri: String,
    /// The current connection.
    slot: Mutex<Slot>,
    /// Wakes the supervisor (a call saw the connection die).
    wake: tokio::sync::Notify,
    /// Stops the supervisor.
    stop: CancellationToken,
}

/// The libvirt connection with its supervisor; cheap to clone.
#[derive(Clone)]
pub struct Conn {
    /// Shared with the supervisor task.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("uri", &self.inner.uri)
            .finish()
    }
}

/// Drop a connection off the async threads: closing it may talk to libvirtd.
fn drop_blocking(conn: Arc<Connect>) {
    tokio::task::spawn_blocking(move || drop(conn));
}

/// Open `uri`, set up keepalive, and say so.
fn open(uri: &str) -> Result<Connect, VirtError> {
    let c = Connect::open(Some(uri))?;
    if let Err(e) = c.set_keep_alive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) {
        tracing::debug!(error = %e, "libvirt keepalive not enabled");
    }
    Ok(c)
}

impl Conn {
    /// Try to connect to `uri` once (bounded by a timeout), then keep the connection up in
    /// the background. Never fails: an unreachable libvirtd is logged and retried.
    pub async fn start(uri: &str) -> Conn {
        init_libvirt();
        let conn = Conn {
            inner: Arc::new(Inner {
                uri: uri.to_owned(),
                slot: Mutex::new(Slot {
                    conn: None,
                    generation: 0,
                    last_error: "not connected yet".into(),
                }),
                wake: tokio::sync::Notify::new(),
                stop: CancellationToken::new(),
            }),
        };
        match conn.try_open().await {
            Ok(()) => tracing::info!(uri, "connected to libvirtd"),
            Err(e) => tracing::warn!(
                uri,
                error = %e,
                "libvirtd is not reachable; starting anyway and retrying in the background"
            ),
        }
        tokio::spawn(supervise(conn.clone()));
        conn
    }

    /// The URI, for connections of their own (consoles).
    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// One attempt to open the connection; on success it goes into the slot.
    async fn try_open(&self) -> Result<(), String> {
        let uri = self.inner.uri.clone();
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            tokio::task::spawn_blocking(move || open(&uri)),
        )
        .await;
        let err = match opened {
            Ok(Ok(Ok(c))) => {
                let mut slot = self.lock();
                slot.generation += 1;
                let old = slot.conn.replace(Arc::new(c));
                slot.last_error.clear();
                drop(slot);
                if let Some(old) = old {
                    drop_blocking(old);
                }
                return Ok(());
            }
            Ok(Ok(Err(e))) => e.message().to_owned(),
            Ok(Err(join)) => format!("connecting failed: {join}"),
            Err(_) => format!("no answer within {} s", OPEN_TIMEOUT.as_secs()),
        };
        self.lock().last_error = err.clone();
        Err(err)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while holding this lock cannot leave the slot inconsistent.
        self.inner.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error calls get while there is no connection.
    pub fn unavailable(&self, domain: &str, why: &str) -> BackendError {
        BackendError::Unavailable {
            domain: domain.to_owned(),
            reason: format!(
                "libvirtd at {} is not reachable ({why}); the gateway reconnects by itself",
                self.inner.uri
            ),
        }
    }

    /// Drop connection `generation` (if it is still the current one) and wake the supervisor.
    fn lost(&self, generation: u64, why: &str) {
        let mut slot = self.lock();
        if slot.generation != generation || slot.conn.is_none() {
            return;
        }
        let old = slot.conn.take();
        slot.last_error = why.to_owned();
        drop(slot);
        tracing::warn!(uri = %self.inner.uri, reason = why, "lost the connection to libvirtd; reconnecting");
        if let Some(old) = old {
            drop_blocking(old);
        }
        self.inner.wake.notify_one();
    }

    /// Run `f` on the connection on the blocking pool. Fails fast with `Unavailable` when
    /// there is no connection, when it breaks during the call, or after [`CALL_TIMEOUT`].
    /// Other libvirt errors come back as they are, for the caller to word.
    pub async fn call<T, F>(&self, domain: &str, f: F) -> Result<Result<T, VirtError>, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, VirtError> + Send + 'static,
    {
        let (conn, generation) = {
            let slot = self.lock();
            match &slot.conn {
                Some(c) => (c.clone(), slot.generation),
                None => {
                    // Fail now, but have the supervisor try again soon instead of at the
                    // end of its backoff: users retry, and libvirtd may be back already.
                    self.inner.wake.notify_one();
                    return Err(self.unavailable(domain, &slot.last_error));
                }
            }
        };
        let job = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            let dead = match &r {
                Err(e) => is_connection_error(e) || !conn.is_alive().unwrap_or(false),
                Ok(_) => false,
            };
            (r, dead)
        });
        match tokio::time::timeout(CALL_TIMEOUT, job).await {
            Ok(Ok((Err(e), true))) => {
                let why = e.message().to_owned();
                self.lost(generation, &why);
                Err(self.unavailable(domain, &why))
            }
            Ok(Ok((r, _))) => Ok(r),
            Ok(Err(join)) => Err(BackendError::Failed {
                domain: domain.to_owned(),
                what: "libvirt call".into(),
                reason: join.to_string(),
            }),
            Err(_) => Err(self.unavailable(
                domain,
                &format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Stop the supervisor and close the connection.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
        if let Some(c) = self.lock().conn.take() {
            drop_blocking(c);
        }
    }
}

/// Keep the connection open until `conn.inner.stop`: check it every [`ALIVE_CHECK`] while
/// open, re-open it with backoff while closed.
async fn supervise(conn: Conn) {
    let stop = conn.inner.stop.clone();
    let mut backoff = BACKOFF_MIN;
    let mut failures: u32 = 0;
    let mut next_warn: u32 = 1;
    loop {
        let current = {
            let slot = conn.lock();
            slot.conn.clone().map(|c| (c, slot.generation))
        };
        match current {
            Some((c, generation)) => {
                tokio::select! {
                    _ = stop.cancelled() => {
                        drop_blocking(c);
                        return;
                    }
                    _ = tokio::time::sleep(ALIVE_CHECK) => {}
                    _ = conn.inner.wake.notified() => {}
                }
                let alive = tokio::task::spawn_blocking(move || {
                    let alive = c.is_alive().unwrap_or(false);
                    drop(c);
                    alive
                })
                .await
                .unwrap_or(false);
                if !alive {
                    conn.lost(generation, "the connection to libvirtd closed");
                }
            }
            None => {
                match conn.try_open().await {
                    Ok(()) => {
                        tracing::info!(uri = %conn.inner.uri, after_attempts = failures + 1, "connected to libvirtd");
                        backoff = BACKOFF_MIN;
                        failures = 0;
                        next_warn = 1;
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        // Say it at the first failure and then every 60th, not every 5 s.
                        if failures >= next_warn {
                            next_warn = failures + 60;
                            tracing::warn!(uri = %conn.inner.uri, error = %e, attempts = failures, "libvirtd is not reachable; retrying");
                        } else {
                            tracing::debug!(uri = %conn.inner.uri, error = %e, "libvirtd not reachable");
                        }
                    }
                }
                // Next attempt after the backoff, or soon after a call asked for one.
                let woken = async {
                    conn.inner.wake.notified().await;
                    tokio::time::sleep(BACKOFF_MIN).await;
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                    _ = woken => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_libvirtd_fails_fast_and_names_the_uri() {
        let uri = "qemu:///system?socket=/nonexistent/virtgate-test/libvirt-sock";
        let c = Conn::start(uri).await;
        let t = std::time::Instant::now();
        let e = c.call("d", |conn| conn.hostname()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        let msg = e.to_string();
        assert!(msg.contains("is not reachable"), "{msg}");
        assert!(msg.contains(uri), "{msg}");
        c.shutdown();
    }

    #[tokio::test]
    async fn the_test_driver_answers_calls() {
        let c = Conn::start("test:///default").await;
        let names = c
            .call("", |conn| {
                conn.list_all_domains(0)
                    .and_then(|ds| ds.iter().map(|d| d.name()).collect::<Result<Vec<_>, _>>())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(names, ["test"]);
        c.shutdown();
    }
}
