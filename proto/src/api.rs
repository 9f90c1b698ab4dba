//! JSON bodies of the management API (`/v1/whoami`, `/v1/domains`, ...).
//!
//! Field names are part of the contract: the client's `--json` output prints these types as
//! they are, and scripts read them.

use serde::{Deserialize, Serialize};

/// How a connection proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// TLS client certificate issued by the gateway's CA; the user is the certificate's CN.
    Certificate,
    /// HTTP Negotiate (Kerberos / SPNEGO) over server-authenticated TLS.
    Kerberos,
    /// The gateway's unix socket; the peer's uid (SO_PEERCRED), e.g. through an SSH forward.
    Unix,
}

impl AuthMethod {
    /// The name used on the wire, in logs and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Kerberos => "kerberos",
            AuthMethod::Unix => "unix",
        }
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/web/ticket`: a one-time browser login ticket (`virtgate web`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebTicket {
    /// The ticket: 32 random bytes, base64url; works once.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in_s: u64,
    /// Where a browser trades it for a session cookie: `/ui/login?ticket=...` (the client
    /// adds `https://HOST:PORT` and `&next=/ui/...`).
    pub login_path: String,
}

/// `GET /v1/web/session`: who the page acts as, and the token its POSTs carry in
/// `X-Virtgate-CSRF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// The user name.
    pub user: String,
    /// The CSRF token.
    pub csrf: String,
    /// Whether the identity comes from a session cookie (`POST /ui/logout` ends it).
    #[serde(default)]
    pub session: bool,
}

/// `GET /v1/whoami`: the identity as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The user name that authorization rules match against.
    pub user: String,
    /// How the identity was established.
    pub method: AuthMethod,
    /// The full Kerberos principal or certificate subject, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Unix groups of the user on the gateway host (rules may name `group:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The client's address as the gateway saw it (`ip:port`, or `unix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The gateway's version, so a user can report it.
    pub gateway_version: String,
}

/// Power state of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DomainState {
    Running,
    Paused,
    /// Defined but not running.
    ShutOff,
    /// Powering down (ACPI shutdown in progress).
    ShuttingDown,
    Crashed,
    /// The hypervisor cannot be reached for this domain (QEMU socket gone, libvirtd down).
    /// Listing still succeeds; this domain's calls fail with a clear error.
    Unavailable,
    /// A state the backend reported that has no better name here.
    Other,
}

impl DomainState {
    /// The name used on the wire and in `virtgate list`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::ShutOff => "shut_off",
            DomainState::ShuttingDown => "shutting_down",
            DomainState::Crashed => "crashed",
            DomainState::Unavailable => "unavailable",
            DomainState::Other => "other",
        }
    }
}

impl std::fmt::Display for DomainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A console a domain offers through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConsoleKind {
    /// A VNC server (RFB): one stream per viewer connection.
    Vnc,
    /// A serial console: a byte stream.
    Serial,
    /// A SPICE server: one stream per SPICE channel (main, display, inputs, cursor, ...).
    Spice,
}

impl ConsoleKind {
    /// The name used in paths, lists and messages (`vnc`, `serial`, `spice`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Serial => "serial",
            ConsoleKind::Spice => "spice",
        }
    }
}

/// One domain (virtual machine) as `GET /v1/domains/{name}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The name users type; unique per gateway.
    pub name: String,
    /// The domain's UUID when the backend knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub state: DomainState,
    /// Why the state is `unavailable` (or other detail a user can act on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Consoles that can be tunnelled (`vnc`, `serial`, `spice`).
    #[serde(default)]
    pub consoles: Vec<ConsoleKind>,
    /// The role the asking identity holds on this domain (`viewer`, `operator`, `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `GET /v1/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainList {
    pub domains: Vec<Domain>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_documented_names() {
        for s in [
            DomainState::Running,
            DomainState::ShutOff,
            DomainState::Unavailable,
            DomainState::ShuttingDown,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn whoami_round_trips_without_optional_fields() {
        let w: WhoAmI = serde_json::from_str(
            r#"{"user":"alice","method":"certificate","gateway_version":"0.1.0"}"#,
        )
        .unwrap();
        assert_eq!(w.method, AuthMethod::Certificate);
        assert!(w.principal.is_none());
        let back = serde_json::to_value(&w).unwrap();
        assert!(back.get("principal").is_none());
    }
}
