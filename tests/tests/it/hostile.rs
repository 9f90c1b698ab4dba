//! Hostile HTTP/2 and TLS clients against a real gateway (issue 13 part 1): each test
//! starts a gateway, a well-behaved neighbour (alice, an HTTP/2 connection calling
//! `GET /v1/whoami` in a loop from 127.0.0.1) and one attack of `tests/attack/hostile.py`
//! from 127.0.0.2, as mallory (an authenticated user whose key is encrypted) or as nobody.
//!
//! What every test asserts (see [`Report::assert_served`]): no neighbour call fails while
//! the attack runs; a NEW connection + whoami in the middle of it works; the gateway's
//! VmRSS stays under its baseline + [`RSS_SLACK_MIB`] (64 MiB; measured here: most attacks
//! add 1–4 MiB, pending-spread 11, zero-window 36: see there); once the attacker is gone
//! the gateway's open descriptors come back within [`FD_SLACK`] of the baseline and it
//! still answers. Latencies are measured and printed, never asserted: one line per attack,
//! `hostile ATTACK: baseline p50=… p99=… attack p50=… p99=… ratio p50=… p99=…
//! rss_peak_mib=… fds_after=…`, which `scripts/hostile.sh` turns into a table (the goal:
//! neighbour latency within 2× of its baseline).

use std::path::PathBuf;
use std::time::Duration;

use virtgate_tests::fixture::hostile::{self, attack_args, Attacker, Report, Target};
use virtgate_tests::fixture::kdc::{Kdc, REALM};
use virtgate_tests::{ClientCert, Gateway, GatewayBuilder, Pki, Qemu, QemuBuilder};

/// Memory the gateway may gain during an attack, MiB.
const RSS_SLACK_MIB: u64 = 64;

/// Descriptors the gateway may hold above its baseline once the attacker is gone.
const FD_SLACK: usize = 4;

/// A gateway (QEMU backend, one TCP listener on 127.0.0.1) that grants alice and mallory
/// operator on `web*`, with an optional QEMU domain `web1` and an optional KDC.
struct World {
    pki: Pki,
    /// The neighbour (an unencrypted key: the test's own client loads it).
    alice: ClientCert,
    /// The attacker (its key encrypted, as `virtgate-pki` writes it by default).
    mallory: ClientCert,
    _qemu: Option<Qemu>,
    _kdc: Option<Kdc>,
    gateway: Gateway,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

impl World {
    fn start(with_qemu: bool, with_kerberos: bool) -> World {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let alice = pki.client("alice", None);
        let mallory = pki.client("mallory", Some("mallory secret"));
        let mut gw = GatewayBuilder::new(&pki).listen(&["127.0.0.1:0"]).rule(
            &["alice", "mallory"],
            &["web*"],
            "operator",
        );
        let qemu = with_qemu.then(|| QemuBuilder::new("web1").start(dir.path()));
        if let Some(q) = &qemu {
            gw = gw.domain(q.domain_toml());
        }
        let kdc = with_kerberos.then(|| {
            let kdc = Kdc::start(&dir.path().join("kdc"));
            let keytab = kdc.add_service("HTTP/localhost");
            gw = gw.clone()
                .extra(&format!(
                    "[kerberos]\nservice = \"HTTP\"\nhost = \"localhost\"\nstrip_realm = [\"{REALM}\"]\nkeytab = {:?}\n",
                    keytab.display().to_string()
                ))
                .env("KRB5_CONFIG", &kdc.krb5_conf)
                .env("KRB5RCACHEDIR", dir.path());
            kdc
        });
        let gateway = gw.start(&dir.path().join("gw"));
        World {
            pki,
            alice,
            mallory,
            _qemu: qemu,
            _kdc: kdc,
            gateway,
            dir,
        }
    }

    fn target<'a>(&'a self, label: &'a str) -> Target<'a> {
        Target {
            label,
            pid: self.gateway.pid(),
            addr: self.gateway.addrs[0],
            cert: &self.alice,
            ca: &self.pki.ca_pem,
        }
    }

    /// The attacker's options: as mallory (`cert`) or with no certificate, then `extra`.
    fn args(&self, cert: bool, extra: &[&str]) -> Vec<String> {
        let mut v = attack_args(
            self.gateway.addrs[0],
            &self.pki.ca_pem,
            cert.then_some(&self.mallory),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Run `attack` with `extra` options, print the summary lines, assert, return it.
    fn attack(&self, label: &str, attack: &str, cert: bool, extra: &[&str]) -> Report {
        let dir: PathBuf = self.dir.path().to_owned();
        let args = self.args(cert, extra);
        let report = hostile::run(self.target(label), Duration::from_secs(2), FD_SLACK, || {
            Attacker::start(&dir, attack, &args)
        });
        println!("{}", report.line());
        println!("hostile {label} attacker: {}", report.attacker);
        report
    }
}

/// CVE-2023-44487: HEADERS + RST_STREAM in batches of 200, reconnecting whenever the
/// gateway gives the connection up (h2 does after 20 pending-accept resets: GOAWAY).
#[test]
fn rapid_reset() {
    let w = World::start(false, false);
    let r = w.attack("rapid-reset", "rapid-reset", true, &["--duration", "6"]);
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames
/// of fresh literal headers (the 2024 CONTINUATION flood).
#[test]
fn continuation_flood() {
    let w = World::start(false, false);
    let r = w.attack("continuation", "continuation", true, &["--duration", "6"]);
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// SETTINGS frames of 128 entries each, batches of 200, on a connection that reads the
/// ACKs and on one that never reads.
#[test]
fn settings_flood() {
    let w = World::start(false, false);
    let r = w.attack(
        "settings-flood",
        "settings-flood",
        true,
        &["--duration", "6"],
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// PINGs in batches of 200, on a connection that reads the answers and on one that never
/// reads (its PONGs would pile up in a gateway that kept reading).
#[test]
fn ping_flood() {
    let w = World::start(false, false);
    let r = w.attack("ping-flood", "ping-flood", true, &["--duration", "6"]);
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// Two connections with SETTINGS_INITIAL_WINDOW_SIZE = 0 that open 100 VNC tunnels each
/// (one at a time: QEMU's VNC socket has a listen backlog of 1), ask QEMU for full
/// framebuffer updates and never send a WINDOW_UPDATE nor read again. Every tunnel whose
/// console sent data holds what the gateway read for it (up to one splice buffer, 256 KiB)
/// until its connection goes: measured ≈ 190 KiB a tunnel, +36 MiB for the ~190 tunnels
/// this opens, so it fits the common 64 MiB bound; a user's 1,024 tunnels
/// (`max_tunnels_per_user`) could hold ≈ 256 MiB.
#[test]
fn zero_window() {
    let w = World::start(true, false);
    let r = w.attack(
        "zero-window",
        "zero-window",
        true,
        &[
            "--duration",
            "8",
            "--connections",
            "2",
            "--streams",
            "100",
            "--batch",
            "1",
        ],
    );
    assert!(
        r.attacker["tunnels_opened"].as_u64().unwrap_or(0) > 0,
        "the attack opened no tunnel: {}",
        r.attacker
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// 10,000 requests at once on one connection (max_streams_per_connection is 256: the
/// rest must be refused, not queued), again on a new connection every 2 s.
#[test]
fn streams_10k() {
    let w = World::start(false, false);
    let r = w.attack(
        "streams-10k",
        "streams-10k",
        true,
        &["--duration", "6", "--streams", "10000"],
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// Malformed requests, each on a connection of its own: a 1 MiB header, an uppercase
/// name, unknown/duplicated/misplaced pseudo-headers, connection-specific headers, huge
/// HPACK table size updates. None of them may be answered 200 (1,000 table size updates
/// to 0 are legal HPACK: that request is).
#[test]
fn bad_headers() {
    let w = World::start(false, false);
    let r = w.attack("bad-headers", "bad-headers", true, &["--duration", "6"]);
    let outcome = r.attacker["outcome"]
        .as_object()
        .expect("the attacker reports every case");
    assert!(outcome.len() >= 10, "not every case ran: {outcome:?}");
    for (case, got) in outcome {
        if case != "table_size_updates_1000" {
            assert_ne!(got, "status 200", "{case} was served");
        }
    }
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// 64 connections from one address that send a real ClientHello one byte per second:
/// each must be closed by the gateway (handshake timeout, 10 s) before the attack's 12 s
/// are over.
#[test]
fn trickle_hello() {
    let w = World::start(false, false);
    let r = w.attack(
        "trickle-hello",
        "trickle-hello",
        false,
        &["--duration", "12", "--connections", "64", "--interval", "1"],
    );
    assert_eq!(
        r.attacker["still_open"].as_u64(),
        Some(0),
        "trickling handshakes outlived the handshake timeout: {}",
        r.attacker
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// 5,000 TCP connections from 127.0.0.2 that never send a byte, reopened whenever the
/// gateway closes one: they must not take the slots of authenticated users.
#[test]
fn pending_one_address() {
    let w = World::start(false, false);
    let r = w.attack(
        "pending",
        "pending",
        false,
        &["--duration", "6", "--connections", "5000", "--reopen"],
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// The same spread over 200 source addresses (127.0.0.2 … 127.0.0.201, 25 each), so a
/// per-address budget alone cannot stop them.
#[test]
fn pending_spread() {
    let w = World::start(false, false);
    let r = w.attack(
        "pending-spread",
        "pending",
        false,
        &[
            "--duration",
            "6",
            "--connections",
            "5000",
            "--spread",
            "200",
            "--reopen",
        ],
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// VNC tunnels opened and reset as fast as possible, four at a time (QEMU's VNC socket
/// has a listen backlog of 1: some are refused with 503, which is the backend's limit).
#[test]
fn tunnel_loop() {
    let w = World::start(true, false);
    let r = w.attack(
        "tunnel-loop",
        "tunnel-loop",
        true,
        &["--duration", "6", "--streams", "4"],
    );
    assert!(
        r.attacker["tunnels"].as_u64().unwrap_or(0) > 0,
        "no tunnel opened: {}",
        r.attacker
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}

/// `Authorization: Negotiate` with random tokens and with 1 MiB of base64 on TLS
/// connections without a certificate (a gateway with `[kerberos]`; the tokens are refused
/// before any KDC traffic): none may log in.
#[test]
fn negotiate_garbage() {
    let w = World::start(false, true);
    let r = w.attack("negotiate", "negotiate", false, &["--duration", "6"]);
    assert_eq!(
        r.attacker["status_200"].as_u64(),
        None,
        "a garbage token logged in: {}",
        r.attacker
    );
    r.assert_served(RSS_SLACK_MIB, FD_SLACK);
}
