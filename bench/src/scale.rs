//! P4 and P5, each against a fresh gateway (so freed memory of earlier tests does not
//! hide what a connection or a tunnel costs):
//! - P4: the gateway's RSS before and after opening N TLS connections with a client
//!   certificate that each completed one request (`GET /v1/whoami`) and then stay idle.
//! - P5: N tunnels (10,000 in the full run) on ONE connection moving `total` bytes to the
//!   sink together, against one tunnel moving `total` alone on the same kind of
//!   connection; also the RSS an idle tunnel costs. The tunnels open a few hundred at a
//!   time ([`PARALLEL_OPENS`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::task::JoinSet;

use crate::h2client::H2;
use crate::load::{bulk, mbps, median, Dir};
use crate::procfs::rss_kib;
use crate::servers::Registry;

/// How many connections are being set up at once.
const PARALLEL_HANDSHAKES: usize = 64;
/// Time for the gateway to settle before reading its RSS.
const SETTLE: Duration = Duration::from_millis(1000);

/// P4 result.
#[derive(Debug, Clone)]
pub struct Memory {
    /// RSS with one connection open.
    pub base_kib: u64,
    /// (connections open, RSS KiB).
    pub points: Vec<(usize, u64)>,
}

impl Memory {
    /// KiB per connection at point `i` (from the one-connection base).
    pub fn per_conn(&self, i: usize) -> f64 {
        let (n, rss) = self.points[i];
        (rss as f64 - self.base_kib as f64) / (n.saturating_sub(1)).max(1) as f64
    }
}

/// Open connections until `conns` are open.
async fn open_more(
    conns: &mut Vec<H2>,
    target: usize,
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<()> {
    while conns.len() < target {
        let batch = (target - conns.len()).min(PARALLEL_HANDSHAKES);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let tls = tls.clone();
            set.spawn(async move {
                let mut h = H2::connect(addr, tls).await?;
                h.get_ok("/v1/whoami").await?;
                anyhow::Ok(h)
            });
        }
        while let Some(r) = set.join_next().await {
            conns.push(r.context("connection task")??);
        }
    }
    Ok(())
}

/// P4: RSS of the gateway `pid` with 1 and then each of `counts` idle connections.
pub async fn idle_connections(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    pid: u32,
    counts: &[usize],
) -> Result<Memory> {
    let mut conns = Vec::new();
    open_more(&mut conns, 1, addr, &tls).await?;
    tokio::time::sleep(SETTLE).await;
    let base_kib = rss_kib(pid)?;
    let mut points = Vec::new();
    for &n in counts {
        let t = Instant::now();
        open_more(&mut conns, n, addr, &tls)
            .await
            .with_context(|| format!("opening {n} connections"))?;
        eprintln!(
            "    {n} connections open in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        tokio::time::sleep(SETTLE).await;
        points.push((n, rss_kib(pid)?));
    }
    // Every connection must still be usable (none was dropped by a limit).
    let last = conns.len() - 1;
    conns[last].get_ok("/v1/whoami").await?;
    drop(conns);
    Ok(Memory { base_kib, points })
}

/// P5 result.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub tunnels: usize,
    /// MB/s of one tunnel alone, per run.
    pub single: Vec<f64>,
    /// Aggregate MB/s of all tunnels together, per run.
    pub aggregate: Vec<f64>,
    /// RSS cost of one idle tunnel (KiB).
    pub kib_per_tunnel: f64,
}

const TUNNEL_PATH: &str = "/v1/domains/bench/vnc";

/// How many tunnel opens are in flight at once: each makes the gateway connect to the bench
/// server's unix socket, whose accept backlog (1024) must not overflow (a full backlog
/// refuses a non-blocking connect), and the opens of 10,000 must not all wait at once.
const PARALLEL_OPENS: usize = 256;

/// Open `n` tunnels on `h2`, [`PARALLEL_OPENS`] at a time.
async fn open_tunnels(h2: &H2, n: usize) -> Result<Vec<crate::h2client::Tunnel>> {
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    let mut started = 0;
    while out.len() < n {
        while started < n && set.len() < PARALLEL_OPENS {
            let opener = h2.opener();
            set.spawn(async move { opener.tunnel(TUNNEL_PATH).await });
            started += 1;
        }
        let Some(r) = set.join_next().await else {
            bail!("tunnel opens ended early ({} of {n} open)", out.len());
        };
        out.push(
            r.context("tunnel task")?
                .with_context(|| format!("opening tunnel {} of {n}", out.len() + 1))?,
        );
    }
    Ok(out)
}

/// P5 on the gateway at `addr` (process `pid`).
pub async fn fanout(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    pid: u32,
    n: usize,
    total: u64,
    runs: usize,
    reg: &Arc<Registry>,
) -> Result<Fanout> {
    let mut h2 = H2::connect(addr, tls).await?;
    h2.get_ok("/v1/whoami").await?;
    let per = total / n as u64;
    // warm-up, then one tunnel alone
    bulk(
        h2.opener().tunnel(TUNNEL_PATH).await?,
        Dir::Up,
        64 << 20,
        reg,
    )
    .await?;
    let mut single = Vec::new();
    for _ in 0..runs {
        let t = h2.opener().tunnel(TUNNEL_PATH).await?;
        single.push(mbps(total, bulk(t, Dir::Up, total, reg).await?));
    }
    let mut aggregate = Vec::new();
    let mut kib_per_tunnel = f64::NAN;
    for run in 0..runs {
        tokio::time::sleep(SETTLE).await;
        let before = rss_kib(pid)?;
        let t = Instant::now();
        let tunnels = open_tunnels(&h2, n).await?;
        if run == 0 {
            eprintln!("    {n} tunnels open in {:.1} s", t.elapsed().as_secs_f64());
            tokio::time::sleep(SETTLE).await;
            kib_per_tunnel = (rss_kib(pid)? as f64 - before as f64) / n as f64;
        }
        let start = Instant::now();
        let mut set = JoinSet::new();
        for t in tunnels {
            let reg = reg.clone();
            set.spawn(async move { bulk(t, Dir::Up, per, &reg).await });
        }
        while let Some(r) = set.join_next().await {
            r.context("tunnel task")?.context("one of the tunnels")?;
        }
        aggregate.push(mbps(per * n as u64, start.elapsed()));
    }
    if single.is_empty() || aggregate.is_empty() {
        bail!("no P5 runs");
    }
    Ok(Fanout {
        tunnels: n,
        single,
        aggregate,
        kib_per_tunnel,
    })
}

impl Fanout {
    pub fn single_mbps(&self) -> f64 {
        median(&self.single)
    }
    pub fn aggregate_mbps(&self) -> f64 {
        median(&self.aggregate)
    }
}
