//! The order of one benchmark run: check the machine, start the bench servers, then each
//! path in turn (set up, P1 + P2, stopped; with `--before`, each virtgate path with the
//! older build first, then the current one), P3 while the gateway and sshd are still up,
//! P5 and P4 on fresh gateways (one per build), and finally the check that no byte failed
//! verification before anything is written; the "How it is measured" notes.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use rustix::process::{getrlimit, setrlimit, Resource};
use virtgate_tests::Gateway;

use crate::load::Dir;
use crate::measure::{measure_path, Config, Ends, PathResult};
use crate::paths::{self, Build, Path, World};
use crate::report::{Machine, Report};
use crate::servers::{Registry, Servers};
use crate::{chart, h2client, logins, pattern, scale, Args};

/// Raise RLIMIT_NOFILE to its hard limit, and that to `need` if lower (root may, up to
/// `fs.nr_open`); the gateways we start inherit it. Returns the limit now in force.
fn raise_nofile(need: u64) -> Result<u64> {
    let mut l = getrlimit(Resource::Nofile);
    let hard = l.maximum.unwrap_or(1 << 20);
    if hard < need {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(hard);
        let raised = need.min(nr_open).max(hard);
        let try_l = rustix::process::Rlimit {
            current: Some(raised),
            maximum: Some(raised),
        };
        if setrlimit(Resource::Nofile, try_l).is_ok() {
            return Ok(raised);
        }
    }
    l.current = Some(hard);
    setrlimit(Resource::Nofile, l).context("raising RLIMIT_NOFILE")?;
    Ok(hard)
}

/// Make the fixtures use the binaries next to this program unless `VIRTGATE_BIN_DIR` says.
fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("VIRTGATE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("path of virtgate-bench")?;
            let d = exe.parent().context("folder of virtgate-bench")?.to_owned();
            // Still single-threaded here: no other thread reads the environment.
            std::env::set_var("VIRTGATE_BIN_DIR", &d);
            d
        }
    };
    for b in ["virtgated", "virtgate", "virtgate-pki"] {
        if !dir.join(b).is_file() {
            bail!(
                "{} not found: run `cargo build --release --bins` first (scripts/bench.sh does)",
                dir.join(b).display()
            );
        }
    }
    Ok(dir)
}

fn first_line(cmd: &str, args: &[&str], starts: &str) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            all.lines()
                .find(|l| l.starts_with(starts))
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| format!("{cmd}: unknown version"))
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let aes = if cpuinfo.contains(" vaes") {
        " (AES-NI, VAES)"
    } else if cpuinfo.contains(" aes") {
        " (AES-NI)"
    } else {
        ""
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Machine {
        date: time::OffsetDateTime::now_utc().date().to_string(),
        cpu: format!("{cpu}{aes}"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        openssh: first_line("ssh", &["-V"], "OpenSSH"),
        stunnel: first_line("stunnel4", &["-version"], "stunnel "),
        load: read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The `--before` build: `dir` must hold `virtgate` and `virtgated`.
fn before_build(dir: &FsPath) -> Result<Build> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--before {}", dir.display()))?;
    for b in ["virtgated", "virtgate"] {
        if !dir.join(b).is_file() {
            bail!("--before {}: no {b} in it", dir.display());
        }
    }
    Ok(Build { dir, before: true })
}

/// What to call a build in the report: its folder, and the commit its `COMMIT` file names.
fn describe(b: &Build) -> String {
    match std::fs::read_to_string(b.dir.join("COMMIT")) {
        Ok(c) if !c.trim().is_empty() => {
            format!("`{}` (commit {})", b.dir.display(), c.trim())
        }
        _ => format!("`{}`", b.dir.display()),
    }
}

/// Run everything and write the report to `args.out`.
pub fn run(args: &Args) -> Result<()> {
    let mut cfg = Config::new(args.quick);
    if let Some(m) = args.bulk_mib {
        cfg.bulk = m << 20;
    }
    if let Some(r) = args.runs {
        cfg.runs = r.max(1);
    }
    if let Some(n) = args.tunnels {
        cfg.tunnels = n.max(1);
    }
    if let Some(m) = args.p5_mib {
        cfg.fanout_total = m.max(1) << 20;
    }
    if let Some(d) = &args.p1 {
        cfg.p2 = false;
        cfg.dirs = match d.as_str() {
            "up" => vec![crate::load::Dir::Up],
            "down" => vec![crate::load::Dir::Down],
            _ => vec![crate::load::Dir::Up, crate::load::Dir::Down],
        };
    }
    let wanted = |name: &str| {
        args.only.is_empty()
            || args
                .only
                .iter()
                .any(|o| name.to_lowercase().contains(&o.to_lowercase()))
    };
    // P3, P4 and P5 run in a full run, or when `--only` names them (and `--p1` is not given)
    let section = |name: &str| {
        args.p1.is_none()
            && (args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(name)))
    };
    let partial = !args.only.is_empty() || args.p1.is_some();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(if cfg.quick { "target/bench" } else { "docs" }));
    if !rustix::process::getuid().is_root() {
        bail!("run as root: the ssh paths start sshd and use a test account (`vgtest`)");
    }
    let after = Build {
        dir: bin_dir()?,
        before: false,
    };
    let before = args.before.as_deref().map(before_build).transpose()?;
    // the bench holds one socket per P4 connection and per P5 tunnel (its server's end); the
    // gateway (which inherits the limit) one per connection and one or two per tunnel (its
    // backend socket; one for a VNC unix socket)
    let most = (*cfg.conns.iter().max().unwrap_or(&0)).max(cfg.tunnels) as u64;
    let (need, want) = (most + 1000, (2 * cfg.tunnels as u64).max(most) + 1000);
    let nofile = raise_nofile(want)?;
    if nofile < want {
        eprintln!(
            "note: RLIMIT_NOFILE is {nofile} (below {want}, and only root with CAP_SYS_RESOURCE may \
             raise it): enough while a tunnel costs the gateway one descriptor"
        );
    }
    if need > nofile {
        bail!(
            "RLIMIT_NOFILE hard limit {nofile} is too low for {:?} connections and {} tunnels",
            cfg.conns,
            cfg.tunnels
        );
    }
    let machine = machine();
    eprintln!(
        "virtgate-bench{}: binaries from {}{}; {} ({} cores), load {}",
        if cfg.quick { " --quick" } else { "" },
        after.dir.display(),
        before
            .as_ref()
            .map(|b| format!(", before: {}", b.dir.display()))
            .unwrap_or_default(),
        machine.cpu,
        machine.cores,
        machine.load
    );
    // the builds the virtgate paths, P4 and P5 run with: before first, so that load drifts
    // during a run hit both alike
    let builds: Vec<&Build> = before.iter().chain([&after]).collect();
    let started = Instant::now();
    pattern::warm();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new()
        .prefix("vgbench-")
        .tempdir_in("/tmp")?;
    let servers = rt.block_on(Servers::start(dir.path()))?;
    let reg = servers.registry.clone();
    let world = World::new(servers, dir)?;

    let measure = |path: Path| -> Result<PathResult> {
        eprintln!("P1/P2 {} …", path.name);
        let t = Instant::now();
        let ends = Ends {
            client: &path.client_pids,
            server: &path.server_pids,
        };
        let r = rt
            .block_on(measure_path(
                path.name,
                path.note.clone(),
                path.addr,
                ends,
                &cfg,
                &reg,
            ))
            .with_context(|| format!("measuring {}", path.name))?;
        eprintln!(
            "    up {:.0} MB/s, down {:.0} MB/s, echo p99 {:.0} µs alone / {:.0} / {:.0} µs under bulk ({:.1} s)",
            r.p1(crate::load::Dir::Up),
            r.p1(crate::load::Dir::Down),
            r.echo.p99,
            r.under_up.rtt.p99,
            r.under_down.rtt.p99,
            t.elapsed().as_secs_f64()
        );
        drop(path);
        Ok(r)
    };
    let mut results = Vec::new();
    if wanted("raw TCP") {
        results.push(measure(paths::raw(&world))?);
    }
    if wanted("stunnel4") {
        results.push(measure(paths::stunnel(&world)?)?);
    }
    let stunnel_cipher = paths::stunnel_cipher(&world).unwrap_or_else(|| "?".into());
    let sshd = world.sshd();
    if wanted("ssh -L default") {
        results.push(measure(paths::ssh_l(&world, &sshd, None)?)?);
    }
    if wanted("ssh -L aes128-gcm") {
        results.push(measure(paths::ssh_l(
            &world,
            &sshd,
            Some("aes128-gcm@openssh.com"),
        )?)?);
    }
    // one gateway per build, side by side (an idle one costs nothing)
    let gws: Vec<(&Build, Gateway)> = builds
        .iter()
        .map(|b| {
            let name = if b.before { "gw-before" } else { "gw" };
            (*b, world.gateway(name, b))
        })
        .collect();
    if wanted("virtgate TLS") {
        for (b, gw) in &gws {
            results.push(measure(paths::virtgate_tls(&world, gw, b))?);
        }
    }
    if wanted("virtgate SSH") {
        for (b, gw) in &gws {
            results.push(measure(paths::virtgate_ssh(&world, gw, &sshd, b)?)?);
        }
    }

    let logins = if section("P3") {
        eprintln!("P3 logins ({} runs each) …", cfg.logins);
        let (_, gw) = gws.last().context("no gateway of the current build")?;
        logins::measure(&world, gw, &sshd, cfg.logins, &after)?
    } else {
        Vec::new()
    };
    drop(gws);
    drop(sshd);

    let tls = h2client::tls_config(&world.plain)?;
    let (mut fanout, mut fanout_before) = (None, None);
    if section("P5") {
        for b in &builds {
            eprintln!(
                "P5 {} tunnels on one connection{} …",
                cfg.tunnels,
                suffix(b)
            );
            let gw = world.gateway(if b.before { "gw-p5-before" } else { "gw-p5" }, b);
            let t = Instant::now();
            let f = rt
                .block_on(crate::load::within(
                    900,
                    "P5",
                    scale::fanout(
                        gw.addrs[0],
                        tls.clone(),
                        gw.pid(),
                        cfg.tunnels,
                        cfg.fanout_total,
                        cfg.runs,
                        &reg,
                    ),
                ))
                .with_context(|| format!("P5{}", suffix(b)))?;
            eprintln!(
                "    one tunnel {:.0} MB/s, {} together {:.0} MB/s ({:.1} s)",
                f.single_mbps(),
                f.tunnels,
                f.aggregate_mbps(),
                t.elapsed().as_secs_f64()
            );
            drop(gw);
            *(if b.before {
                &mut fanout_before
            } else {
                &mut fanout
            }) = Some(f);
        }
    }
    let (mut memory, mut memory_before) = (None, None);
    if section("P4") {
        for b in &builds {
            eprintln!("P4 idle connections {:?}{} …", cfg.conns, suffix(b));
            let gw = world.gateway(if b.before { "gw-p4-before" } else { "gw-p4" }, b);
            let m = rt
                .block_on(crate::load::within(
                    600,
                    "P4",
                    scale::idle_connections(gw.addrs[0], tls.clone(), gw.pid(), &cfg.conns),
                ))
                .with_context(|| format!("P4{}", suffix(b)))?;
            drop(gw);
            *(if b.before {
                &mut memory_before
            } else {
                &mut memory
            }) = Some(m);
        }
    }

    let verified = check(&reg)?;
    let starved = starved(&results);
    let notes = notes(
        &cfg,
        &machine,
        &after,
        before.as_ref(),
        &stunnel_cipher,
        verified,
        started,
    );
    let report = Report {
        cfg: cfg.clone(),
        machine,
        before: before.is_some(),
        paths: results,
        logins,
        memory,
        memory_before,
        fanout,
        fanout_before,
        notes,
        elapsed: started.elapsed(),
    };
    println!("{}", report.tables());
    if !starved.is_empty() {
        bail!(
            "a bulk stream nearly stopped while an echo ran beside it (a flow-control stall, \
             not a slow machine): {}",
            starved.join("; ")
        );
    }
    // a partial run writes only where told (`--out`): docs/ keeps the last full run
    if !partial || args.out.is_some() {
        write(&report, &out)?;
    }
    Ok(())
}

/// `" (before)"` for the before build, `""` for the current one.
fn suffix(b: &Build) -> &'static str {
    if b.before {
        paths::BEFORE
    } else {
        ""
    }
}

/// The "How it is measured" list of the report.
fn notes(
    cfg: &Config,
    machine: &Machine,
    after: &Build,
    before: Option<&Build>,
    stunnel_cipher: &str,
    verified: u64,
    started: Instant,
) -> Vec<String> {
    let mut notes = vec![
        format!(
            "{:.1} GB moved through the paths, every byte checked against a deterministic pattern \
             (period 1,048,573 bytes, so a lost, repeated or reordered chunk is caught); no stream failed.",
            verified as f64 / 1e9
        ),
    ];
    if let Some(b) = before {
        notes.push(format!(
            "Before → after: the virtgate paths, P4 and P5 ran twice in this run, with the binaries \
             (`virtgate`, `virtgated`) of {} (\"before\", lighter bars in the chart) and of {} \
             (\"after\"); before first, then after, path by path, so that load drifts hit both alike. \
             Each build has a gateway of its own; P3 ran with the current build only.",
            describe(b),
            describe(after)
        ));
    }
    notes.push(format!(
        "Targets (issue 14): ratios are of the medians in the P1 table; the gateway's CPU is the server \
         end's s/GB of virtgate TLS against that of ssh -L aes128-gcm (sshd); P2's bulk share is the bulk \
         rate under echo against the path's solo P1 rate; P5's target is at {} tunnels, and a run with \
         fewer (`--quick`: 1,000) reports its share but leaves the target not checked.",
        crate::report::TARGET_TUNNELS
    ));
    notes.extend([
        "The far end is the bench's own server (tokio, in the bench process) on TCP and on a unix socket: \
         sink, source or echo by the first byte of a connection; the virtgate paths reach it as the VNC socket \
         of a QEMU-backend domain whose QMP socket is a minimal responder in the bench (greeting, \
         qmp_capabilities, query-status → running)."
            .into(),
        "P1: 256 KiB writes, writer and reader in separate tasks, TCP_NODELAY on every local socket; \
         a warm-up transfer first; up is timed from the first byte to the sink's verified answer, down \
         to the last verified byte."
            .into(),
        "P2: a second stream of the same path starts moving bulk data (unbounded, verified); 300 ms \
         later the echo stream opens, warms up with 50 round trips, then the recorded ones run; the \
         bulk rate is what the sink (up) or the client (down) verified meanwhile. The echo client and \
         the echo server each run on an OS thread of their own with blocking I/O, so the bench's bulk \
         tasks do not delay them. For ssh -L and virtgate both streams share one connection; for \
         stunnel and raw TCP they cannot."
            .into(),
        format!(
            "Ciphers: ssh -L default = {}; stunnel = TLS 1.3 {stunnel_cipher}; virtgate TLS = TLS 1.3 \
             (rustls/ring, AES-256-GCM preferred); virtgate SSH = aes128-gcm@openssh.com (the client's first choice).",
            paths::default_ssh_cipher()
        ),
        "CPU s/GB: CPU seconds (user + system) per GB (10^9 B) moved during the P1 runs, from /proc, \
         for each end of the tunnel with its descendants: the client end is the tunnel client a user runs \
         (`virtgate vnc`, `ssh`, the client stunnel4), the server end is what runs on the hypervisor host \
         (`virtgated`; sshd with its per-connection processes for ssh -L; the server stunnel4; for virtgate \
         SSH both sshd and virtgated). The server end is what a tunnel costs the host. Unlike MB/s it hardly \
         depends on what else the machine runs. The bench's own sender and receiver are not counted."
            .into(),
        "On an idle VM a round trip pays for waking halted vCPUs, which is why `alone` can be slower \
         than `under bulk` on raw TCP."
            .into(),
        "P3 runs each command to its exit (process start included) after one warm-up run. \
         `virsh -c qemu+tls://` would need a TLS libvirtd and is not measured."
            .into(),
        format!(
            "P4 and P5 each run against a fresh virtgated (`[limits] max_connections = 20000`, \
             `max_streams_per_connection = {}`) driven by the bench's own hyper + rustls client with the \
             virtgate client's HTTP/2 settings; RSS is VmRSS after 1 s of quiet. P5 opens its {} tunnels \
             on one connection 256 at a time, then all of them move data at once.",
            paths::MAX_STREAMS,
            cfg.tunnels
        ),
        format!(
            "Nothing is pinned: every process (sender, tunnel client, tunnel server, receiver) shares the \
             {} cores, as on a small hypervisor host; the run took {:.0} s.",
            machine.cores,
            started.elapsed().as_secs_f64()
        ),
    ]);
    notes
}

/// The virtgate paths (this build) whose bulk stream moved under a tenth of its solo rate
/// while the P2 echo ran beside it: whatever the load, that is a stall, and the run fails
/// on it (CI runs `--quick`).
fn starved(results: &[PathResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results
        .iter()
        .filter(|r| r.name.starts_with("virtgate") && !r.name.contains("(before)"))
    {
        for dir in [Dir::Up, Dir::Down] {
            let (solo, loaded) = (r.p1(dir), r.loaded(dir).bulk_mbps);
            if solo.is_finite() && solo > 0.0 && loaded.is_finite() && loaded < solo / 10.0 {
                out.push(format!(
                    "{} bulk {dir:?}: {loaded:.0} MB/s beside the echo, {solo:.0} MB/s alone",
                    r.name
                ));
            }
        }
    }
    out
}

/// Fail if any stream failed verification; returns the bytes verified.
fn check(reg: &Registry) -> Result<u64> {
    let failures = reg.failures.load(Relaxed);
    if failures > 0 {
        bail!("{failures} stream(s) failed byte verification or ended early");
    }
    Ok(reg.verified.load(Relaxed))
}

fn write(report: &Report, out: &FsPath) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join("benchmarks.png");
    chart::draw(report, &png).with_context(|| format!("drawing {}", png.display()))?;
    let md = out.join("benchmarks.md");
    std::fs::write(&md, report.markdown(Some("benchmarks.png")))
        .with_context(|| format!("writing {}", md.display()))?;
    eprintln!("wrote {} and {}", md.display(), png.display());
    Ok(())
}
