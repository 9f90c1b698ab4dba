//! `start`, `reboot`, `destroy` and `shutdown`: one `POST /v1/domains/{name}/{action}` each,
//! answered by an [`ActionResult`].
//!
//! stdout is one line per call, `DOMAIN: WHAT HAPPENED (STATE)`, for example
//! `web1: shut down in 2.3 s (shut_off)`,
//! `web1: not responding to ACPI after 2 s, destroyed (shut_off)` or `web1: already running`;
//! with `--json` it is the gateway's [`ActionResult`] instead. A refusal (no such domain, role
//! too low, shutdown timed out without `--force`, hypervisor unavailable) is the gateway's
//! problem+json, printed as `error:` / `hint:` by `main` (status 1).

use virtgate_proto::{Action, ActionResult, ApiPath, DomainState, Outcome, ShutdownRequest};

use super::{json, print};
use crate::error::Error;
use crate::session::Session;

/// Run one lifecycle action. `shutdown` is only read for [`Action::Shutdown`].
pub async fn run(
    session: &Session,
    name: &str,
    action: Action,
    shutdown: &ShutdownRequest,
    as_json: bool,
) -> Result<(), Error> {
    let path = ApiPath::DomainAction(name.to_owned(), action.as_str().to_owned());
    let result: ActionResult = if action == Action::Shutdown {
        if !as_json {
            eprintln!("{}", waiting_note(name, shutdown));
        }
        session.post_json(&path, shutdown).await?
    } else {
        session.post_empty(&path).await?
    };
    if as_json {
        return print(&json(&result)?);
    }
    print(&format!("{}\n", describe(&result, shutdown.timeout_s)))
}

/// The stderr note while a shutdown is under way (it may take up to the timeout).
pub fn waiting_note(name: &str, req: &ShutdownRequest) -> String {
    let then = if req.force {
        "then destroying it"
    } else {
        "then giving up"
    };
    format!(
        "{name}: pressing the ACPI power button; waiting up to {} s, {then}",
        req.timeout_s
    )
}

/// The people-facing line for an answer; `timeout_s` is the shutdown timeout asked for.
pub fn describe(r: &ActionResult, timeout_s: u64) -> String {
    let name = &r.domain;
    let took = seconds(r.elapsed_ms);
    let state = r.state;
    match r.outcome {
        Outcome::AlreadyInState => format!("{name}: already {}", words(state)),
        Outcome::Started => format!("{name}: started in {took} ({state})"),
        Outcome::Rebooted => format!("{name}: rebooted in {took} ({state})"),
        Outcome::ShutDown => format!("{name}: shut down in {took} ({state})"),
        Outcome::Destroyed if r.action == Action::Shutdown => {
            format!("{name}: not responding to ACPI after {timeout_s} s, destroyed ({state})")
        }
        Outcome::Destroyed => format!("{name}: destroyed in {took} ({state})"),
        // an outcome newer than this client
        _ => format!("{name}: {} done in {took} ({state})", r.action.as_str()),
    }
}

/// `0.4 s`, `2.3 s`, `61.0 s`: milliseconds as seconds with one decimal.
pub fn seconds(ms: u64) -> String {
    let tenths = (ms + 50) / 100;
    format!("{}.{} s", tenths / 10, tenths % 10)
}

/// A state in words: `shut_off` → `shut off`.
fn words(state: DomainState) -> String {
    state.as_str().replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(action: Action, outcome: Outcome, ms: u64, state: DomainState) -> ActionResult {
        ActionResult {
            domain: "web1".into(),
            action,
            outcome,
            elapsed_ms: ms,
            state,
        }
    }

    #[test]
    fn lines_for_people() {
        let cases = [
            (
                result(
                    Action::Shutdown,
                    Outcome::ShutDown,
                    2345,
                    DomainState::ShutOff,
                ),
                "web1: shut down in 2.3 s (shut_off)",
            ),
            (
                result(
                    Action::Shutdown,
                    Outcome::Destroyed,
                    2010,
                    DomainState::ShutOff,
                ),
                "web1: not responding to ACPI after 2 s, destroyed (shut_off)",
            ),
            (
                result(
                    Action::Start,
                    Outcome::AlreadyInState,
                    3,
                    DomainState::Running,
                ),
                "web1: already running",
            ),
            (
                result(
                    Action::Destroy,
                    Outcome::AlreadyInState,
                    3,
                    DomainState::ShutOff,
                ),
                "web1: already shut off",
            ),
            (
                result(Action::Start, Outcome::Started, 420, DomainState::Running),
                "web1: started in 0.4 s (running)",
            ),
            (
                result(
                    Action::Destroy,
                    Outcome::Destroyed,
                    12,
                    DomainState::ShutOff,
                ),
                "web1: destroyed in 0.0 s (shut_off)",
            ),
            (
                result(Action::Reboot, Outcome::Rebooted, 99, DomainState::Running),
                "web1: rebooted in 0.1 s (running)",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(describe(&r, 2), want);
        }
    }

    #[test]
    fn seconds_round_to_one_decimal() {
        assert_eq!(seconds(0), "0.0 s");
        assert_eq!(seconds(949), "0.9 s");
        assert_eq!(seconds(950), "1.0 s");
        assert_eq!(seconds(999), "1.0 s");
        assert_eq!(seconds(61_040), "61.0 s");
    }

    #[test]
    fn shutdown_note_says_what_happens_after_the_timeout() {
        let r = ShutdownRequest {
            timeout_s: 2,
            force: true,
        };
        assert!(waiting_note("web1", &r).ends_with("up to 2 s, then destroying it"));
        assert!(waiting_note("web1", &ShutdownRequest::default()).contains("60 s, then giving up"));
    }
}
