//! The roles of `[[rule]]` tables: plain data here, so that the configuration does not
//! depend on the authorization code that interprets it ([`crate::authz`] re-exports it).

use schemars::JsonSchema;
use serde::Deserialize;

/// What an identity may do on a domain; ordered: `Viewer < Operator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// See the domain: list, info, screenshot, events, read-only libvirt.
    Viewer,
    /// Use it: VNC and serial consoles, start/stop/reboot.
    Operator,
    /// Everything, including read-write libvirt RPC (which reaches every domain).
    Admin,
}

impl Role {
    /// The name used in the config file, the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
