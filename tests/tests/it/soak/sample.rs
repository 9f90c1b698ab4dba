//! The soak's samples of the gateway: RSS, threads (/proc/PID/status), open descriptors
//! (/proc/PID/fd) and, from `/v1/metrics`, tasks alive, connections and tunnels open; one
//! CSV row each.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use virtgate_tests::{curl, poll, text};

use super::{SoakWorld, Stats};

/// One row of soak.csv.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    /// Seconds since the workers started.
    pub(super) t: f64,
    /// `warmup`, `run`, or `idle` (no client connected: before and after the run).
    pub(super) phase: &'static str,
    /// VmRSS in KiB.
    pub(super) rss_kib: u64,
    /// Entries of /proc/PID/fd.
    pub(super) fds: u64,
    /// OS threads (libvirt's blocking calls and console streams run on threads).
    pub(super) threads: u64,
    /// `virtgate_tasks_alive`.
    pub(super) tasks: u64,
    /// `virtgate_connections_open` (the sampler's own request included).
    pub(super) connections: u64,
    /// `virtgate_tunnels_open`, all kinds.
    pub(super) tunnels: u64,
    /// Operations so far, and failures so far.
    pub(super) operations: u64,
    pub(super) failures: usize,
    /// Serial console lines typed again so far ([`Stats::retyped`]).
    pub(super) retyped: u64,
    /// Rounds so far by [`METHODS`] index.
    pub(super) rounds: [u64; 4],
}

pub(super) const CSV_HEADER: &str =
    "t_s,phase,rss_kib,fds,threads,tasks,connections_open,tunnels_open,\
operations,failures,serial_retyped,rounds_certificate,rounds_kerberos,rounds_ssh,rounds_unix";

impl Sample {
    pub(super) fn csv(&self) -> String {
        let r = self.rounds;
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.t,
            self.phase,
            self.rss_kib,
            self.fds,
            self.threads,
            self.tasks,
            self.connections,
            self.tunnels,
            self.operations,
            self.failures,
            self.retyped,
            r[0],
            r[1],
            r[2],
            r[3]
        )
    }
}

/// A `Name:   N kB` line of /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status: is the gateway gone?\n{s}"))
}

/// The sum of a metric family's samples in the Prometheus text `body`.
fn family_sum(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, v) = l.rsplit_once(' ')?;
            (key.split('{').next() == Some(name)).then(|| v.parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

/// Sample the gateway now.
pub(super) fn sample(w: &SoakWorld, t: f64, phase: &'static str, stats: &Stats) -> Sample {
    let pid = w.gateway.pid();
    let out = curl(
        &w.cert,
        &w.pki.ca_pem,
        &format!("{}/v1/metrics", w.gateway.https(0)),
        &[],
    );
    let (body, e) = text(&out);
    assert!(out.status.success(), "GET /v1/metrics: {e}");
    assert!(
        body.contains("\nvirtgate_tasks_alive "),
        "no virtgate_tasks_alive in\n{body}"
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"));
    Sample {
        t,
        phase,
        rss_kib: proc_status(pid, "VmRSS:"),
        fds,
        threads: proc_status(pid, "Threads:"),
        tasks: family_sum(&body, "virtgate_tasks_alive"),
        connections: family_sum(&body, "virtgate_connections_open"),
        tunnels: family_sum(&body, "virtgate_tunnels_open"),
        operations: stats.operations(),
        failures: stats.failed(),
        retyped: stats.retyped.load(Relaxed),
        rounds: std::array::from_fn(|i| stats.rounds[i].load(Relaxed)),
    }
}

/// Wait until only the sampler's own connection is open, then sample.
pub(super) fn idle_sample(w: &SoakWorld, t: f64, stats: &Stats) -> Sample {
    poll(
        "every client connection to close",
        Duration::from_secs(30),
        || {
            let s = sample(w, t, "idle", stats);
            (s.connections <= 1 && s.tunnels == 0).then_some(s)
        },
    )
}

/// `after` is within `pct` % of `before`, or within `slack` of it when that is larger.
pub(super) fn within(before: u64, after: u64, pct: u64, slack: u64) -> bool {
    let allowed = (before * pct / 100).max(slack);
    after.abs_diff(before) <= allowed
}
