//! Reloading the gateway without dropping anyone: a revocation written by the real
//! `virtgate-pki` bites alice's live connection (no signal: the CRL file is watched) while
//! bob's serial console keeps echoing on his; rules taken away by `virtgated reload` close
//! the streams they allowed; every bad configuration is refused with its error and hint
//! while the old one stays in force; a SIGHUP storm while tunnels carry data; `reload` with
//! no gateway running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use virtgate_tests::fixture::h2::{Tunnel, H2};
use virtgate_tests::{
    bin, guest_kernel, metric, run, text, ClientCert, ClientUser, Gateway, GatewayBuilder,
    GuestOptions, Pki, Qemu, QemuBuilder,
};

/// A QEMU domain `web1` (serial echo), a gateway with a CRL, a control socket and an audit
/// log; alice and bob are operators on `web*`.
struct RWorld {
    pki: Pki,
    alice: ClientCert,
    bob: ClientCert,
    gateway: Gateway,
    builder_text: String,
    audit: PathBuf,
    _qemu: Qemu,
    dir: tempfile::TempDir,
}

impl RWorld {
    fn start() -> RWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let crl = pki.crl();
        let alice = pki.client("alice", None);
        let bob = pki.client("bob", None);
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let qemu = QemuBuilder::new("web1").kernel(&kernel).start(dir.path());
        let audit = dir.path().join("audit.jsonl");
        let builder = GatewayBuilder::new(&pki)
            .crl(&crl)
            .control(&dir.path().join("control.sock"))
            .domain(qemu.domain_toml())
            .rule(&["alice"], &["web*"], "operator")
            .rule(&["bob"], &["web*"], "operator")
            .audit(&audit);
        let builder_text = builder.config_text();
        let gateway = builder.start(&dir.path().join("gw"));
        RWorld {
            pki,
            alice,
            bob,
            gateway,
            builder_text,
            audit,
            _qemu: qemu,
            dir,
        }
    }

    /// A raw HTTP/2 connection as `cert`.
    async fn connect(&self, cert: &ClientCert) -> H2 {
        H2::connect(self.gateway.addrs[0], cert, &self.pki.ca_pem).await
    }

    /// Bob on the serial console, alice on the screen (QEMU's serial socket takes one
    /// client at a time), each on a connection of their own, both working.
    async fn streams(&self) -> Streams {
        let mut bob = self.connect(&self.bob).await;
        let mut bob_serial = bob.tunnel("/v1/domains/web1/serial").await;
        echo(&mut bob_serial, "bob before").await;
        let mut alice = self.connect(&self.alice).await;
        let mut alice_vnc = alice.tunnel("/v1/domains/web1/vnc").await;
        banner(&mut alice_vnc).await;
        Streams {
            bob,
            bob_serial,
            alice,
            alice_vnc,
        }
    }

    /// Replace the gateway's config file.
    fn write_config(&self, text: &str) {
        std::fs::write(&self.gateway.config, text).expect("rewrite the config");
    }

    fn metric(&self, name: &str) -> f64 {
        metric(&self.bob, &self.pki.ca_pem, &self.gateway.https(0), name)
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Two users' connections with a stream each ([`RWorld::streams`]).
struct Streams {
    bob: H2,
    bob_serial: Tunnel,
    alice: H2,
    alice_vnc: Tunnel,
}

/// Send a line on a serial tunnel and wait for the guest's echo.
async fn echo(t: &mut Tunnel, line: &str) {
    t.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write to the console");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&seen).contains(line) {
            let n = t.read(&mut buf).await.expect("read the console");
            assert!(n > 0, "the console closed while waiting for {line:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no echo of {line:?}: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// Read a VNC server's banner on a fresh tunnel.
async fn banner(t: &mut Tunnel) {
    let mut b = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(20), t.read_exact(&mut b))
        .await
        .expect("a VNC banner in time")
        .expect("read the VNC banner");
    assert_eq!(&b[..4], b"RFB ");
}

/// Wait until a tunnel ends (EOF or error); returns how long it took.
async fn ended(t: &mut Tunnel, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(within, async {
        loop {
            match t.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the tunnel was still open after {within:?}");
    started.elapsed()
}

/// `virtgated reload`: (success, stdout + stderr).
fn reload(gw: &Gateway) -> (bool, String) {
    let out = gw.reload();
    let (o, e) = text(&out);
    (out.status.success(), format!("{o}{e}"))
}

#[test]
fn revocation_bites_a_live_connection_while_another_user_keeps_streaming() {
    let w = RWorld::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // the connections stay open to the end (`_bob`, `_alice`)
        let Streams {
            bob: _bob,
            mut bob_serial,
            alice: _alice,
            mut alice_vnc,
        } = w.streams().await;

        // revoke alice with the real CA tool: it rewrites the CRL file the gateway reads
        let revoked = Instant::now();
        w.pki.revoke("alice");
        let took = ended(&mut alice_vnc, Duration::from_secs(15)).await;
        eprintln!(
            "alice's tunnel ended {:?} after the CRL was written ({:?} since the revoke began)",
            took,
            revoked.elapsed()
        );
        // bob's console never stopped
        for i in 0..5 {
            echo(&mut bob_serial, &format!("bob after {i}")).await;
        }
    });
    // alice cannot come back
    let alice = ClientUser::new(&w.dir.path().join("alice"), &w.gateway.url(0), &w.alice);
    let e = alice.fails(&["whoami"]);
    assert!(e.contains("revoked"), "{e}");
    // audited: her connection closed on reload, her new attempt refused
    let audit = w.audit_lines();
    assert!(
        audit.iter().any(|l| l["user"] == "alice"
            && l["action"] == "connection"
            && l["decision"] == "deny"
            && l["outcome"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("revoked")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "connect"
                && l["outcome"].as_str().unwrap_or("").contains("revoked")),
        "{audit:#?}"
    );
    assert!(audit.iter().any(|l| l["action"] == "reload"), "{audit:#?}");
    assert!(w.metric("virtgate_reloads_total{outcome=\"ok\"}") >= 1.0);
}

#[test]
fn rules_taken_away_close_their_streams_and_reload_reports_it() {
    let w = RWorld::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Streams {
            mut bob,
            mut bob_serial,
            mut alice,
            mut alice_vnc,
        } = w.streams().await;

        // bob's rule goes; alice's stays
        let without_bob = w.builder_text.replace(
            "[[rule]]\nwho = [\"bob\"]\ndomains = [\"web*\"]\nrole = \"operator\"\n",
            "",
        );
        assert_ne!(
            without_bob, w.builder_text,
            "the rule text to remove was not found"
        );
        w.write_config(&without_bob);
        let (ok, said) = reload(&w.gateway);
        assert!(ok, "{said}");
        assert!(said.contains("1 stream(s)"), "{said}");
        let took = ended(&mut bob_serial, Duration::from_secs(5)).await;
        eprintln!("bob's stream ended {took:?} after `virtgated reload` returned");
        // alice's stream is untouched: a second banner read on a fresh stream works too
        let mut again = alice.tunnel("/v1/domains/web1/vnc").await;
        banner(&mut again).await;
        alice_vnc
            .write_all(b"RFB 003.008\n")
            .await
            .expect("alice's VNC stream still takes bytes");
        // bob's connection itself is still there: he just sees nothing now
        let (status, _) = bob.get("/v1/domains/web1").await;
        assert_eq!(status, 404);
    });
    let audit = w.audit_lines();
    assert!(
        audit.iter().any(|l| l["user"] == "bob"
            && l["action"] == "serial"
            && l["decision"] == "deny"
            && l["outcome"]
                .as_str()
                .unwrap_or("")
                .contains("closed on reload")),
        "{audit:#?}"
    );
}

/// A file under the test's folder with `text`.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write a test file");
    p
}

#[test]
fn bad_configurations_are_refused_and_the_old_one_stays() {
    let w = RWorld::start();
    let d = w.dir.path();
    let good = std::fs::read_to_string(&w.gateway.config).expect("config");
    let other = Pki::new(d, "other");
    let expired = w.pki.expired_server(d);
    let unreadable = file(d, "crl-unreadable.pem", "x");
    // root reads everything: an unreadable CRL is a folder where the file should be
    std::fs::remove_file(&unreadable).expect("rm");
    std::fs::create_dir(&unreadable).expect("mkdir");
    let swap = |from: &Path, to: &Path| {
        good.replace(&from.display().to_string(), &to.display().to_string())
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a syntax error",
            good.replace("[listen]", "[listen"),
            "gateway.toml",
            "hint:",
        ),
        (
            "an unknown key",
            good.replace("[tls]\n", "[tls]\ncertificate = \"x\"\n"),
            "certificate",
            "valid keys",
        ),
        (
            "a missing certificate",
            swap(&w.pki.server_cert, &d.join("nope.pem")),
            "nope.pem",
            "hint:",
        ),
        (
            "a key that is not the certificate's",
            swap(&w.pki.server_key, &other.server_key),
            "tls",
            "hint:",
        ),
        (
            "an unreadable CRL",
            swap(&w.pki.dir.join("crl.pem"), &unreadable),
            "crl",
            "hint:",
        ),
        (
            "an expired server certificate",
            swap(&w.pki.server_cert, &expired.0).replace(
                &w.pki.server_key.display().to_string(),
                &expired.1.display().to_string(),
            ),
            "expired",
            "issue a new one",
        ),
        (
            "a rule naming an unknown group",
            good.replace("who = [\"alice\"]", "who = [\"group:no-such-group-vg\"]"),
            "no-such-group-vg",
            "groupadd",
        ),
    ];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut bob = w.connect(&w.bob).await;
        let mut bob_serial = bob.tunnel("/v1/domains/web1/serial").await;
        for (what, text, error_word, hint_word) in &cases {
            w.write_config(text);
            let (ok, said) = reload(&w.gateway);
            assert!(!ok, "{what}: reload succeeded:\n{said}");
            assert!(
                said.contains("error:") && said.contains(error_word),
                "{what}: {said}"
            );
            assert!(said.contains(hint_word), "{what}: no hint: {said}");
            // the old configuration is in force: bob's console and a new login work
            echo(&mut bob_serial, &format!("after {what}")).await;
            let mut again = w.connect(&w.alice).await;
            let (status, body) = again.get("/v1/whoami").await;
            assert_eq!(status, 200, "{what}: {body}");
        }
        // the gateway itself refuses too when asked by signal (check-config in the
        // reload command is not the only guard): its log says why
        w.write_config(&cases[6].1);
        w.gateway.signal("HUP");
        virtgate_tests::poll("the refusal in the log", Duration::from_secs(10), || {
            w.gateway.log().contains("reload refused").then_some(())
        });
        echo(&mut bob_serial, "after SIGHUP").await;
    });
    assert!(w.metric("virtgate_reloads_total{outcome=\"refused\"}") >= 1.0);
    w.write_config(&good);
    let (ok, said) = reload(&w.gateway);
    assert!(ok, "{said}");
}

#[test]
fn a_sighup_storm_while_tunnels_carry_data() {
    let mut w = RWorld::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut bob = w.connect(&w.bob).await;
        let mut serial = bob.tunnel("/v1/domains/web1/serial").await;
        let storm = {
            let pid = w.gateway.pid();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let _ = std::process::Command::new("kill")
                        .args(["-HUP", &pid.to_string()])
                        .status();
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        for i in 0..10 {
            echo(&mut serial, &format!("storm {i}")).await;
        }
        storm.join().expect("storm thread");
        echo(&mut serial, "after the storm").await;
    });
    assert!(w.gateway.is_running(), "the gateway survived");
    let ok = w.metric("virtgate_reloads_total{outcome=\"ok\"}");
    eprintln!("20 SIGHUPs gave {ok} reloads");
    assert!((1.0..=20.0).contains(&ok), "{ok}");
    // a stopped gateway leaves no control socket behind
    let control = w.dir.path().join("control.sock");
    assert!(control.exists());
    // only the gateway's user may ask it to reload (docs/SECURITY.md, position 6)
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&control)
            .expect("control.sock")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "control.sock mode {mode:o}");
    w.gateway.signal("TERM");
    w.gateway
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
    assert!(!control.exists(), "control.sock removed at exit");
}

#[test]
fn reload_without_a_running_gateway_says_so() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let config = GatewayBuilder::new(&pki)
        .control(&dir.path().join("control.sock"))
        .write_config(&dir.path().join("gw"));
    let out = run(std::process::Command::new(bin("virtgated"))
        .arg("--config")
        .arg(&config)
        .arg("reload"));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(
        e.contains("no running gateway") && e.contains("control.sock"),
        "{e}"
    );
    assert!(e.contains("hint: start it"), "{e}");
    // without a control socket: the pidfile is looked at
    let config = GatewayBuilder::new(&pki).write_config(&dir.path().join("gw2"));
    let out = run(std::process::Command::new(bin("virtgated"))
        .arg("--config")
        .arg(&config)
        .arg("--pidfile")
        .arg(dir.path().join("none.pid"))
        .arg("reload"));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(e.contains("none.pid"), "{e}");
}
