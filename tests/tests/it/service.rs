//! The gateway under a service manager: systemd's notify protocol (READY with a status,
//! RELOADING with the monotonic time, READY again, STOPPING) read from a datagram socket
//! the test binds as `NOTIFY_SOCKET`, the way systemd does; and the pidfile OpenRC uses
//! (`--pidfile`: written once listening, the target of `virtgated reload` without a control
//! socket, removed at exit).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use virtgate_tests::{poll, text, GatewayBuilder, Pki};

/// Messages received on the notify socket until one contains `want` (panics after 30 s).
fn until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                seen.push(msg);
                if done {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {want} from the gateway; got {seen:?}");
}

#[test]
fn systemd_notify_protocol_ready_reloading_stopping() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let gw = GatewayBuilder::new(&pki)
        .env("NOTIFY_SOCKET", &notify)
        .start(&dir.path().join("gw"));
    let mut seen = Vec::new();
    until(&sock, "READY=1", &mut seen);
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=") && m.contains("listening")),
        "{seen:?}"
    );
    gw.signal("HUP");
    until(&sock, "RELOADING=1", &mut seen);
    assert!(
        seen.last().is_some_and(|m| m.contains("MONOTONIC_USEC=")),
        "systemd's notify-reload wants the time with RELOADING: {seen:?}"
    );
    until(&sock, "READY=1", &mut seen);
    assert!(
        seen.last().is_some_and(|m| m.contains("STATUS=reloaded")),
        "{seen:?}"
    );
    gw.signal("TERM");
    until(&sock, "STOPPING=1", &mut seen);
}

#[test]
fn pidfile_is_written_used_by_reload_and_removed() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let pidfile = dir.path().join("virtgated.pid");
    let mut gw = GatewayBuilder::new(&pki)
        .pidfile(&pidfile)
        .start(&dir.path().join("gw"));
    let pid = std::fs::read_to_string(&pidfile).expect("the pidfile exists once listening");
    assert_eq!(pid.trim(), gw.pid().to_string());

    // no control socket in this config: reload signals the pid in the pidfile
    let out = virtgate_tests::run(
        std::process::Command::new(virtgate_tests::bin("virtgated"))
            .arg("--config")
            .arg(&gw.config)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("reload"),
    );
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains(&format!("SIGHUP to pid {}", gw.pid())), "{o}");
    poll("the reload in the log", Duration::from_secs(10), || {
        gw.log().contains("configuration reloaded").then_some(())
    });

    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
    // and now reload says there is nothing to reload
    let out = virtgate_tests::run(
        std::process::Command::new(virtgate_tests::bin("virtgated"))
            .arg("--config")
            .arg(&gw.config)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("reload"),
    );
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(e.contains("no running gateway"), "{e}");
}
