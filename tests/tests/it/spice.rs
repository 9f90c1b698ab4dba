//! SPICE through `virtgate spice` and `virtgate display`, against a real QEMU with
//! `-spice unix=on,addr=…,disable-ticketing=on` behind a real gateway: the domain lists
//! `spice`; every local connection (each SPICE channel) is its own tunnel stream and gets
//! QEMU's SPICE link answer (`REDQ`); the viewer role and a VNC-only domain are refused
//! before any URL; `display` ends when its viewer exits; and the real thing, `remote-viewer`
//! under Xvfb, shows the test guest's magenta screen through `virtgate display`. The
//! libvirt backend too: SPICE on a unix socket and on an autoport TCP port of a real
//! libvirtd's domains, and a domain without graphics refused by `display`.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::spice::{link_main, link_reply};
use virtgate_tests::{
    guest_kernel, guest_screen_fraction, metric, poll, ChildGuard, ClientCert, ClientUser,
    DomainSpec, Gateway, GatewayBuilder, Graphics, GuestOptions, Libvirtd, LineReader, Pki, Qemu,
    QemuBuilder, Xvfb,
};

/// A gateway with `web1` (VNC, SPICE, serial; the test guest with its magenta screen) and
/// `web2` (VNC and serial only); alice is operator and vic viewer on `*`.
struct SWorld {
    pki: Pki,
    alice_cert: ClientCert,
    alice: ClientUser,
    vic: ClientUser,
    gateway: Gateway,
    /// The QEMUs run as long as the world.
    _qemus: Vec<Qemu>,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

impl SWorld {
    fn start() -> SWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let web1 = QemuBuilder::new("web1")
            .kernel(&kernel)
            .spice(true)
            .start(dir.path());
        let web2 = QemuBuilder::new("web2").start(dir.path());
        assert!(web1.spice.is_some() && web2.spice.is_none());
        let gateway = GatewayBuilder::new(&pki)
            .domain(web1.domain_toml())
            .domain(web2.domain_toml())
            .rule(&["alice"], &["*"], "operator")
            .rule(&["vic"], &["*"], "viewer")
            .start(&dir.path().join("gw"));
        let alice_cert = pki.client("alice", None);
        let alice = ClientUser::new(&dir.path().join("alice"), &gateway.url(0), &alice_cert);
        let vic_cert = pki.client("vic", None);
        let vic = ClientUser::new(&dir.path().join("vic"), &gateway.url(0), &vic_cert);
        SWorld {
            pki,
            alice_cert,
            alice,
            vic,
            gateway,
            _qemus: vec![web1, web2],
            dir,
        }
    }

    fn tunnels_opened(&self) -> f64 {
        metric(
            &self.alice_cert,
            &self.pki.ca_pem,
            &self.gateway.https(0),
            "virtgate_tunnels_opened_total",
        )
    }
}

/// A running forwarder (`virtgate spice|display|vnc …`) and the URL it printed first.
struct Fwd {
    url: String,
    child: ChildGuard,
    stderr: LineReader,
}

impl Fwd {
    /// Start `cmd` and wait for its first stdout line, which must start with `scheme://`.
    fn start(mut cmd: Command, scheme: &str) -> Fwd {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start virtgate");
        let stdout = LineReader::new(child.stdout.take().expect("stdout"));
        let stderr = LineReader::new(child.stderr.take().expect("stderr"));
        let child = ChildGuard::new(child, format!("virtgate ({scheme})"));
        let Some(line) = stdout.next_line(Duration::from_secs(30)) else {
            panic!("virtgate printed no URL; stderr: {:?}", stderr.drain_now());
        };
        let url = line.trim().to_owned();
        assert!(
            url.starts_with(&format!("{scheme}://")),
            "first line is not a {scheme}:// URL: {line:?}"
        );
        Fwd { url, child, stderr }
    }

    /// The local endpoint of the URL.
    fn addr(&self) -> SocketAddr {
        let rest = self.url.split_once("://").expect("URL").1;
        rest.parse()
            .unwrap_or_else(|e| panic!("{:?} is not HOST:PORT: {e}", self.url))
    }
}

/// Connect to `addr`, send a SPICE link header and return the first 16 bytes of the
/// answer (SpiceLinkReply header: `REDQ`, major, minor, size).
fn spice_hello(addr: SocketAddr) -> [u8; 16] {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    link_reply(s, &addr.to_string())
}

#[test]
fn list_shows_spice_and_every_channel_is_its_own_stream() {
    let w = SWorld::start();
    let list: Value = serde_json::from_str(&w.alice.ok(&["list", "--json"])).unwrap();
    let consoles = |name: &str| -> Vec<String> {
        let d = list["domains"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name))
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        serde_json::from_value(d["consoles"].clone()).unwrap()
    };
    assert_eq!(consoles("web1"), ["vnc", "spice", "serial"]);
    assert_eq!(consoles("web2"), ["vnc", "serial"]);
    let table = w.alice.ok(&["list"]);
    assert!(table.contains("vnc,spice,serial"), "{table}");

    let before = w.tunnels_opened();
    let mut c = w.alice.cmd();
    c.args(["spice", "web1", "--no-viewer"]);
    let fwd = Fwd::start(c, "spice");
    assert!(fwd.url.starts_with("spice://127.0.0.1:"), "{}", fwd.url);
    let addr = fwd.addr();
    // Two channels at once, as a SPICE client opens them: each gets QEMU's answer.
    let channels: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || spice_hello(addr)))
        .collect();
    for ch in channels {
        let reply = ch.join().expect("channel thread");
        assert_eq!(&reply[..4], b"REDQ", "{reply:?}");
        assert_eq!(
            &reply[4..8],
            &2u32.to_le_bytes(),
            "SPICE major 2: {reply:?}"
        );
    }
    let opened = w.tunnels_opened() - before;
    assert!(opened >= 2.0, "two channels -> two tunnels, got {opened}");
    let notes = fwd.stderr.drain_now().join("\n");
    assert!(
        notes.contains("remote-viewer spice://127.0.0.1:"),
        "{notes}"
    );

    // The local end may be IPv6.
    let mut c = w.alice.cmd();
    c.args(["spice", "web1", "--no-viewer", "--listen", "[::1]:0"]);
    let fwd6 = Fwd::start(c, "spice");
    assert!(fwd6.url.starts_with("spice://[::1]:"), "{}", fwd6.url);
    assert_eq!(&spice_hello(fwd6.addr())[..4], b"REDQ");
}

#[test]
fn refusals_come_before_any_url_and_say_why() {
    let w = SWorld::start();
    // The viewer role may list but not open consoles.
    for args in [
        ["spice", "web1", "--no-viewer"],
        ["display", "web1", "--no-viewer"],
    ] {
        let out = w.vic.run(&args);
        let (o, e) = virtgate_tests::text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {o} {e}");
        assert!(o.is_empty(), "no URL for a refused user: {o:?}");
        assert!(e.contains("viewer") && e.contains("operator"), "{e}");
    }
    // A VNC-only domain: `spice` refuses and points at what it has.
    let e = w.alice.fails(&["spice", "web2", "--no-viewer"]);
    assert!(e.contains("domain `web2` has no SPICE console"), "{e}");
    assert!(
        e.contains("hint: ") && e.contains("virtgate vnc web2"),
        "{e}"
    );
    let e = w
        .alice
        .fails(&["display", "web2", "--protocol", "spice", "--no-viewer"]);
    assert!(e.contains("no SPICE console"), "{e}");
    // `display` picks VNC there, and SPICE where there is SPICE.
    let mut c = w.alice.cmd();
    c.args(["display", "web2", "--no-viewer"]);
    let vnc = Fwd::start(c, "vnc");
    let mut banner = [0u8; 12];
    TcpStream::connect(vnc.addr())
        .and_then(|mut s| s.read_exact(&mut banner))
        .expect("VNC banner");
    assert_eq!(&banner, b"RFB 003.008\n");
    let mut c = w.alice.cmd();
    c.args(["display", "web1", "--no-viewer"]);
    let spice = Fwd::start(c, "spice");
    assert_eq!(&spice_hello(spice.addr())[..4], b"REDQ");
    // `vnc` prints the classic HOST::PORT form too, on stderr.
    let mut c = w.alice.cmd();
    c.args(["vnc", "web1", "--no-viewer"]);
    let v = Fwd::start(c, "vnc");
    let port = v.addr().port();
    let notes = poll("the HOST::PORT note", Duration::from_secs(10), || {
        let n = v.stderr.drain_now().join("\n");
        n.contains("::").then_some(n)
    });
    assert!(notes.contains(&format!("127.0.0.1::{port}")), "{notes}");
}

/// A viewer script for `$VIRTGATE_VIEWER`: connects to the spice:// URL it is given, does
/// the SPICE link exchange, writes the 4-byte answer to `got`, stays past the launcher
/// grace period and exits 0.
fn viewer_script(dir: &Path, got: &Path) -> PathBuf {
    let script = dir.join("viewer.sh");
    let link: String = link_main().iter().map(|b| format!("\\{b:03o}")).collect();
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nset -e\nhp=\"${{1#spice://}}\"\nexec 3<>\"/dev/tcp/${{hp%:*}}/${{hp##*:}}\"\n\
             printf '{link}' >&3\nhead -c 4 <&3 > {got}\nsleep 4\nexit 0\n",
            got = got.display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();
    script
}

#[test]
fn display_ends_with_status_0_when_its_viewer_exits() {
    let w = SWorld::start();
    let got = w.dir.path().join("viewer-got");
    let script = viewer_script(w.dir.path(), &got);
    let mut c = w.alice.cmd();
    c.args(["display", "web1"])
        .env("VIRTGATE_VIEWER", script.display().to_string());
    let mut fwd = Fwd::start(c, "spice");
    let seen = poll("the viewer's SPICE answer", Duration::from_secs(20), || {
        std::fs::read(&got).ok().filter(|b| b.len() == 4)
    });
    assert_eq!(seen, b"REDQ");
    // The script exits 0 after 4 s (past the 3 s launcher grace): the forwarding ends.
    let status = fwd
        .child
        .wait_deadline(Duration::from_secs(30))
        .expect("virtgate display ends when its viewer exits");
    assert!(status.success(), "{status}");
    let notes = fwd.stderr.drain_now().join("\n");
    assert!(notes.contains("the viewer exited"), "{notes}");
}

#[test]
fn display_without_a_viewer_says_how_to_get_one_and_keeps_forwarding() {
    let w = SWorld::start();
    let mut c = w.alice.cmd();
    c.args(["display", "web1"])
        .env("PATH", w.dir.path().join("empty-bin"))
        .env_remove("VIRTGATE_VIEWER");
    let mut fwd = Fwd::start(c, "spice");
    let notes = poll("the install hint", Duration::from_secs(10), || {
        let n = fwd.stderr.drain_now().join("\n");
        n.contains("no viewer found").then_some(n)
    });
    assert!(
        notes.contains("apt install virt-viewer") && notes.contains("dnf install virt-viewer"),
        "{notes}"
    );
    assert_eq!(&spice_hello(fwd.addr())[..4], b"REDQ");
    assert!(fwd.child.try_status().is_none(), "still forwarding");
    fwd.child.signal("INT");
    let status = fwd
        .child
        .wait_deadline(Duration::from_secs(10))
        .expect("Ctrl-C ends it");
    assert!(status.success(), "{status}");
}

#[test]
fn remote_viewer_under_xvfb_shows_the_guest_through_display() {
    let w = SWorld::start();
    let x = Xvfb::start(&w.dir.path().join("x"));
    // `virtgate display` as alice, on the X display: it starts remote-viewer itself.
    let mut c = w.alice.cmd();
    let xenv = x.command("true");
    for (k, v) in xenv.get_envs() {
        // The client's own config stays; the rest is the X client's environment.
        if k == "HOME" {
            continue;
        }
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(["display", "web1"]).env_remove("VIRTGATE_VIEWER");
    let fwd = Fwd::start(c, "spice");
    let png = x.wait_for_screen(
        "the guest's magenta screen in remote-viewer",
        Duration::from_secs(90),
        |png| guest_screen_fraction(png) > 0.1,
    );
    let share = guest_screen_fraction(&png);
    assert!(share > 0.1, "{share}");
    fwd.child.signal("INT");
}

#[test]
fn libvirt_domains_offer_spice_on_a_socket_and_on_tcp() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let lv = Libvirtd::start(&dir.path().join("lv"));
    let sock = lv.define_and_start(&DomainSpec::new("ss").graphics(Graphics::SpiceSocket));
    let tcp = lv.define_and_start(&DomainSpec::new("st").graphics(Graphics::SpiceTcp));
    let none = lv.define_and_start(&DomainSpec::new("sn").graphics(Graphics::None));
    let gateway = GatewayBuilder::new(&pki)
        .libvirt(&lv.uri, &lv.socket, &lv.socket_ro)
        .rule(&["alice"], &["*"], "operator")
        .start(&dir.path().join("gw"));
    let cert = pki.client("alice", None);
    let alice = ClientUser::new(&dir.path().join("alice"), &gateway.url(0), &cert);

    let list: Value = serde_json::from_str(&alice.ok(&["list", "--json"])).unwrap();
    let consoles = |name: &str| -> Value {
        list["domains"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name))
            .map(|d| d["consoles"].clone())
            .unwrap_or_else(|| panic!("{name} not listed: {list}"))
    };
    assert_eq!(consoles(&sock.name), serde_json::json!(["spice", "serial"]));
    assert_eq!(consoles(&tcp.name), serde_json::json!(["spice", "serial"]));
    assert_eq!(consoles(&none.name), serde_json::json!(["serial"]));

    for d in [&sock, &tcp] {
        let mut c = alice.cmd();
        c.args(["spice", &d.name, "--no-viewer"]);
        let fwd = Fwd::start(c, "spice");
        let addr = fwd.addr();
        let channels: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || spice_hello(addr)))
            .collect();
        for ch in channels {
            assert_eq!(&ch.join().expect("channel")[..4], b"REDQ", "{}", d.name);
        }
    }
    let e = alice.fails(&["display", &none.name, "--no-viewer"]);
    assert!(
        e.contains(&format!("domain `{}` has no graphical console", none.name)),
        "{e}"
    );
    assert!(e.contains("hint: "), "{e}");
    let e = alice.fails(&["spice", &none.name, "--no-viewer"]);
    assert!(e.contains("has no SPICE console"), "{e}");
}
