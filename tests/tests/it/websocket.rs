//! The consoles as WebSockets, the way noVNC and xterm.js in a browser use them: a real
//! WebSocket client (tokio-tungstenite over rustls with the user's client certificate) on
//! a real gateway and a real QEMU guest (serial echo), over HTTP/1.1 (`Upgrade`) and
//! HTTP/2 (RFC 8441 extended CONNECT): the RFB banner on `/vnc`, the guest's echo on
//! `/serial` (binary and text messages); refusals like the API's (viewer: 404 for a domain
//! it may not see, 403 for one it may only view), another `Origin` (403), a wrong version
//! (426), no key (400), a message too big (1009), no certificate; 200 consoles leave no
//! tunnel and no descriptor behind; revoking the user closes an open console.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use virtgate_tests::{
    guest_kernel, metric, poll, ClientCert, Gateway, GatewayBuilder, GuestOptions, Pki, Qemu,
    QemuBuilder,
};

/// How long a console may take to answer.
const ANSWER: Duration = Duration::from_secs(60);

/// A gateway with `web1` (the test guest: serial echo, VNC) and `db1`; `wanda` and `rita`
/// operate `web*`, `victor` views `web*`; the CRL is watched.
struct WsWorld {
    pki: Pki,
    wanda: ClientCert,
    victor: ClientCert,
    rita: ClientCert,
    _qemu: Qemu,
    _db1: Qemu,
    gateway: Gateway,
    /// Dropped last: every file and socket of the test.
    _dir: tempfile::TempDir,
}

impl WsWorld {
    fn start() -> WsWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let wanda = pki.client("wanda", None);
        let victor = pki.client("victor", None);
        let rita = pki.client("rita", None);
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let qemu = QemuBuilder::new("web1").kernel(&kernel).start(dir.path());
        let db1 = QemuBuilder::new("db1").serial(false).start(dir.path());
        let gateway = GatewayBuilder::new(&pki)
            .crl(&pki.crl())
            .domain(qemu.domain_toml())
            .domain(db1.domain_toml())
            .rule(&["wanda", "rita"], &["web*"], "operator")
            .rule(&["victor"], &["web*"], "viewer")
            .start(&dir.path().join("gw"));
        WsWorld {
            pki,
            wanda,
            victor,
            rita,
            _qemu: qemu,
            _db1: db1,
            gateway,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.gateway.addrs[0]
    }

    /// A TLS connection to the gateway as `cert` (None: no certificate), offering `alpn`.
    async fn tls(
        &self,
        cert: Option<&ClientCert>,
        alpn: &[u8],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in virtgate_pki::load_certs(&self.pki.ca_pem).expect("CA") {
            roots.add(c).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(cert) => {
                let chain = virtgate_pki::load_certs(&cert.cert).expect("client cert");
                let key = virtgate_pki::load_private_key(&cert.key, &mut || {
                    Err(virtgate_pki::KeyFileError::passphrase(
                        "unencrypted test key",
                        None,
                    ))
                })
                .expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let addr = self.addr();
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
    }

    /// An HTTP/1.1 WebSocket handshake for `path` as `cert` with extra `headers`.
    async fn ws1(
        &self,
        cert: Option<&ClientCert>,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<(Ws<TlsStream<TcpStream>>, http::HeaderMap), WsError> {
        let tls = self.tls(cert, b"http/1.1").await.map_err(WsError::Io)?;
        let mut req = format!("wss://{}{path}", self.addr()).into_client_request()?;
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, http::HeaderValue::from_str(v).expect("header"));
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tls).await?;
        Ok((ws, resp.headers().clone()))
    }

    /// The status and body of a refused HTTP/1.1 WebSocket handshake.
    async fn ws1_refused(
        &self,
        cert: &ClientCert,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> (u16, String) {
        match self.ws1(Some(cert), path, headers).await {
            Ok(_) => panic!("the WebSocket {path} was not refused"),
            Err(WsError::Http(r)) => (
                r.status().as_u16(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
            ),
            Err(e) => panic!("the WebSocket {path} failed without an answer: {e}"),
        }
    }

    /// An HTTP/2 connection as `cert`.
    async fn h2(&self, cert: &ClientCert) -> SendRequest<Empty<Bytes>> {
        let tls = self.tls(Some(cert), b"h2").await.expect("TLS");
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send
    }

    /// An RFC 8441 WebSocket request for `path` on `send` with extra `headers`.
    async fn ws2_request(
        &self,
        send: &mut SendRequest<Empty<Bytes>>,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        let mut req = http::Request::connect(format!("https://{}{path}", self.addr()))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "binary")
            .body(Empty::new())
            .expect("request");
        for (k, v) in headers {
            req.headers_mut()
                .insert(*k, http::HeaderValue::from_str(v).expect("header"));
        }
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        send.send_request(req).await.expect("send CONNECT")
    }

    /// An HTTP/2 WebSocket at `path`; panics unless accepted with subprotocol `binary`.
    async fn ws2(
        &self,
        send: &mut SendRequest<Empty<Bytes>>,
        path: &str,
    ) -> Ws<TokioIo<hyper::upgrade::Upgraded>> {
        let mut resp = self.ws2_request(send, path, &[]).await;
        assert_eq!(resp.status(), 200, "WebSocket {path} over HTTP/2");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
        let io = TokioIo::new(hyper::upgrade::on(&mut resp).await.expect("upgrade"));
        WebSocketStream::from_raw_socket(io, Role::Client, None).await
    }

    /// The status and body of a refused HTTP/2 WebSocket.
    async fn ws2_refused(
        &self,
        cert: &ClientCert,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> (u16, String) {
        let mut send = self.h2(cert).await;
        let resp = self.ws2_request(&mut send, path, headers).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn metric(&self, name: &str) -> f64 {
        metric(&self.wanda, &self.pki.ca_pem, &self.gateway.https(0), name)
    }

    /// The gateway's open file descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.gateway.pid()))
            .expect("/proc/PID/fd of the gateway")
            .count()
    }
}

type Ws<S> = WebSocketStream<S>;

/// Read binary messages until what came contains `want`; returns all of it.
async fn read_until<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, want: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        while !seen.windows(want.len()).any(|w| w == want) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!(
                    "expected console bytes, got {other:?} after {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    };
    if tokio::time::timeout(ANSWER, read).await.is_err() {
        panic!(
            "no {:?} from the console within {ANSWER:?}",
            String::from_utf8_lossy(want)
        );
    }
    seen
}

/// Close from our side and wait for the gateway's answer (its close frame, then the end).
async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: Ws<S>) {
    // Over HTTP/2 the gateway may answer and end the stream before our flush of the close
    // frame returns (the flush then fails on the ended stream); the frame went out.
    let sent = ws.send(Message::Close(None)).await;
    let answer = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return false,
            }
        }
    };
    let answered = tokio::time::timeout(ANSWER, answer)
        .await
        .expect("the gateway answers the close frame");
    assert!(
        answered || sent.is_err(),
        "the gateway ended the WebSocket without answering our close frame"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn vnc_and_serial_over_http1_and_http2() {
    let w = WsWorld::start();
    rt().block_on(async {
        // HTTP/1.1, as noVNC asks: subprotocol binary, the page's own origin
        let origin = format!("https://{}", w.addr());
        let (mut ws, headers) = w
            .ws1(
                Some(&w.wanda),
                "/v1/domains/web1/vnc",
                &[("sec-websocket-protocol", "binary"), ("origin", &origin)],
            )
            .await
            .expect("WebSocket /vnc over HTTP/1.1");
        assert_eq!(headers["sec-websocket-protocol"], "binary");
        let banner = read_until(&mut ws, b"\n").await;
        assert!(
            banner.starts_with(b"RFB 003.00"),
            "{:?}",
            String::from_utf8_lossy(&banner)
        );
        close(ws).await;

        // the serial console: a binary line and a text line (xterm.js) come back
        let (mut ws, _) = w
            .ws1(Some(&w.wanda), "/v1/domains/web1/serial", &[])
            .await
            .expect("WebSocket /serial");
        ws.send(Message::binary(&b"binary hello\n"[..]))
            .await
            .expect("send");
        read_until(&mut ws, b"binary hello").await;
        ws.send(Message::text("text hello\n")).await.expect("send");
        read_until(&mut ws, b"text hello").await;
        close(ws).await;

        // HTTP/2 extended CONNECT, twice on one connection
        let mut send = w.h2(&w.wanda).await;
        for _ in 0..2 {
            let mut ws = w.ws2(&mut send, "/v1/domains/web1/vnc").await;
            let banner = read_until(&mut ws, b"\n").await;
            assert!(
                banner.starts_with(b"RFB 003.00"),
                "{:?}",
                String::from_utf8_lossy(&banner)
            );
            close(ws).await;
        }
        let mut ws = w.ws2(&mut send, "/v1/domains/web1/serial").await;
        ws.send(Message::text("over h2\n")).await.expect("send");
        read_until(&mut ws, b"over h2").await;
        close(ws).await;
    });
    // counted like the CLI's tunnels, by kind
    assert!(w.metric("virtgate_tunnels_opened_total{kind=\"vnc\"}") >= 3.0);
    assert!(w.metric("virtgate_tunnels_opened_total{kind=\"serial\"}") >= 2.0);
}

#[test]
fn refusals_like_the_api_with_hints() {
    let w = WsWorld::start();
    rt().block_on(async {
        // a viewer forcing /vnc: of a domain it may not see, 404 like the API; of one it
        // may only view, 403
        for (status, body) in [
            w.ws1_refused(&w.victor, "/v1/domains/db1/vnc", &[]).await,
            w.ws2_refused(&w.victor, "/v1/domains/db1/vnc", &[]).await,
        ] {
            assert_eq!(status, 404, "{body}");
            assert!(
                body.contains("domain-not-found") && body.contains("db1"),
                "{body}"
            );
        }
        for (status, body) in [
            w.ws1_refused(&w.victor, "/v1/domains/web1/vnc", &[]).await,
            w.ws2_refused(&w.victor, "/v1/domains/web1/serial", &[])
                .await,
        ] {
            assert_eq!(status, 403, "{body}");
            assert!(
                body.contains("forbidden") && body.contains("viewer") && body.contains("hint"),
                "{body}"
            );
        }
        // a page elsewhere may not drive a console with the user's certificate
        let evil = [("origin", "https://evil.example")];
        for (status, body) in [
            w.ws1_refused(&w.wanda, "/v1/domains/web1/vnc", &evil).await,
            w.ws2_refused(&w.wanda, "/v1/domains/web1/vnc", &evil).await,
        ] {
            assert_eq!(status, 403, "{body}");
            // (the CSRF rule of browser sessions may refuse it first: either way, 403 naming
            // the page's origin, with a hint)
            assert!(
                body.contains("evil.example") && body.contains("\"hint\""),
                "{body}"
            );
        }
        let http = [("origin", &*format!("http://{}", w.addr()))];
        assert_eq!(
            w.ws1_refused(&w.wanda, "/v1/domains/web1/vnc", &http)
                .await
                .0,
            403
        );
        // an old WebSocket version: 426 naming the one spoken
        let (status, body) = w
            .ws2_refused(
                &w.wanda,
                "/v1/domains/web1/vnc",
                &[("sec-websocket-version", "8")],
            )
            .await;
        assert_eq!(status, 426, "{body}");
        assert!(
            body.contains("websocket-version") && body.contains("13"),
            "{body}"
        );
        // only consoles are WebSockets
        let (status, body) = w.ws1_refused(&w.wanda, "/v1/domains", &[]).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("/vnc") && body.contains("/serial"), "{body}");
        // no certificate: no console
        match w.ws1(None, "/v1/domains/web1/vnc", &[]).await {
            Ok(_) => panic!("a WebSocket without a certificate was accepted"),
            Err(WsError::Http(r)) => assert_eq!(r.status(), 401),
            Err(_) => {} // the TLS handshake refused it
        }
    });
}

#[test]
fn a_handshake_without_key_and_a_message_too_big() {
    let w = WsWorld::start();
    rt().block_on(async {
        // an HTTP/1.1 upgrade without Sec-WebSocket-Key: 400 with a hint
        let mut tls = w.tls(Some(&w.wanda), b"http/1.1").await.expect("TLS");
        let req = format!(
            "GET /v1/domains/web1/vnc HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
            w.addr()
        );
        tls.write_all(req.as_bytes()).await.expect("send the request");
        let mut answer = Vec::new();
        tokio::time::timeout(ANSWER, tls.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .ok(); // the gateway may end TLS without close_notify after `Connection: close`
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("Sec-WebSocket-Key") && answer.contains("\"hint\""), "{answer}");

        // a message over 1 MiB ends the console (1009 when the close frame gets through
        // before the connection goes), and the gateway says why in the tunnel's log
        let (mut ws, _) = w
            .ws1(Some(&w.wanda), "/v1/domains/web1/serial", &[])
            .await
            .expect("WebSocket /serial");
        let _ = ws.send(Message::binary(vec![b'x'; (1 << 20) + 1])).await;
        let end = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return None,
                }
            }
        };
        let code = tokio::time::timeout(ANSWER, end)
            .await
            .expect("the console ends after a message too big");
        if let Some(code) = code {
            assert_eq!(code, 1009, "close code for a message too big");
        }
        // the gateway keeps serving consoles
        let (mut ws, _) = w
            .ws1(Some(&w.wanda), "/v1/domains/web1/serial", &[])
            .await
            .expect("WebSocket /serial");
        ws.send(Message::text("still here\n")).await.expect("send");
        read_until(&mut ws, b"still here").await;
        close(ws).await;
    });
    poll("the reason in the gateway's log", ANSWER, || {
        let log = w.gateway.log();
        log.lines()
            .any(|l| {
                l.contains("tunnel{")
                    && l.contains("kind=\"serial\"")
                    && l.contains("too big a message")
            })
            .then_some(())
    });
}

#[test]
fn two_hundred_consoles_leave_nothing_behind() {
    let w = WsWorld::start();
    let open0 = w.metric("virtgate_tunnels_open");
    let opened0 = w.metric("virtgate_tunnels_opened_total");
    let fds0 = w.fds();
    rt().block_on(async {
        let mut send = w.h2(&w.wanda).await;
        for i in 0..200 {
            if i % 2 == 0 {
                let (mut ws, _) = w
                    .ws1(Some(&w.wanda), "/v1/domains/web1/vnc", &[])
                    .await
                    .expect("WebSocket");
                read_until(&mut ws, b"RFB 003.00").await;
                close(ws).await;
            } else {
                let mut ws = w.ws2(&mut send, "/v1/domains/web1/vnc").await;
                read_until(&mut ws, b"RFB 003.00").await;
                if i % 4 == 1 {
                    close(ws).await;
                } else {
                    drop(ws); // a browser tab that just goes away
                }
            }
        }
    });
    assert!(w.metric("virtgate_tunnels_opened_total") - opened0 >= 200.0);
    poll(
        "virtgate_tunnels_open back to its start",
        Duration::from_secs(30),
        || (w.metric("virtgate_tunnels_open") == open0).then_some(()),
    );
    poll(
        "the gateway's descriptors back near their start",
        Duration::from_secs(30),
        || (w.fds() <= fds0 + 4).then_some(()),
    );
}

#[test]
fn revoking_the_user_closes_an_open_console() {
    let w = WsWorld::start();
    rt().block_on(async {
        let (mut ws1, _) = w
            .ws1(Some(&w.rita), "/v1/domains/web1/vnc", &[])
            .await
            .expect("WebSocket");
        read_until(&mut ws1, b"RFB 003.00").await;
        let mut send = w.h2(&w.rita).await;
        let mut ws2 = w.ws2(&mut send, "/v1/domains/web1/vnc").await;
        read_until(&mut ws2, b"RFB 003.00").await;
        w.pki.revoke("rita");
        let ended = |r: Option<Result<Message, WsError>>| match r {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => true,
            Some(Ok(_)) => false,
        };
        for (name, end) in [
            (
                "HTTP/1.1",
                tokio::time::timeout(ANSWER, async {
                    loop {
                        if ended(ws1.next().await) {
                            break;
                        }
                    }
                })
                .await,
            ),
            (
                "HTTP/2",
                tokio::time::timeout(ANSWER, async {
                    loop {
                        if ended(ws2.next().await) {
                            break;
                        }
                    }
                })
                .await,
            ),
        ] {
            assert!(
                end.is_ok(),
                "the {name} console stays open after the revocation"
            );
        }
        // and stays refused
        assert!(w
            .ws1(Some(&w.rita), "/v1/domains/web1/vnc", &[])
            .await
            .is_err());
    });
    // wanda is unaffected
    assert!(w.metric("virtgate_tunnels_open") >= 0.0);
}
