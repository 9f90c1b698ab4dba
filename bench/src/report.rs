//! The results of one run as Markdown (`docs/benchmarks.md`; its tables are also what the
//! bench prints): the machine, every metric beside its baselines with the ratios, and the
//! targets of issue 14 marked met or not met. With `--before`, the older build's paths are
//! rows of their own (`… (before)`), and the targets, P4 and P5 show before → after.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Dir;
use crate::logins::{Login, LOCKED_ROW, UP_ROW};
use crate::measure::{Config, PathResult};
use crate::paths::BEFORE;
use crate::scale::{Fanout, Memory};

/// Names of the paths the targets compare.
pub const VIRTGATE_TLS: &str = "virtgate TLS";
pub const VIRTGATE_SSH: &str = "virtgate SSH";
pub const SSH_AES: &str = "ssh -L aes128-gcm";
pub const STUNNEL: &str = "stunnel4";

/// P5's tunnel count in issue 14's target (a `--quick` run opens fewer).
pub const TARGET_TUNNELS: usize = 10_000;

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
    /// Whether an older build ran too (`--before`): its paths are named `… (before)`.
    pub before: bool,
    pub paths: Vec<PathResult>,
    pub logins: Vec<Login>,
    /// P4 and P5 of the current build; `None` when not run (`--only`).
    pub memory: Option<Memory>,
    pub fanout: Option<Fanout>,
    /// P4 and P5 of the `--before` build, when given.
    pub memory_before: Option<Memory>,
    pub fanout_before: Option<Fanout>,
    /// Facts learned during the run (ciphers negotiated …).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

/// One row of the targets table.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target, in the words (short).
    pub what: String,
    /// The measured value(s); `before → after` with `--before`.
    pub measured: String,
    /// Met or not; `None` when this run cannot tell (P5 with fewer tunnels in `--quick`).
    pub met: Option<bool>,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not checked",
    }
}

/// `f(after)`, or `f(before) → f(after)` when there is a before value.
fn ba(before: Option<f64>, after: f64, f: impl Fn(f64) -> String) -> String {
    match before {
        Some(b) => format!("{} → {}", f(b), f(after)),
        None => f(after),
    }
}

/// An optional CPU figure, `–` when absent.
fn cpu(c: Option<f64>) -> String {
    c.map_or("–".into(), |c| format!("{c:.2}"))
}

impl Report {
    pub fn path(&self, name: &str) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.name == name)
    }

    /// The `--before` build's result of path `name`.
    fn before_of(&self, name: &str) -> Option<&PathResult> {
        self.path(&format!("{name}{BEFORE}"))
    }

    /// P1 of path `name` (and its before build) as a ratio to `base`, met at `floor` up and
    /// down.
    fn against(&self, name: &str, base: &PathResult, floor: f64, what: String) -> Target {
        let x = |v: f64| format!("{v:.2}×");
        let r = |p: &PathResult, d: Dir| p.p1(d) / base.p1(d);
        let vb = self.before_of(name);
        let (ru, rd) = match self.path(name) {
            Some(p) => (r(p, Dir::Up), r(p, Dir::Down)),
            None => (f64::NAN, f64::NAN),
        };
        Target {
            what,
            measured: format!(
                "up {}, down {}",
                ba(vb.map(|p| r(p, Dir::Up)), ru, x),
                ba(vb.map(|p| r(p, Dir::Down)), rd, x)
            ),
            met: Some(ru >= floor && rd >= floor),
        }
    }

    /// The targets of issue 14.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let aes = self.path(SSH_AES);
        if let Some(vg) = self.path(VIRTGATE_TLS) {
            let vb = self.before_of(VIRTGATE_TLS);
            if let Some(b) = aes {
                t.push(self.against(
                    VIRTGATE_TLS,
                    b,
                    1.5,
                    format!("P1 virtgate TLS ≥ 1.5× {SSH_AES} (goal 2×)"),
                ));
                let server = |p: &PathResult, d: Dir| p.cpu(d).server.unwrap_or(f64::NAN);
                let s = |v: f64| format!("{v:.2}");
                let (gu, gd) = (server(vg, Dir::Up), server(vg, Dir::Down));
                let (su, sd) = (server(b, Dir::Up), server(b, Dir::Down));
                t.push(Target {
                    what: format!("P1 virtgate TLS gateway CPU s/GB below {SSH_AES}'s sshd"),
                    measured: format!(
                        "up {} s/GB (sshd {su:.2}), down {} (sshd {sd:.2})",
                        ba(vb.map(|p| server(p, Dir::Up)), gu, s),
                        ba(vb.map(|p| server(p, Dir::Down)), gd, s)
                    ),
                    met: Some(gu < su && gd < sd),
                });
            }
            let ms = |v: f64| format!("{:.2} ms", v / 1000.0);
            let pct = |v: f64| format!("{:.0} %", v * 100.0);
            let p99 = |p: &PathResult, d: Dir| p.loaded(d).rtt.p99;
            let keep = |p: &PathResult, d: Dir| p.loaded(d).bulk_mbps / p.p1(d);
            let (lu, ld) = (p99(vg, Dir::Up), p99(vg, Dir::Down));
            let (ku, kd) = (keep(vg, Dir::Up), keep(vg, Dir::Down));
            t.push(Target {
                what: "P2 virtgate TLS echo p99 ≤ 1 ms under bulk up and down, bulk ≥ 90 % of solo"
                    .into(),
                measured: format!(
                    "p99 {} (up), {} (down); bulk {} (up), {} (down)",
                    ba(vb.map(|p| p99(p, Dir::Up)), lu, ms),
                    ba(vb.map(|p| p99(p, Dir::Down)), ld, ms),
                    ba(vb.map(|p| keep(p, Dir::Up)), ku, pct),
                    ba(vb.map(|p| keep(p, Dir::Down)), kd, pct)
                ),
                met: Some(lu <= 1000.0 && ld <= 1000.0 && ku >= 0.9 && kd >= 0.9),
            });
        }
        if let (Some(_), Some(b)) = (self.path(VIRTGATE_SSH), aes) {
            t.push(self.against(
                VIRTGATE_SSH,
                b,
                0.8,
                format!("P1 virtgate SSH ≥ 0.8× {SSH_AES} (up and down)"),
            ));
        }
        let login = |name: &str| self.logins.iter().find(|l| l.name == name);
        if let (Some(direct), Some(shared)) = (login(LOCKED_ROW), login(UP_ROW)) {
            let (d, sh) = (direct.median(), shared.median());
            t.push(Target {
                what: "P3 `virtgate list` with `virtgate up`: ≥ 10× faster than connecting (encrypted key), under 5 ms".into(),
                measured: format!("{sh:.1} ms vs {d:.1} ms: {}", ratio(d, sh)),
                met: Some(d / sh >= 10.0 && sh < 5.0),
            });
        }
        if let Some(m) = &self.memory {
            if let Some(last) = m.points.len().checked_sub(1) {
                let k = m.per_conn(last);
                let before = self
                    .memory_before
                    .as_ref()
                    .filter(|b| b.points.len() == m.points.len())
                    .map(|b| b.per_conn(last));
                t.push(Target {
                    what: "P4 ≤ 20 KiB per idle authenticated connection".into(),
                    measured: format!(
                        "{} at {} connections",
                        ba(before, k, |v| format!("{v:.1} KiB")),
                        m.points[last].0
                    ),
                    met: Some(k <= 20.0),
                });
            }
        }
        if let Some(f) = &self.fanout {
            let share = |f: &Fanout| f.aggregate_mbps() / f.single_mbps();
            let r = share(f);
            t.push(Target {
                what: format!(
                    "P5 {TARGET_TUNNELS} tunnels on one connection: aggregate ≥ 80 % of one tunnel"
                ),
                measured: format!(
                    "{} with {} tunnels",
                    ba(self.fanout_before.as_ref().map(share), r, |v| format!(
                        "{:.0} %",
                        v * 100.0
                    )),
                    f.tunnels
                ),
                met: (f.tunnels >= TARGET_TUNNELS).then_some(r >= 0.8),
            });
        }
        t
    }

    /// The tables (also printed by the bench).
    pub fn tables(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Targets (issue 14)\n\n| target | measured{} | |\n|---|---|---|",
            if self.before {
                " (before → after)"
            } else {
                ""
            }
        );
        for t in self.targets() {
            let _ = writeln!(s, "| {} | {} | {} |", t.what, t.measured, met(t.met));
        }
        if !self.paths.is_empty() {
            self.p1_p2(&mut s);
        }
        self.tail(&mut s);
        s
    }

    /// The P1 and P2 tables.
    fn p1_p2(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n## P1 bulk throughput, one stream (MB/s = 10^6 B/s; median of {} runs of {} MiB each way, every byte verified)\n\n\
             CPU s/GB by end: client = the tunnel client, server = what runs on the hypervisor host (see below).\n",
            self.cfg.runs,
            self.cfg.bulk >> 20
        );
        let _ = writeln!(
            s,
            "| path | up | down | ÷ {SSH_AES} up / down | ÷ {STUNNEL} up / down | client CPU s/GB up / down | server CPU s/GB up / down | total CPU s/GB up / down | runs up / down |\n|---|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        let (aes, st) = (self.path(SSH_AES), self.path(STUNNEL));
        for p in &self.paths {
            let r = |d: Dir, b: Option<&PathResult>| {
                b.map_or("–".into(), |b| ratio(p.p1(d), b.p1(d)))
            };
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (cu, cd) = (p.cpu(Dir::Up), p.cpu(Dir::Down));
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |",
                p.name,
                p.p1(Dir::Up),
                p.p1(Dir::Down),
                r(Dir::Up, aes),
                r(Dir::Down, aes),
                r(Dir::Up, st),
                r(Dir::Down, st),
                cpu(cu.client),
                cpu(cd.client),
                cpu(cu.server),
                cpu(cd.server),
                cpu(cu.total()),
                cpu(cd.total()),
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
    }

    /// P3, P4 and P5 tables (those that were measured).
    fn tail(&self, s: &mut String) {
        self.logins_table(s);
        if let Some(m) = &self.memory {
            let mb = self.memory_before.as_ref();
            let _ = writeln!(
                s,
                "\n## P4 gateway memory per idle authenticated connection (TLS 1.3 + client certificate + one request)\n"
            );
            match mb {
                Some(b) => {
                    let _ = writeln!(
                        s,
                        "| connections | virtgated RSS before | KiB per connection before | virtgated RSS | KiB per connection |\n\
                         |--:|--:|--:|--:|--:|\n| 1 | {} KiB | | {} KiB | |",
                        b.base_kib, m.base_kib
                    );
                    for (i, (n, rss)) in m.points.iter().enumerate() {
                        let (brss, bk) =
                            b.points.get(i).map_or(("–".into(), "–".into()), |(_, r)| {
                                (format!("{r} KiB"), format!("{:.1}", b.per_conn(i)))
                            });
                        let _ = writeln!(
                            s,
                            "| {n} | {brss} | {bk} | {rss} KiB | {:.1} |",
                            m.per_conn(i)
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| connections | virtgated RSS | KiB per connection |\n|--:|--:|--:|\n| 1 | {} KiB | |",
                        m.base_kib
                    );
                    for (i, (n, rss)) in m.points.iter().enumerate() {
                        let _ = writeln!(s, "| {n} | {rss} KiB | {:.1} |", m.per_conn(i));
                    }
                }
            }
        }
        let Some(f) = &self.fanout else { return };
        let _ = writeln!(
            s,
            "\n## P5 {} concurrent tunnels on ONE connection ({} MiB in all per run, median of {} runs)\n",
            f.tunnels,
            self.cfg.fanout_total >> 20,
            f.single.len(),
        );
        match &self.fanout_before {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| | MB/s before | ratio before | MB/s | ratio |\n|---|--:|--:|--:|--:|\n\
                     | one tunnel alone | {:.0} | 1.00× | {:.0} | 1.00× |\n\
                     | {} tunnels together | {:.0} | {} | {:.0} | {} |\n\n\
                     An idle tunnel costs the gateway {:.1} → {:.1} KiB of RSS (before → after).",
                    b.single_mbps(),
                    f.single_mbps(),
                    f.tunnels,
                    b.aggregate_mbps(),
                    ratio(b.aggregate_mbps(), b.single_mbps()),
                    f.aggregate_mbps(),
                    ratio(f.aggregate_mbps(), f.single_mbps()),
                    b.kib_per_tunnel,
                    f.kib_per_tunnel
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| | MB/s | ratio |\n|---|--:|--:|\n| one tunnel alone | {:.0} | 1.00× |\n| {} tunnels together | {:.0} | {} |\n\n\
                     An idle tunnel costs the gateway {:.1} KiB of RSS.",
                    f.single_mbps(),
                    f.tunnels,
                    f.aggregate_mbps(),
                    ratio(f.aggregate_mbps(), f.single_mbps()),
                    f.kib_per_tunnel
                );
            }
        }
    }

    /// The P3 table, when P3 ran.
    fn logins_table(&self, s: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Cpu, Loaded, Rtt};

    fn path(name: &'static str, mbps: f64, server_cpu: f64) -> PathResult {
        let loaded = Loaded {
            rtt: Rtt {
                p50: 300.0,
                p99: 900.0,
                n: 10,
            },
            bulk_mbps: mbps * 0.95,
        };
        let cpu = Cpu {
            client: Some(1.0),
            server: Some(server_cpu),
        };
        PathResult {
            name,
            note: String::new(),
            up: vec![mbps],
            down: vec![mbps],
            cpu_up: cpu,
            cpu_down: cpu,
            echo: loaded.rtt,
            under_up: loaded,
            under_down: loaded,
        }
    }

    fn report(paths: Vec<PathResult>, before: bool, tunnels: usize) -> Report {
        let fanout = |agg: f64| Fanout {
            tunnels,
            single: vec![1000.0],
            aggregate: vec![agg],
            kib_per_tunnel: 20.0,
        };
        Report {
            cfg: Config::new(true),
            machine: Machine {
                date: String::new(),
                cpu: String::new(),
                cores: 2,
                kernel: String::new(),
                openssh: String::new(),
                stunnel: String::new(),
                load: String::new(),
            },
            before,
            paths,
            logins: Vec::new(),
            memory: None,
            fanout: Some(fanout(900.0)),
            memory_before: None,
            fanout_before: before.then(|| fanout(500.0)),
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn targets_show_before_and_after() {
        let r = report(
            vec![
                path(SSH_AES, 1000.0, 1.0),
                path("virtgate TLS (before)", 800.0, 1.2),
                path(VIRTGATE_TLS, 1600.0, 0.8),
            ],
            true,
            TARGET_TUNNELS,
        );
        let t = r.targets();
        assert_eq!(t[0].measured, "up 0.80× → 1.60×, down 0.80× → 1.60×");
        assert_eq!(t[0].met, Some(true));
        assert!(t[1].measured.starts_with("up 1.20 → 0.80 s/GB (sshd 1.00)"));
        assert_eq!(t[1].met, Some(true));
        assert_eq!(t[2].met, Some(true), "{}", t[2].measured);
        let p5 = t.last().unwrap();
        assert_eq!(p5.measured, "50 % → 90 % with 10000 tunnels");
        assert_eq!(p5.met, Some(true));
        let tables = r.tables();
        assert!(tables.contains("| virtgate TLS (before) | 800 | 800 | 0.80× / 0.80× |"));
        assert!(tables.contains("| MB/s before | ratio before |"));
    }

    #[test]
    fn fewer_tunnels_leave_p5_unchecked() {
        let r = report(vec![path(VIRTGATE_TLS, 1000.0, 1.0)], false, 1000);
        let p5 = r.targets().pop().unwrap();
        assert_eq!(p5.measured, "90 % with 1000 tunnels");
        assert_eq!(p5.met, None);
        assert!(!r.tables().contains("before"));
    }
}
