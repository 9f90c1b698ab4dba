//! The SSH steps (`virtgate+ssh://`): the keys the ssh-agent offers and the key files that
//! would be tried, then the transport's own connection, whose failure is put on the step it
//! belongs to: the host key against `~/.ssh/known_hosts` (unknown, changed or revoked, with
//! its fingerprint), the login, or the channel to the gateway's socket. `doctor` never adds
//! a host key to known_hosts, whatever `--accept-new-host-key` says.

use std::path::PathBuf;

use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;

use super::report::{Report, Status};
use crate::cli::Settings;
use crate::error::{Error, SshFailure};
use crate::transport::ssh::{auth, SshTransport};
use crate::transport::Connected;

/// The agent's keys (count and types) and the key files the login would try.
pub async fn keys(report: &mut Report, settings: &Settings) {
    let files = auth::key_files(settings.ssh_key.as_deref(), settings.home.as_deref());
    let files_text = if files.is_empty() {
        "no key file".to_owned()
    } else {
        format!(
            "key files {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) else {
        let detail = format!("no ssh-agent ($SSH_AUTH_SOCK is not set); {files_text}");
        if files.is_empty() {
            report.add_hint(
                "ssh keys",
                Status::Fail,
                detail,
                "start an ssh-agent and `ssh-add` your key, or name a key file with --ssh-key \
                 FILE (`ssh_key` in the profile)",
            );
        } else {
            report.ok("ssh keys", detail);
        }
        return;
    };
    let sock = PathBuf::from(sock);
    let identities = match AgentClient::connect_uds(&sock).await {
        Ok(mut agent) => agent.request_identities().await.map_err(|e| agent_text(&e)),
        Err(e) => Err(agent_text(&e)),
    };
    match identities {
        Ok(ids) => {
            let types: Vec<String> = ids
                .iter()
                .filter_map(|id| match id {
                    AgentIdentity::PublicKey { key, .. } => Some(key.algorithm().to_string()),
                    _ => None,
                })
                .collect();
            let agent = if types.is_empty() {
                "the ssh-agent holds no key".to_owned()
            } else {
                format!(
                    "the ssh-agent holds {} ({})",
                    super::certinfo::plural(types.len() as i64, "key"),
                    types.join(", ")
                )
            };
            if types.is_empty() && files.is_empty() {
                report.add_hint(
                    "ssh keys",
                    Status::Fail,
                    format!("{agent}; {files_text}"),
                    "`ssh-add` your key, or name a key file with --ssh-key FILE",
                );
            } else {
                report.ok("ssh keys", format!("{agent}; {files_text}"));
            }
        }
        Err(e) => report.add_hint(
            "ssh keys",
            Status::Warn,
            format!(
                "the ssh-agent at {} does not answer ({e}); {files_text}",
                sock.display()
            ),
            "start an ssh-agent (`eval $(ssh-agent)`) or unset SSH_AUTH_SOCK",
        ),
    }
}

/// The transport's connection: host key, login, channel; the stream when all worked.
pub async fn connect(report: &mut Report, transport: &SshTransport) -> Option<Connected> {
    let steps = [
        ("ssh host key", "known in ~/.ssh/known_hosts"),
        ("ssh login", "sshd accepted a key"),
        (
            "gateway socket",
            "sshd opened a channel to the gateway's socket",
        ),
    ];
    let (failed_at, err) = match transport.connect().await {
        Ok(c) => {
            for (step, done) in steps {
                report.ok(step, done);
            }
            return Some(c);
        }
        Err(e) => (stage(&e), e),
    };
    for (i, (step, done)) in steps.into_iter().enumerate() {
        if i < failed_at {
            report.ok(step, done);
        } else if i == failed_at {
            report.fail(step, &err);
            if let (Error::Ssh(f), Some(last)) = (&err, report.checks.last_mut()) {
                if matches!(**f, SshFailure::HostKeyUnknown { .. }) {
                    // the hint's --accept-new-host-key is for the other commands
                    if let Some(h) = last.hint.as_mut() {
                        h.push_str(
                            "\n(doctor itself never stores a host key: `virtgate whoami \
                             --accept-new-host-key` does)",
                        );
                    }
                }
            }
        } else {
            report.skip(step, "not tried: the step above failed");
        }
    }
    None
}

/// An agent error without the `(os error N)` noise.
fn agent_text(e: &russh::keys::Error) -> String {
    match e {
        russh::keys::Error::IO(io) => crate::error::io_reason(io),
        other => other.to_string(),
    }
}

/// Which of the three steps an SSH error belongs to.
fn stage(e: &Error) -> usize {
    let f = match e {
        Error::Ssh(f) => f,
        Error::Resolve { .. } | Error::Connect { .. } => return 0,
        // a passphrase source failing for a key file
        _ => return 1,
    };
    match **f {
        SshFailure::Connect { .. }
        | SshFailure::Handshake { .. }
        | SshFailure::HostKeyUnknown { .. }
        | SshFailure::HostKeyChanged { .. }
        | SshFailure::HostKeyRevoked { .. }
        | SshFailure::KnownHosts { .. }
        | SshFailure::NoHome => 0,
        SshFailure::AuthRefused { .. }
        | SshFailure::WrongPassphrase { .. }
        | SshFailure::KeyFile { .. }
        | SshFailure::NoUser { .. }
        | SshFailure::Lost { .. } => 1,
        _ => 2,
    }
}
