//! The audit log: one JSON line per authorization decision and one per lifecycle action,
//! appended to `[audit] path`.
//!
//! Fields: `time` (RFC 3339 UTC), `user`, `method`, `principal` (if any), `peer`, `action`
//! (`list`, `info`, `screenshot`, `events`, `vnc`, `serial`, `spice`, `libvirt`,
//! `libvirt_ro`, `start`, `shutdown`, `reboot`, `destroy`), `domain` (if any), `decision`
//! (`allow` or `deny`), `role` (held, if any); lifecycle lines add `outcome` (`started`,
//! `shut_down`, `destroyed`, `rebooted`, `already_in_state`, or `failed: REASON`) and
//! `elapsed_ms`; descriptors passed through a libvirt tunnel (graphical consoles of
//! virt-manager / virt-viewer) have action `libvirt_fd` (`libvirt_fd_ro`) and an `outcome`
//! (`descriptor 3 from virDomainOpenGraphicsFD`, `descriptor 3 claimed`, `failed: …`):
//!
//! ```text
//! {"time":"2026-11-27T07:01:02.5Z","user":"alice","method":"certificate","principal":"CN=alice","peer":"[::1]:50312","action":"shutdown","domain":"web1","decision":"allow","role":"operator"}
//! {"time":"2026-11-27T07:01:04.6Z","user":"alice","method":"certificate","principal":"CN=alice","peer":"[::1]:50312","action":"shutdown","domain":"web1","decision":"allow","role":"operator","outcome":"destroyed","elapsed_ms":2104}
//! ```
//!
//! Secrets never reach it (identities carry none; tokens and passphrases are not logged).
//! The file is opened for appending and created mode 0640. A line is one `write` on the
//! `O_APPEND` file under a mutex, so lines never interleave; the write is small and
//! synchronous, which is fine at the rate people open consoles. A failing write is logged
//! and never fails the request.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::authn::Identity;
use crate::authz::{Action, Decision, Role};

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
    /// Lifecycle lines: what happened (`started`, `shut_down`, `failed: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    /// Lifecycle lines: how long the action took on the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
}

impl<'a> Record<'a> {
    /// An `allow` line for `id` doing `action`, now; callers set what differs.
    fn of(id: &'a Identity, action: &'a str, domain: Option<&'a str>, role: Option<Role>) -> Self {
        Record {
            time: now_rfc3339(),
            user: &id.user,
            method: id.method.as_str(),
            principal: id.principal.as_deref(),
            peer: id.peer.as_deref(),
            action,
            domain,
            decision: "allow",
            role: role.map(Role::as_str),
            outcome: None,
            elapsed_ms: None,
        }
    }
}

impl<'a> Record<'a> {
    /// A line with no identity behind it (the gateway itself, or a refused handshake).
    fn anonymous(
        user: &'a str,
        method: &'a str,
        peer: Option<&'a str>,
        action: &'a str,
        decision: &'static str,
        outcome: &'a str,
    ) -> Self {
        Record {
            time: now_rfc3339(),
            user,
            method,
            principal: None,
            peer,
            action,
            domain: None,
            decision,
            role: None,
            outcome: Some(outcome),
            elapsed_ms: None,
        }
    }
}

impl AuditLog {
    /// Open (create, append) the log at `path`; `None` gives a log that records nothing.
    pub fn open(path: Option<&Path>) -> Result<AuditLog, AuditError> {
        let Some(path) = path else {
            return Ok(AuditLog::default());
        };
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
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
        if self.file.is_some() {
            let mut r = Record::of(id, action.as_str(), domain, decision.role);
            r.decision = if decision.allowed { "allow" } else { "deny" };
            self.write(&r);
        }
    }

    /// Record what a lifecycle action (allowed before, see [`AuditLog::decision`]) did:
    /// `outcome` is `started`, `shut_down`, ... or `failed: REASON`.
    pub fn lifecycle(
        &self,
        id: &Identity,
        action: Action,
        domain: &str,
        role: Option<Role>,
        outcome: &str,
        elapsed_ms: u64,
    ) {
        if self.file.is_some() {
            let mut r = Record::of(id, action.as_str(), Some(domain), role);
            r.outcome = Some(outcome);
            r.elapsed_ms = Some(elapsed_ms);
            self.write(&r);
        }
    }

    /// Record what happened to a file descriptor passed through a libvirt tunnel (the
    /// tunnel itself was allowed before): action `libvirt_fd` (`libvirt_fd_ro`), the
    /// domain when known, `outcome` such as `descriptor 3 from virDomainOpenGraphicsFD`,
    /// `descriptor 3 claimed`, or `failed: REASON`.
    pub fn descriptor(&self, id: &Identity, read_only: bool, domain: Option<&str>, outcome: &str) {
        if self.file.is_some() {
            let action = if read_only {
                "libvirt_fd_ro"
            } else {
                "libvirt_fd"
            };
            let mut r = Record::of(id, action, domain, None);
            r.outcome = Some(outcome);
            self.write(&r);
        }
    }

    /// Record that something this identity had was taken back (a stream or connection
    /// closed by a reload): decision `deny`, with `outcome`.
    pub fn closed(&self, id: &Identity, action: &str, domain: Option<&str>, outcome: &str) {
        if self.file.is_some() {
            let mut r = Record::of(id, action, domain, None);
            r.decision = "deny";
            r.outcome = Some(outcome);
            self.write(&r);
        }
    }

    /// Record a browser login step of this identity (`web_ticket` issued, `web_login` a
    /// ticket traded for a session, `web_logout`): decision `allow`, with `outcome`.
    pub fn web(&self, id: &Identity, action: &str, outcome: &str) {
        if self.file.is_some() {
            let mut r = Record::of(id, action, None, None);
            r.outcome = Some(outcome);
            self.write(&r);
        }
    }

    /// Record what the gateway itself did (`reload`), as user `virtgated`.
    pub fn system(&self, action: &str, outcome: &str) {
        if self.file.is_some() {
            self.write(&Record::anonymous(
                "virtgated",
                "system",
                None,
                action,
                "allow",
                outcome,
            ));
        }
    }

    /// Record a connection refused before anyone was identified (a failed TLS handshake:
    /// revoked, expired or unknown certificate): user `-`, the peer, `outcome` the reason.
    pub fn refused(&self, peer: &str, outcome: &str) {
        if self.file.is_some() {
            self.write(&Record::anonymous(
                "-",
                "certificate",
                Some(peer),
                "connect",
                "deny",
                outcome,
            ));
        }
    }

    /// Append one record as one line.
    fn write(&self, record: &Record<'_>) {
        let Some(file) = &self.file else { return };
        let mut line = match serde_json::to_vec(record) {
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

/// The current time, RFC 3339 UTC (audit lines, events).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtgate_proto::Action as Op;

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
        assert!(lines[1].get("outcome").is_none());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        // created 0640 (the umask may only take bits away)
        assert_eq!(mode & 0o777 & !0o640, 0, "mode {mode:o}");
    }

    #[test]
    fn lifecycle_lines_carry_outcome_and_time_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let id = Identity {
            user: "bob".into(),
            method: virtgate_proto::AuthMethod::Kerberos,
            principal: Some("bob@EXAMPLE.ORG".into()),
            groups: vec!["wheel".into()],
            peer: Some("[::1]:40000".into()),
        };
        let shutdown = Action::Lifecycle(Op::Shutdown);
        log.lifecycle(
            &id,
            shutdown,
            "web1",
            Some(Role::Operator),
            "destroyed",
            2104,
        );
        log.lifecycle(
            &id,
            Action::Lifecycle(Op::Start),
            "web1",
            Some(Role::Operator),
            "failed: QEMU exited",
            7,
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l["action"], "shutdown");
        assert_eq!(l["outcome"], "destroyed");
        assert_eq!(l["elapsed_ms"], 2104);
        assert_eq!(l["method"], "kerberos");
        assert_eq!(l["principal"], "bob@EXAMPLE.ORG");
        assert_eq!(l["decision"], "allow");
        assert_eq!(l["role"], "operator");
        assert_eq!(lines[1]["action"], "start");
        assert_eq!(lines[1]["outcome"], "failed: QEMU exited");
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        for k in ["time", "user", "method", "peer", "action", "domain"] {
            assert!(keys.iter().any(|x| *x == k), "{k} missing in {l}");
        }
    }

    #[test]
    fn unwritable_path_is_named() {
        let e = AuditLog::open(Some(Path::new("/nonexistent/dir/audit.jsonl"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/audit.jsonl"));
    }
}
