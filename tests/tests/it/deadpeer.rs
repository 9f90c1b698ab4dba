//! Dead, idle and departing peers: a client frozen with SIGSTOP (its kernel keeps ACKing)
//! loses its tunnels on the gateway within the 15 s; a network cut (iptables on
//! loopback, [`NetCut`]) frees the tunnels on the gateway AND ends `virtgate vnc`,
//! `console`, `events` and `libvirt` with "the gateway stopped answering" within 15 s;
//! `limits.idle_timeout_s` closes a connection without streams and leaves one with a stream
//! alone; over SSH the same cut (of sshd's port) ends the client and frees the gateway in
//! time. Also how clients leave or cannot come in: Ctrl-] on the console frees the tunnel
//! at once and is no error in the gateway log (a debug line "the client went away"), a
//! certificate that is not valid yet says so and blames the clock, and `--url` keeps the
//! default profile's files.
//!
//! The seconds measured are printed (`deadpeer: …`); only the bound is asserted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use virtgate_tests::fixture::netcut::NetCut;
use virtgate_tests::{
    metric, poll, ChildGuard, ClientCert, ClientUser, DomainSpec, Forwarder, GatewayBuilder,
    Libvirtd, LineReader, Pki,
};

use crate::World;

/// The bound: a frozen or vanished peer is given up within this.
const BOUND: Duration = Duration::from_secs(15);

/// How long a test waits before it calls something hung (well past [`BOUND`]).
const PATIENCE: Duration = Duration::from_secs(60);

/// A VNC client connected through a forwarder: the server's banner has arrived, so the
/// tunnel stands.
fn vnc_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect to the forwarder");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut banner = [0u8; 12];
    s.read_exact(&mut banner)
        .expect("RFB banner through the tunnel");
    assert_eq!(&banner, b"RFB 003.008\n");
    s
}

/// Every line an exited process printed, as one text (read to the end of its output).
fn lines(r: &LineReader, seen: &mut Vec<String>) -> String {
    while let Some(line) = r.next_line(Duration::from_secs(10)) {
        seen.push(line);
    }
    seen.join("\n")
}

/// When `child` exits (after `t0`), polled alongside other things.
fn exited(child: &mut ChildGuard, t0: Instant, at: &mut Option<(Duration, i32)>) {
    if at.is_none() {
        if let Some(s) = child.try_status() {
            *at = Some((t0.elapsed(), s.code().unwrap_or(-1)));
        }
    }
}

#[test]
fn frozen_client_loses_its_tunnels_within_15_s() {
    let w = World::start(|g| g);
    let (ca, base) = (&w.pki.ca_pem, w.gateway.https(0));
    let tunnels = || metric(&w.alice, ca, &base, "virtgate_tunnels_open");
    let c = w.client("c", 0, &w.alice);
    let mut fwd = c.vnc("web1", &[]);
    let _viewer = vnc_client(fwd.addr);
    // and a serial console: QEMU does not read it while the guest does not, so only a
    // stream that fails (not one that merely ends) frees its tunnel
    let (mut console, _out) = spawn(&c, "console", &["console", "web1"]);
    poll("the VNC and serial tunnels open", PATIENCE, || {
        (tunnels() == 2.0).then_some(())
    });

    fwd.child.signal("STOP");
    console.child.signal("STOP");
    let t0 = Instant::now();
    poll(
        "the gateway to free the frozen clients' tunnels",
        PATIENCE,
        || (tunnels() == 0.0).then_some(()),
    );
    let freed = t0.elapsed();
    eprintln!(
        "deadpeer: SIGSTOP: the gateway freed the tunnels (vnc, serial) after {:.1} s",
        freed.as_secs_f64()
    );
    assert!(
        freed <= BOUND,
        "tunnel freed after {freed:?}; gateway log:\n{}",
        w.gateway.log()
    );
    assert!(
        w.gateway
            .log()
            .contains("the client stopped answering (no reply to keepalive)"),
        "{}",
        w.gateway.log()
    );

    // thawed, the forwarder finds its connection gone and says so
    console.child.signal("CONT");
    fwd.child.signal("CONT");
    let t1 = Instant::now();
    let status = fwd
        .child
        .wait_deadline(PATIENCE)
        .expect("the thawed forwarder ends");
    eprintln!(
        "deadpeer: SIGSTOP: the thawed forwarder ended {:.1} s after SIGCONT",
        t1.elapsed().as_secs_f64()
    );
    let err = lines(&fwd.stderr, &mut Vec::new());
    eprintln!("deadpeer: SIGSTOP: the thawed forwarder said:\n{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: the gateway at") && err.contains("stopped answering")
            || err.contains("error: lost the connection to the gateway"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    let status = console
        .child
        .wait_deadline(PATIENCE)
        .expect("the thawed console ends");
    let err = lines(&console.stderr, &mut console.seen);
    eprintln!("deadpeer: SIGSTOP: the thawed console said:\n{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("error: "), "{err}");
}

/// A running client command whose output is watched.
struct Running {
    /// What it is, for messages.
    name: &'static str,
    /// The process.
    child: ChildGuard,
    /// Its stderr.
    stderr: LineReader,
    /// Lines seen so far on stderr.
    seen: Vec<String>,
    /// When it exited after the cut, and with which status.
    exit: Option<(Duration, i32)>,
}

/// `virtgate ARGS` with piped stdin (kept open), stdout and stderr.
fn spawn(user: &ClientUser, name: &'static str, args: &[&str]) -> (Running, LineReader) {
    let mut child = user
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start virtgate");
    let stdout = LineReader::new(child.stdout.take().expect("stdout"));
    let stderr = LineReader::new(child.stderr.take().expect("stderr"));
    let running = Running {
        name,
        child: ChildGuard::new(child, name),
        stderr,
        seen: Vec::new(),
        exit: None,
    };
    (running, stdout)
}

#[test]
fn network_cut_frees_the_gateway_and_ends_every_client_within_15_s() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let lv = Libvirtd::start(&dir.path().join("lv"));
    let a = lv.define_and_start(&DomainSpec::new("dp"));
    // listener 0 (127.0.0.1) is cut; listener 1 ([::1]) stays for the metrics
    let gateway = GatewayBuilder::new(&pki)
        .libvirt(&lv.uri, &lv.socket, &lv.socket_ro)
        .rule(&["adam"], &["*"], "admin")
        .start(&dir.path().join("gw"));
    let adam: ClientCert = pki.client("adam", None);
    let user = ClientUser::new(&dir.path().join("adam"), &gateway.url(0), &adam);
    let base = gateway.https(1);
    let tunnels = || metric(&adam, &pki.ca_pem, &base, "virtgate_tunnels_open");

    // vnc with a VNC client, console with the guest echoing, events, libvirt with a client
    let Forwarder {
        addr,
        child: vnc,
        stderr: vnc_err,
    } = user.vnc(&a.name, &[]);
    let _viewer = vnc_client(addr);
    let (mut console, console_out) = spawn(&user, "console", &["console", &a.name]);
    let mut typed = console.child.child_mut().stdin.take().expect("stdin");
    poll("the guest echoing on the console", PATIENCE, || {
        typed.write_all(b"alive?\n").ok()?;
        let line = console_out.next_line(Duration::from_millis(500))?;
        line.contains("alive?").then_some(())
    });
    let (events, events_out) = spawn(&user, "events", &["events"]);
    let first = events_out
        .next_line(PATIENCE)
        .expect("the event stream's first line");
    assert!(first.contains(&a.name), "{first}");
    let sock = dir.path().join("libvirt.sock");
    let (libvirt, _uri, libvirt_err) = user.libvirt(&sock, false);
    let _virsh_like = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    poll("vnc, console and libvirt tunnels open", PATIENCE, || {
        (tunnels() == 3.0).then_some(())
    });

    let mut clients = vec![
        Running {
            name: "vnc",
            child: vnc,
            stderr: vnc_err,
            seen: Vec::new(),
            exit: None,
        },
        console,
        events,
        Running {
            name: "libvirt",
            child: libvirt,
            stderr: libvirt_err,
            seen: Vec::new(),
            exit: None,
        },
    ];

    // timed from the moment the rules go in (the cut checks itself for a second)
    let t0 = Instant::now();
    let mut cut = NetCut::tcp_port(gateway.addrs[0].port());
    let mut freed = None;
    while (freed.is_none() || clients.iter().any(|c| c.exit.is_none())) && t0.elapsed() < PATIENCE {
        if freed.is_none() && tunnels() == 0.0 {
            freed = Some(t0.elapsed());
        }
        for c in &mut clients {
            exited(&mut c.child, t0, &mut c.exit);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cut.heal();
    let freed = freed.unwrap_or_else(|| panic!("tunnels still open; log:\n{}", gateway.log()));
    eprintln!(
        "deadpeer: network cut: the gateway freed the tunnels after {:.1} s",
        freed.as_secs_f64()
    );
    assert!(freed <= BOUND, "tunnels freed after {freed:?}");
    for c in &mut clients {
        let err = lines(&c.stderr, &mut c.seen);
        let (after, code) = c
            .exit
            .unwrap_or_else(|| panic!("`virtgate {}` still runs; stderr:\n{err}", c.name));
        eprintln!(
            "deadpeer: network cut: `virtgate {}` ended after {:.1} s",
            c.name,
            after.as_secs_f64()
        );
        assert!(
            after <= BOUND,
            "`virtgate {}` ended after {after:?}",
            c.name
        );
        assert_eq!(code, 1, "`virtgate {}`: {err}", c.name);
        assert!(
            err.contains("stopped answering: no reply to keepalive within 5 s"),
            "`virtgate {}`: {err}",
            c.name
        );
        assert!(
            err.contains("hint: the network between here and the gateway broke"),
            "{err}"
        );
    }
    drop(typed);
}

#[test]
fn network_cut_under_ssh_ends_the_client_and_frees_the_gateway_within_15_s() {
    use virtgate_tests::fixture::sshd::{keygen, open_path_to, SshdBuilder, SSH_USER};
    let dir = virtgate_tests::tempdir();
    open_path_to(dir.path());
    let pki = Pki::new(dir.path(), "ca");
    let qemu = virtgate_tests::QemuBuilder::new("web1").start(dir.path());
    let gwdir = dir.path().join("gw");
    std::fs::create_dir_all(&gwdir).unwrap();
    open_path_to(&gwdir);
    let sock = gwdir.join("virtgate.sock");
    let gateway = GatewayBuilder::new(&pki)
        .unix(&sock)
        .domain(qemu.domain_toml())
        .rule(&[SSH_USER], &["web*"], "operator")
        .start(&gwdir);
    let sshd = SshdBuilder::default().start(&dir.path().join("sshd"));
    let key = dir.path().join("id_ed25519");
    keygen(&key, "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    let url = format!(
        "virtgate+ssh://{SSH_USER}@127.0.0.1:{}{}",
        sshd.port,
        sock.display()
    );
    let user = ClientUser::with_profile(&dir.path().join("c"), &format!("url = {url:?}\n"))
        .with_env("SSH_AUTH_SOCK", "/nonexistent/agent.sock");
    let ssh = user.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::copy(&key, ssh.join("id_ed25519")).unwrap();
    std::fs::write(ssh.join("known_hosts"), sshd.known_hosts_line("127.0.0.1")).unwrap();
    // the gateway's metrics over TLS on [::1]; only sshd's port is cut
    let watcher = pki.client("watcher", None);
    let base = gateway.https(1);
    let tunnels = || metric(&watcher, &pki.ca_pem, &base, "virtgate_tunnels_open");

    let Forwarder {
        addr,
        child: mut vnc,
        stderr,
    } = user.vnc("web1", &[]);
    let _viewer = vnc_client(addr);
    poll("the VNC tunnel open over SSH", PATIENCE, || {
        (tunnels() == 1.0).then_some(())
    });

    // timed from the moment the rules go in (the cut checks itself for a second)
    let t0 = Instant::now();
    let mut cut = NetCut::tcp_port(sshd.port);
    let (mut freed, mut exit) = (None, None);
    while (freed.is_none() || exit.is_none()) && t0.elapsed() < PATIENCE {
        if freed.is_none() && tunnels() == 0.0 {
            freed = Some(t0.elapsed());
        }
        exited(&mut vnc, t0, &mut exit);
        std::thread::sleep(Duration::from_millis(50));
    }
    cut.heal();
    let err = lines(&stderr, &mut Vec::new());
    let freed = freed.unwrap_or_else(|| panic!("tunnel still open; log:\n{}", gateway.log()));
    let (ended, code) = exit.unwrap_or_else(|| panic!("`virtgate vnc` still runs: {err}"));
    eprintln!(
        "deadpeer: network cut under SSH: the gateway freed the tunnel after {:.1} s, \
         `virtgate vnc` ended after {:.1} s",
        freed.as_secs_f64(),
        ended.as_secs_f64()
    );
    assert!(freed <= BOUND && ended <= BOUND, "{freed:?} / {ended:?}");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stopped answering: no reply to keepalive within 5 s"),
        "{err}"
    );
}

#[test]
fn idle_timeout_closes_connections_without_streams_only() {
    let w = World::start(|g| g.limit("idle_timeout_s", 2));
    let c = w.client("c", 0, &w.alice);

    // no stream: the forwarder waiting for its first VNC client is closed, and says so
    let mut idle = c.vnc("web1", &[]);
    let t0 = Instant::now();
    let status = idle
        .child
        .wait_deadline(PATIENCE)
        .expect("the idle connection is closed");
    eprintln!(
        "deadpeer: idle_timeout_s = 2: a forwarder without streams lost its connection after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let err = lines(&idle.stderr, &mut Vec::new());
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the gateway closed the connection"), "{err}");
    assert!(
        err.contains("idle_timeout_s"),
        "the hint names the setting: {err}"
    );
    assert!(w
        .gateway
        .log()
        .contains("closing the connection: no request or stream for limits.idle_timeout_s"));

    // an open stream keeps its connection however quiet it is; its first VNC client has to
    // come within the idle time, so a forwarder that lost that race is started again
    let (mut busy, mut viewer) = (0..5)
        .find_map(|_| {
            let f = c.vnc("web1", &[]);
            let mut v = TcpStream::connect(f.addr).ok()?;
            v.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            let mut banner = [0u8; 12];
            v.read_exact(&mut banner).ok()?;
            (&banner == b"RFB 003.008\n").then_some((f, v))
        })
        .expect("a forwarder with a VNC client");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        busy.child.try_status().is_none(),
        "a connection with a stream was closed: {:?}",
        busy.stderr.drain_now()
    );
    viewer.write_all(b"RFB 003.008\n").unwrap();
    let mut security = [0u8; 1];
    viewer
        .read_exact(&mut security)
        .expect("the quiet VNC stream still answers");
    // once the stream is gone, the connection idles out too
    drop(viewer);
    let status = busy
        .child
        .wait_deadline(PATIENCE)
        .expect("closed once idle");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn leaving_the_console_frees_its_tunnel_without_an_error() {
    let w = World::start(|g| g);
    let (ca, base) = (&w.pki.ca_pem, w.gateway.https(0));
    let tunnels = || metric(&w.alice, ca, &base, "virtgate_tunnels_open");
    let c = w.client("c", 0, &w.alice);
    let console = c.console("web1");
    poll("the serial tunnel open", PATIENCE, || {
        (tunnels() == 1.0).then_some(())
    });
    assert!(console.leave().success(), "Ctrl-] leaves with status 0");
    poll("the serial tunnel freed", PATIENCE, || {
        (tunnels() == 0.0).then_some(())
    });
    let log = w.gateway.log();
    assert!(
        !log.contains("tunnel ended with an error"),
        "leaving is no error:\n{log}"
    );
    let gone = log
        .lines()
        .find(|l| l.contains("tunnel closed"))
        .unwrap_or_else(|| panic!("no end of the tunnel in the log:\n{log}"));
    eprintln!("deadpeer: after Ctrl-] the gateway logged: {gone}");
    // the console leaves without a goodbye: a debug line, whatever the TLS layer says
    assert!(
        gone.contains("tunnel closed: the client went away") && gone.contains("DEBUG")
            || !gone.contains("error"),
        "{gone}"
    );
}

#[test]
fn a_certificate_not_yet_valid_blames_the_clock() {
    let w = World::start(|g| g);
    let now = virtgate_pki::time::OffsetDateTime::now_utc();
    let day = virtgate_pki::time::Duration::days(1);
    let early = w.pki.client_between("early", now + day, now + day * 30);
    let c = w.client("early", 0, &early);
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains(
            "error: the gateway rejected our client certificate: it is not yet valid (valid from "
        ),
        "{e}"
    );
    assert!(
        e.contains("hint: check the clock of this machine and of the gateway"),
        "{e}"
    );
    assert!(!e.contains("expired"), "{e}");
}

#[test]
fn url_without_profile_flag_keeps_the_default_profiles_files() {
    let w = World::start(|g| g);
    // profile `t` (the default) names listener 0; --url reaches the same gateway on [::1]
    let c = w.client("c", 0, &w.alice);
    let out = c.ok(&["--url", &w.gateway.url(1), "whoami"]);
    assert!(out.contains("alice"), "{out}");
}
