//! The local side of the shared connection: HTTP/2 with prior knowledge on `up`'s unix
//! socket, the same protocol a gateway speaks on its own socket, so that every command uses
//! it through the ordinary unix transport.
//!
//! Each local connection is checked to come from our own uid (SO_PEERCRED; the socket is
//! 0600 in a 0700 folder already). Each request is passed on as one request on the
//! upstream connection: API calls with their bodies (answers stream back as they come, the
//! event stream included), tunnels (extended CONNECT) as a tunnel whose bytes are copied
//! both ways until either side closes. Only API paths pass; the answers, error statuses
//! included, are the gateway's. When the upstream connection is down the local client gets
//! a problem that says so, after a short wait for the reconnection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;
use virtgate_proto::tuning::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};
use virtgate_proto::{ApiPath, Problem, PROBLEM_CONTENT_TYPE};

use super::upstream::Upstream;
use crate::error::{chain_text, Error};
use crate::session::RecvBody;

/// How long a local request waits for a lost upstream connection to come back.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// Largest request body passed on (API bodies are small JSON).
const MAX_REQUEST_BODY: usize = 1 << 20;

/// What a local client gets: the gateway's answer as it streams, or a problem of ours.
type Answer = Response<Either<RecvBody, Full<Bytes>>>;

/// Accept local connections until the listener fails.
pub async fn serve(listener: UnixListener, upstream: Arc<Upstream>) -> Result<(), Error> {
    let uid = rustix::process::getuid().as_raw();
    let mut next: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like pass; do not spin on them
                tracing::warn!(error = %e, "cannot accept a local connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) if c.uid() == uid => c.pid(),
            Ok(c) => {
                tracing::warn!(uid = c.uid(), "refused a local connection of another user");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a local connection: no peer credentials");
                continue;
            }
        };
        next += 1;
        let span = tracing::info_span!("local", id = next, pid = ?peer);
        tokio::spawn(connection(stream, upstream.clone()).instrument(span));
    }
}

/// Serve one local connection.
async fn connection(stream: UnixStream, upstream: Arc<Upstream>) {
    let service = service_fn(move |req| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(handle(req, &upstream).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %chain_text(&e), "local connection ended");
    }
}

/// Pass one local request on.
async fn handle(req: Request<Incoming>, upstream: &Upstream) -> Answer {
    let connect = req.method() == Method::CONNECT;
    let path = match ApiPath::parse(req.uri().path(), req.uri().query(), connect) {
        Ok(p) => p,
        Err(e) => {
            return problem(
                Problem::new(404, "not-found", e.to_string())
                    .hint("the shared connection passes only virtgate API calls"),
            )
        }
    };
    let session = match upstream.session(RECONNECT_WAIT).await {
        Ok(s) => s,
        Err(p) => return problem(p),
    };
    if connect {
        return tunnel(req, &session, &path).await;
    }
    let method = req.method().clone();
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return problem(
                Problem::new(400, "bad-request", "the request body could not be read")
                    .detail(e.to_string()),
            )
        }
    };
    match session.forward(&method, &path, body, json).await {
        Ok(resp) => resp.map(Either::Left),
        Err(e) => error(&e),
    }
}

/// Open the tunnel upstream, answer 200 with its headers, then copy both ways.
async fn tunnel(
    mut req: Request<Incoming>,
    session: &crate::session::Session,
    path: &ApiPath,
) -> Answer {
    let (headers, remote) = match session.open_tunnel_with_headers(path).await {
        Ok(t) => t,
        Err(e) => return error(&e),
    };
    let local = hyper::upgrade::on(&mut req);
    let what = path.to_path();
    tokio::spawn(
        async move {
            let local = match local.await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::debug!(error = %e, "the local tunnel did not open");
                    return;
                }
            };
            let copied = remote.splice(local).await;
            tracing::debug!(?copied, "tunnel ended");
        }
        .instrument(tracing::debug_span!("tunnel", path = %what)),
    );
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.headers_mut() = headers;
    resp
}

/// A local failure as the problem the local client reports.
fn error(e: &Error) -> Answer {
    match e {
        Error::Problem { problem: p } => problem(p.clone()),
        other => {
            let mut p = Problem::new(502, "shared-connection", chain_text(other));
            if let Some(h) = other.hint() {
                p = p.hint(h);
            }
            problem(p)
        }
    }
}

/// A problem answer.
fn problem(p: Problem) -> Answer {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = serde_json::to_vec(&p).unwrap_or_default();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    resp
}
