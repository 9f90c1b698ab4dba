//! Living under a service manager: systemd's `Type=notify` protocol (READY, RELOADING,
//! STOPPING, STATUS, watchdog pings, through the `sd-notify` crate; nothing happens when
//! `NOTIFY_SOCKET` is unset) and the pidfile OpenRC and `virtgated reload` use
//! (`--pidfile`, written by the gateway itself once it listens, removed when it stops).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sd_notify::NotifyState;

/// Why the pidfile cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the pidfile {}: {source}", path.display())]
pub struct PidfileError {
    /// `--pidfile`.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

impl PidfileError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        format!(
            "create {} and let the gateway's user write there (the service's RuntimeDirectory), or drop --pidfile",
            self.path.parent().unwrap_or(Path::new("/")).display()
        )
    }
}

/// The gateway's side of the service manager; dropping it removes the pidfile.
#[derive(Debug)]
pub struct Service {
    /// The pidfile written, removed on drop.
    pidfile: Option<PathBuf>,
    /// Stops the watchdog pings.
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Write the pidfile (atomically: a reader never sees half a number), tell systemd
    /// we are ready, and start the watchdog pings when systemd asked for them.
    pub fn ready(pidfile: Option<&Path>, status: &str) -> Result<Service, PidfileError> {
        if let Some(path) = pidfile {
            write_pidfile(path).map_err(|source| PidfileError {
                path: path.to_owned(),
                source,
            })?;
        }
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        let watchdog = sd_notify::watchdog_enabled().map(|every| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every / 2);
                loop {
                    tick.tick().await;
                    notify(&[NotifyState::Watchdog]);
                }
            })
        });
        Ok(Service {
            pidfile: pidfile.map(Path::to_owned),
            watchdog,
        })
    }

    /// A reload starts (systemd waits for READY again).
    pub fn reloading() {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&[NotifyState::Reloading, now]),
            Err(_) => notify(&[NotifyState::Reloading]),
        }
    }

    /// A reload ended (well or not): ready again, with a status line.
    pub fn reloaded(status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The gateway stops.
    pub fn stopping(&self) {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining connections"),
        ]);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Send to systemd; a failure is logged, never fatal (the gateway works without it).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Write our pid to `path` through a temporary file and a rename.
fn write_pidfile(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "virtgated.pid".into())
    ));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The pid in a pidfile, if it names a live `virtgated`.
pub fn running_pid(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the pidfile {}: {e}", path.display()))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("the pidfile {} holds no pid", path.display()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map_err(|_| {
        format!(
            "no process {pid} (from {}): the gateway is not running",
            path.display()
        )
    })?;
    if comm.trim() != "virtgated" {
        return Err(format!(
            "process {pid} (from {}) is `{}`, not virtgated: the pidfile is stale",
            path.display(),
            comm.trim()
        ));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pidfile_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.pid");
        let s = Service::ready(Some(&p), "test").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // this test binary is not virtgated
        assert!(running_pid(&p).unwrap_err().contains("not virtgated"));
        drop(s);
        assert!(!p.exists());
        assert!(running_pid(&p).unwrap_err().contains("cannot read"));
        let e = Service::ready(Some(&dir.path().join("no/such/dir.pid")), "x").unwrap_err();
        assert!(e.hint().contains("no/such"), "{}", e.hint());
    }
}
