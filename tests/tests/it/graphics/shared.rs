//! libvirt and the event stream over `virtgate up`'s shared connection: virsh, the
//! descriptors of graphical consoles (openGraphicsFD for VNC and SPICE) and `virtgate
//! events` all ride the one connection `up` keeps; the gateway accepts no other.

use std::process::{Command, Stdio};
use std::time::Duration;

use virtgate_tests::{metric, run, system_bin, text, ChildGuard, LineReader};

use super::{drive, GWorld};

#[test]
fn libvirt_consoles_and_events_ride_the_shared_connection() {
    let w = GWorld::start();
    let adam = &w.adam;
    let (_up, _) = adam.up();
    let accepted = || {
        metric(
            &w.adam_cert,
            &w.pki.ca_pem,
            &w.gateway.https(0),
            "virtgate_connections_accepted_total",
        )
    };
    let before = accepted();

    let mut child = adam
        .cmd()
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start virtgate events");
    let events = LineReader::new(child.stdout.take().expect("stdout"));
    let _events = ChildGuard::new(child, "virtgate events");

    let (_fwd, uri, _err) = w.libvirt(adam, false, "shared");
    let dir = w.dir.path();
    let r = drive(dir, &uri, &["fd", &w.vnc.name, "0", "vnc"]);
    assert!(
        r["banner"].as_str().unwrap_or("").starts_with("RFB 003.00"),
        "{r}"
    );
    let r = drive(dir, &uri, &["fd", &w.spice.name, "0", "spice"]);
    assert_eq!(r["banner"], "REDQ", "{r}");

    // a domain stopped through virsh shows in the event stream
    let out = run(Command::new(system_bin("virsh", "libvirt-clients"))
        .arg("-c")
        .arg(&uri)
        .args(["destroy", &w.vnc_tcp.name]));
    let (o, e) = text(&out);
    assert!(out.status.success(), "virsh destroy: {o}{e}");
    let mut seen = Vec::new();
    loop {
        let line = events
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no stop event; events so far: {seen:?}"));
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("JSON event");
        if v["domain"] == w.vnc_tcp.name.as_str() && v["event"] == "stopped" {
            break;
        }
        seen.push(line);
    }
    assert_eq!(
        accepted() - before,
        1.0,
        "only the metrics request itself was a new connection"
    );
}
