//! Lifecycle, screenshots, events, the serial console, roles and the audit log on the QEMU
//! backend, with the tiny test guest (echoes COM1, powers off on the ACPI power button)
//! run by QEMU processes the gateway supervises.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::{
    guest_kernel, poll, text, ChildGuard, ClientCert, ClientUser, Gateway, GatewayBuilder,
    GuestOptions, LineReader, Pki, QemuBuilder,
};

/// Domains `acpi1` (obeys the power button) and `stubborn` (ignores it), supervised by
/// the gateway; alice is operator, vic viewer, adam admin on `*`.
pub struct LWorld {
    /// The CA and the gateway live as long as the world.
    pub _pki: Pki,
    pub _gateway: Gateway,
    pub audit: std::path::PathBuf,
    pub alice: ClientUser,
    pub vic: ClientUser,
    pub adam: ClientUser,
    /// Dropped last: the processes above stop before their files go.
    pub dir: tempfile::TempDir,
}

impl LWorld {
    pub fn start() -> LWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let acpi = guest_kernel(dir.path(), GuestOptions::default());
        let stubborn = guest_kernel(dir.path(), GuestOptions::ignoring_power_button());
        let audit = dir.path().join("audit.jsonl");
        let gateway = GatewayBuilder::new(&pki)
            .domain(
                QemuBuilder::new("acpi1")
                    .kernel(&acpi)
                    .supervised_toml(dir.path()),
            )
            .domain(
                QemuBuilder::new("stubborn")
                    .kernel(&stubborn)
                    .supervised_toml(dir.path()),
            )
            .rule(&["alice"], &["*"], "operator")
            .rule(&["vic"], &["*"], "viewer")
            .rule(&["adam"], &["*"], "admin")
            .audit(&audit)
            .start(&dir.path().join("gw"));
        let user = |name: &str| -> ClientUser {
            let cert: ClientCert = pki.client(name, None);
            ClientUser::new(&dir.path().join(name), &gateway.url(0), &cert)
        };
        let (alice, vic, adam) = (user("alice"), user("vic"), user("adam"));
        LWorld {
            dir,
            _pki: pki,
            _gateway: gateway,
            audit,
            alice,
            vic,
            adam,
        }
    }
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

#[test]
fn graceful_shutdown_then_start_then_reboot() {
    let w = LWorld::start();
    // A power button pressed before the guest enabled ACPI is lost, as on real hardware.
    w.alice.wait_guest_ready("acpi1");
    let r = json(
        &w.alice
            .ok(&["shutdown", "acpi1", "--timeout", "20", "--json"]),
    );
    assert_eq!(r["outcome"], "shut_down", "{r}");
    assert_eq!(r["state"], "shut_off", "{r}");
    assert!(r["elapsed_ms"].as_u64().unwrap() < 20_000, "{r}");
    assert_eq!(state(&w.alice, "acpi1"), "shut_off");
    let human = w.alice.ok(&["shutdown", "acpi1"]);
    assert!(human.contains("acpi1"), "already off: {human}");

    let r = json(&w.alice.ok(&["start", "acpi1", "--json"]));
    assert_eq!(r["outcome"], "started", "{r}");
    assert_eq!(state(&w.alice, "acpi1"), "running");
    let r = json(&w.alice.ok(&["start", "acpi1", "--json"]));
    assert_eq!(r["outcome"], "already_in_state", "{r}");

    let r = json(&w.alice.ok(&["reboot", "acpi1", "--json"]));
    assert_eq!(r["outcome"], "rebooted", "{r}");
}

#[test]
fn shutdown_of_a_guest_ignoring_acpi_times_out_or_is_forced() {
    let w = LWorld::start();
    let e = w.alice.fails(&["shutdown", "stubborn", "--timeout", "1"]);
    assert!(e.contains("stubborn") && e.contains("--force"), "{e}");
    assert_eq!(
        state(&w.alice, "stubborn"),
        "running",
        "still running without --force"
    );

    let r = json(&w.alice.ok(&[
        "shutdown",
        "stubborn",
        "--timeout",
        "2",
        "--force",
        "--json",
    ]));
    assert_eq!(r["outcome"], "destroyed", "{r}");
    assert_eq!(r["state"], "shut_off", "{r}");
    let ms = r["elapsed_ms"].as_u64().unwrap();
    assert!(ms >= 2000, "waited the timeout first: {r}");

    // destroy of a running domain, and of one already off.
    json(&w.alice.ok(&["start", "stubborn", "--json"]));
    let r = json(&w.alice.ok(&["destroy", "stubborn", "--json"]));
    assert_eq!(r["outcome"], "destroyed", "{r}");
    let r = json(&w.alice.ok(&["destroy", "stubborn", "--json"]));
    assert_eq!(r["outcome"], "already_in_state", "{r}");
}

#[test]
fn screenshot_is_a_png_of_the_screen() {
    let w = LWorld::start();
    let out = w.dir.path().join("shot.png");
    let size = poll("a 720x400 screenshot", Duration::from_secs(30), || {
        w.vic
            .ok(&["screenshot", "acpi1", "-o", out.to_str().unwrap()]);
        let bytes = std::fs::read(&out).ok()?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let s = imagesize::blob_size(&bytes).ok()?;
        (s.width == 720 && s.height == 400).then_some((s.width, s.height))
    });
    assert_eq!(size, (720, 400));
}

#[test]
fn serial_console_echoes_through_the_gateway() {
    let w = LWorld::start();
    let mut console = w.alice.console("acpi1");
    console.send(b"hello virtgate\n");
    console.wait_for("hello virtgate", Duration::from_secs(20));
    assert!(console.leave().success(), "Ctrl-] leaves with status 0");
}

#[test]
fn events_stream_reports_stop_and_start() {
    let w = LWorld::start();
    let mut child = w
        .vic
        .cmd()
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = LineReader::new(child.stdout.take().unwrap());
    let _guard = ChildGuard::new(child, "virtgate events");
    let mut initial = Vec::new();
    while initial.len() < 2 {
        let l = lines
            .next_line(Duration::from_secs(20))
            .expect("initial event lines");
        initial.push(json(&l));
    }
    assert!(initial.iter().all(|e| e["initial"] == true), "{initial:?}");
    json(&w.alice.ok(&["destroy", "acpi1", "--json"]));
    json(&w.alice.ok(&["start", "acpi1", "--json"]));
    let mut kinds = Vec::new();
    while !(kinds.contains(&"stopped".to_string()) && kinds.contains(&"started".to_string())) {
        let l = lines
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("events so far: {kinds:?}"));
        let e = json(&l);
        if e["domain"] == "acpi1" {
            kinds.push(e["event"].as_str().unwrap_or("").to_owned());
        }
    }
    let stop = kinds.iter().position(|k| k == "stopped").unwrap();
    let start = kinds.iter().rposition(|k| k == "started").unwrap();
    assert!(stop < start, "{kinds:?}");
}

#[test]
fn roles_decide_who_may_do_what_and_the_audit_log_records_it() {
    let w = LWorld::start();
    // viewer: read-only things.
    assert!(w.vic.ok(&["list"]).contains("acpi1"));
    w.vic.ok(&["info", "acpi1"]);
    let shot = w.dir.path().join("v.png");
    w.vic
        .ok(&["screenshot", "acpi1", "-o", shot.to_str().unwrap()]);
    for args in [
        vec!["start", "acpi1"],
        vec!["reboot", "acpi1"],
        vec!["destroy", "acpi1"],
        vec!["shutdown", "acpi1", "--timeout", "1"],
        vec!["console", "acpi1"],
        vec!["vnc", "acpi1", "--no-viewer"],
    ] {
        let e = w.vic.fails(&args);
        assert!(
            e.contains("operator"),
            "{args:?} names the role needed: {e}"
        );
        assert!(e.contains("viewer"), "{args:?} names the role held: {e}");
    }
    // operator: lifecycle and consoles, but not libvirt read-write.
    json(&w.alice.ok(&["reboot", "acpi1", "--json"]));
    let fwd = w.alice.vnc("acpi1", &[]);
    drop(fwd);
    // admin can do what operator can.
    json(&w.adam.ok(&["destroy", "stubborn", "--json"]));
    // This gateway has no libvirt backend: the libvirt tunnel says so.
    let e = w.adam.fails(&[
        "libvirt",
        "--socket",
        w.dir.path().join("l.sock").to_str().unwrap(),
    ]);
    assert!(e.to_lowercase().contains("libvirt"), "{e}");

    let audit = std::fs::read_to_string(&w.audit).unwrap();
    let lines: Vec<Value> = audit.lines().map(json).collect();
    let find = |user: &str, action: &str, decision: &str| {
        lines
            .iter()
            .any(|l| l["user"] == user && l["action"] == action && l["decision"] == decision)
    };
    assert!(
        find("vic", "destroy", "deny"),
        "denials are recorded:\n{audit}"
    );
    assert!(find("alice", "reboot", "allow"), "{audit}");
    let done = lines
        .iter()
        .find(|l| l["user"] == "adam" && l["action"] == "destroy" && l.get("outcome").is_some())
        .unwrap_or_else(|| panic!("a lifecycle line with its outcome:\n{audit}"));
    assert_eq!(done["outcome"], "destroyed", "{done}");
    assert_eq!(done["method"], "certificate");
    assert!(
        done["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{done}"
    );
    assert!(done["time"].as_str().unwrap().ends_with('Z'), "{done}");
    assert!(done["elapsed_ms"].is_u64(), "{done}");
    let _ = text;
}
