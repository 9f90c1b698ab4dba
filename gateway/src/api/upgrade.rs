//! The byte stream a tunnel or a WebSocket carries once its request is answered: an HTTP/2
//! extended CONNECT stream ([`virtgate_tunnel::Tunnel`], handed over by [`super::h2conn`]
//! after it sent the 200), or an HTTP/1.1 connection hyper upgraded after its 101
//! (a browser's WebSocket over HTTP/1.1).
//!
//! [`on`] takes what the handler needs from the request before it answers, like
//! `hyper::upgrade::on`; the stream arrives once the answer is out.

use std::sync::{Arc, Mutex};

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_util::either::Either;
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

/// An answered tunnel's byte stream: an HTTP/2 stream on h2 (`Left`: every virtgate client,
/// browsers over HTTP/2), or an HTTP/1.1 connection after `101 Switching Protocols`
/// (`Right`: a browser's WebSocket). tokio-util's `Either` passes reads and writes through.
pub type Upgraded = Either<Tunnel, TokioIo<hyper::upgrade::Upgraded>>;

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
            (Some(rx), _) => rx.await.map(Either::Left).map_err(|_| UpgradeError::Gone),
            (None, Some(up)) => Ok(Either::Right(TokioIo::new(up.await?))),
            (None, None) => Err(UpgradeError::Gone),
        }
    }
}
