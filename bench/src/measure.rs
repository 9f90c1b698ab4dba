//! P1 and P2 on one path: bulk throughput up and down (median of several verified runs
//! after a warm-up), then 64-byte echo round trips alone and while a second stream of the
//! same path moves bulk data up or down (for `ssh -L` and virtgate that stream shares the
//! echo stream's connection), with that bulk stream's rate meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::load::{
    self, bulk, connect, echo, mbps, median, percentile_us, within, Background, Dir,
};
use crate::procfs::cpu_seconds;
use crate::servers::Registry;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// Bytes per P1 run.
    pub bulk: u64,
    /// P1 runs per direction (median reported).
    pub runs: usize,
    /// Bytes of the unrecorded warm-up transfer per direction.
    pub warmup: u64,
    /// P2 round trips per measurement, and the time cap of one measurement.
    pub echo: usize,
    pub echo_limit: Duration,
    /// P3 runs per command.
    pub logins: usize,
    /// P4 connection counts.
    pub conns: Vec<usize>,
    /// P5 tunnel count and total bytes per run.
    pub tunnels: usize,
    pub fanout_total: u64,
    /// P1 directions, and whether P2 runs (`--p1` narrows both for profiling).
    pub dirs: Vec<Dir>,
    pub p2: bool,
}

impl Config {
    pub fn new(quick: bool) -> Config {
        if quick {
            Config {
                quick,
                bulk: 256 << 20,
                runs: 3,
                warmup: 32 << 20,
                echo: 1000,
                echo_limit: Duration::from_secs(3),
                logins: 10,
                conns: vec![1000],
                tunnels: 1000,
                fanout_total: 256 << 20,
                dirs: vec![Dir::Up, Dir::Down],
                p2: true,
            }
        } else {
            Config {
                quick,
                bulk: 2 << 30,
                runs: 3,
                warmup: 128 << 20,
                echo: 5000,
                echo_limit: Duration::from_secs(15),
                logins: 20,
                conns: vec![1000, 10_000],
                tunnels: 10_000,
                fanout_total: 2 << 30,
                dirs: vec![Dir::Up, Dir::Down],
                p2: true,
            }
        }
    }
}

/// Round-trip percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

impl Rtt {
    const NONE: Rtt = Rtt {
        p50: f64::NAN,
        p99: f64::NAN,
        n: 0,
    };

    fn of(ns: &[u64]) -> Rtt {
        Rtt {
            p50: percentile_us(ns, 50.0),
            p99: percentile_us(ns, 99.0),
            n: ns.len(),
        }
    }
}

/// Echo under bulk: the round trips and the bulk stream's rate meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub rtt: Rtt,
    pub bulk_mbps: f64,
}

/// CPU seconds per GB moved in P1 (one direction), by end of the tunnel; `None` where the
/// path has no such process (raw TCP) or the direction did not run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// The tunnel client (`virtgate vnc`, `ssh`, the client stunnel): the user's machine.
    pub client: Option<f64>,
    /// The tunnel server (`virtgated`, sshd's tree, the server stunnel): what the
    /// hypervisor host pays.
    pub server: Option<f64>,
}

impl Cpu {
    /// Both ends together (`None` when neither was measured).
    pub fn total(&self) -> Option<f64> {
        match (self.client, self.server) {
            (None, None) => None,
            (c, s) => Some(c.unwrap_or(0.0) + s.unwrap_or(0.0)),
        }
    }
}

/// Everything measured on one path.
#[derive(Debug, Clone)]
pub struct PathResult {
    pub name: &'static str,
    pub note: String,
    /// MB/s of each P1 run.
    pub up: Vec<f64>,
    pub down: Vec<f64>,
    /// CPU seconds per GB the path's own processes spent in P1, by end and direction.
    pub cpu_up: Cpu,
    pub cpu_down: Cpu,
    pub echo: Rtt,
    pub under_up: Loaded,
    pub under_down: Loaded,
}

impl PathResult {
    pub fn p1(&self, dir: Dir) -> f64 {
        match dir {
            Dir::Up => median(&self.up),
            Dir::Down => median(&self.down),
        }
    }

    pub fn cpu(&self, dir: Dir) -> Cpu {
        match dir {
            Dir::Up => self.cpu_up,
            Dir::Down => self.cpu_down,
        }
    }

    pub fn loaded(&self, dir: Dir) -> Loaded {
        match dir {
            Dir::Up => self.under_up,
            Dir::Down => self.under_down,
        }
    }
}

/// The processes of a path by end (roots of their trees), for [`Cpu`].
#[derive(Debug, Clone, Copy)]
pub struct Ends<'a> {
    /// The tunnel client's processes.
    pub client: &'a [u32],
    /// The tunnel server's processes.
    pub server: &'a [u32],
}

/// P1 runs in one direction: MB/s of each, and the CPU seconds per GB of each end.
async fn p1(
    addr: SocketAddr,
    ends: Ends<'_>,
    dir: Dir,
    cfg: &Config,
    reg: &Arc<Registry>,
) -> Result<(Vec<f64>, Cpu)> {
    within(
        300,
        "the warm-up transfer",
        bulk(connect(addr).await?, dir, cfg.warmup, reg),
    )
    .await
    .with_context(|| format!("warm-up transfer {}", dir.name()))?;
    let cpu0 = (cpu_seconds(ends.client), cpu_seconds(ends.server));
    let mut rates = Vec::new();
    for i in 0..cfg.runs {
        // ≥ 1 MB/s or fail: a stalled path must not hang the run.
        let d = within(
            60 + cfg.bulk / 1_000_000,
            "a bulk run",
            bulk(connect(addr).await?, dir, cfg.bulk, reg),
        )
        .await
        .with_context(|| format!("bulk run {i} {}", dir.name()))?;
        rates.push(mbps(cfg.bulk, d));
    }
    let gb = (cfg.bulk * cfg.runs as u64) as f64 / 1e9;
    let per_gb =
        |pids: &[u32], at0: f64| (!pids.is_empty()).then(|| (cpu_seconds(pids) - at0) / gb);
    let cpu = Cpu {
        client: per_gb(ends.client, cpu0.0),
        server: per_gb(ends.server, cpu0.1),
    };
    Ok((rates, cpu))
}

/// P2 with a bulk stream in direction `dir` on the same path.
async fn p2_loaded(
    addr: SocketAddr,
    dir: Dir,
    cfg: &Config,
    reg: &Arc<Registry>,
) -> Result<Loaded> {
    // The echo stream exists first; then the bulk stream fills the pipe.
    let bg = Background::start(connect(addr).await?, dir, reg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c0, t0) = (bg.bytes(), Instant::now());
    // The echo stream opens while bulk runs (its CONNECT waits its turn too), warms up with
    // 50 round trips; then the recorded ones.
    let rtts = echo(addr, cfg.echo, 50, cfg.echo_limit).await;
    let (c1, t1) = (bg.bytes(), t0.elapsed());
    let finished = bg.finish().await;
    let rtts = rtts.with_context(|| format!("echo under {} bulk", dir.name()))?;
    finished.with_context(|| format!("bulk {} during the echo", dir.name()))?;
    Ok(Loaded {
        rtt: Rtt::of(&rtts),
        bulk_mbps: load::mbps(c1 - c0, t1),
    })
}

/// P1 and P2 on the path whose local endpoint is `addr`.
pub async fn measure_path(
    name: &'static str,
    note: String,
    addr: SocketAddr,
    ends: Ends<'_>,
    cfg: &Config,
    reg: &Arc<Registry>,
) -> Result<PathResult> {
    let (mut up, mut cpu_up, mut down, mut cpu_down) =
        (Vec::new(), Cpu::default(), Vec::new(), Cpu::default());
    for &dir in &cfg.dirs {
        let (rates, cpu) = p1(addr, ends, dir, cfg, reg).await?;
        match dir {
            Dir::Up => (up, cpu_up) = (rates, cpu),
            Dir::Down => (down, cpu_down) = (rates, cpu),
        }
    }
    let none = Loaded {
        rtt: Rtt::NONE,
        bulk_mbps: f64::NAN,
    };
    let mut r = PathResult {
        name,
        note,
        up,
        down,
        cpu_up,
        cpu_down,
        echo: Rtt::NONE,
        under_up: none,
        under_down: none,
    };
    if cfg.p2 {
        let solo = echo(addr, cfg.echo, 100, cfg.echo_limit)
            .await
            .context("echo alone")?;
        r.echo = Rtt::of(&solo);
        r.under_up = p2_loaded(addr, Dir::Up, cfg, reg).await?;
        r.under_down = p2_loaded(addr, Dir::Down, cfg, reg).await?;
    }
    Ok(r)
}
