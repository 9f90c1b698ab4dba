//! The byte stream a tunnel or a WebSocket carries once its request is answered: an HTTP/2
//! extended CONNECT stream ([`virtgate_tunnel::Tunnel`], handed over by [`super::h2conn`]
//! after it sent the 200), or an HTTP/1.1 connection hyper upgraded after its 101
//! (a browser's WebSocket over HTTP/1.1).
//!
//! [`on`] takes what the handler needs from the request before it answers, like
//! `hyper::upgrade::on`; the stream arrives once the answer is out.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use virtgate_tunnel::Tunnel;

/// Put in an HTTP/2 CONNECT request's extensions by [`super::h2conn`]: the tunnel arrives
/// here once a 2xx answer was sent. (Extensions must be `Clone`: the first [`on`] takes it.)
#[derive(Debug, Clone)]
pub struct Pending(Arc<Mutex<Option<oneshot::Receiver<Tunnel>>>>);

impl Pending {
    /// Where the tunnel `tx` sends will arrive.
    pub fn new(rx: oneshot::Receiver<Tunnel>) -> Pending {
        Pending(Arc::new(Mutex::new(Some(rx))))
    }
}

/// An answered tunnel's byte stream.
#[derive(Debug)]
pub enum Upgraded {
    /// An HTTP/2 stream on h2 (every virtgate client, browsers over HTTP/2).
    H2(Tunnel),
    /// An HTTP/1.1 connection after `101 Switching Protocols` (a browser's WebSocket).
    Http1(TokioIo<hyper::upgrade::Upgraded>),
}

/// Why no stream came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The answer was never sent: the client left, or the connection ended.
    #[error("the client went away before the tunnel opened")]
    Gone,
    /// hyper's HTTP/1.1 upgrade failed.
    #[error("{0}")]
    Http1(#[from] hyper::Error),
}

/// The stream `req` will carry once answered (await it after answering).
pub fn on<B>(
    req: &mut Request<B>,
) -> impl std::future::Future<Output = Result<Upgraded, UpgradeError>> + Send + 'static {
    let pending = req
        .extensions_mut()
        .remove::<Pending>()
        .and_then(|p| p.0.lock().ok()?.take());
    // an HTTP/1.1 request hyper can upgrade carries hyper's own marker
    let http1 = pending.is_none().then(|| hyper::upgrade::on(&mut *req));
    async move {
        match (pending, http1) {
            (Some(rx), _) => rx.await.map(Upgraded::H2).map_err(|_| UpgradeError::Gone),
            (None, Some(up)) => Ok(Upgraded::Http1(TokioIo::new(up.await?))),
            (None, None) => Err(UpgradeError::Gone),
        }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::H2(t) => Pin::new(t).poll_read(cx, buf),
            Upgraded::Http1(u) => Pin::new(u).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upgraded::H2(t) => Pin::new(t).poll_write(cx, buf),
            Upgraded::Http1(u) => Pin::new(u).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::H2(t) => Pin::new(t).poll_flush(cx),
            Upgraded::Http1(u) => Pin::new(u).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::H2(t) => Pin::new(t).poll_shutdown(cx),
            Upgraded::Http1(u) => Pin::new(u).poll_shutdown(cx),
        }
    }
}
