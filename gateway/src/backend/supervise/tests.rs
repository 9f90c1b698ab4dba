//! Unit tests of supervision without QEMU: exit classes, pidfiles, and how a running
//! process is recognised as a domain's QEMU (or not). QEMU itself is in the integration
//! tests (`tests/tests/it/supervise.rs`).

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::pidfile::{find_running, Files};
use super::*;

#[test]
fn exits_are_classified() {
    let ok = Exit::from_status(&ExitStatus::from_raw(0));
    assert_eq!(ok.state, DomainState::ShutOff);
    let killed = Exit::from_status(&ExitStatus::from_raw(9));
    assert_eq!(killed.state, DomainState::Crashed);
    assert!(killed.reason.contains("signal 9"), "{}", killed.reason);
    let failed = Exit::from_status(&ExitStatus::from_raw(1 << 8));
    assert_eq!(failed.state, DomainState::Unavailable);
    assert!(failed.reason.contains('1'), "{}", failed.reason);
}

fn domain(qmp: &Path, command: &[&str]) -> DomainConfig {
    DomainConfig {
        name: "d1".into(),
        qmp: qmp.to_owned(),
        vnc: None,
        spice: None,
        serial: None,
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        stop_on_exit: None,
    }
}

/// A `sleep` child, killed on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start(secs: &str) -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg(secs)
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pidfiles_are_written_read_and_removed_only_when_they_name_the_pid() {
    let run = tempfile::tempdir().unwrap();
    let f = Files::new(run.path(), "web1");
    assert_eq!(f.pidfile, run.path().join("domains/web1.pid"));
    assert_eq!(f.log, run.path().join("domains/web1.log"));
    f.create_dir().unwrap();
    assert!(f.read_pid().unwrap().is_none());
    f.write_pid(4242).unwrap();
    assert_eq!(std::fs::read_to_string(&f.pidfile).unwrap(), "4242\n");
    assert_eq!(f.read_pid().unwrap(), Some(Ok(4242)));
    f.remove_if(Some(4343));
    assert!(f.pidfile.exists(), "names another pid: kept");
    f.remove_if(Some(4242));
    assert!(!f.pidfile.exists());
    std::fs::write(&f.pidfile, "hello\n").unwrap();
    assert_eq!(f.read_pid().unwrap(), Some(Err("hello".into())));
}

#[test]
fn an_unwritable_runtime_dir_is_an_error_with_a_hint() {
    let f = Files::new(Path::new("/proc/virtgate-cannot"), "web1");
    let e = f.create_dir().unwrap_err();
    assert!(
        e.to_string().contains("/proc/virtgate-cannot/domains"),
        "{e}"
    );
    assert!(e.hint().contains("runtime_dir"), "{}", e.hint());
}

#[tokio::test]
async fn stale_pidfiles_are_removed_and_a_live_match_is_found() {
    let run = tempfile::tempdir().unwrap();
    let qmp = run.path().join("qmp.sock");
    let f = Files::new(run.path(), "d1");
    f.create_dir().unwrap();
    let d = domain(&qmp, &["sleep", "30"]);

    // Nothing at all.
    assert!(find_running(&d, &f).await.unwrap().is_none());
    // Not a pid.
    std::fs::write(&f.pidfile, "garbage\n").unwrap();
    assert!(find_running(&d, &f).await.unwrap().is_none());
    assert!(!f.pidfile.exists());
    // A dead pid.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    f.write_pid(dead_pid).unwrap();
    assert!(find_running(&d, &f).await.unwrap().is_none());
    assert!(!f.pidfile.exists());
    // A live pid of another program (this test binary).
    f.write_pid(std::process::id()).unwrap();
    assert!(find_running(&d, &f).await.unwrap().is_none());
    assert!(!f.pidfile.exists());

    // The domain's own process: same command line.
    let s = Sleeper::start("30");
    f.write_pid(s.pid()).unwrap();
    let found = find_running(&d, &f).await.unwrap().expect("found");
    assert_eq!(found.pid, s.pid());
    assert!(found.same_command);
    assert_eq!(
        procfs::liveness(found.pid, found.start_time),
        procfs::Liveness::Alive
    );

    // The same program with another command line, not serving QMP: refused.
    let other = domain(&qmp, &["sleep", "31"]);
    let e = find_running(&other, &f).await.unwrap_err();
    assert!(
        matches!(e, SuperviseError::Suspect { pid, .. } if pid == s.pid()),
        "{e}"
    );
    assert!(
        e.hint().contains(&format!("kill {}", s.pid())),
        "{}",
        e.hint()
    );
    assert!(f.pidfile.exists(), "kept for the admin to decide");
}

/// A QMP socket held by this process: silent (no greeting), then speaking QMP.
#[tokio::test]
async fn a_qmp_socket_in_use_is_never_replaced() {
    let run = tempfile::tempdir().unwrap();
    let qmp = run.path().join("qmp.sock");
    let f = Files::new(run.path(), "d1");
    f.create_dir().unwrap();
    let d = domain(&qmp, &["qemu-system-x86_64", "-name", "d1"]);

    // Bound but nobody listens any more: a stale socket file, fine to replace.
    drop(std::os::unix::net::UnixListener::bind(&qmp).unwrap());
    assert!(find_running(&d, &f).await.unwrap().is_none());
    std::fs::remove_file(&qmp).unwrap();

    // Listening without a QMP greeting: refused.
    let listener = tokio::net::UnixListener::bind(&qmp).unwrap();
    let e = find_running(&d, &f).await.unwrap_err();
    assert!(matches!(e, SuperviseError::QmpInUse { .. }), "{e}");
    assert!(e.to_string().contains("does not answer QMP"), "{e}");

    // Speaking QMP: the process that serves it is the domain's QEMU (this test process).
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"{\"QMP\": {\"version\": {}}}\r\n").await;
                let mut buf = [0u8; 512];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"{\"return\": {}}\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let found = find_running(&d, &f).await.unwrap().expect("found by QMP");
    assert_eq!(found.pid, std::process::id());
    assert!(!found.same_command);
    // A pidfile naming another live program yields to the process serving QMP.
    f.write_pid(std::process::id()).unwrap();
    let found = find_running(&d, &f).await.unwrap().expect("found");
    assert!(found.evidence.contains("QMP"), "{}", found.evidence);
    server.abort();
}

#[test]
fn config_keys_have_defaults_and_are_checked() {
    use crate::config::{parse, validate};
    let keys = |text: &str| -> Vec<String> {
        let c = parse(text, Path::new("t.toml")).unwrap();
        validate(&c).into_iter().map(|p| p.key).collect()
    };
    let head = "[listen]\nunix = \"/run/v.sock\"\n[backend]\nkind = \"qemu\"\n";
    let dom = "[[backend.domain]]\nname = \"a\"\nqmp = \"/r/qmp.sock\"\n";
    let d = parse(&format!("{head}{dom}"), Path::new("t.toml")).unwrap();
    assert_eq!(d.backend.runtime_dir_path(), Path::new("/run/virtgate"));
    assert!(!d.backend.stops_on_exit(&d.backend.domains[0]));

    let set = format!("{head}runtime_dir = \"/run/v\"\nstop_domains_on_exit = true\n{dom}command = [\"qemu\"]\nstop_on_exit = false\n");
    let c = parse(&set, Path::new("t.toml")).unwrap();
    assert!(validate(&c).is_empty(), "{:?}", validate(&c));
    assert_eq!(c.backend.runtime_dir_path(), Path::new("/run/v"));
    assert!(
        !c.backend.stops_on_exit(&c.backend.domains[0]),
        "the domain decides"
    );

    let bad = set
        .replace("/run/v\"", "run/v\"")
        .replace("command = [\"qemu\"]\n", "");
    assert_eq!(
        keys(&bad),
        ["backend.runtime_dir", "backend.domain[0].stop_on_exit"]
    );
    let libvirt = "[listen]\nunix = \"/run/v.sock\"\n[backend]\nkind = \"libvirt\"\nruntime_dir = \"/run/v\"\nstop_domains_on_exit = true\n";
    assert_eq!(
        keys(libvirt),
        ["backend.runtime_dir", "backend.stop_domains_on_exit"]
    );
}
