//! The client's transport, session and error mapping against an in-process HTTP/2-over-TLS
//! server (rustls + hyper, extended CONNECT enabled): real handshakes, real alerts, real
//! tunnels on loopback, IPv4 and IPv6. The real gateway is covered by the workspace's
//! integration tests; this checks the client's side on its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use virtgate_client::cli::Settings;
use virtgate_client::error::{report, Error, TlsFailure};
use virtgate_client::passphrase::PassphraseSources;
use virtgate_client::profile::AuthKind;
use virtgate_client::session::{Keepalive, Session};
use virtgate_client::transport::Transport;
use virtgate_client::url::GatewayUrl;
use virtgate_proto::{ApiPath, Problem, TunnelKind, WhoAmI};

/// A CA and what it issued, as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    (Issuer::new(p, key), cert.pem())
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: &[&str],
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// ca.pem, server.pem/.key (for `sans`), alice.pem/.key, and mallory.* from another CA.
fn pki(sans: &[&str]) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    // 0600 like virtgate-pki writes them: the client refuses keys others may read
    let w = |n: &str, s: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.path().join(n);
        std::fs::write(&path, s).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let (issuer, ca_pem) = ca("test CA");
    w("ca.pem", &ca_pem);
    let (c, k) = leaf(
        &issuer,
        sans,
        "gateway",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    w("server.pem", &c);
    w("server.key", &k);
    let (c, k) = leaf(&issuer, &[], "alice", ExtendedKeyUsagePurpose::ClientAuth);
    w("alice.pem", &c);
    w("alice.key", &k);
    // valid only from next year: the gateway's alert says "expired" all the same
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "early");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(9990, 1, 1);
    p.not_after = rcgen::date_time_ymd(9999, 1, 1);
    w("early.pem", &p.signed_by(&key, &issuer).unwrap().pem());
    w("early.key", &key.serialize_pem());
    let (other, other_pem) = ca("other CA");
    w("other-ca.pem", &other_pem);
    let (c, k) = leaf(&other, &[], "mallory", ExtendedKeyUsagePurpose::ClientAuth);
    w("mallory.pem", &c);
    w("mallory.key", &k);
    Pki { dir }
}

fn problem(status: StatusCode, p: Problem) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(&p).unwrap())));
    *r.status_mut() = status;
    r
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::CONNECT {
        let proto = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_owned());
        if proto.as_deref() != Some("virtgate-stream") || path != "/v1/domains/vm1/vnc" {
            return Ok(problem(
                StatusCode::NOT_FOUND,
                Problem::new(404, "domain-not-found", "no such domain").hint("run `virtgate list`"),
            ));
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        });
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    Ok(match path.as_str() {
        "/v1/whoami" => Response::new(Full::new(Bytes::from_static(
            br#"{"user":"alice","method":"certificate","gateway_version":"test"}"#,
        ))),
        _ => problem(
            StatusCode::NOT_FOUND,
            Problem::new(404, "domain-not-found", "no such domain")
                .detail(format!("nothing at {path}"))
                .hint("run `virtgate list`"),
        ),
    })
}

/// Serve on `bind` until the test ends; returns the bound address.
async fn serve(pki: &Pki, bind: &str) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain: Vec<_> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(TokioIo::new(tls), service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

fn settings(pki: &Pki, url: &str, cert: Option<&str>) -> Settings {
    Settings {
        url: GatewayUrl::parse(url).unwrap(),
        profile: None,
        ca: Some(pki.path("ca.pem")),
        cert: cert.map(|c| pki.path(&format!("{c}.pem"))),
        key: cert.map(|c| pki.path(&format!("{c}.key"))),
        pkcs11_module: None,
        auth: AuthKind::Cert,
        service: "HTTP".into(),
        passphrase: PassphraseSources::default(),
        ssh_key: None,
        accept_new_host_key: false,
        home: None,
        local_user: None,
        keepalive: Keepalive::default(),
    }
}

async fn session(s: &Settings) -> Result<Session, Error> {
    Session::connect(&Transport::prepare(s)?, s.keepalive).await
}

async fn echo_through(session: &Session) {
    let path = ApiPath::Tunnel {
        domain: Some("vm1".into()),
        kind: TunnelKind::Vnc,
    };
    let mut t = session.open_tunnel(&path).await.unwrap();
    t.write_all(b"RFB 003.008\n").await.unwrap();
    t.shutdown().await.unwrap();
    let mut back = Vec::new();
    t.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"RFB 003.008\n");
}

#[tokio::test]
async fn calls_and_tunnels_over_ipv4_and_ipv6() {
    let pki = pki(&["localhost", "127.0.0.1", "::1"]);
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let addr = serve(&pki, bind).await;
        let url = match addr {
            SocketAddr::V4(a) => format!("virtgate://127.0.0.1:{}", a.port()),
            SocketAddr::V6(a) => format!("virtgate://[::1]:{}", a.port()),
        };
        let s = session(&settings(&pki, &url, Some("alice"))).await.unwrap();
        let me: WhoAmI = s.get_json(&ApiPath::WhoAmI).await.unwrap();
        assert_eq!(me.user, "alice");
        // two tunnels at once on the one connection, then an API call after them
        tokio::join!(echo_through(&s), echo_through(&s));
        let e = s
            .get_json::<WhoAmI>(&ApiPath::Domain("nope".into()))
            .await
            .unwrap_err();
        assert_eq!(
            report(&e),
            "error: no such domain: nothing at /v1/domains/nope\nhint: run `virtgate list`"
        );
        let e = s
            .open_tunnel(&ApiPath::Tunnel {
                domain: Some("nope".into()),
                kind: TunnelKind::Vnc,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Problem { .. }), "{e}");
    }
}

fn tls_failure(e: &Error) -> &TlsFailure {
    match e {
        Error::Tls { failure, .. } => failure,
        other => panic!("not a TLS failure: {}", report(other)),
    }
}

#[tokio::test]
async fn rejected_client_certificates_are_named_at_the_first_request() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let addr = serve(&pki, "127.0.0.1:0").await;
    let url = format!("virtgate://127.0.0.1:{}", addr.port());

    // no certificate at all: the gateway's alert shows up at the first request
    let e = match session(&settings(&pki, &url, None)).await {
        Ok(s) => s.get_json::<WhoAmI>(&ApiPath::WhoAmI).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(
        tls_failure(&e),
        &TlsFailure::ClientCertRequired,
        "{}",
        report(&e)
    );
    assert!(
        report(&e).contains("hint: set `cert` and `key`"),
        "{}",
        report(&e)
    );

    // a certificate from another CA
    let e = match session(&settings(&pki, &url, Some("mallory"))).await {
        Ok(s) => s.get_json::<WhoAmI>(&ApiPath::WhoAmI).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(
        tls_failure(&e),
        &TlsFailure::ClientCertUnknown,
        "{}",
        report(&e)
    );
    assert!(report(&e).contains("mallory.pem"), "{}", report(&e));

    // not valid yet: TLS has only the "expired" alert; our certificate's dates tell
    let e = match session(&settings(&pki, &url, Some("early"))).await {
        Ok(s) => s.get_json::<WhoAmI>(&ApiPath::WhoAmI).await.unwrap_err(),
        Err(e) => e,
    };
    let r = report(&e);
    assert!(
        r.starts_with(
            "error: the gateway rejected our client certificate: it is not yet valid (valid from 9990-01-01 00:00:00 UTC)"
        ),
        "{r}"
    );
    assert!(
        r.contains("hint: check the clock of this machine and of the gateway"),
        "{r}"
    );
}

/// A TCP relay that can be cut: after `cut`, it neither reads nor writes but keeps both
/// sockets open, like a network that silently drops everything (or a frozen peer).
async fn cuttable_relay(to: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(sr), Box::new(cw)),
            ] {
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = tokio::select! {
                            n = r.read(&mut buf) => n.unwrap_or(0),
                            _ = cut.wait_for(|c| *c) => break,
                        };
                        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    // cut: hold both ends open, silently
                    std::future::pending::<()>().await;
                    drop((r, w));
                });
            }
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn a_gateway_that_stops_answering_ends_the_session_with_a_keepalive_error() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let addr = serve(&pki, "127.0.0.1:0").await;
    let (relay, cut) = cuttable_relay(addr).await;
    let mut s = settings(
        &pki,
        &format!("virtgate://127.0.0.1:{}", relay.port()),
        Some("alice"),
    );
    s.keepalive = Keepalive {
        interval: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(1),
    };
    let session = session(&s).await.unwrap();
    let who: WhoAmI = session.get_json(&ApiPath::WhoAmI).await.unwrap();
    assert_eq!(who.user, "alice");
    let path = ApiPath::Tunnel {
        domain: Some("vm1".into()),
        kind: TunnelKind::Vnc,
    };
    let mut tunnel = session.open_tunnel(&path).await.unwrap();
    // idle for longer than the keepalive bound: PINGs keep it alive
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    tunnel.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");

    cut.send_replace(true);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(std::time::Duration::from_secs(30), session.closed())
        .await
        .expect("the session notices the silence");
    let took = started.elapsed();
    eprintln!(
        "client gave the silent gateway up after {:.1} s",
        took.as_secs_f64()
    );
    let r = report(&e);
    assert!(
        r.starts_with(&format!(
            "error: the gateway at 127.0.0.1:{} stopped answering: no reply to keepalive within 1 s",
            relay.port()
        )),
        "{r}"
    );
    assert!(
        r.contains("hint: the network between here and the gateway broke"),
        "{r}"
    );
    // the tunnel breaks too, and a new request reports the same
    assert!(tunnel.read(&mut buf).await.map(|n| n == 0).unwrap_or(true));
    let e = session
        .get_json::<WhoAmI>(&ApiPath::WhoAmI)
        .await
        .unwrap_err();
    assert!(report(&e).contains("stopped answering"), "{}", report(&e));
}

#[tokio::test]
async fn server_certificate_problems_fail_the_handshake() {
    let pki = pki(&["gw.example"]);
    let addr = serve(&pki, "127.0.0.1:0").await;
    let url = format!("virtgate://127.0.0.1:{}", addr.port());
    let e = session(&settings(&pki, &url, Some("alice")))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the gateway's certificate is for gw.example, not 127.0.0.1"
    );
    assert!(report(&e).contains(&format!("virtgate://gw.example:{}", addr.port())));

    let mut s = settings(&pki, &url, Some("alice"));
    s.ca = Some(pki.path("other-ca.pem"));
    let e = session(&s).await.unwrap_err();
    assert_eq!(tls_failure(&e), &TlsFailure::UnknownCa);
    assert!(report(&e).contains("other-ca.pem"), "{}", report(&e));
}

#[tokio::test]
async fn refused_connections_name_the_address_and_family() {
    let pki = pki(&["localhost"]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("virtgate://127.0.0.1:{port}");
    let e = session(&settings(&pki, &url, Some("alice")))
        .await
        .unwrap_err();
    let r = report(&e);
    assert!(
        r.starts_with(&format!(
            "error: cannot connect to 127.0.0.1:{port} (IPv4): connection refused"
        )),
        "{r}"
    );
    assert!(r.contains("hint: is virtgated running"), "{r}");
}

fn encrypt_key(pki: &Pki, name: &str, pass: &str) {
    let path = pki.path(&format!("{name}.key"));
    let der = PrivateKeyDer::from_pem_file(&path).unwrap();
    virtgate_pki::keyfile::write_private_key(
        &path,
        der.secret_der(),
        Some(pass),
        virtgate_pki::Existing::Replace,
    )
    .unwrap();
}

#[tokio::test]
async fn encrypted_keys_use_the_passphrase_sources() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    encrypt_key(&pki, "alice", "correct horse");
    let addr = serve(&pki, "127.0.0.1:0").await;
    let url = format!("virtgate://127.0.0.1:{}", addr.port());
    let pw = pki.path("pw");

    std::fs::write(&pw, "wrong\n").unwrap();
    let mut s = settings(&pki, &url, Some("alice"));
    s.passphrase.file = Some(pw.clone());
    let e = session(&s).await.unwrap_err();
    assert!(
        report(&e).starts_with("error: wrong passphrase for "),
        "{}",
        report(&e)
    );
    assert!(report(&e).contains("alice.key"));

    std::fs::write(&pw, "correct horse\n").unwrap();
    let sess = session(&s).await.unwrap();
    let me: WhoAmI = sess.get_json(&ApiPath::WhoAmI).await.unwrap();
    assert_eq!(me.user, "alice");

    // the command comes after the file and the environment; its failure is reported as is
    let mut s = settings(&pki, &url, Some("alice"));
    s.passphrase.command = Some("echo 'store locked' >&2; exit 1".into());
    let e = session(&s).await.unwrap_err();
    assert!(
        report(&e).contains("passphrase command `echo 'store locked' >&2; exit 1` failed (exit status 1): store locked"),
        "{}",
        report(&e)
    );
    // nothing configured and no terminal (tests run without one)
    let s = settings(&pki, &url, Some("alice"));
    if std::fs::File::open("/dev/tty").is_err() {
        let e = session(&s).await.unwrap_err();
        assert!(matches!(e, Error::NoTerminal { .. }), "{}", report(&e));
        assert!(report(&e).contains("VIRTGATE_KEY_PASSPHRASE"));
    }
}

#[test]
fn kerberos_auth_never_reads_the_certificate_or_unlocks_the_key() {
    let pki = pki(&["localhost"]);
    encrypt_key(&pki, "alice", "correct horse");
    // an encrypted key with no passphrase source, and a certificate that does not exist:
    // with cert auth this fails, with kerberos neither file is touched
    let mut s = settings(&pki, "virtgate://localhost:1", Some("alice"));
    s.cert = Some(pki.path("missing.pem"));
    assert!(Transport::prepare(&s).is_err());
    s.auth = AuthKind::Kerberos;
    let t = Transport::prepare(&s).unwrap();
    assert!(matches!(t, Transport::Kerberos(_)), "{t:?}");
    // a service name that cannot be part of a principal is refused up front
    s.service = "HTTP/x".into();
    let e = Transport::prepare(&s).unwrap_err();
    assert!(
        report(&e).contains("not a Kerberos service name"),
        "{}",
        report(&e)
    );
}
