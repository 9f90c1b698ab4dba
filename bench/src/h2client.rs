//! The bench's own HTTP/2 client over TLS with a client certificate (hyper + rustls, like
//! the `virtgate` client and the tests' raw client), for what the `virtgate` binary cannot
//! do on purpose: thousands of connections at once (P4) and a thousand tunnels on one
//! connection (P5). Its HTTP/2 settings are the `virtgate` client's (4 MiB stream and
//! 16 MiB connection receive windows, 256 KiB frames), so a tunnel here behaves like one
//! of `virtgate vnc`. How many tunnels one connection holds at once is the gateway's to
//! say (`SETTINGS_MAX_CONCURRENT_STREAMS` = its `max_streams_per_connection`); this client
//! sets no limit of its own on the streams it opens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use virtgate_tests::ClientCert;

/// An open tunnel (extended CONNECT, `:protocol` virtgate-stream).
pub type Tunnel = TokioIo<hyper::upgrade::Upgraded>;

/// A TLS client configuration for `cert` (unencrypted key), trusting `cert.ca`.
pub fn tls_config(cert: &ClientCert) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in virtgate_pki::load_certs(&cert.ca).context("reading the CA")? {
        roots.add(c)?;
    }
    let chain = virtgate_pki::load_certs(&cert.cert).context("reading the client certificate")?;
    let key = virtgate_pki::load_private_key(&cert.key, &mut || {
        Err(virtgate_pki::KeyFileError::passphrase(
            "the bench's key is not encrypted",
            None,
        ))
    })
    .context("reading the client key")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One authenticated HTTP/2 connection.
pub struct H2 {
    send: SendRequest<Empty<Bytes>>,
    base: String,
    /// The connection task; aborted on drop.
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for H2 {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl H2 {
    /// Connect to `addr` (TCP_NODELAY, TLS, HTTP/2 handshake).
    pub async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<H2> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .context("TLS handshake")?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(256 << 10)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let (send, conn) = builder
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2 {
            send,
            base: format!("https://{addr}"),
            conn,
        })
    }

    /// GET `path`; fails unless 200.
    pub async fn get_ok(&mut self, path: &str) -> Result<Bytes> {
        let req = http::Request::get(format!("{}{path}", self.base)).body(Empty::new())?;
        self.send.ready().await.context("connection not ready")?;
        let resp = self.send.send_request(req).await.context("GET")?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("body")?.to_bytes();
        if status != 200 {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// A cloneable handle that opens tunnels on this connection.
    pub fn opener(&self) -> Opener {
        Opener {
            send: self.send.clone(),
            base: self.base.clone(),
        }
    }
}

/// Opens tunnels on one [`H2`] connection, from any task.
#[derive(Clone)]
pub struct Opener {
    send: SendRequest<Empty<Bytes>>,
    base: String,
}

impl Opener {
    /// Open a tunnel at `path` (e.g. `/v1/domains/bench/vnc`); fails unless 200.
    pub async fn tunnel(mut self, path: &str) -> Result<Tunnel> {
        let mut req = http::Request::connect(format!("{}{path}", self.base)).body(Empty::new())?;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static(
                virtgate_proto::TUNNEL_PROTOCOL,
            ));
        self.send.ready().await.context("connection not ready")?;
        let mut resp = self.send.send_request(req).await.context("CONNECT")?;
        if resp.status() != 200 {
            bail!("tunnel {path}: {}", resp.status());
        }
        let up = hyper::upgrade::on(&mut resp).await.context("upgrade")?;
        Ok(TokioIo::new(up))
    }
}
