//! The libvirt backend against a real libvirtd (private, per test) running real QEMU with
//! the test guest: virsh through `virtgate libvirt`, read-only refusal, the serial console,
//! graceful and forced shutdown, screenshots, a QEMU killed under a live VNC stream, a
//! libvirtd restart, and the role matrix.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use virtgate_tests::fixture::h2::H2;
use virtgate_tests::{
    poll, run, system_bin, text, ChildGuard, ClientCert, ClientUser, Domain, DomainSpec, Gateway,
    GatewayBuilder, Libvirtd, LineReader, Pki,
};

/// A libvirtd with two running domains (`a`: obeys ACPI; `b`: ignores it, VNC on TCP), a
/// gateway on it, and users: alice operator, vic viewer, adam admin, all on `*`.
struct VWorld {
    pki: Pki,
    lv: Libvirtd,
    a: Domain,
    b: Domain,
    gateway: Gateway,
    audit: std::path::PathBuf,
    adam_cert: ClientCert,
    alice: ClientUser,
    vic: ClientUser,
    adam: ClientUser,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

impl VWorld {
    fn start() -> VWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let lv = Libvirtd::start(&dir.path().join("lv"));
        let a = lv.define_and_start(&DomainSpec::new("a"));
        let b = lv.define_and_start(&DomainSpec::new("b").ignoring_power_button().vnc_tcp());
        let audit = dir.path().join("audit.jsonl");
        let gateway = GatewayBuilder::new(&pki)
            .libvirt(&lv.uri, &lv.socket, &lv.socket_ro)
            .rule(&["alice"], &["*"], "operator")
            .rule(&["vic"], &["*"], "viewer")
            .rule(&["adam"], &["*"], "admin")
            .audit(&audit)
            .start(&dir.path().join("gw"));
        let mk = |name: &str| -> (ClientCert, ClientUser) {
            let cert = pki.client(name, None);
            let u = ClientUser::new(&dir.path().join(name), &gateway.url(0), &cert);
            (cert, u)
        };
        let (_, alice) = mk("alice");
        let (_, vic) = mk("vic");
        let (adam_cert, adam) = mk("adam");
        VWorld {
            dir,
            pki,
            lv,
            a,
            b,
            gateway,
            audit,
            adam_cert,
            alice,
            vic,
            adam,
        }
    }

    /// `virtgate libvirt [--ro]` as `user`: the forwarder and the URI it printed.
    fn libvirt(&self, user: &ClientUser, ro: bool, name: &str) -> (ChildGuard, String, LineReader) {
        user.libvirt(&self.dir.path().join(format!("{name}.sock")), ro)
    }
}

fn virsh(uri: &str, args: &[&str]) -> (bool, String) {
    let out = run(Command::new(system_bin("virsh", "libvirt-clients"))
        .arg("-c")
        .arg(uri)
        .args(args));
    let (o, e) = text(&out);
    (out.status.success(), format!("{o}{e}"))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn virsh_works_through_virtgate_libvirt_and_ro_refuses_writes() {
    let w = VWorld::start();
    // its stderr stays read: the forwarder prints usage lines there, and a closed pipe
    // would fail those writes
    let (_fwd, uri, _errs) = w.libvirt(&w.adam, false, "rw");
    let (ok, out) = virsh(&uri, &["list", "--all"]);
    assert!(
        ok && out.contains(&w.a.name) && out.contains(&w.b.name),
        "{out}"
    );
    let (ok, out) = virsh(&uri, &["dominfo", &w.a.name]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out) = virsh(&uri, &["destroy", &w.b.name]);
    assert!(ok, "{out}");
    assert_eq!(w.lv.domstate(&w.b.name).trim(), "shut off");
    let (ok, out) = virsh(&uri, &["start", &w.b.name]);
    assert!(ok, "{out}");
    assert_eq!(w.lv.domstate(&w.b.name).trim(), "running");

    // Read-only: a viewer may list, not change anything.
    let (mut ro, ro_uri, ro_err) = w.libvirt(&w.vic, true, "ro");
    let (ok, out) = virsh(&ro_uri, &["list", "--all"]);
    assert!(
        ok && out.contains(&w.a.name),
        "{out}\nforwarder: {:?} {:?}",
        ro.try_status(),
        ro_err.drain_now()
    );
    let (ok, out) = virsh(&ro_uri, &["destroy", &w.a.name]);
    assert!(!ok && out.to_lowercase().contains("read only"), "{out}");
    assert_eq!(w.lv.domstate(&w.a.name).trim(), "running");

    // Read-write needs admin: the viewer gets an error, not a URI.
    let out = w.vic.run(&[
        "libvirt",
        "--socket",
        w.dir.path().join("no.sock").to_str().unwrap(),
    ]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(!o.contains("qemu:"), "{o}");
    assert!(e.contains("admin"), "{e}");
}

#[test]
fn list_screenshot_and_serial_console() {
    let w = VWorld::start();
    let list = w.vic.ok(&["list"]);
    assert!(
        list.contains(&w.a.name) && list.contains("running"),
        "{list}"
    );
    let info = json(&w.vic.ok(&["info", &w.a.name, "--json"]));
    assert_eq!(info["uuid"], w.a.uuid.as_str(), "{info}");
    assert!(info["consoles"].to_string().contains("serial"), "{info}");

    let png = w.dir.path().join("a.png");
    poll("a 720x400 PNG", Duration::from_secs(30), || {
        w.vic
            .ok(&["screenshot", &w.a.name, "-o", png.to_str().unwrap()]);
        let bytes = std::fs::read(&png).ok()?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let s = imagesize::blob_size(&bytes).ok()?;
        (s.width == 720 && s.height == 400).then_some(())
    });

    let mut console = w.alice.console(&w.a.name);
    // typed again if QEMU's pty dropped the first echo (it does in the first second)
    let echoed = (0..10).any(|_| {
        console.send(b"over libvirt\n");
        console.saw("over libvirt", Duration::from_secs(2))
    });
    assert!(echoed, "no echo of \"over libvirt\" in 20 s");
    assert!(console.leave().success(), "Ctrl-] leaves with status 0");
}

#[test]
fn graceful_shutdown_and_forced_shutdown() {
    let w = VWorld::start();
    // A power button pressed before the guest enabled ACPI is lost, as on real hardware.
    w.alice.wait_guest_ready(&w.a.name);
    let r = json(
        &w.alice
            .ok(&["shutdown", &w.a.name, "--timeout", "30", "--json"]),
    );
    assert_eq!(r["outcome"], "shut_down", "{r}");
    assert_eq!(r["state"], "shut_off", "{r}");
    assert_eq!(w.lv.domstate(&w.a.name).trim(), "shut off");

    let e = w.alice.fails(&["shutdown", &w.b.name, "--timeout", "1"]);
    assert!(e.contains("--force"), "{e}");
    let r = json(
        &w.alice
            .ok(&["shutdown", &w.b.name, "--timeout", "2", "--force", "--json"]),
    );
    assert_eq!(r["outcome"], "destroyed", "{r}");
    assert!(r["elapsed_ms"].as_u64().unwrap() >= 2000, "{r}");

    let r = json(&w.alice.ok(&["start", &w.a.name, "--json"]));
    assert_eq!(r["outcome"], "started", "{r}");
    assert_eq!(w.lv.domstate(&w.a.name).trim(), "running");
}

#[test]
fn qemu_killed_ends_its_vnc_stream_while_another_stream_keeps_working() {
    let w = VWorld::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut h2 = H2::connect(w.gateway.addrs[0], &w.adam_cert, &w.pki.ca_pem).await;
        let mut va = h2.tunnel(&format!("/v1/domains/{}/vnc", w.a.name)).await;
        let mut vb = h2.tunnel(&format!("/v1/domains/{}/vnc", w.b.name)).await;
        let mut banner = [0u8; 12];
        va.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"RFB 003.008\n");
        vb.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"RFB 003.008\n");

        let pid = w.lv.qemu_pid(&w.a.name).expect("QEMU pid of a");
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();

        // a's stream ends...
        let mut rest = [0u8; 64];
        let ended = tokio::time::timeout(Duration::from_secs(20), va.read(&mut rest)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "a's tunnel must end: {ended:?}"
        );
        // ...b's keeps working on the same connection: finish the RFB version exchange.
        vb.write_all(b"RFB 003.008\n").await.unwrap();
        let mut sec = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), vb.read_exact(&mut sec))
            .await
            .expect("b answers")
            .unwrap();
        assert!(sec[0] >= 1, "b offers security types");
        // ...and so do API calls; libvirtd notices the dead QEMU on its own time (its
        // monitor's end of file), a moment after the display's stream ended.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = h2.get(&format!("/v1/domains/{}", w.a.name)).await;
            assert_eq!(status, 200, "{body}");
            if !body.contains("\"running\"") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a is not running any more: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The real client says what happened to a VNC session that ends this way.
    let c = &w.alice;
    let e = c.fails(&["vnc", &w.a.name, "--no-viewer"]);
    assert!(e.contains(&w.a.name), "{e}");
}

#[test]
fn libvirtd_restart_while_the_gateway_runs() {
    let mut w = VWorld::start();
    assert!(w.vic.ok(&["list"]).contains(&w.a.name));
    w.lv.kill_daemon();
    let e = w.vic.fails(&["list"]);
    assert!(
        e.contains("unavailable") || e.contains("not reachable"),
        "{e}"
    );
    assert!(e.contains("hint:"), "{e}");
    w.lv.start_daemon();
    let list = poll("the gateway to reconnect", Duration::from_secs(60), || {
        let out = w.vic.run(&["list"]);
        out.status.success().then(|| text(&out).0)
    });
    assert!(list.contains(&w.a.name), "{list}");
    let mut gw = w.gateway;
    assert!(gw.is_running());
    w.gateway = gw;
}

#[test]
fn role_matrix_and_audit() {
    let w = VWorld::start();
    let a = w.a.name.as_str();
    // viewer: read-only calls only.
    w.vic.ok(&["info", a]);
    for args in [
        vec!["destroy", a],
        vec!["reboot", a],
        vec!["console", a],
        vec!["vnc", a, "--no-viewer"],
    ] {
        let e = w.vic.fails(&args);
        assert!(e.contains("operator"), "{args:?}: {e}");
    }
    // operator: lifecycle and consoles; not libvirt read-write.
    json(&w.alice.ok(&["reboot", a, "--json"]));
    drop(w.alice.vnc(a, &[]));
    let out = w.alice.run(&[
        "libvirt",
        "--socket",
        w.dir.path().join("x.sock").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "operator has no read-write libvirt"
    );
    // admin: everything.
    json(&w.adam.ok(&["destroy", &w.b.name, "--json"]));

    let audit = std::fs::read_to_string(&w.audit).unwrap();
    let lines: Vec<Value> = audit.lines().map(json).collect();
    let has = |user: &str, action: &str, decision: &str| {
        lines
            .iter()
            .any(|l| l["user"] == user && l["action"] == action && l["decision"] == decision)
    };
    assert!(has("vic", "destroy", "deny"), "{audit}");
    assert!(has("alice", "libvirt", "deny"), "{audit}");
    assert!(has("alice", "reboot", "allow"), "{audit}");
    assert!(
        lines.iter().any(|l| l["user"] == "adam"
            && l["action"] == "destroy"
            && l["outcome"] == "destroyed"),
        "{audit}"
    );
}
