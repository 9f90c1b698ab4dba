//! Supervised QEMUs outlive the gateway: a gateway stopped (SIGTERM) or killed (SIGKILL)
//! leaves them running with their pidfiles, and the next gateway takes them over (list,
//! serial console, destroy, start, ACPI shutdown) without ever starting a second QEMU for a
//! domain; stale pidfiles are replaced; `stop_domains_on_exit` / `stop_on_exit` bring back
//! "stop the VMs with the gateway". Every QEMU is killed by pid when its test ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::qemu::{is_alive, qemu_pids, QemuPidGuard};
use virtgate_tests::{
    guest_kernel, poll, ChildGuard, ClientCert, ClientUser, Gateway, GatewayBuilder, GuestOptions,
    Pki, QemuBuilder,
};

/// Certificates, the guest kernel and the runtime folder shared by the gateways of a test.
struct Setup {
    /// The CA (its files live in `dir`).
    pki: Pki,
    /// alice, operator on every domain.
    alice: ClientCert,
    /// The test guest (echoes its serial port, powers off on the ACPI power button).
    kernel: PathBuf,
    /// `backend.runtime_dir` of every gateway of the test.
    run: PathBuf,
    /// Dropped last.
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let alice = pki.client("alice", None);
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let run = dir.path().join("run");
        Setup {
            pki,
            alice,
            kernel,
            run,
            dir,
        }
    }

    /// A supervised domain running the test guest.
    fn domain(&self, name: &str) -> QemuBuilder {
        QemuBuilder::new(name).kernel(&self.kernel)
    }

    /// The QMP socket of domain `name` (unique to this test: it marks its QEMU processes).
    fn qmp(&self, name: &str) -> PathBuf {
        self.domain(name).command_line(self.dir.path()).1
    }

    /// A gateway over `domains` sharing the runtime folder; `stop`: `stop_domains_on_exit`
    /// (`None`: the default, QEMUs outlive the gateway).
    fn gateway(&self, domains: &[QemuBuilder], stop: Option<bool>, name: &str) -> Gateway {
        let mut b = GatewayBuilder::new(&self.pki)
            .runtime_dir(&self.run)
            .stop_domains_on_exit(stop)
            .rule(&["alice"], &["*"], "operator");
        for d in domains {
            b = b.domain(d.supervised_toml(self.dir.path()));
        }
        b.start(&self.dir.path().join(name))
    }

    fn client(&self, gw: &Gateway, name: &str) -> ClientUser {
        ClientUser::new(&self.dir.path().join(name), &gw.url(0), &self.alice)
    }

    fn pidfile(&self, name: &str) -> PathBuf {
        self.run.join("domains").join(format!("{name}.pid"))
    }
}

fn pid_in(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn state(c: &ClientUser, dom: &str) -> String {
    json(&c.ok(&["info", dom, "--json"]))["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Type a line on the domain's serial console and see the guest echo it.
fn echo(c: &ClientUser, dom: &str, line: &str) {
    let mut console = c.console(dom);
    console.send(format!("{line}\n").as_bytes());
    console.wait_for(line, Duration::from_secs(60));
    assert!(console.leave().success());
}

/// Stop `gw` with `signal` and wait for it to exit.
fn stop(gw: &mut Gateway, signal: &str) {
    gw.signal(signal);
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("gateway did not exit on SIG{signal}; log:\n{}", gw.log()));
    if signal == "TERM" {
        assert!(status.success(), "exit {status}; log:\n{}", gw.log());
    }
}

/// The gateway's pid of the domain's QEMU, which is the only QEMU of that domain.
fn only_qemu(s: &Setup, name: &str) -> u32 {
    let pid = pid_in(&s.pidfile(name)).expect("a pidfile");
    assert_eq!(
        qemu_pids(&s.qmp(name)),
        [pid],
        "one QEMU for {name}, the pidfile's"
    );
    pid
}

/// After a takeover: listed running, the console echoes, still one QEMU, and `destroy` then
/// `start` work (a new QEMU, a new pidfile). Returns the guard of the new QEMU.
fn check_taken_over(s: &Setup, gw: &Gateway, c: &ClientUser, name: &str, pid: u32) -> QemuPidGuard {
    assert_eq!(
        only_qemu(s, name),
        pid,
        "no second QEMU; log:\n{}",
        gw.log()
    );
    assert!(gw.log().contains("took over the QEMU"), "{}", gw.log());
    let list = json(&c.ok(&["list", "--json"]));
    assert!(list.to_string().contains("\"running\""), "{list}");
    echo(c, name, "after the takeover");

    let r = json(&c.ok(&["destroy", name, "--json"]));
    assert_eq!(r["outcome"], "destroyed", "{r}");
    poll(
        "the taken-over QEMU to be gone",
        Duration::from_secs(10),
        || (!is_alive(pid)).then_some(()),
    );
    assert!(!s.pidfile(name).exists(), "pidfile removed with its QEMU");
    assert_eq!(state(c, name), "shut_off");

    let r = json(&c.ok(&["start", name, "--json"]));
    assert_eq!(r["outcome"], "started", "{r}");
    let new = only_qemu(s, name);
    assert_ne!(new, pid);
    let guard = QemuPidGuard(new);
    echo(c, name, "after a new start");
    guard
}

#[test]
fn sigterm_leaves_the_qemu_running_and_the_next_gateway_takes_it_over() {
    let s = Setup::new();
    let dom = s.domain("keep");
    let mut gw1 = s.gateway(std::slice::from_ref(&dom), None, "gw1");
    let pid = only_qemu(&s, "keep");
    let _guard = QemuPidGuard(pid);
    let c1 = s.client(&gw1, "c1");
    echo(&c1, "keep", "before the restart");

    stop(&mut gw1, "TERM");
    assert!(is_alive(pid), "QEMU outlives SIGTERM; log:\n{}", gw1.log());
    assert_eq!(pid_in(&s.pidfile("keep")), Some(pid), "pidfile kept");
    let log = gw1.log();
    assert!(
        log.contains("QEMU keeps running after the gateway exits") && log.contains("keep"),
        "the log names the domains that keep running:\n{log}"
    );

    let gw2 = s.gateway(&[dom], None, "gw2");
    let c2 = s.client(&gw2, "c2");
    let _new = check_taken_over(&s, &gw2, &c2, "keep", pid);
}

#[test]
fn sigkill_leaves_the_qemu_running_and_the_next_gateway_takes_it_over() {
    let s = Setup::new();
    let dom = s.domain("orphan");
    let mut gw1 = s.gateway(std::slice::from_ref(&dom), None, "gw1");
    let pid = only_qemu(&s, "orphan");
    let _guard = QemuPidGuard(pid);
    let c1 = s.client(&gw1, "c1");
    c1.wait_guest_ready("orphan");

    stop(&mut gw1, "KILL");
    assert!(is_alive(pid), "QEMU outlives a SIGKILLed gateway");
    let gw2 = s.gateway(std::slice::from_ref(&dom), None, "gw2");
    let c2 = s.client(&gw2, "c2");
    assert_eq!(only_qemu(&s, "orphan"), pid);
    // A QEMU taken over is not the gateway's child: its exit is still noticed.
    let r = json(&c2.ok(&["shutdown", "orphan", "--timeout", "30", "--json"]));
    assert_eq!(r["outcome"], "shut_down", "{r}");
    assert_eq!(r["state"], "shut_off", "{r}");
    assert!(!is_alive(pid));
    assert!(!s.pidfile("orphan").exists());
    let r = json(&c2.ok(&["start", "orphan", "--json"]));
    assert_eq!(r["outcome"], "started", "{r}");
    let _new = QemuPidGuard(only_qemu(&s, "orphan"));

    // Once more, SIGKILL then takeover, with destroy and start.
    let mut gw2 = gw2;
    let pid = only_qemu(&s, "orphan");
    stop(&mut gw2, "KILL");
    let gw3 = s.gateway(&[dom], None, "gw3");
    let c3 = s.client(&gw3, "c3");
    let _newer = check_taken_over(&s, &gw3, &c3, "orphan", pid);
}

#[test]
fn stale_pidfiles_are_replaced_and_a_qemu_still_serving_qmp_is_taken_over() {
    let s = Setup::new();
    let dom = s.domain("stale");
    std::fs::create_dir_all(s.run.join("domains")).unwrap();

    // The pid of a process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(s.pidfile("stale"), format!("{gone_pid}\n")).unwrap();
    let gw = s.gateway(std::slice::from_ref(&dom), Some(true), "gw1");
    let pid = only_qemu(&s, "stale");
    let guard = QemuPidGuard(pid);
    assert_ne!(pid, gone_pid);
    assert!(gw.log().contains("stale pidfile"), "{}", gw.log());
    drop(gw);
    assert!(!is_alive(pid), "stop_domains_on_exit = true stops it");
    drop(guard);

    // The pid of a live process that is not QEMU.
    let sleep = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let sleep = ChildGuard::new(sleep, "sleep");
    std::fs::write(s.pidfile("stale"), format!("{}\n", sleep.id())).unwrap();
    let mut gw = s.gateway(std::slice::from_ref(&dom), None, "gw2");
    let pid = only_qemu(&s, "stale");
    let _guard = QemuPidGuard(pid);
    assert_ne!(pid, sleep.id());
    assert!(is_alive(sleep.id()), "the unrelated process is left alone");
    let c = s.client(&gw, "c2");
    echo(&c, "stale", "fresh QEMU");

    // The gateway dies and the pidfile is wrong, but the QEMU still serves its QMP socket:
    // the next gateway finds it there and does not start a second one.
    stop(&mut gw, "KILL");
    std::fs::write(s.pidfile("stale"), format!("{}\n", sleep.id())).unwrap();
    let gw3 = s.gateway(&[dom], None, "gw3");
    assert_eq!(only_qemu(&s, "stale"), pid, "log:\n{}", gw3.log());
    let c3 = s.client(&gw3, "c3");
    assert_eq!(state(&c3, "stale"), "running");
    echo(&c3, "stale", "found by its QMP socket");
}

#[test]
fn stop_domains_on_exit_stops_qemus_with_the_gateway_unless_a_domain_says_otherwise() {
    let s = Setup::new();
    let stopped = s.domain("stopped");
    let kept = s.domain("kept").stop_on_exit(Some(false));
    let mut gw = s.gateway(&[stopped, kept], Some(true), "gw");
    let stopped_pid = only_qemu(&s, "stopped");
    let kept_pid = only_qemu(&s, "kept");
    let _guards = (QemuPidGuard(stopped_pid), QemuPidGuard(kept_pid));

    stop(&mut gw, "TERM");
    assert!(!is_alive(stopped_pid), "stopped with the gateway");
    assert!(!s.pidfile("stopped").exists());
    assert!(is_alive(kept_pid), "stop_on_exit = false keeps it");
    assert_eq!(pid_in(&s.pidfile("kept")), Some(kept_pid));
    let log = gw.log();
    assert!(log.contains("QEMU keeps running"), "{log}");
}
