//! Lifecycle calls (`POST /v1/domains/{name}/start|reboot|destroy|shutdown`) and the event
//! stream (`GET /v1/events`, newline-delimited JSON).
//!
//! Every lifecycle call answers 200 with an [`ActionResult`] saying what happened and how
//! long it took; failures are problem+json like every other call (e.g. a shutdown that
//! timed out without `force` is 504 `urn:virtgate:shutdown-timeout`).

use serde::{Deserialize, Serialize};

use crate::DomainState;

/// A lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    Start,
    Reboot,
    Destroy,
    Shutdown,
}

impl Action {
    /// Path segment and audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Reboot => "reboot",
            Action::Destroy => "destroy",
            Action::Shutdown => "shutdown",
        }
    }

    /// Parse a path segment.
    pub fn from_segment(s: &str) -> Option<Action> {
        match s {
            "start" => Some(Action::Start),
            "reboot" => Some(Action::Reboot),
            "destroy" => Some(Action::Destroy),
            "shutdown" => Some(Action::Shutdown),
            _ => None,
        }
    }
}

/// Body of `POST /v1/domains/{name}/shutdown` (all fields optional; an empty body is the
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {
    /// How long to wait for the guest to power off after the ACPI power button.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Destroy (power off hard) the domain when the timeout passes.
    #[serde(default)]
    pub force: bool,
}

/// Default of [`ShutdownRequest::timeout_s`].
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 60;

fn default_timeout_s() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_S
}

impl Default for ShutdownRequest {
    fn default() -> Self {
        ShutdownRequest {
            timeout_s: DEFAULT_SHUTDOWN_TIMEOUT_S,
            force: false,
        }
    }
}

/// What a lifecycle call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The domain was started.
    Started,
    /// The guest was asked to reboot (or reset).
    Rebooted,
    /// The guest powered off by itself after the ACPI power button.
    ShutDown,
    /// The domain was powered off hard (destroy, or shutdown `force` after the timeout).
    Destroyed,
    /// Nothing to do: the domain already was in the wanted state.
    AlreadyInState,
}

/// 200 answer of a lifecycle call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub domain: String,
    pub action: Action,
    pub outcome: Outcome,
    /// Wall time of the call on the gateway, in milliseconds.
    pub elapsed_ms: u64,
    /// The domain's state afterwards.
    pub state: DomainState,
}

/// Kind of a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    Started,
    Stopped,
    Crashed,
    Paused,
    Resumed,
    /// The backend lost the domain (QEMU socket gone, libvirtd down).
    Unavailable,
}

/// One line of `GET /v1/events` (`application/x-ndjson`). Only domains the identity may
/// see are reported. The stream opens with one line per visible domain with
/// `initial = true` (its current state; `event` is `started` for a running domain,
/// `stopped` for a shut-off one, and so on), then one line per change as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 UTC time the gateway noticed the change.
    pub time: String,
    pub domain: String,
    pub event: EventKind,
    /// The domain's state after the event.
    pub state: DomainState,
    /// True for the snapshot lines sent when the stream opens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initial: bool,
}

/// Content type of the event stream.
pub const EVENTS_CONTENT_TYPE: &str = "application/x-ndjson";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_request_defaults_and_rejects_unknown_fields() {
        let r: ShutdownRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, ShutdownRequest::default());
        let r: ShutdownRequest = serde_json::from_str(r#"{"timeout_s":5,"force":true}"#).unwrap();
        assert!(r.force && r.timeout_s == 5);
        assert!(serde_json::from_str::<ShutdownRequest>(r#"{"timeout":5}"#).is_err());
    }

    #[test]
    fn action_segments_round_trip() {
        for a in [
            Action::Start,
            Action::Reboot,
            Action::Destroy,
            Action::Shutdown,
        ] {
            assert_eq!(Action::from_segment(a.as_str()), Some(a));
        }
        assert_eq!(Action::from_segment("screenshot"), None);
    }
}
