//! Stopping: SIGTERM/SIGINT begin a graceful stop; a second signal cuts the drain short.
//!
//! A graceful stop closes the listeners, sends HTTP/2 GOAWAY (h2's graceful shutdown) so
//! clients open no new streams, lets open calls and tunnels finish for up to
//! `limits.drain_timeout_s`, then stops the supervised QEMUs whose `stop_on_exit` is on
//! (default `backend.stop_domains_on_exit`, off: the others keep running, and the next
//! gateway start takes them over) and exits 0.

use tokio_util::sync::CancellationToken;

/// The two phases of stopping, shared by everything that must react.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop accepting and start draining.
    pub begin: CancellationToken,
    /// Stop waiting for connections to drain.
    pub force: CancellationToken,
}

impl Shutdown {
    /// A shutdown nothing triggers but the caller (tests, embedding).
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A shutdown triggered by SIGTERM or SIGINT (twice: force).
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let s = Shutdown::new();
        let s2 = s.clone();
        tokio::spawn(async move {
            for phase in 0..2 {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if phase == 0 {
                    tracing::info!(
                        signal = name,
                        "stopping: no new connections, draining open ones (signal again to hurry)"
                    );
                    s2.begin.cancel();
                } else {
                    tracing::warn!(
                        signal = name,
                        "second signal: not waiting for open connections"
                    );
                    s2.force.cancel();
                }
            }
        });
        Ok(s)
    }
}
