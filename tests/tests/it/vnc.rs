//! VNC through `virtgate vnc`: a real VNC client (vncsnapshot) takes the SeaBIOS screen
//! through the tunnel, several VNC clients share the one gateway connection, and a domain
//! whose QEMU is gone fails alone.

use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{metric, poll};

use crate::World;

#[test]
fn screenshot_through_tunnel_over_ipv4_and_ipv6() {
    let w = World::start(|g| g);
    for i in [0usize, 1] {
        let c = w.client(&format!("c{i}"), i, &w.alice);
        let listen = if i == 0 { "127.0.0.1:0" } else { "[::1]:0" };
        // vncsnapshot speaks IPv4 only, so the local end stays on 127.0.0.1; the gateway
        // connection is the one that goes over IPv4 or IPv6.
        let fwd = c.vnc("web1", &["--listen", "127.0.0.1:0"]);
        let shot = w.dir.path().join(format!("screen{i}.jpg"));
        assert_eq!(snapshot_until(&fwd.vnc_target(), &shot, SEABIOS), SEABIOS);
        // And the local listener may be IPv6 too.
        let fwd6 = c.vnc("web1", &["--listen", listen]);
        assert_eq!(fwd6.addr.is_ipv6(), i == 1);
    }
}

#[test]
fn two_vnc_clients_share_one_gateway_connection() {
    let w = World::start(|g| g);
    let base = w.gateway.https(0);
    let ca = &w.pki.ca_pem;
    let accepted = |_: ()| metric(&w.alice, ca, &base, "virtgate_connections_accepted_total");
    let tunnels = || metric(&w.alice, ca, &base, "virtgate_tunnels_opened_total");

    let c = w.client("c", 0, &w.alice);
    let conn0 = accepted(());
    let tun0 = tunnels();
    let fwd = c.vnc("web1", &[]);
    let target = fwd.vnc_target();
    let shots: Vec<_> = (0..2)
        .map(|k| {
            let target = target.clone();
            let out = w.dir.path().join(format!("two{k}.jpg"));
            std::thread::spawn(move || snapshot_until(&target, &out, SEABIOS))
        })
        .collect();
    for s in shots {
        assert_eq!(s.join().expect("snapshot thread"), SEABIOS);
    }
    let tun1 = tunnels();
    let conn1 = accepted(());
    // After conn0: the two tunnel-metric queries, `virtgate vnc` and the conn1 query.
    assert_eq!(
        conn1 - conn0,
        4.0,
        "every VNC client must ride on virtgate's one connection"
    );
    assert!(
        tun1 - tun0 >= 2.0,
        "two VNC clients -> at least two tunnels ({tun0} -> {tun1})"
    );
    assert!(fwd.child.id() > 0);
}

#[test]
fn qemu_gone_shows_unavailable_and_the_gateway_keeps_serving() {
    let mut w = World::start(|g| g);
    let c = w.client("c", 0, &w.alice);
    let fwd = c.vnc("web1", &[]);
    w.qemu.kill();

    let info: Value = poll("state unavailable", Duration::from_secs(10), || {
        let v: Value = serde_json::from_str(&c.ok(&["info", "web1", "--json"])).ok()?;
        (v["state"] == "unavailable").then_some(v)
    });
    assert!(
        info["state_reason"].is_string(),
        "unavailable needs a reason: {info}"
    );

    // A VNC client through the still-running forwarder is refused cleanly, with a message.
    let shot = w.dir.path().join("gone.jpg");
    let r = virtgate_tests::fixture::vnc::snapshot(&fwd.vnc_target(), &shot);
    assert!(r.is_err(), "no screen can come from a dead QEMU");
    let mut seen = Vec::new();
    let errs = poll("forwarder error line", Duration::from_secs(10), || {
        seen.extend(fwd.stderr.drain_now());
        let all = seen.join("\n");
        all.contains("error:").then_some(all)
    });
    assert!(errs.contains("hint:"), "{errs}");

    // The gateway is fine.
    assert!(w.gateway.is_running());
    assert!(c.ok(&["whoami"]).contains("alice"));
}

#[test]
fn ctrl_c_closes_the_forwarder_and_its_tunnels() {
    let w = World::start(|g| g);
    let base = w.gateway.https(0);
    let open = || metric(&w.alice, &w.pki.ca_pem, &base, "virtgate_tunnels_open");
    let c = w.client("c", 0, &w.alice);
    let mut fwd = c.vnc("web1", &[]);
    // A VNC client that stays connected: the tunnel is open while it reads.
    let mut vnc = std::net::TcpStream::connect(fwd.addr).unwrap();
    let mut banner = [0u8; 12];
    std::io::Read::read_exact(&mut vnc, &mut banner).unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    assert_eq!(open(), 1.0);

    fwd.child.signal("INT");
    let status = fwd
        .child
        .wait_deadline(Duration::from_secs(10))
        .expect("virtgate vnc exits on Ctrl-C");
    assert!(status.success(), "{status}");
    // The local VNC client sees the end, and the gateway closed the tunnel.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut vnc, &mut rest);
    poll(
        "tunnel closed on the gateway",
        Duration::from_secs(10),
        || (open() == 0.0).then_some(()),
    );
    assert!(
        std::net::TcpStream::connect(fwd.addr).is_err(),
        "listener closed"
    );
}

#[test]
fn viewer_command_gets_the_url() {
    let w = World::start(|g| g);
    let c = w.client("c", 0, &w.alice);
    let got = w.dir.path().join("viewer-got");
    let mut child = c
        .cmd()
        .args(["vnc", "web1", "--viewer"])
        .arg(format!("echo {{}} > {}", got.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = virtgate_tests::LineReader::new(child.stdout.take().unwrap());
    let guard = virtgate_tests::ChildGuard::new(child, "virtgate vnc --viewer");
    let url = lines.next_line(Duration::from_secs(30)).expect("URL line");
    let seen = poll("viewer ran", Duration::from_secs(10), || {
        std::fs::read_to_string(&got).ok().filter(|s| !s.is_empty())
    });
    assert_eq!(seen.trim(), url.trim());
    guard.signal("INT");
}
