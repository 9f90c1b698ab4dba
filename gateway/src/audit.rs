//! The audit log: one JSON line per authorization decision, appended to `[audit] path`.
//!
//! Minimal for now (issue 5 adds lifecycle outcomes): time, identity, method, peer, action,
//! domain, decision and the role held. Secrets never reach it (identities carry none). A
//! line is one `write` on an `O_APPEND` file under a mutex, so lines never interleave; the
//! write is small and synchronous, which is fine at the rate people open consoles.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::authn::Identity;
use crate::authz::{Action, Decision};

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit log {}: {source}", path.display())]
pub struct AuditError {
    /// `[audit] path`.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

/// An open audit log (or none, when `[audit]` is not configured).
#[derive(Debug, Default)]
pub struct AuditLog {
    /// The file, appended to; `None` disables auditing.
    file: Option<Mutex<std::fs::File>>,
    /// Its path, for error messages.
    path: Option<PathBuf>,
}

/// One line of the audit log.
#[derive(Debug, Serialize)]
struct Record<'a> {
    /// When, RFC 3339 UTC.
    time: String,
    /// Who: the user name rules matched.
    user: &'a str,
    /// How they logged in (`certificate`, `unix`, ...).
    method: &'a str,
    /// Certificate subject or Kerberos principal, for tracing a user name back to a credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'a str>,
    /// From where (`ip:port` or `unix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    /// What they asked for (`list`, `info`, `vnc`, ...).
    action: &'a str,
    /// On which domain; absent for listing and libvirt.
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    /// `allow` or `deny`.
    decision: &'static str,
    /// The role they hold on the domain, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

impl AuditLog {
    /// Open (create, append) the log at `path`; `None` gives a log that records nothing.
    pub fn open(path: Option<&Path>) -> Result<AuditLog, AuditError> {
        let Some(path) = path else {
            return Ok(AuditLog::default());
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            file: Some(Mutex::new(file)),
            path: Some(path.to_owned()),
        })
    }

    /// Record one decision. A failing write is logged, never fatal to the request.
    pub fn decision(
        &self,
        id: &Identity,
        action: Action,
        domain: Option<&str>,
        decision: &Decision,
    ) {
        let Some(file) = &self.file else { return };
        let record = Record {
            time: now_rfc3339(),
            user: &id.user,
            method: id.method.as_str(),
            principal: id.principal.as_deref(),
            peer: id.peer.as_deref(),
            action: action.as_str(),
            domain,
            decision: if decision.allowed { "allow" } else { "deny" },
            role: decision.role.map(|r| r.as_str()),
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "audit record does not serialize");
                return;
            }
        };
        line.push(b'\n');
        let result = match file.lock() {
            Ok(mut f) => f.write_all(&line),
            Err(poisoned) => poisoned.into_inner().write_all(&line),
        };
        if let Err(e) = result {
            tracing::error!(path = ?self.path, error = %e, "cannot write the audit log");
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Role;

    #[test]
    fn one_json_line_per_decision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let id = Identity {
            user: "alice".into(),
            method: virtgate_proto::AuthMethod::Certificate,
            principal: Some("CN=alice".into()),
            groups: vec![],
            peer: Some("127.0.0.1:5000".into()),
        };
        let d = Decision {
            allowed: false,
            role: Some(Role::Viewer),
            required: Role::Operator,
        };
        log.decision(&id, Action::Vnc, Some("web1"), &d);
        log.decision(
            &id,
            Action::List,
            None,
            &Decision {
                allowed: true,
                role: None,
                required: Role::Viewer,
            },
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["decision"], "deny");
        assert_eq!(lines[0]["domain"], "web1");
        assert_eq!(lines[0]["action"], "vnc");
        assert_eq!(lines[0]["peer"], "127.0.0.1:5000");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["decision"], "allow");
    }

    #[test]
    fn unwritable_path_is_named() {
        let e = AuditLog::open(Some(Path::new("/nonexistent/dir/audit.jsonl"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/audit.jsonl"));
    }
}
