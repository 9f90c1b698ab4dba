//! The order of one benchmark run: check the machine, start the bench servers, then each
//! path in turn (set up, P1 + P2, stopped), P3 while the gateway and sshd are still up,
//! P5 and P4 on fresh gateways, and finally the check that no byte failed verification
//! before anything is written.

use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use rustix::process::{getrlimit, setrlimit, Resource};

use crate::measure::{measure_path, Config, PathResult};
use crate::paths::{self, Path, World};
use crate::report::{Machine, Report};
use crate::servers::{Registry, Servers};
use crate::{chart, h2client, logins, pattern, scale, Args};

/// Raise RLIMIT_NOFILE to its hard limit (the gateway we start inherits it).
fn raise_nofile() -> Result<u64> {
    let mut l = getrlimit(Resource::Nofile);
    let hard = l.maximum.unwrap_or(1 << 20);
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

/// Run everything and write the report to `args.out`.
pub fn run(args: &Args) -> Result<()> {
    let mut cfg = Config::new(args.quick);
    if let Some(m) = args.bulk_mib {
        cfg.bulk = m << 20;
    }
    if let Some(r) = args.runs {
        cfg.runs = r.max(1);
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
    let partial = !args.only.is_empty() || args.p1.is_some();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(if cfg.quick { "target/bench" } else { "docs" }));
    if !rustix::process::getuid().is_root() {
        bail!("run as root: the ssh paths start sshd and use a test account (`vgtest`)");
    }
    let bins = bin_dir()?;
    let nofile = raise_nofile()?;
    if *cfg.conns.iter().max().unwrap_or(&0) as u64 + 1000 > nofile {
        bail!(
            "RLIMIT_NOFILE hard limit {nofile} is too low for {:?} connections",
            cfg.conns
        );
    }
    let machine = machine();
    eprintln!(
        "virtgate-bench{}: binaries from {}; {} ({} cores), load {}",
        if cfg.quick { " --quick" } else { "" },
        bins.display(),
        machine.cpu,
        machine.cores,
        machine.load
    );
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
        let r = rt
            .block_on(measure_path(
                path.name,
                path.note.clone(),
                path.addr,
                &path.pids,
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
    let gw = world.gateway("gw");
    if wanted("virtgate TLS") {
        results.push(measure(paths::virtgate_tls(&world, &gw))?);
    }
    if wanted("virtgate SSH") {
        results.push(measure(paths::virtgate_ssh(&world, &gw, &sshd)?)?);
    }
    if partial {
        drop((gw, sshd));
        check(&reg)?;
        let report = Report {
            cfg: cfg.clone(),
            machine,
            paths: results,
            logins: Vec::new(),
            memory: None,
            fanout: None,
            notes: Vec::new(),
            elapsed: started.elapsed(),
        };
        println!("{}", report.tables());
        return Ok(());
    }

    eprintln!("P3 logins ({} runs each) …", cfg.logins);
    let logins = logins::measure(&world, &gw, &sshd, cfg.logins)?;
    drop(gw);
    drop(sshd);

    let tls = h2client::tls_config(&world.plain)?;
    eprintln!("P5 {} tunnels on one connection …", cfg.tunnels);
    let gw = world.gateway("gw-p5");
    let fanout = rt
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
        .context("P5")?;
    drop(gw);
    eprintln!("P4 idle connections {:?} …", cfg.conns);
    let gw = world.gateway("gw-p4");
    let memory = rt
        .block_on(crate::load::within(
            600,
            "P4",
            scale::idle_connections(gw.addrs[0], tls, gw.pid(), &cfg.conns),
        ))
        .context("P4")?;
    drop(gw);

    let verified = check(&reg)?;
    let notes = vec![
        format!(
            "{:.1} GB moved through the paths, every byte checked against a deterministic pattern \
             (period 1,048,573 bytes, so a lost, repeated or reordered chunk is caught); no stream failed.",
            verified as f64 / 1e9
        ),
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
        "CPU s/GB: CPU seconds (user + system) that the path's own processes (tunnel client and \
         server ends with their descendants, from /proc) spent per GB (10^9 B) during the P1 runs; \
         unlike MB/s it hardly depends on what else the machine runs. The bench's own sender and \
         receiver are not counted."
            .into(),
        "On an idle VM a round trip pays for waking halted vCPUs, which is why `alone` can be slower \
         than `under bulk` on raw TCP."
            .into(),
        "P3 runs each command to its exit (process start included) after one warm-up run. \
         `virsh -c qemu+tls://` would need a TLS libvirtd and is not measured."
            .into(),
        "P4 and P5 each run against a fresh virtgated (`[limits] max_connections = 20000`, \
         `max_streams_per_connection = 2000`) driven by the bench's own hyper + rustls client with the \
         virtgate client's HTTP/2 settings; RSS is VmRSS after 1 s of quiet."
            .into(),
        format!(
            "Nothing is pinned: every process (sender, tunnel client, tunnel server, receiver) shares the \
             {} cores, as on a small hypervisor host; the run took {:.0} s.",
            machine.cores,
            started.elapsed().as_secs_f64()
        ),
    ];
    let report = Report {
        cfg: cfg.clone(),
        machine,
        paths: results,
        logins,
        memory: Some(memory),
        fanout: Some(fanout),
        notes,
        elapsed: started.elapsed(),
    };
    println!("{}", report.tables());
    write(&report, &out)?;
    Ok(())
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
