//! `virtgate-bench`: virtgate's tunnels side by side with raw TCP, `ssh -L` and stunnel4
//! in ONE run on loopback, with the release binaries of `virtgated` and `virtgate` found
//! next to this program (or in `VIRTGATE_BIN_DIR`).
//!
//! Layout: [`servers`] (sink/source/echo server, QMP stand-in) and [`pattern`] (the
//! verified byte stream) are the far end; [`paths`] sets up each path with the real
//! programs; [`load`] and [`measure`] run P1 (bulk) and P2 (echo, alone and under bulk);
//! [`logins`] times whole commands (P3); [`scale`] with [`h2client`] does P4 (memory per
//! idle connection) and P5 (10,000 tunnels on one connection), [`procfs`] reads CPU time
//! and RSS of the processes under test; [`report`] and [`chart`] write `benchmarks.md` and
//! `benchmarks.png`; [`run`] is the order of it all. With `--before DIR` the virtgate paths,
//! P4 and P5 run a second time with an older build's binaries, in the same run.

mod chart;
mod h2client;
mod load;
mod logins;
mod measure;
mod paths;
mod pattern;
mod procfs;
mod report;
mod run;
mod scale;
mod servers;

use std::path::PathBuf;

use clap::Parser;

/// Measure virtgate against raw TCP, ssh -L and stunnel4 on loopback.
#[derive(Debug, Parser)]
#[command(name = "virtgate-bench", version)]
pub struct Args {
    /// Small transfers and counts: under 2 minutes (CI).
    #[arg(long)]
    quick: bool,
    /// Folder for benchmarks.md and benchmarks.png [default: docs, or target/bench with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the paths whose name contains this (repeatable; e.g. `--only "virtgate TLS"`),
    /// and P3, P4 or P5 only when named (`--only P5`); nothing written unless `--out` is
    /// given. For profiling and tuning.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// A folder with an older build's `virtgate` and `virtgated` (`virtgate-pki` is not
    /// needed): the virtgate paths, P4 and P5 are measured with them too, in the same run
    /// (before, then after, for each), and the report shows before → after.
    #[arg(long, value_name = "DIR")]
    before: Option<PathBuf>,
    /// P5 tunnel count (default 10,000, 1,000 with --quick).
    #[arg(long, value_name = "N")]
    tunnels: Option<usize>,
    /// Bytes per P5 run in MiB, all tunnels together (default 2048, 256 with --quick).
    #[arg(long, value_name = "MIB")]
    p5_mib: Option<u64>,
    /// Bytes per P1 run in MiB (default 2048, 256 with --quick).
    #[arg(long, value_name = "MIB")]
    bulk_mib: Option<u64>,
    /// P1 runs per direction (default 3).
    #[arg(long)]
    runs: Option<usize>,
    /// Only P1 in this direction (`up`, `down` or `both`), no P2: with `--only`, for
    /// profiling one direction (e.g. under `perf stat -e 'syscalls:sys_enter_*'`).
    #[arg(long, value_name = "DIR", value_parser = ["up", "down", "both"])]
    p1: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run::run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the benchmark failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
