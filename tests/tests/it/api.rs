//! The management API through the real client and through curl, over IPv4 and IPv6, on
//! separate listeners and on one dual-stack `[::]` listener; graceful stop.

use std::time::Duration;

use serde_json::Value;
use virtgate_tests::{curl, text, ClientUser, GatewayBuilder, Pki, QemuBuilder};

use crate::World;

fn domains(v: &Value) -> Vec<Value> {
    v.get("domains")
        .and_then(Value::as_array)
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no domain list in {v}"))
}

#[test]
fn whoami_list_info_over_ipv4_and_ipv6() {
    let w = World::start(|g| g);
    for (i, family) in [(0, "127.0.0.1"), (1, "[::1]")] {
        let c = w.client(&format!("c{i}"), i, &w.alice);
        assert!(w.gateway.url(i).contains(family));

        let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
        assert_eq!(who["user"], "alice", "{who}");
        assert_eq!(who["method"], "certificate", "{who}");

        let human = c.ok(&["whoami"]);
        assert!(
            human.contains("alice") && human.contains("certificate"),
            "{human}"
        );

        let list: Value = serde_json::from_str(&c.ok(&["list", "--json"])).unwrap();
        let d = domains(&list);
        assert_eq!(d.len(), 1, "{list}");
        assert_eq!(d[0]["name"], "web1");
        assert_eq!(d[0]["state"], "running");

        let table = c.ok(&["list"]);
        assert!(
            table.contains("web1") && table.contains("running"),
            "{table}"
        );

        let info: Value = serde_json::from_str(&c.ok(&["info", "web1", "--json"])).unwrap();
        assert_eq!(info["name"], "web1");
        assert!(
            info["consoles"].as_array().unwrap().contains(&"vnc".into()),
            "{info}"
        );
    }
}

#[test]
fn curl_gets_domains_over_http2_and_http1() {
    let w = World::start(|g| g);
    for (i, proto, want) in [(0, "--http2", "2"), (1, "--http1.1", "1.1")] {
        let out = curl(
            &w.alice,
            &w.pki.ca_pem,
            &format!("{}/v1/domains", w.gateway.https(i)),
            &[
                proto,
                "-w",
                "\n%{http_version} %{http_code} %{content_type}",
            ],
        );
        let (o, e) = text(&out);
        assert!(out.status.success(), "curl failed: {e}");
        let (body, meta) = o.rsplit_once('\n').unwrap();
        assert!(meta.starts_with(&format!("{want} 200")), "{meta}");
        assert!(meta.contains("application/json"), "{meta}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(domains(&v)[0]["name"], "web1");
    }
}

#[test]
fn dual_stack_listener_serves_ipv4_and_ipv6_clients() {
    let w = World::start(|g| g.listen(&["[::]:0"]));
    let port = w.gateway.addrs[0].port();
    for (i, url) in [
        format!("virtgate://127.0.0.1:{port}"),
        format!("virtgate://[::1]:{port}"),
        format!("virtgate://localhost:{port}"),
    ]
    .into_iter()
    .enumerate()
    {
        let c = ClientUser::new(&w.dir.path().join(format!("c{i}")), &url, &w.alice);
        let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
        assert_eq!(who["user"], "alice", "{url}: {who}");
    }
}

#[test]
fn sigterm_stops_gateway_and_the_qemu_it_started() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let alice = pki.client("alice", None);
    let qb = QemuBuilder::new("owned");
    let (_, qmp, _, _) = qb.command_line(dir.path());
    let mut gw = GatewayBuilder::new(&pki)
        .domain(qb.supervised_toml(dir.path()))
        .rule(&["alice"], &["*"], "viewer")
        .start(&dir.path().join("gw"));
    let c = ClientUser::new(&dir.path().join("c"), &gw.url(0), &alice);
    let list = c.ok(&["list", "--json"]);
    assert!(
        list.contains("\"running\""),
        "supervised QEMU should run: {list}"
    );
    assert!(std::os::unix::net::UnixStream::connect(&qmp).is_ok());

    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("gateway did not stop on SIGTERM; log:\n{}", gw.log()));
    assert!(status.success(), "exit {status}; log:\n{}", gw.log());
    assert!(
        std::os::unix::net::UnixStream::connect(&qmp).is_err(),
        "the QEMU the gateway started must be gone after it stops"
    );
    let out = c.run(&["list"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "gateway is gone, list must fail"
    );
}

#[test]
fn metrics_are_prometheus_text_that_promtool_accepts() {
    let w = World::start(|g| g);
    // some traffic first: a tunnel, a refused handshake
    let c = w.client("alice", 0, &w.alice);
    let fwd = c.vnc("web1", &[]);
    virtgate_tests::fixture::vnc::snapshot(&fwd.vnc_target(), &w.dir.path().join("s.jpg"))
        .expect("a VNC snapshot through the tunnel");
    let stranger = Pki::new(w.dir.path(), "other").client("mallory", None);
    let _ = curl(
        &stranger,
        &w.pki.ca_pem,
        &format!("{}/v1/whoami", w.gateway.https(0)),
        &[],
    );
    let out = curl(
        &w.alice,
        &w.pki.ca_pem,
        &format!("{}/v1/metrics", w.gateway.https(0)),
        &[],
    );
    let (body, e) = text(&out);
    assert!(out.status.success(), "{e}");
    let file = w.dir.path().join("metrics.txt");
    std::fs::write(&file, &body).expect("write metrics");
    let check = virtgate_tests::run(
        std::process::Command::new(virtgate_tests::system_bin("promtool", "prometheus"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).expect("metrics file")),
    );
    let (o, e) = text(&check);
    assert!(check.status.success(), "promtool: {o}{e}\n{body}");
    for family in [
        "virtgate_connections_open",
        "virtgate_tunnels_opened_total{kind=\"vnc\"}",
        "virtgate_tunnels_open{kind=\"libvirt_fd\"}",
        "virtgate_authentication_failures_total{method=\"tls\"}",
        "virtgate_authentication_failures_total{method=\"kerberos\"}",
        "virtgate_reloads_total{outcome=\"ok\"}",
        "virtgate_crl_next_update_timestamp_seconds",
    ] {
        assert!(body.contains(family), "{family} in\n{body}");
    }
    let opened = virtgate_tests::metric(
        &w.alice,
        &w.pki.ca_pem,
        &w.gateway.https(0),
        "virtgate_tunnels_opened_total{kind=\"vnc\"}",
    );
    assert!(opened >= 1.0, "{opened}");
    let failed = virtgate_tests::metric(
        &w.alice,
        &w.pki.ca_pem,
        &w.gateway.https(0),
        "virtgate_authentication_failures_total{method=\"tls\"}",
    );
    assert!(failed >= 1.0, "{failed}");
    drop(fwd);
}

#[test]
fn a_connection_that_ends_takes_its_console_tunnels_with_it() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let alice = pki.client("alice", None);
    let kernel = virtgate_tests::guest_kernel(dir.path(), virtgate_tests::GuestOptions::default());
    let qemu = QemuBuilder::new("web1").kernel(&kernel).start(dir.path());
    let gw = GatewayBuilder::new(&pki)
        .domain(qemu.domain_toml())
        .rule(&["alice"], &["web*"], "operator")
        .start(&dir.path().join("gw"));
    let serial_open = || {
        virtgate_tests::metric(
            &alice,
            &pki.ca_pem,
            &gw.https(0),
            "virtgate_tunnels_open{kind=\"serial\"}",
        )
    };
    // a client opens the serial console (QEMU takes one client at a time) and goes away
    {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut h2 =
                virtgate_tests::fixture::h2::H2::connect(gw.addrs[0], &alice, &pki.ca_pem).await;
            let serial = h2.tunnel("/v1/domains/web1/serial").await;
            virtgate_tests::poll("the tunnel counted", Duration::from_secs(10), || {
                (serial_open() == 1.0).then_some(())
            });
            // the client lets go of the stream and of the connection: h2 resets the
            // stream and closes the connection politely (GOAWAY); the gateway sees only
            // an end of file on the tunnel
            drop(serial);
            drop(h2);
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
    }
    virtgate_tests::poll(
        "the serial tunnel closed with its connection",
        Duration::from_secs(10),
        || (serial_open() == 0.0).then_some(()),
    );
    // and the console can be opened again: the old tunnel no longer holds QEMU's socket
    let c = ClientUser::new(&dir.path().join("alice"), &gw.url(0), &alice);
    let mut console = c.console("web1");
    console.send(b"again\n");
    console.wait_for("again", Duration::from_secs(20));
    assert!(console.leave().success());
}
