//! `GET /v1/events` (viewer): domain lifecycle events as newline-delimited JSON.
//!
//! The stream opens for an identity holding some role on some domain (it is filtered per
//! domain, so no rule on `*` is needed); the decision is audited as action `events`. It
//! starts with one `initial: true` line per domain the identity may view, then carries the
//! [`Hub`](crate::events::Hub)'s events for those domains as they happen. The body is a
//! stream that the connection pumps: when the client goes away it is dropped, which unsubscribes
//! (and the poller stops with its last subscriber). A subscriber that lags skips what it
//! missed and goes on; the stream ends when the gateway begins to stop, so the drain does
//! not wait for it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use virtgate_proto::{Event, EVENTS_CONTENT_TYPE};

use super::error::{self, ApiError};
use super::{Body, ConnCtx, Held, State};
use crate::authn::Identity;
use crate::authz::{Action, Decision, Role};

/// Open an event stream for `id`.
pub async fn handle(
    state: &Arc<State>,
    id: &Identity,
    conn: &ConnCtx,
) -> Result<Response<Body>, ApiError> {
    let live = state.live.get();
    let role = live.policy.any_role(id);
    let d = Decision {
        allowed: role.is_some(),
        role,
        required: Role::Viewer,
    };
    live.audit.decision(id, Action::Events, None, &d);
    if !d.allowed {
        return Err(error::no_role_anywhere("the event stream"));
    }
    let guard = conn.hold(state, id, None, Action::Events)?;
    // Subscribe before the snapshot, so no change falls between the two.
    let rx = state.events.subscribe();
    let domains = state.backend.list().await.map_err(|e| error::backend(&e))?;
    let initial: VecDeque<Bytes> = domains
        .iter()
        .filter(|d| live.policy.role_on(id, &d.name).is_some())
        .map(|d| line(&crate::events::initial(d)))
        .collect();
    tracing::info!(initial = initial.len(), "event stream opened");
    let sub = Subscriber {
        state: state.clone(),
        id: id.clone(),
        rx,
        initial,
        stop: state.events.stopping(),
        guard,
    };
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let bytes = sub.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), sub))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(EVENTS_CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// One open stream.
struct Subscriber {
    /// For the policy (filtering each event).
    state: Arc<State>,
    /// Whose stream it is.
    id: Identity,
    /// Events from the hub.
    rx: broadcast::Receiver<Arc<Event>>,
    /// The `initial: true` lines not sent yet.
    initial: VecDeque<Bytes>,
    /// The gateway begins to stop.
    stop: CancellationToken,
    /// Registered for reloads: cancelled when the identity holds no role anywhere any more.
    guard: Held,
}

impl Subscriber {
    /// The next line to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(l) = self.initial.pop_front() {
            return Some(l);
        }
        loop {
            let got = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.stop.cancelled() => {
                    tracing::debug!("event stream closed: gateway stops");
                    return None;
                }
                _ = self.guard.guard.close.cancelled() => {
                    tracing::info!("event stream closed: its connection ended, or a reload took its right back");
                    return None;
                }
            };
            match got {
                Ok(e)
                    if self
                        .state
                        .live
                        .get()
                        .policy
                        .role_on(&self.id, &e.domain)
                        .is_some() =>
                {
                    return Some(line(&e))
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "event stream lags behind; skipping events");
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        tracing::debug!("event stream closed");
    }
}

/// One NDJSON line.
fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}
