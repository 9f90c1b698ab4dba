//! `POST /v1/domains/{name}/start|shutdown|reboot|destroy`: power operations (operator).
//!
//! Each call checks the domain's state first, so `start` of a running domain and
//! `destroy`/`shutdown` of a shut-off one answer `already_in_state` without touching it
//! (`reboot` of a shut-off domain is 409 `domain-not-running`). `shutdown` takes a
//! [`ShutdownRequest`] body (empty = defaults): it presses the ACPI power button, then
//! polls the state every [`POLL`] until the domain is off (`shut_down`); when `timeout_s`
//! passes it destroys the domain with `force` (`destroyed`) or answers 504
//! `shutdown-timeout`. A QEMU without `command` exits when its guest powers off and then
//! reads `unavailable`: that counts as off too. Every success is an [`ActionResult`] with
//! the wall time and the state afterwards.
//!
//! The wait runs inside the request: a client that goes away drops it (hyper cancels the
//! request future), and the audit log then records `failed: the client went away`. Every
//! outcome, failures included, is one lifecycle line in the audit log.

use std::time::{Duration, Instant};

use crate::api::ReqBody;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use virtgate_proto::{Action as Op, ActionResult, DomainState, Outcome, ShutdownRequest};

use super::error::{self, ApiError};
use super::{authorize, domains::json, Body, State};
use crate::authn::Identity;
use crate::authz::{Action, Role};
use crate::backend::{BackendError, Lifecycle};

/// Time between two state checks while a shutdown waits.
pub const POLL: Duration = Duration::from_millis(150);
/// Longest `timeout_s` a shutdown may ask for.
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Largest request body read (a `ShutdownRequest` is a few dozen bytes).
const MAX_BODY: usize = 4096;

/// Handle a lifecycle call on domain `name`.
pub async fn handle(
    state: &State,
    id: &Identity,
    req: &mut Request<ReqBody>,
    name: &str,
    op: Op,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    if method != Method::POST {
        return Err(error::method_not_allowed(
            &method,
            req.uri().path(),
            &[Method::POST],
            "lifecycle calls are POST (`virtgate start|shutdown|reboot|destroy NAME`)",
        ));
    }
    let action = Action::Lifecycle(op);
    let role = authorize(state, id, Some(name), action)?;
    let started = Instant::now();
    let mut audit = AuditOnDrop {
        state,
        id,
        action,
        domain: name,
        role,
        started,
        done: false,
    };
    let result = async {
        let request = match op {
            Op::Shutdown => Some(read_shutdown_request(req).await?),
            _ => None,
        };
        run(state, name, op, request.as_ref(), started).await
    }
    .await;
    audit.done = true;
    let elapsed_ms = elapsed_ms(started);
    state.events.poke();
    match result {
        Ok((outcome, after)) => {
            let r = ActionResult {
                domain: name.to_owned(),
                action: op,
                outcome,
                elapsed_ms,
                state: after,
            };
            let word = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            state
                .live
                .get()
                .audit
                .lifecycle(id, action, name, Some(role), &word, elapsed_ms);
            tracing::info!(domain = %name, action = op.as_str(), outcome = %word, elapsed_ms, "lifecycle");
            Ok(json(&r))
        }
        Err(e) => {
            let why = e
                .problem
                .detail
                .clone()
                .unwrap_or_else(|| e.problem.title.clone());
            state.live.get().audit.lifecycle(
                id,
                action,
                name,
                Some(role),
                &format!("failed: {why}"),
                elapsed_ms,
            );
            tracing::info!(domain = %name, action = op.as_str(), error = %why, elapsed_ms, "lifecycle failed");
            Err(e)
        }
    }
}

/// Writes the audit line of a call that never finished (its client went away).
struct AuditOnDrop<'a> {
    /// Where the audit log is.
    state: &'a State,
    /// Who asked.
    id: &'a Identity,
    /// What they asked for.
    action: Action,
    /// On which domain.
    domain: &'a str,
    /// The role they hold.
    role: Role,
    /// When the call began.
    started: Instant,
    /// Set once the call's own audit line is written.
    done: bool,
}

impl Drop for AuditOnDrop<'_> {
    fn drop(&mut self) {
        if !self.done {
            let elapsed = elapsed_ms(self.started);
            tracing::info!(domain = %self.domain, action = self.action.as_str(), elapsed_ms = elapsed, "lifecycle call abandoned: the client went away");
            self.state.live.get().audit.lifecycle(
                self.id,
                self.action,
                self.domain,
                Some(self.role),
                "failed: the client went away",
                elapsed,
            );
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Read and parse the body of a shutdown.
async fn read_shutdown_request(req: &mut Request<ReqBody>) -> Result<ShutdownRequest, ApiError> {
    let body = Limited::new(std::mem::take(req.body_mut()), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error::bad_request(
                format!("cannot read the request body: {e}"),
                "send at most a small JSON object: {\"timeout_s\": 60, \"force\": false}",
            )
        })?
        .to_bytes();
    parse_shutdown_request(&body)
}

/// Parse a [`ShutdownRequest`]: empty (or blank) is the defaults; unknown fields, bad JSON
/// and timeouts over [`MAX_TIMEOUT_S`] are 400 with a hint.
pub fn parse_shutdown_request(body: &Bytes) -> Result<ShutdownRequest, ApiError> {
    const HINT: &str = "the body is JSON like {\"timeout_s\": 60, \"force\": true} (both optional; an empty body means the defaults)";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ShutdownRequest::default());
    }
    let r: ShutdownRequest = serde_json::from_slice(body)
        .map_err(|e| error::bad_request(format!("bad shutdown request: {e}"), HINT))?;
    if r.timeout_s > MAX_TIMEOUT_S {
        return Err(error::bad_request(
            format!(
                "timeout_s {} is longer than the {MAX_TIMEOUT_S} s a shutdown may wait",
                r.timeout_s
            ),
            HINT,
        ));
    }
    Ok(r)
}

/// Whether a domain in `state` counts as on for `start` (nothing to do then).
fn is_on(state: DomainState) -> bool {
    matches!(
        state,
        DomainState::Running | DomainState::Paused | DomainState::ShuttingDown
    )
}

/// Whether a powering-off domain has arrived: shut off, or gone from the hypervisor's view
/// (a QEMU without `command` exits when its guest powers off).
fn is_off(state: DomainState) -> bool {
    matches!(state, DomainState::ShutOff | DomainState::Unavailable)
}

/// Do it: precheck, backend call, (shutdown) wait. Returns the outcome and the state after.
async fn run(
    state: &State,
    name: &str,
    op: Op,
    request: Option<&ShutdownRequest>,
    started: Instant,
) -> Result<(Outcome, DomainState), ApiError> {
    let backend = &state.backend;
    let be = |e: BackendError| error::backend(&e);
    let current = backend.domain(name).await.map_err(be)?.state;
    let already = || Ok((Outcome::AlreadyInState, current));
    let outcome = match op {
        Op::Start => {
            if is_on(current) {
                return already();
            }
            backend
                .lifecycle(name, Lifecycle::Start)
                .await
                .map_err(be)?;
            Outcome::Started
        }
        Op::Reboot => {
            if current == DomainState::ShutOff {
                return Err(be(BackendError::NotRunning {
                    domain: name.to_owned(),
                }));
            }
            backend
                .lifecycle(name, Lifecycle::Reboot)
                .await
                .map_err(be)?;
            Outcome::Rebooted
        }
        Op::Destroy => {
            if current == DomainState::ShutOff {
                return already();
            }
            backend
                .lifecycle(name, Lifecycle::Destroy)
                .await
                .map_err(be)?;
            Outcome::Destroyed
        }
        Op::Shutdown => {
            if current == DomainState::ShutOff {
                return already();
            }
            let request = request.cloned().unwrap_or_default();
            backend
                .lifecycle(name, Lifecycle::Shutdown)
                .await
                .map_err(be)?;
            let deadline = started + Duration::from_secs(request.timeout_s);
            if let Some(after) = wait_off(state, name, deadline).await {
                return Ok((Outcome::ShutDown, after));
            }
            if !request.force {
                return Err(error::shutdown_timeout(name, request.timeout_s));
            }
            tracing::info!(domain = %name, timeout_s = request.timeout_s, "guest did not power off in time: destroying it (force)");
            backend
                .lifecycle(name, Lifecycle::Destroy)
                .await
                .map_err(be)?;
            Outcome::Destroyed
        }
        _ => {
            return Err(error::not_implemented(&format!(
                "lifecycle action {}",
                op.as_str()
            )))
        }
    };
    let after = match backend.domain(name).await {
        Ok(d) => d.state,
        Err(_) => DomainState::Unavailable,
    };
    Ok((outcome, after))
}

/// Poll the domain's state until it is off (its state then) or `deadline` passes (`None`).
/// Backend errors meanwhile (libvirtd restarting) are retried until the deadline.
async fn wait_off(state: &State, name: &str, deadline: Instant) -> Option<DomainState> {
    loop {
        match state.backend.domain(name).await {
            Ok(d) if is_off(d.state) => return Some(d.state),
            Ok(_) => {}
            Err(e) => tracing::debug!(domain = %name, error = %e, "shutdown: state check failed"),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_bodies() {
        let p = |s: &'static str| parse_shutdown_request(&Bytes::from_static(s.as_bytes()));
        assert_eq!(p("").unwrap(), ShutdownRequest::default());
        assert_eq!(p(" \n").unwrap().timeout_s, 60);
        let r = p(r#"{"timeout_s": 2, "force": true}"#).unwrap();
        assert_eq!((r.timeout_s, r.force), (2, true));
        assert_eq!(p(r#"{"force": true}"#).unwrap().timeout_s, 60);
        for bad in [
            r#"{"timeout": 2}"#,
            r#"{"timeout_s": "2"}"#,
            r#"{"timeout_s": -1}"#,
            "timeout_s=2",
            r#"{"timeout_s": 999999}"#,
        ] {
            let e = p(bad).unwrap_err().problem;
            assert_eq!((e.status, e.kind_name()), (400, "bad-request"), "{bad}");
            assert!(e.hint.unwrap().contains("timeout_s"), "{bad}");
        }
        let e = p(r#"{"timeout": 2}"#).unwrap_err().problem;
        assert!(e.detail.unwrap().contains("unknown field `timeout`"));
    }

    #[test]
    fn on_and_off() {
        assert!(is_on(DomainState::Running) && is_on(DomainState::Paused));
        assert!(!is_on(DomainState::ShutOff) && !is_on(DomainState::Crashed));
        assert!(!is_on(DomainState::Unavailable));
        assert!(is_off(DomainState::ShutOff) && is_off(DomainState::Unavailable));
        assert!(!is_off(DomainState::Running) && !is_off(DomainState::ShuttingDown));
    }
}
