//! What `/proc` tells about a QEMU the gateway may not have started itself (one taken over
//! from an earlier gateway run is not our child: no `wait`, no `Child::kill`).
//!
//! A process is known by its pid AND its start time (field 22 of `/proc/PID/stat`, clock
//! ticks since boot): a pid the kernel gave to another process since has another start
//! time, so a reused pid is never mistaken for the QEMU we watch, and never signalled.
//! An exited process that is not reaped yet is a zombie (`Z`; orphans are reaped by init,
//! which may take a while); its `/proc/PID/stat` still holds the exit status `waitpid`
//! would report (field 52, Linux ≥ 3.5), which tells a guest power-off from a crash.
//! Signals go through `kill(1)` (procps): the gateway's library has no unsafe code and no
//! libc binding of its own.

use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;

/// The fields of `/proc/PID/stat` the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `D`, `T`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 22: when the process started, in clock ticks since boot.
    pub start_time: u64,
    /// Field 52: the exit status in `waitpid` form (meaningful for a zombie only).
    pub exit_code: i32,
}

impl Stat {
    /// Whether the process has exited (and waits to be reaped).
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/PID/stat`, or `None` when there is no such process (or /proc cannot tell).
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parse a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses: the fields we want follow its LAST `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of the man page.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    let exit_code = fields.get(52 - 3).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(Stat {
        state,
        start_time,
        exit_code,
    })
}

/// The process's argv (`/proc/PID/cmdline`, NUL-separated), lossily decoded; `None` when
/// there is no such process, empty for a zombie or a kernel thread.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// What became of a process known by pid and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It exited and is not reaped yet: here is its status.
    Exited(ExitStatus),
    /// It is gone (reaped), or the pid now belongs to another process.
    Gone,
}

/// Check on the process `pid` that started at `start_time`.
pub fn liveness(pid: u32, start_time: u64) -> Liveness {
    match stat(pid) {
        Some(s) if s.start_time != start_time => Liveness::Gone,
        Some(s) if s.is_exited() => Liveness::Exited(ExitStatus::from_raw(s.exit_code)),
        Some(_) => Liveness::Alive,
        None => Liveness::Gone,
    }
}

/// Send `signal` (`TERM`, `KILL`) to `pid` if it is still the process that started at
/// `start_time`; `Err` says why not (for the log).
pub async fn signal(pid: u32, start_time: u64, signal: &str) -> Result<(), String> {
    use rustix::process::{kill_process, Pid, Signal};
    if liveness(pid, start_time) != Liveness::Alive {
        return Ok(());
    }
    let sig = match signal {
        "KILL" => Signal::KILL,
        "TERM" => Signal::TERM,
        other => return Err(format!("unknown signal {other}")),
    };
    let target = Pid::from_raw(pid as i32).ok_or_else(|| format!("bad pid {pid}"))?;
    kill_process(target, sig).map_err(|e| format!("kill -s {signal} {pid}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_after_the_last_parenthesis() {
        let mut line = String::from("4242 (qemu (x) y) Z 1 4242 4242 0 -1 4194560");
        // fields 10..=21, then start time (22), then up to exit_code (52).
        for i in 10..=21 {
            line.push_str(&format!(" {i}"));
        }
        line.push_str(" 987654");
        for i in 23..=51 {
            line.push_str(&format!(" {i}"));
        }
        line.push_str(" 768\n");
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.state, 'Z');
        assert_eq!(s.start_time, 987654);
        assert_eq!(s.exit_code, 768);
        assert!(s.is_exited());
        assert_eq!(parse_stat("12 (x"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_gone() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert_eq!(liveness(me, s.start_time), Liveness::Alive);
        assert_eq!(liveness(me, s.start_time + 1), Liveness::Gone);
        assert!(!cmdline(me).unwrap().is_empty());
        assert_eq!(stat(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_zombie_tells_its_exit_status_and_kill_skips_it() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut seen = None;
        for _ in 0..200 {
            if let Some(s) = stat(pid).filter(Stat::is_exited) {
                seen = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let s = seen.expect("the child exits");
        assert_eq!(
            liveness(pid, s.start_time),
            Liveness::Exited(ExitStatus::from_raw(3 << 8))
        );
        assert_eq!(signal(pid, s.start_time, "KILL").await, Ok(()));
        child.wait().unwrap();
        assert_eq!(liveness(pid, s.start_time), Liveness::Gone);
    }
}
