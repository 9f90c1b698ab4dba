//! Process-wide counters, served in the Prometheus text format (0.0.4) at
//! `GET /v1/metrics` (checked with `promtool check metrics` in the tests).
//!
//! Plain atomics: the hot paths only increment, and rendering reads each value once. Gauges
//! that must go down again are held by RAII guards ([`Metrics::connection_open`],
//! [`Metrics::tunnel_open`]) so every exit path, including panics and aborted tasks, counts.
//! Labelled families have a fixed set of label values (tunnel kinds, login methods, reload
//! outcomes), so each is an array of atomics.
//!
//! One gauge is not ours: `virtgate_tasks_alive` is the tokio runtime's count of tasks alive
//! (spawned and not yet finished), read when rendering. Every connection, tunnel copy and
//! watcher is a task, so a count that keeps growing while the load stays the same is a leak
//! (the soak test, tests/tests/it/soak.rs, watches it).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The `kind` label values of tunnels ([`virtgate_proto::TunnelKind::as_str`]).
pub const TUNNEL_KINDS: [&str; 7] = [
    "vnc",
    "serial",
    "spice",
    "libvirt",
    "libvirt_ro",
    "libvirt_fd",
    "libvirt_fd_ro",
];

/// Where an authentication failed: the `method` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The TLS handshake (no, unknown, revoked or expired client certificate; timeout).
    Tls = 0,
    /// A Negotiate token refused.
    Kerberos = 1,
    /// A unix socket peer that sent nothing or whose credentials could not be read.
    Unix = 2,
}

/// The `method` label values, in [`AuthFailure`] order.
const AUTH_METHODS: [&str; 3] = ["tls", "kerberos", "unix"];

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP/unix connections accepted (before TLS).
    pub connections_accepted: AtomicU64,
    /// Connections that finished authentication.
    pub connections_authenticated: AtomicU64,
    /// Connections refused over a limit: `limits.max_connections`,
    /// `max_connections_per_user` or `max_pending_per_address`.
    pub connections_refused: AtomicU64,
    /// Unauthenticated connections shed for newer ones (`limits.max_pending_handshakes`).
    pub handshakes_shed: AtomicU64,
    /// Connections currently open (accepted and not yet closed).
    pub connections_open: AtomicU64,
    /// Failed authentications by [`AuthFailure`].
    auth_failures: [AtomicU64; 3],
    /// API requests answered, tunnels included.
    pub requests: AtomicU64,
    /// Tunnels opened, by [`TUNNEL_KINDS`] index.
    tunnels_opened: [AtomicU64; 7],
    /// Tunnels open now, by [`TUNNEL_KINDS`] index.
    tunnels_open: [AtomicU64; 7],
    /// Bytes carried by tunnels from clients to backends.
    pub tunnel_bytes_up: AtomicU64,
    /// Bytes carried by tunnels from backends to clients.
    pub tunnel_bytes_down: AtomicU64,
    /// Reloads that put a new configuration in force.
    pub reloads_ok: AtomicU64,
    /// Reloads refused (the configuration did not check; the old one stayed).
    pub reloads_failed: AtomicU64,
    /// The CRL's nextUpdate as a Unix timestamp (0: no CRL).
    pub crl_next_update: AtomicI64,
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard {
    /// The metrics the gauge lives in.
    metrics: Arc<Metrics>,
    /// Which gauge: a tunnel kind's index, or `None` for connections.
    tunnel: Option<usize>,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let g = match self.tunnel {
            Some(i) => &self.metrics.tunnels_open[i],
            None => &self.metrics.connections_open,
        };
        g.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Count an accepted connection; the guard keeps it in `connections_open`.
    pub fn connection_open(self: &Arc<Self>) -> GaugeGuard {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
        GaugeGuard {
            metrics: self.clone(),
            tunnel: None,
        }
    }

    /// Count an opened tunnel of `kind` (one of [`TUNNEL_KINDS`], which lists every
    /// `TunnelKind`); the guard keeps it open.
    pub fn tunnel_open(self: &Arc<Self>, kind: &str) -> GaugeGuard {
        let i = TUNNEL_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.tunnels_opened[i].fetch_add(1, Relaxed);
        self.tunnels_open[i].fetch_add(1, Relaxed);
        GaugeGuard {
            metrics: self.clone(),
            tunnel: Some(i),
        }
    }

    /// Count a failed authentication.
    pub fn auth_failed(&self, how: AuthFailure) {
        self.auth_failures[how as usize].fetch_add(1, Relaxed);
    }

    /// Tunnels open now, over all kinds.
    pub fn tunnels_open_now(&self) -> u64 {
        self.tunnels_open.iter().map(|g| g.load(Relaxed)).sum()
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, i64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed) as i64)];
        let labelled = |label: &str, names: &[&str], vs: &[AtomicU64]| -> Vec<(String, i64)> {
            names
                .iter()
                .zip(vs)
                .map(|(n, v)| (format!("{{{label}=\"{n}\"}}"), v.load(Relaxed) as i64))
                .collect()
        };
        family(
            "virtgate_connections_accepted_total",
            "counter",
            "Connections accepted (TCP and unix), before authentication.",
            &one(&self.connections_accepted),
        );
        family(
            "virtgate_connections_authenticated_total",
            "counter",
            "Connections that authenticated.",
            &one(&self.connections_authenticated),
        );
        family(
            "virtgate_connections_refused_total",
            "counter",
            "Connections refused over limits.max_connections, max_connections_per_user or max_pending_per_address.",
            &one(&self.connections_refused),
        );
        family(
            "virtgate_handshakes_shed_total",
            "counter",
            "Unauthenticated connections closed for newer ones (limits.max_pending_handshakes full).",
            &one(&self.handshakes_shed),
        );
        family(
            "virtgate_connections_open",
            "gauge",
            "Connections open now.",
            &one(&self.connections_open),
        );
        family(
            "virtgate_authentication_failures_total",
            "counter",
            "Failed logins by method: tls (handshake: certificate refused, revoked, expired, or timeout), kerberos (Negotiate token refused), unix (peer silent).",
            &labelled("method", &AUTH_METHODS, &self.auth_failures),
        );
        family(
            "virtgate_requests_total",
            "counter",
            "HTTP requests received, tunnels included.",
            &one(&self.requests),
        );
        family(
            "virtgate_tunnels_opened_total",
            "counter",
            "Tunnels opened, by kind.",
            &labelled("kind", &TUNNEL_KINDS, &self.tunnels_opened),
        );
        family(
            "virtgate_tunnels_open",
            "gauge",
            "Tunnels open now, by kind.",
            &labelled("kind", &TUNNEL_KINDS, &self.tunnels_open),
        );
        family(
            "virtgate_tunnel_bytes_up_total",
            "counter",
            "Bytes from clients to backends through tunnels (counted when a tunnel closes).",
            &one(&self.tunnel_bytes_up),
        );
        family(
            "virtgate_tunnel_bytes_down_total",
            "counter",
            "Bytes from backends to clients through tunnels (counted when a tunnel closes).",
            &one(&self.tunnel_bytes_down),
        );
        family(
            "virtgate_reloads_total",
            "counter",
            "Configuration reloads by outcome (refused: the old configuration stayed).",
            &labelled(
                "outcome",
                &["ok", "refused"],
                &[
                    AtomicU64::new(self.reloads_ok.load(Relaxed)),
                    AtomicU64::new(self.reloads_failed.load(Relaxed)),
                ],
            ),
        );
        family(
            "virtgate_crl_next_update_timestamp_seconds",
            "gauge",
            "When the CRL in force must be refreshed (Unix time; 0 without a CRL). Past it, revocations since are unknown.",
            &[(String::new(), self.crl_next_update.load(Relaxed))],
        );
        family(
            "virtgate_tasks_alive",
            "gauge",
            "Tasks alive in the gateway's async runtime (connections, streams, tunnel copies, watchers).",
            &[(String::new(), tasks_alive())],
        );
        out
    }
}

/// Tasks alive in the runtime the caller runs on (tokio's `num_alive_tasks`, stable since
/// tokio 1.39); 0 when called outside a runtime (unit tests).
fn tasks_alive() -> i64 {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_and_down_by_kind() {
        let m = Arc::new(Metrics::default());
        let c = m.connection_open();
        let t = m.tunnel_open("spice");
        m.auth_failed(AuthFailure::Kerberos);
        assert!(m.render().contains("virtgate_connections_open 1\n"));
        assert!(m
            .render()
            .contains("virtgate_tunnels_open{kind=\"spice\"} 1\n"));
        assert_eq!(m.tunnels_open_now(), 1);
        drop((c, t));
        let text = m.render();
        for line in [
            "virtgate_connections_accepted_total 1",
            "virtgate_connections_open 0",
            "virtgate_tunnels_opened_total{kind=\"spice\"} 1",
            "virtgate_tunnels_opened_total{kind=\"vnc\"} 0",
            "virtgate_tunnels_open{kind=\"spice\"} 0",
            "virtgate_authentication_failures_total{method=\"kerberos\"} 1",
            "virtgate_authentication_failures_total{method=\"tls\"} 0",
            "virtgate_reloads_total{outcome=\"refused\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        for kind in TUNNEL_KINDS {
            assert!(text.contains(&format!("kind=\"{kind}\"")), "{kind}");
        }
    }

    #[test]
    fn tasks_alive_counts_the_runtime_s_tasks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let value = |text: &str| -> i64 {
            let line = text
                .lines()
                .find(|l| l.starts_with("virtgate_tasks_alive "))
                .unwrap_or_default();
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1)
        };
        let m = Metrics::default();
        assert_eq!(value(&m.render()), 0, "outside a runtime");
        rt.block_on(async {
            let before = value(&m.render());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = rx.await;
            });
            assert_eq!(value(&m.render()), before + 1);
            let _ = tx.send(());
            let _ = task.await;
            assert_eq!(value(&m.render()), before);
        });
    }
}
