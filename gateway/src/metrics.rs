//! Process-wide counters, served as Prometheus text at `GET /v1/metrics`.
//!
//! Plain atomics: the hot paths only increment, and rendering reads each value once. Gauges
//! that must go down again are held by RAII guards ([`Metrics::connection_open`],
//! [`Metrics::tunnel_open`]) so every exit path, including panics and aborted tasks, counts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP/unix connections accepted (before TLS).
    pub connections_accepted: AtomicU64,
    /// Connections that finished authentication.
    pub connections_authenticated: AtomicU64,
    /// Connections refused because `limits.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections currently open (accepted and not yet closed).
    pub connections_open: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Negotiate (Kerberos) tokens refused: bad, replayed, expired, for another service.
    pub negotiate_failures: AtomicU64,
    /// API requests answered, tunnels included.
    pub requests: AtomicU64,
    /// Tunnels opened (backend connected and 200 sent).
    pub tunnels_opened: AtomicU64,
    /// Tunnels currently open.
    pub tunnels_open: AtomicU64,
    /// Bytes carried by tunnels from clients to backends.
    pub tunnel_bytes_up: AtomicU64,
    /// Bytes carried by tunnels from backends to clients.
    pub tunnel_bytes_down: AtomicU64,
    /// Reloads that put a new configuration in force.
    pub reloads_ok: AtomicU64,
    /// Reloads refused (the configuration did not check; the old one stayed).
    pub reloads_failed: AtomicU64,
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard {
    /// The metrics the gauge lives in.
    metrics: Arc<Metrics>,
    /// Which gauge: `true` tunnels, `false` connections.
    tunnel: bool,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let g = if self.tunnel {
            &self.metrics.tunnels_open
        } else {
            &self.metrics.connections_open
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
            tunnel: false,
        }
    }

    /// Count an opened tunnel; the guard keeps it in `tunnels_open`.
    pub fn tunnel_open(self: &Arc<Self>) -> GaugeGuard {
        self.tunnels_opened.fetch_add(1, Relaxed);
        self.tunnels_open.fetch_add(1, Relaxed);
        GaugeGuard {
            metrics: self.clone(),
            tunnel: true,
        }
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        put(
            "virtgate_connections_accepted_total",
            "counter",
            "Connections accepted (TCP and unix), before authentication.",
            &self.connections_accepted,
        );
        put(
            "virtgate_connections_authenticated_total",
            "counter",
            "Connections that authenticated.",
            &self.connections_authenticated,
        );
        put(
            "virtgate_connections_refused_total",
            "counter",
            "Connections closed at once because limits.max_connections were open.",
            &self.connections_refused,
        );
        put(
            "virtgate_connections_open",
            "gauge",
            "Connections open now.",
            &self.connections_open,
        );
        put(
            "virtgate_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            &self.handshake_failures,
        );
        put(
            "virtgate_negotiate_failures_total",
            "counter",
            "Kerberos (HTTP Negotiate) tokens refused.",
            &self.negotiate_failures,
        );
        put(
            "virtgate_requests_total",
            "counter",
            "HTTP requests received, tunnels included.",
            &self.requests,
        );
        put(
            "virtgate_tunnels_opened_total",
            "counter",
            "Tunnels opened.",
            &self.tunnels_opened,
        );
        put(
            "virtgate_tunnels_open",
            "gauge",
            "Tunnels open now.",
            &self.tunnels_open,
        );
        put(
            "virtgate_tunnel_bytes_up_total",
            "counter",
            "Bytes from clients to backends through tunnels (counted when a tunnel closes).",
            &self.tunnel_bytes_up,
        );
        put(
            "virtgate_tunnel_bytes_down_total",
            "counter",
            "Bytes from backends to clients through tunnels (counted when a tunnel closes).",
            &self.tunnel_bytes_down,
        );
        let _ = writeln!(
            out,
            "# HELP virtgate_reloads_total Configuration reloads by outcome.\n# TYPE virtgate_reloads_total counter\n\
             virtgate_reloads_total{{outcome=\"ok\"}} {}\nvirtgate_reloads_total{{outcome=\"refused\"}} {}",
            self.reloads_ok.load(Relaxed),
            self.reloads_failed.load(Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_up_and_down() {
        let m = Arc::new(Metrics::default());
        let c = m.connection_open();
        let t = m.tunnel_open();
        assert!(m.render().contains("virtgate_connections_open 1\n"));
        drop((c, t));
        let text = m.render();
        for line in [
            "virtgate_connections_accepted_total 1",
            "virtgate_connections_open 0",
            "virtgate_tunnels_opened_total 1",
            "virtgate_tunnels_open 0",
            "virtgate_handshake_failures_total 0",
            "virtgate_negotiate_failures_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
