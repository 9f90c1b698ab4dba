//! The results of one run as Markdown (`docs/benchmarks.md`; its tables are also what the
//! bench prints): the machine, every metric beside its baselines with the ratios, and the
//! issue's targets marked met or not met.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Dir;
use crate::logins::{Login, LOCKED_ROW, UP_ROW};
use crate::measure::{Config, PathResult};
use crate::scale::{Fanout, Memory};

/// Names of the paths the targets compare.
pub const VIRTGATE_TLS: &str = "virtgate TLS";
pub const SSH_AES: &str = "ssh -L aes128-gcm";
pub const STUNNEL: &str = "stunnel4";

/// Where and when it ran.
#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub openssh: String,
    pub stunnel: String,
    /// /proc/loadavg when the run started.
    pub load: String,
}

/// Everything one run measured.
pub struct Report {
    pub cfg: Config,
    pub machine: Machine,
    pub paths: Vec<PathResult>,
    pub logins: Vec<Login>,
    /// P4 and P5; `None` when the run was limited to some paths (`--only`).
    pub memory: Option<Memory>,
    pub fanout: Option<Fanout>,
    /// Facts learned during the run (ciphers negotiated …).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

impl Report {
    pub fn path(&self, name: &str) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.name == name)
    }

    /// The targets of issue 6: (target, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let mut t = Vec::new();
        let Some(vg) = self.path(VIRTGATE_TLS) else {
            return t;
        };
        for base in [SSH_AES, STUNNEL] {
            if let Some(b) = self.path(base) {
                let (ru, rd) = (
                    vg.p1(Dir::Up) / b.p1(Dir::Up),
                    vg.p1(Dir::Down) / b.p1(Dir::Down),
                );
                t.push((
                    format!("P1 virtgate TLS ≥ 1.0× {base} (goal 2×)"),
                    format!("up {ru:.2}×, down {rd:.2}×"),
                    ru >= 1.0 && rd >= 1.0,
                ));
            }
        }
        let (lu, ld) = (vg.loaded(Dir::Up), vg.loaded(Dir::Down));
        t.push((
            "P2 virtgate TLS echo p99 ≤ 1 ms under bulk on the same connection".into(),
            format!(
                "{:.0} µs (bulk up), {:.0} µs (bulk down)",
                lu.rtt.p99, ld.rtt.p99
            ),
            lu.rtt.p99 <= 1000.0 && ld.rtt.p99 <= 1000.0,
        ));
        let (fu, fd) = (
            lu.bulk_mbps / vg.p1(Dir::Up),
            ld.bulk_mbps / vg.p1(Dir::Down),
        );
        t.push((
            "P2 the bulk stream keeps ≥ 80 % of its solo rate meanwhile".into(),
            format!("up {:.0} %, down {:.0} %", fu * 100.0, fd * 100.0),
            fu >= 0.8 && fd >= 0.8,
        ));
        let login = |name: &str| self.logins.iter().find(|l| l.name == name);
        if let (Some(direct), Some(shared)) = (login(LOCKED_ROW), login(UP_ROW)) {
            let (d, sh) = (direct.median(), shared.median());
            t.push((
                "P3 `virtgate list` with `virtgate up`: ≥ 10× faster than connecting (encrypted key), under 5 ms".into(),
                format!("{sh:.1} ms vs {d:.1} ms: {}", ratio(d, sh)),
                d / sh >= 10.0 && sh < 5.0,
            ));
        }
        if let Some(m) = &self.memory {
            if let Some(last) = m.points.len().checked_sub(1) {
                let k = m.per_conn(last);
                t.push((
                    "P4 ≤ 50 KiB per idle authenticated connection".into(),
                    format!("{k:.1} KiB at {} connections", m.points[last].0),
                    k <= 50.0,
                ));
            }
        }
        if let Some(f) = &self.fanout {
            let r = f.aggregate_mbps() / f.single_mbps();
            t.push((
                format!(
                    "P5 {} tunnels on one connection: aggregate ≥ 80 % of one tunnel",
                    f.tunnels
                ),
                format!("{:.0} %", r * 100.0),
                r >= 0.8,
            ));
        }
        t
    }

    /// The tables (also printed by the bench).
    pub fn tables(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Targets (issues 6 and 11)\n\n| target | measured | |\n|---|---|---|"
        );
        for (target, measured, ok) in self.targets() {
            let _ = writeln!(s, "| {target} | {measured} | {} |", met(ok));
        }
        let _ = writeln!(
            s,
            "\n## P1 bulk throughput, one stream (MB/s = 10^6 B/s; median of {} runs of {} MiB each way, every byte verified)\n",
            self.cfg.runs,
            self.cfg.bulk >> 20
        );
        let _ = writeln!(
            s,
            "| path | up | down | up ÷ {SSH_AES} | up ÷ {STUNNEL} | down ÷ {SSH_AES} | down ÷ {STUNNEL} | CPU s/GB up / down | runs up / down |\n|---|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        let (aes, st) = (self.path(SSH_AES), self.path(STUNNEL));
        for p in &self.paths {
            let r = |d: Dir, b: Option<&PathResult>| {
                b.map_or("–".into(), |b| ratio(p.p1(d), b.p1(d)))
            };
            let cpu = |c: Option<f64>| c.map_or("–".into(), |c| format!("{c:.2}"));
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} / {} | {} / {} |",
                p.name,
                p.p1(Dir::Up),
                p.p1(Dir::Down),
                r(Dir::Up, aes),
                r(Dir::Up, st),
                r(Dir::Down, aes),
                r(Dir::Down, st),
                cpu(p.cpu_up),
                cpu(p.cpu_down),
                runs(&p.up),
                runs(&p.down)
            );
        }
        let _ = writeln!(
            s,
            "\n## P2 64-byte echo round trip (µs), alone and while a bulk stream on the same path runs\n\n\
             | path | alone p50 / p99 | bulk up: p50 / p99 | bulk up rate (of solo) | bulk down: p50 / p99 | bulk down rate (of solo) | round trips |\n|---|--:|--:|--:|--:|--:|--:|"
        );
        for p in &self.paths {
            let (u, d) = (p.loaded(Dir::Up), p.loaded(Dir::Down));
            let _ = writeln!(
                s,
                "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} MB/s ({:.0} %) | {:.0} / {:.0} | {:.0} MB/s ({:.0} %) | {} / {} / {} |",
                p.name,
                p.echo.p50,
                p.echo.p99,
                u.rtt.p50,
                u.rtt.p99,
                u.bulk_mbps,
                100.0 * u.bulk_mbps / p.p1(Dir::Up),
                d.rtt.p50,
                d.rtt.p99,
                d.bulk_mbps,
                100.0 * d.bulk_mbps / p.p1(Dir::Down),
                p.echo.n,
                u.rtt.n,
                d.rtt.n,
            );
        }
        self.tail(&mut s);
        s
    }

    /// P3, P4 and P5 tables (those that were measured).
    fn tail(&self, s: &mut String) {
        if self.logins.is_empty() {
            return;
        }
        let floor = self
            .logins
            .iter()
            .find(|l| l.name.starts_with("ssh"))
            .map(Login::median);
        let _ = writeln!(
            s,
            "\n## P3 connect + authenticate + first call (ms, whole command; median of {} runs)\n\n\
             | command | median | min | ÷ ssh host true | what it includes |\n|---|--:|--:|--:|---|",
            self.cfg.logins
        );
        for l in &self.logins {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {} | {} |",
                l.name,
                l.median(),
                l.min(),
                floor.map_or("–".into(), |f| ratio(l.median(), f)),
                l.note
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "\n## P4 gateway memory per idle authenticated connection (TLS 1.3 + client certificate + one request)\n\n\
                 | connections | virtgated RSS | KiB per connection |\n|--:|--:|--:|\n| 1 | {} KiB | |",
                m.base_kib
            );
            for (i, (n, rss)) in m.points.iter().enumerate() {
                let _ = writeln!(s, "| {n} | {rss} KiB | {:.1} |", m.per_conn(i));
            }
        }
        let Some(f) = &self.fanout else { return };
        let _ = writeln!(
            s,
            "\n## P5 {} concurrent tunnels on ONE connection ({} MiB in all per run, median of {} runs)\n\n\
             | | MB/s | ratio |\n|---|--:|--:|\n| one tunnel alone | {:.0} | 1.00× |\n| {} tunnels together | {:.0} | {} |\n\n\
             An idle tunnel costs the gateway {:.1} KiB of RSS.",
            f.tunnels,
            self.cfg.fanout_total >> 20,
            f.single.len(),
            f.single_mbps(),
            f.tunnels,
            f.aggregate_mbps(),
            ratio(f.aggregate_mbps(), f.single_mbps()),
            f.kib_per_tunnel
        );
    }

    /// The whole `docs/benchmarks.md`.
    pub fn markdown(&self, chart: Option<&str>) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Benchmarks\n\n\
             Written by `scripts/bench.sh{}` (the `virtgate-bench` program in `bench/`) on {}, in one run of {:.0} s on loopback.\n\
             Every path is measured in the same run, so ratios are fair; absolute numbers move by ±10–20 % between runs\n\
             on this shared 2-core machine.\n\n\
             **Machine:** {} · {} cores · Linux {} · {} · {} · load average at start {}.\n",
            if self.cfg.quick { " --quick" } else { "" },
            m.date,
            self.elapsed.as_secs_f64(),
            m.cpu,
            m.cores,
            m.kernel,
            m.openssh,
            m.stunnel,
            m.load
        );
        if let Some(c) = chart {
            let _ = writeln!(s, "![benchmark chart]({c})\n");
        }
        s.push_str(&self.tables());
        let _ = writeln!(s, "\n## The paths\n");
        for p in &self.paths {
            let _ = writeln!(s, "- **{}**: {}", p.name, p.note);
        }
        let _ = writeln!(s, "\n## How it is measured\n");
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s, "\n{}", ANALYSIS.trim_end());
        s
    }
}

/// The profile findings and tuning decisions, kept with the code that measures them.
const ANALYSIS: &str = include_str!("analysis.md");
