//! `virtgate up` / `down`: one unlock and one gateway connection for every command of a
//! profile (whoami, list, info, vnc with a real VNC client, the serial console), and
//! everything that can go wrong with it: `up` twice, a socket whose `up` was SIGKILLed,
//! a socket of another user or that is no socket, the gateway restarting under it, and a
//! certificate revoked under it (which stops it for good, with a message), and a network
//! that goes silent and comes back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use virtgate_tests::fixture::gateway::toml_str;
use virtgate_tests::fixture::netcut::NetCut;
use virtgate_tests::{
    guest_kernel, metric, poll, text, ClientCert, ClientUser, Gateway, GatewayBuilder,
    GuestOptions, Pki, Qemu, QemuBuilder,
};

/// A gateway with one guest (serial console, VNC), alice with an encrypted key whose
/// passphrase command counts how often it runs.
struct SWorld {
    pki: Pki,
    alice: ClientCert,
    qemu: Qemu,
    gateway: Option<Gateway>,
    /// Each run of alice's passphrase command adds a line.
    unlocks: PathBuf,
    client: ClientUser,
    dir: tempfile::TempDir,
}

impl SWorld {
    fn start() -> SWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let alice = pki.client("alice", Some("alice secret"));
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let qemu = QemuBuilder::new("web1").kernel(&kernel).start(dir.path());
        let gateway = Self::builder(&pki, &qemu).start(&dir.path().join("gw"));
        let unlocks = dir.path().join("unlocks");
        let pass = alice.passphrase_file.clone().expect("encrypted key");
        let profile = format!(
            "url = {}\nca = {}\ncert = {}\nkey = {}\npassphrase_command = {}\n",
            toml_str(&gateway.url(0)),
            toml_str(&alice.ca.display().to_string()),
            toml_str(&alice.cert.display().to_string()),
            toml_str(&alice.key.display().to_string()),
            toml_str(&format!(
                "echo x >> {}; cat {}",
                unlocks.display(),
                pass.display()
            )),
        );
        let client = ClientUser::with_profile(&dir.path().join("laptop"), &profile);
        SWorld {
            pki,
            alice,
            qemu,
            gateway: Some(gateway),
            unlocks,
            client,
            dir,
        }
    }

    fn builder(pki: &Pki, qemu: &Qemu) -> GatewayBuilder {
        GatewayBuilder::new(pki)
            .crl(&pki.crl())
            .domain(qemu.domain_toml())
            .rule(&["alice"], &["web*"], "operator")
    }

    fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway running")
    }

    /// How often the key was unlocked so far.
    fn unlocks(&self) -> usize {
        std::fs::read_to_string(&self.unlocks)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Connections the gateway has accepted (one more for this question itself: curl).
    fn accepted(&self) -> f64 {
        let gw = self.gateway();
        metric(
            &self.alice,
            &self.pki.ca_pem,
            &gw.https(0),
            "virtgate_connections_accepted_total",
        )
    }
}

/// `virtgate doctor`'s output (whatever its exit status).
fn doctor(c: &ClientUser) -> String {
    let out = c.run(&["doctor"]);
    let (o, e) = text(&out);
    format!("{o}{e}")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// Beyond the modes, the proxy checks the peer's uid (SO_PEERCRED): with the folder and
/// socket opened to everyone for a moment, `nobody` still gets nothing; we still do.
fn another_user_is_refused_even_with_the_socket_open(w: &SWorld, c: &ClientUser) {
    let sock = c.shared_socket();
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    // every folder from the test's own down to the socket: searchable by others
    let mut opened = Vec::new();
    let mut dir = sock.parent();
    while let Some(d) = dir {
        if !d.starts_with(w.dir.path()) {
            break;
        }
        opened.push((d.to_owned(), mode(d)));
        set(d, mode(d) | 0o011);
        dir = d.parent();
    }
    set(&sock, 0o666);
    let whoami = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
            c
        } else {
            std::process::Command::new("curl")
        };
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "--unix-socket",
        ])
        .arg(&sock)
        .arg("http://localhost/v1/whoami");
        virtgate_tests::run(&mut cmd)
    };
    let theirs = whoami(true);
    let ours = whoami(false);
    set(&sock, 0o600);
    for (d, m) in opened {
        set(&d, m);
    }
    let (o, e) = text(&theirs);
    // it reached the socket (no "Permission denied", no "Couldn't connect") and was closed
    assert!(
        !theirs.status.success()
            && !o.contains("alice")
            && !e.contains("Permission denied")
            && !e.contains("Couldn't connect"),
        "another uid was served, or never reached the proxy: {o}{e}"
    );
    let (o, e) = text(&ours);
    assert!(o.contains("alice"), "our own uid: {o}{e}");
}

#[test]
fn one_unlock_and_one_connection_serve_every_command() {
    let w = SWorld::start();
    let c = &w.client;
    let (up, said) = c.up();
    assert!(
        said.contains("shares one connection") && said.contains("as alice"),
        "{said}"
    );
    assert!(said.contains("virtgate down -p t"), "{said}");
    assert_eq!(w.unlocks(), 1, "up unlocks the key once");
    assert_eq!(mode(&c.shared_socket()), 0o600);
    assert_eq!(mode(&c.runtime_folder()), 0o700);
    another_user_is_refused_even_with_the_socket_open(&w, c);

    let before = w.accepted();
    assert!(c.ok(&["whoami"]).contains("alice"));
    assert!(c.ok(&["list"]).contains("web1"));
    assert!(c.ok(&["info", "web1"]).contains("web1"));
    // a real VNC client through a forwarder on the shared connection
    let fwd = c.vnc("web1", &[]);
    let shot = w.dir.path().join("shot.png");
    virtgate_tests::fixture::vnc::snapshot(&fwd.vnc_target(), &shot)
        .expect("vncsnapshot through the shared connection");
    drop(fwd);
    // the serial console, both ways
    c.wait_guest_ready("web1");
    let after = w.accepted();
    assert_eq!(
        after - before,
        1.0,
        "only the metrics request itself was a new connection"
    );
    assert_eq!(w.unlocks(), 1, "no command unlocked the key again");

    // --no-shared connects directly (and so unlocks)
    assert!(c.ok(&["--no-shared", "whoami"]).contains("alice"));
    assert_eq!(w.unlocks(), 2);

    let out = c.run(&["down"]);
    let (_, e) = text(&out);
    assert!(out.status.success() && e.contains("has ended"), "{e}");
    assert!(
        up.wait_gone(Duration::from_secs(5)),
        "up still runs after down"
    );
    assert!(!c.shared_socket().exists(), "socket left behind");
    let out = c.run(&["down"]);
    let (_, e) = text(&out);
    assert!(
        out.status.success() && e.contains("no shared connection is up"),
        "{e}"
    );
    assert!(c.ok(&["whoami"]).contains("alice"));
    assert_eq!(
        w.unlocks(),
        3,
        "after down, commands connect (and unlock) themselves"
    );
}

#[test]
fn up_twice_a_killed_up_and_sockets_not_to_trust() {
    let w = SWorld::start();
    let c = &w.client;
    let (up, _) = c.up();
    let d = doctor(c);
    assert!(
        d.contains("✓ shared") && d.contains(&format!("(pid {}) shares one connection", up.pid)),
        "{d}"
    );
    let e = c.fails(&["up"]);
    assert!(
        e.contains("already shares a connection for profile `t`")
            && e.contains(&format!("pid {}", up.pid)),
        "{e}"
    );
    assert!(
        e.contains("hint: ") && e.contains("virtgate down -p t"),
        "{e}"
    );

    // SIGKILL: the socket stays, but nobody holds the lock; the next command says so,
    // removes it and connects directly
    up.signal("KILL");
    assert!(up.wait_gone(Duration::from_secs(5)));
    assert!(c.shared_socket().exists());
    let d = doctor(c);
    assert!(d.contains("! shared") && d.contains("that is gone"), "{d}");
    let out = c.run(&["whoami"]);
    let (o, e) = text(&out);
    assert!(out.status.success() && o.contains("alice"), "{o}{e}");
    assert!(e.contains("its `virtgate up` is gone"), "{e}");
    assert!(!c.shared_socket().exists());
    // and `up` starts again over what the killed one left
    let (again, _) = c.up();
    assert!(c.ok(&["whoami"]).contains("alice"));
    drop(again);
    poll("the socket removed by up", Duration::from_secs(5), || {
        (!c.shared_socket().exists()).then_some(())
    });

    // a socket of another user is never used
    let sock = c.shared_socket();
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).expect("chown");
    let e = c.fails(&["whoami"]);
    assert!(e.contains("belongs to uid 65534"), "{e}");
    assert!(e.contains("hint: ") && e.contains("--no-shared"), "{e}");
    assert!(c.ok(&["--no-shared", "whoami"]).contains("alice"));
    drop(listener);
    std::fs::remove_file(&sock).expect("rm");
    // nor a file that is not a socket
    std::fs::write(&sock, b"not a socket").expect("write");
    let e = c.fails(&["whoami"]);
    assert!(e.contains("it is not a socket"), "{e}");
    std::fs::remove_file(&sock).expect("rm");

    // `up` is about a profile, not a bare URL
    let e = c.fails(&["up", "--url", &w.gateway().url(0)]);
    assert!(e.contains("work on a profile"), "{e}");
}

#[test]
fn the_shared_connection_comes_back_after_a_gateway_restart() {
    let mut w = SWorld::start();
    let c = &w.client;
    let (up, _) = c.up();
    let addr = w.gateway().url(0);
    let addr = addr.trim_start_matches("virtgate://").to_owned();
    drop(w.gateway.take());
    // while the gateway is away, commands wait a little, then say what is going on
    let e = c.fails(&["whoami"]);
    assert!(e.contains("the shared connection to"), "{e}");
    assert!(
        e.contains("is down") && e.contains("keeps reconnecting"),
        "{e}"
    );
    // the same gateway comes back on the same port
    w.gateway = Some(
        SWorld::builder(&w.pki, &w.qemu)
            .listen(&[&addr])
            .start(&w.dir.path().join("gw2")),
    );
    let me = poll("whoami after the restart", Duration::from_secs(40), || {
        let out = c.run(&["whoami"]);
        out.status.success().then(|| text(&out).0)
    });
    assert!(me.contains("alice"), "{me}");
    assert_eq!(w.unlocks(), 1, "reconnected with the key unlocked once");
    let log = std::fs::read_to_string(c.runtime_folder().join("t.log")).unwrap_or_default();
    assert!(log.contains("reconnected"), "{log}");
    drop(up);
}

#[test]
fn a_revoked_certificate_stops_the_shared_connection_for_good() {
    let w = SWorld::start();
    let c = &w.client;
    let (up, _) = c.up();
    assert!(c.ok(&["whoami"]).contains("alice"));
    w.pki.revoke("alice");
    assert!(
        up.wait_gone(Duration::from_secs(30)),
        "up still runs after the revocation"
    );
    assert!(!c.shared_socket().exists(), "socket left behind");
    let d = doctor(c);
    assert!(
        d.contains("! shared") && d.contains("stopped for good") && d.contains("revoked"),
        "{d}"
    );
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains("note: the shared connection of profile `t` (virtgate up) ended")
            && e.contains("revoked"),
        "{e}"
    );
    // said once
    let e = c.fails(&["whoami"]);
    assert!(!e.contains("note: the shared connection"), "{e}");
    assert!(e.contains("revoked"), "{e}");
}

#[test]
fn the_shared_connection_comes_back_after_the_network_does() {
    let w = SWorld::start();
    let c = &w.client;
    let (up, _) = c.up();
    let log = c.runtime_folder().join("t.log");
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    {
        // a silent network (no RST, no FIN): up's keepalive notices and it starts reconnecting
        let _cut = NetCut::tcp_port(w.gateway().addrs[0].port());
        poll("up notices the cut", Duration::from_secs(30), || {
            logged("connection lost").then_some(())
        });
    }
    let me = poll(
        "whoami after the network is back",
        Duration::from_secs(60),
        || {
            let out = c.run(&["whoami"]);
            out.status.success().then(|| text(&out).0)
        },
    );
    assert!(me.contains("alice"), "{me}");
    assert!(
        logged("reconnected"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(w.unlocks(), 1, "reconnected with the key unlocked once");
    assert!(!up.wait_gone(Duration::ZERO), "up still runs");
}
