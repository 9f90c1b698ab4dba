//! End to end inside one process: a real PKI (virtgate-pki), a real QEMU (TCG, started by
//! the gateway through `command`), the gateway's `run`, and a small hyper HTTP/2 client
//! over rustls that lists domains, opens VNC tunnels with extended CONNECT and reads the
//! `RFB 003.008` banner, and checks refusals (no certificate, other CA, revoked, expired).
//! The integration tests in `tests/` drive the real binaries; this one checks the library
//! seams (run/Shutdown, metrics, problem bodies) and fails if QEMU is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use virtgate_gateway::{config, Shutdown};
use virtgate_pki::time::{Duration, OffsetDateTime};
use virtgate_pki::{Ca, ClientOptions, Existing, InitOptions, ServerOptions, Validity};
use virtgate_proto::{DomainList, Problem};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let mut ca = Ca::init(&p.join("ca"), &InitOptions::default()).unwrap();
        let server = ca
            .issue_server(&ServerOptions {
                dns: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                validity: Validity::Days(1),
            })
            .unwrap();
        ca.write_server_files(&server, &p.join("server"), Existing::Replace)
            .unwrap();
        let now = OffsetDateTime::now_utc();
        for (user, validity) in [
            ("alice", Validity::Days(1)),
            ("bob", Validity::Days(1)),
            (
                "carol",
                Validity::Between {
                    not_before: now - Duration::days(3),
                    not_after: now - Duration::days(1),
                },
            ),
        ] {
            let c = ca.issue_client(user, &ClientOptions { validity }).unwrap();
            ca.write_client_files(&c, &p.join("clients"), None, Existing::Replace)
                .unwrap();
        }
        ca.revoke("bob", "keyCompromise").unwrap();
        ca.write_crl().unwrap();
        // Another CA with the same name, and an "alice" of its own.
        let mut other = Ca::init(&p.join("other"), &InitOptions::default()).unwrap();
        let c = other
            .issue_client("alice", &ClientOptions::default())
            .unwrap();
        other
            .write_client_files(&c, &p.join("other-clients"), None, Existing::Replace)
            .unwrap();
        Pki { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// TLS client config; `who` is `clients/alice` style, or `None` for no certificate.
    fn client(&self, who: Option<&str>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca/ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match who {
            None => b.with_no_client_auth(),
            Some(w) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{w}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{w}.key"))).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(cfg)
    }
}

fn gateway_config(pki: &Pki, vm: &Path) -> config::Config {
    let s = |p: &Path| p.display().to_string();
    let text = format!(
        r#"
[listen]
tcp = ["[::]:0"]
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
crl = "{crl}"
[backend]
kind = "qemu"
runtime_dir = "{vm}/run"
stop_domains_on_exit = true
[[backend.domain]]
name = "vm1"
qmp = "{vm}/qmp.sock"
vnc = "{vm}/vnc.sock"
command = ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-vga", "std",
           "-display", "none", "-vnc", "unix:{vm}/vnc.sock", "-qmp", "unix:{vm}/qmp.sock,server=on,wait=off"]
[[backend.domain]]
name = "gone"
qmp = "{vm}/none-qmp.sock"
vnc = "{vm}/none-vnc.sock"
[[backend.domain]]
name = "peek"
qmp = "{vm}/qmp.sock"
vnc = "{vm}/vnc.sock"
[[backend.domain]]
name = "hidden"
qmp = "{vm}/qmp.sock"
vnc = "{vm}/vnc.sock"
[[rule]]
who = ["alice", "bob", "carol"]
domains = ["vm*", "gone"]
role = "operator"
[[rule]]
who = ["alice"]
domains = ["peek"]
role = "viewer"
[limits]
drain_timeout_s = 2
handshake_timeout_s = 5
"#,
        cert = s(&pki.path("server/server.pem")),
        key = s(&pki.path("server/server.key")),
        ca = s(&pki.path("ca/ca.pem")),
        crl = s(&pki.path("ca/crl.pem")),
        vm = s(vm),
    );
    let path = vm.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap()
}

type Sender = http2::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn get(send: &mut Sender, path: &str) -> Result<(StatusCode, Bytes), String> {
    let req = Request::get(format!("https://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    assert_eq!(resp.headers()["virtgate-protocol"], "1");
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Extended CONNECT; on 200 returns the tunnel, else the problem.
async fn tunnel(
    send: &mut Sender,
    path: &str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, Problem> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("virtgate-stream"));
    let mut resp = send.send_request(req).await.unwrap();
    if resp.status() != StatusCode::OK {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        return Err(serde_json::from_slice(&body).unwrap());
    }
    Ok(TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap()))
}

fn metric(text: &[u8], name: &str) -> u64 {
    let text = std::str::from_utf8(text).unwrap();
    // a bare family name sums its labelled samples
    let samples: Vec<u64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name || key.split('{').next() == Some(name)).then(|| value.parse().ok())?
        })
        .collect();
    assert!(!samples.is_empty(), "{name} not in\n{text}");
    samples.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_api_and_vnc_tunnels_over_one_connection() {
    let pki = Pki::new();
    let vm = tempfile::tempdir().unwrap();
    let config = gateway_config(&pki, vm.path());
    let shutdown = Shutdown::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sd = shutdown.clone();
    let gateway = tokio::spawn(async move {
        virtgate_gateway::run(&config, &Default::default(), sd, move |l| {
            let _ = tx.send(l.tcp[0].0.port());
            Ok(())
        })
        .await
    });
    let port = rx
        .await
        .expect("gateway did not start (is qemu-system-x86_64 installed?)");
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();

    // Listing over IPv4 and IPv6 (dual-stack [::]).
    for addr in [v4, v6] {
        let mut s = connect(addr, pki.client(Some("clients/alice")))
            .await
            .unwrap();
        let (status, body) = get(&mut s, "/v1/domains").await.unwrap();
        assert_eq!(status, 200);
        let list: DomainList = serde_json::from_slice(&body).unwrap();
        let names: Vec<_> = list.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vm1", "gone", "peek"], "{addr}");
        assert_eq!(list.domains[0].state.as_str(), "running");
        assert_eq!(list.domains[0].role.as_deref(), Some("operator"));
        assert_eq!(list.domains[1].state.as_str(), "unavailable");
        assert!(list.domains[1]
            .state_reason
            .as_deref()
            .unwrap()
            .contains("none-qmp.sock"));
        assert_eq!(list.domains[2].role.as_deref(), Some("viewer"));
    }

    // Refused certificates: the handshake or the first request fails; the gateway goes on.
    for who in [
        None,
        Some("other-clients/alice"),
        Some("clients/bob"),
        Some("clients/carol"),
    ] {
        let r = match connect(v4, pki.client(who)).await {
            Ok(mut s) => get(&mut s, "/v1/whoami").await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(r.is_err(), "{who:?} was let in");
    }

    // One connection: two VNC tunnels and API calls side by side.
    let mut s = connect(v6, pki.client(Some("clients/alice")))
        .await
        .unwrap();
    let (_, before) = get(&mut s, "/v1/metrics").await.unwrap();
    let mut t1 = tunnel(&mut s, "/v1/domains/vm1/vnc").await.unwrap();
    let mut t2 = tunnel(&mut s, "/v1/domains/vm1/vnc").await.unwrap();
    for t in [&mut t1, &mut t2] {
        let mut banner = [0u8; 12];
        t.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"RFB 003.008\n");
    }
    let (_, during) = get(&mut s, "/v1/metrics").await.unwrap();
    assert_eq!(
        metric(&during, "virtgate_connections_accepted_total"),
        metric(&before, "virtgate_connections_accepted_total")
    );
    assert_eq!(metric(&during, "virtgate_tunnels_opened_total"), 2);
    assert_eq!(metric(&during, "virtgate_tunnels_open"), 2);
    assert_eq!(
        metric(
            &during,
            "virtgate_authentication_failures_total{method=\"tls\"}"
        ),
        4
    );
    // Half-close: our shutdown reaches QEMU, which closes; the tunnel ends cleanly.
    t1.shutdown().await.unwrap();
    let mut rest = Vec::new();
    t1.read_to_end(&mut rest).await.unwrap();

    // Problems: not granted = unknown (404), viewer cannot VNC (403), dead socket (503).
    let p = tunnel(&mut s, "/v1/domains/hidden/vnc")
        .await
        .err()
        .unwrap();
    let q = tunnel(&mut s, "/v1/domains/no-such/vnc")
        .await
        .err()
        .unwrap();
    assert_eq!((p.status, p.kind_name()), (404, "domain-not-found"));
    assert_eq!(
        p.detail.as_deref().map(|d| d.replace("hidden", "X")),
        q.detail.map(|d| d.replace("no-such", "X"))
    );
    let p = tunnel(&mut s, "/v1/domains/peek/vnc").await.err().unwrap();
    assert_eq!((p.status, p.kind_name()), (403, "forbidden"));
    assert!(p.detail.unwrap().contains("operator"));
    let p = tunnel(&mut s, "/v1/domains/gone/vnc").await.err().unwrap();
    assert_eq!((p.status, p.kind_name()), (503, "backend-unavailable"));
    assert!(p.hint.is_some());
    let (status, body) = get(&mut s, "/v1/nope").await.unwrap();
    assert_eq!(status, 404);
    let p: Problem = serde_json::from_slice(&body).unwrap();
    assert_eq!(p.kind_name(), "not-found");

    // Stop with tunnel t2 still open: GOAWAY, the drain timeout (2 s) passes, the tunnel is
    // closed by the gateway, QEMU quits.
    let started = std::time::Instant::now();
    shutdown.begin.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(15), gateway).await;
    result.expect("gateway did not stop").unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(2),
        "drained too fast: {took:?}"
    );
    let mut rest = Vec::new();
    let ended =
        tokio::time::timeout(std::time::Duration::from_secs(5), t2.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "tunnel still open after the gateway stopped");
    drop(s);
    let qmp = tokio::net::UnixStream::connect(vm.path().join("qmp.sock")).await;
    assert!(qmp.is_err(), "QEMU still answers after the gateway stopped");
}
