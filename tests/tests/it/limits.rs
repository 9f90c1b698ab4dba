//! `[limits]` as a user meets them: per-user connections and tunnels, the gateway's
//! connection limit, each named in the answer the client gets (429/503, shown by
//! `virtgate` with its hint); and the budget of unauthenticated connections, which keeps
//! idle TCP connections (one address, or many) from locking authenticated users out.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use virtgate_tests::fixture::h2::H2;
use virtgate_tests::{metric, poll, ClientCert};

use crate::World;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// A world where carol (an unencrypted key, for raw HTTP/2 connections and curl) may use
/// web1 too.
fn world(limits: &[(&str, u64)]) -> (World, ClientCert) {
    let w = World::start(|mut g| {
        for (k, v) in limits {
            g = g.limit(k, *v);
        }
        g.rule(&["carol"], &["web*"], "operator")
    });
    let carol = w.pki.client("carol", None);
    (w, carol)
}

impl World {
    async fn h2(&self, cert: &ClientCert) -> H2 {
        H2::connect(self.gateway.addrs[0], cert, &self.pki.ca_pem).await
    }

    fn metric_as(&self, cert: &ClientCert, name: &str) -> f64 {
        metric(cert, &self.pki.ca_pem, &self.gateway.https(0), name)
    }
}

#[test]
fn a_user_over_max_connections_per_user_is_told_the_limit() {
    let (w, carol) = world(&[("max_connections_per_user", 2)]);
    let c = w.client("carol", 0, &carol);
    rt().block_on(async {
        let mut one = w.h2(&carol).await;
        let mut two = w.h2(&carol).await;
        assert_eq!(one.get("/v1/whoami").await.0, 200);
        assert_eq!(two.get("/v1/whoami").await.0, 200);
        let mut three = w.h2(&carol).await;
        let (status, body) = three.get("/v1/whoami").await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body.contains(
                "carol already has 2 connections open (limits.max_connections_per_user = 2)"
            ),
            "{body}"
        );
        // the real client says the same, with what to do
        let err = c.fails(&["whoami"]);
        assert!(
            err.contains("limits.max_connections_per_user") && err.contains("virtgate up"),
            "{err}"
        );
        // another user is not affected
        let alice = w.client("alice", 0, &w.alice);
        assert!(alice.ok(&["whoami"]).contains("alice"));
        // a connection that ends gives its place back
        drop(one);
        poll("carol may connect again", Duration::from_secs(10), || {
            c.run(&["whoami"]).status.success().then_some(())
        });
        drop(two);
    });
}

#[test]
fn a_user_over_max_tunnels_per_user_is_told_the_limit() {
    let (w, carol) = world(&[("max_tunnels_per_user", 1)]);
    rt().block_on(async {
        let mut h = w.h2(&carol).await;
        let serial = h.tunnel("/v1/domains/web1/serial").await;
        let (status, body) = h.refused_tunnel("/v1/domains/web1/vnc").await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body.contains("limits.max_tunnels_per_user = 1") && body.contains("close consoles"),
            "{body}"
        );
        // on another connection too: the limit is the user's
        let mut other = w.h2(&carol).await;
        assert_eq!(other.refused_tunnel("/v1/domains/web1/vnc").await.0, 429);
        drop(serial);
        let mut reopened = None;
        for _ in 0..50 {
            let (status, _) = other.get("/v1/whoami").await;
            assert_eq!(status, 200);
            if let Some(t) = other.try_tunnel("/v1/domains/web1/vnc").await {
                reopened = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(reopened.is_some(), "the closed tunnel's place came back");
    });
}

#[test]
fn a_full_gateway_answers_503_naming_max_connections() {
    let (w, carol) = world(&[
        ("max_connections", 4),
        ("max_pending_handshakes", 2),
        ("max_pending_per_address", 2),
    ]);
    rt().block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut h = w.h2(&carol).await;
            assert_eq!(h.get("/v1/whoami").await.0, 200);
            held.push(h);
        }
        let err = w.client("alice", 0, &w.alice).fails(&["whoami"]);
        assert!(
            err.contains("limits.max_connections = 4") && err.contains("try again"),
            "{err}"
        );
        held.pop();
        let alice = w.client("alice2", 0, &w.alice);
        poll(
            "a freed connection is usable",
            Duration::from_secs(10),
            || alice.run(&["whoami"]).status.success().then_some(()),
        );
    });
}

/// `n` TCP connections to `to` that never send a byte, from `sources` in turn.
async fn idle_flood(to: SocketAddr, sources: &[Ipv4Addr], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::new(sources[i % sources.len()].into(), 0))
            .expect("bind a loopback source address");
        // connections the gateway closes at once still connect (the kernel accepts first)
        if let Ok(c) = s.connect(to).await {
            held.push(c);
        }
    }
    held
}

/// Before the pending budget, connections that never started TLS each took one of
/// `max_connections` for `handshake_timeout_s`: 400 of them locked a 300-connection gateway.
#[test]
fn idle_connections_from_one_address_do_not_lock_users_out() {
    let (w, carol) = world(&[("max_connections", 300)]);
    let refused0 = w.metric_as(&carol, "virtgate_connections_refused_total");
    let alice = w.client("alice", 0, &w.alice);
    rt().block_on(async {
        let flood = idle_flood(w.gateway.addrs[0], &[Ipv4Addr::new(127, 0, 0, 2)], 400).await;
        assert!(flood.len() >= 300, "the flood connected ({})", flood.len());
        for _ in 0..3 {
            assert!(alice.ok(&["whoami"]).contains("alice"));
        }
        drop(flood);
    });
    // all but max_pending_per_address (16) of them were closed at once, and said so
    assert!(w.metric_as(&carol, "virtgate_connections_refused_total") - refused0 >= 300.0);
    assert!(
        w.gateway.log().contains("limits.max_pending_per_address"),
        "{}",
        w.gateway.log()
    );
}

#[test]
fn idle_connections_from_many_addresses_are_shed_oldest_first() {
    let (w, carol) = world(&[("max_connections", 300)]);
    let alice = w.client("alice", 0, &w.alice);
    let sources: Vec<Ipv4Addr> = (2..=101).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    rt().block_on(async {
        // 100 addresses × 5: within each address's share, over the budget of 256
        let flood = idle_flood(w.gateway.addrs[0], &sources, 500).await;
        assert_eq!(flood.len(), 500);
        for _ in 0..3 {
            assert!(alice.ok(&["whoami"]).contains("alice"));
        }
        drop(flood);
    });
    assert!(w.metric_as(&carol, "virtgate_handshakes_shed_total") >= 200.0);
    assert!(
        w.gateway.log().contains("limits.max_pending_handshakes"),
        "{}",
        w.gateway.log()
    );
}

/// On the unix socket (local users, and SSH logins through it) the peer is known at once:
/// even its connections that have not said anything yet count against its quota.
#[test]
fn a_local_user_idling_on_the_unix_socket_holds_only_its_own_quota() {
    let sock_dir = virtgate_tests::tempdir();
    let sock = sock_dir.path().join("gw.sock");
    let s = sock.clone();
    let w = World::start(move |g| g.unix(&s).limit("max_connections_per_user", 2));
    let whoami = || {
        std::process::Command::new("curl")
            .args(["-sS", "--http2-prior-knowledge", "--unix-socket"])
            .arg(&sock)
            .arg("http://localhost/v1/whoami")
            .output()
            .expect("curl (scripts/setup.sh installs it)")
    };
    let ok = whoami();
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("\"method\""),
        "{ok:?}"
    );
    let idle: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect"))
        .collect();
    let refused = whoami();
    let body = String::from_utf8_lossy(&refused.stdout);
    assert!(
        body.contains("limits.max_connections_per_user = 2") && body.contains("429"),
        "{body}"
    );
    drop(idle);
    poll(
        "the idle connections' places are back",
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&whoami().stdout)
                .contains("\"method\"")
                .then_some(())
        },
    );
    drop(w);
}

/// A user behind the same address as idle connections (the per-address share is full) is
/// told what may have happened, and gets in once the share frees up.
#[test]
fn a_client_cut_off_during_the_handshake_is_told_the_likely_limits() {
    let (w, _) = world(&[
        ("max_pending_per_address", 2),
        ("max_pending_handshakes", 8),
        ("handshake_timeout_s", 3),
    ]);
    let alice = w.client("alice", 0, &w.alice);
    rt().block_on(async {
        let idle = idle_flood(w.gateway.addrs[0], &[Ipv4Addr::LOCALHOST], 2).await;
        let err = alice.fails(&["whoami"]);
        // closed or reset: the kernel answers with a reset when the gateway drops a socket
        // whose ClientHello it had not read yet
        assert!(
            (err.contains("closed the connection during the TLS handshake")
                || err.contains("reset the connection during the TLS handshake"))
                && err.contains("limits.max_pending_per_address")
                && err.contains("limits.handshake_timeout_s"),
            "{err}"
        );
        drop(idle);
    });
    poll("alice gets in again", Duration::from_secs(10), || {
        alice.run(&["whoami"]).status.success().then_some(())
    });
}
