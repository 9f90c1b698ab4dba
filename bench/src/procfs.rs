//! What `/proc` tells about the processes under test:
//! - [`cpu_seconds`]: CPU time of a path's own processes (the tunnel's client and server
//!   ends and all their descendants, e.g. the per-connection sshd processes), from
//!   `/proc/PID/stat`. The P1 throughput moves with whatever else runs on a shared machine;
//!   the CPU seconds a path spends per GB moved do much less, so both are reported.
//! - [`rss_kib`]: a process's resident memory (`VmRSS` of `/proc/PID/status`), for P4/P5.

use std::collections::HashSet;

use anyhow::{Context as _, Result};

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// `/proc` reports times in USER_HZ ticks, which Linux fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

/// (ppid, utime + stime in ticks) of a process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// All processes: (pid, ppid, ticks).
fn all() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|(ppid, t)| (pid, ppid, t)))
        .collect()
}

/// CPU seconds used so far by `roots` and every descendant still running.
pub fn cpu_seconds(roots: &[u32]) -> f64 {
    if roots.is_empty() {
        return 0.0;
    }
    let procs = all();
    let mut tree: HashSet<u32> = roots.iter().copied().collect();
    loop {
        let before = tree.len();
        for (pid, ppid, _) in &procs {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let ticks: u64 = procs
        .iter()
        .filter(|(pid, _, _)| tree.contains(pid))
        .map(|(_, _, t)| t)
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_has_a_stat_and_memory() {
        let me = std::process::id();
        assert!(super::stat(me).is_some());
        // Burn a little CPU so the counter moves past one tick.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(super::cpu_seconds(&[me]) > 0.0);
        assert_eq!(super::cpu_seconds(&[]), 0.0);
        assert!(super::rss_kib(me).unwrap() > 100);
    }

    #[test]
    fn children_are_counted() {
        // A child that spins: its time shows up under our pid as the root.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let with_child = super::cpu_seconds(&[std::process::id()]);
        let _ = child.wait();
        assert!(with_child > 0.0);
    }
}
