//! SSH failures in words: reaching sshd, its host key against known_hosts, logging in with
//! the agent's keys and key files, and the `direct-streamlocal` channel to the gateway's
//! socket. Each [`SshFailure`] names the host, file, key or socket involved, and its
//! [`SshFailure::hint`] says what to change (on this machine or in the host's sshd_config).

use std::path::PathBuf;

use super::Attempt;

/// How an SSH connection to the gateway failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshFailure {
    /// No address of the host accepted a TCP connection.
    #[error("cannot connect to the SSH server {server}: {}", super::describe_attempts(.attempts))]
    Connect {
        /// `host:port` from the URL.
        server: String,
        /// Each address tried and what happened.
        attempts: Vec<Attempt>,
    },
    /// TCP worked but the SSH handshake did not.
    #[error("SSH handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address connected to.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The host key is in no known_hosts entry for this host.
    #[error(
        "the SSH host key of {host} is not known: {key_type} {fingerprint} (not in {})",
        known_hosts.display()
    )]
    HostKeyUnknown {
        /// The host as known_hosts names it (`host` or `[host]:port`).
        host: String,
        /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, ...
        key_type: String,
        /// `SHA256:…`, as `ssh-keygen -lf` prints it.
        fingerprint: String,
        /// The known_hosts file.
        known_hosts: PathBuf,
        /// Key types known_hosts does have for this host (a different key, not a changed one).
        other_types: Vec<String>,
    },
    /// known_hosts has a different key of the same type for this host.
    #[error(
        "the SSH host key of {host} has CHANGED: it is now {key_type} {fingerprint}, but {}:{line} \
         holds another {key_type} key; not connecting (someone may be intercepting the connection)",
        known_hosts.display()
    )]
    HostKeyChanged {
        /// The host as known_hosts names it.
        host: String,
        /// The key type.
        key_type: String,
        /// Fingerprint of the key the host presented now.
        fingerprint: String,
        /// The known_hosts file.
        known_hosts: PathBuf,
        /// 1-based line of the old entry.
        line: usize,
    },
    /// known_hosts marks the presented key `@revoked`.
    #[error(
        "the SSH host key of {host} ({key_type} {fingerprint}) is marked @revoked in {}:{line}; not connecting",
        known_hosts.display()
    )]
    HostKeyRevoked {
        /// The host as known_hosts names it.
        host: String,
        /// The key type.
        key_type: String,
        /// Its fingerprint.
        fingerprint: String,
        /// The known_hosts file.
        known_hosts: PathBuf,
        /// 1-based line of the `@revoked` entry.
        line: usize,
    },
    /// known_hosts could not be read or written.
    #[error("cannot {action} {}: {reason}", path.display())]
    KnownHosts {
        /// `read` or `add the host key to`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// `$HOME` is unset, so there is no `~/.ssh`.
    #[error(
        "$HOME is not set, so there is no ~/.ssh/known_hosts to check the SSH host key against"
    )]
    NoHome,
    /// The URL names no user and `$USER` is unset.
    #[error("no SSH user name: the URL {url} has none and $USER is not set")]
    NoUser {
        /// The URL.
        url: String,
    },
    /// The server accepted none of our keys.
    #[error("ssh: {login} refused every key we tried ({}; the server allows: {})",
        tried_text(.tried), allowed_text(.allowed))]
    AuthRefused {
        /// `user@host:port`.
        login: String,
        /// `agent key SHA256:… (comment)`, `key file PATH (ssh-ed25519)`, notes.
        tried: Vec<String>,
        /// The methods the server said can continue (`publickey`, `password`, ...).
        allowed: Vec<String>,
        /// The user, for the hint.
        user: String,
        /// The host, for the hint.
        host: String,
    },
    /// An encrypted key file and a passphrase that does not open it.
    #[error("wrong passphrase for {}", path.display())]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
        /// Where the passphrase came from (`--passphrase-file F`, ...), for the hint.
        source_name: String,
    },
    /// A key file that cannot be read or is not a private key.
    #[error("cannot use the SSH key {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// sshd refused the `direct-streamlocal` channel (forwarding disabled).
    #[error("the SSH server refused to forward to the gateway socket {socket} ({detail})")]
    ForwardRefused {
        /// The socket path on the host.
        socket: String,
        /// The host.
        host: String,
        /// What sshd said (reason code and text).
        detail: String,
    },
    /// OpenSSH's one answer for both a refused forward and a missing socket (9.2 sends
    /// "open failed", reason code 2 "connect failed", in either case; only its log differs).
    #[error(
        "the SSH server did not open the gateway socket {socket} on {host} ({detail}): either there \
         is no gateway socket at {socket} on {host} (is virtgated running with listen.unix = \
         {socket}?) or the SSH server refused to forward to the gateway socket (stream-local \
         forwarding is off in its sshd_config); OpenSSH answers both the same way"
    )]
    NotOpened {
        /// The socket path on the host.
        socket: String,
        /// The host.
        host: String,
        /// The login user, for the hint.
        user: String,
        /// What sshd said.
        detail: String,
    },
    /// sshd could not connect to the socket on the host (a server that says so).
    #[error("no gateway socket at {socket} on {host} (is virtgated running with listen.unix = {socket}?) ({detail})")]
    NoSocket {
        /// The socket path on the host.
        socket: String,
        /// The host.
        host: String,
        /// What sshd said.
        detail: String,
    },
    /// Any other refusal of the channel.
    #[error("the SSH server did not open a channel to {socket}: {detail}")]
    Channel {
        /// The socket path on the host.
        socket: String,
        /// What sshd said.
        detail: String,
    },
    /// The SSH connection broke during login or channel setup.
    #[error("the SSH connection to {server} broke: {reason}")]
    Lost {
        /// `host:port`.
        server: String,
        /// What happened.
        reason: String,
    },
}

fn tried_text(tried: &[String]) -> String {
    if tried.is_empty() {
        "no key to try: no ssh-agent and no key file".into()
    } else {
        format!("tried {}", tried.join(", "))
    }
}

fn allowed_text(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "nothing more".into()
    } else {
        allowed.join(", ")
    }
}

impl SshFailure {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            SshFailure::Connect { server, .. } => format!(
                "is sshd running on {server}? (the port goes in the URL: \
                 virtgate+ssh://USER@HOST:PORT; 22 by default)"
            ),
            SshFailure::Handshake { .. } => {
                "is that port an OpenSSH server? (`ssh -v` to the same host and port shows \
                 what it answers)"
                    .into()
            }
            SshFailure::HostKeyUnknown { other_types, .. } => {
                let mut h = String::from(
                    "compare the fingerprint with the host's own (`ssh-keygen -lf \
                     /etc/ssh/ssh_host_ed25519_key.pub` there); if this is right, run again with \
                     --accept-new-host-key (stores it in ~/.ssh/known_hosts)",
                );
                if !other_types.is_empty() {
                    h.push_str(&format!(
                        "; known_hosts already has a {} key for this host, so ask why it now \
                         presents another type",
                        other_types.join(", ")
                    ));
                }
                h
            }
            SshFailure::HostKeyChanged {
                host,
                known_hosts,
                line,
                ..
            } => format!(
                "if the host's key was replaced on purpose (reinstalled), remove line {line} of \
                 {} (`ssh-keygen -R '{host}'`) and run again with --accept-new-host-key; \
                 otherwise ask the host's administrator before connecting",
                known_hosts.display()
            ),
            SshFailure::HostKeyRevoked { .. } => {
                "the host presents a key that was revoked: ask the host's administrator".into()
            }
            SshFailure::KnownHosts { path, .. } => format!(
                "check the permissions of {} and of the folder it is in",
                path.display()
            ),
            SshFailure::NoHome => "set HOME to your home folder".into(),
            SshFailure::NoUser { .. } => {
                "put the login name in the URL: virtgate+ssh://USER@HOST".into()
            }
            SshFailure::AuthRefused { user, host, .. } => format!(
                "add your public key (~/.ssh/id_ed25519.pub) to ~{user}/.ssh/authorized_keys on \
                 {host} (`ssh-copy-id`), load your key into the agent (`ssh-add`), or name the \
                 key file with --ssh-key FILE (or `ssh_key` in the profile)"
            ),
            SshFailure::WrongPassphrase { source_name, .. } => format!(
                "the passphrase came from {source_name}; fix it there (`ssh-keygen -y -f KEY` \
                 checks a passphrase), or load the key into the ssh-agent with `ssh-add`"
            ),
            SshFailure::KeyFile { .. } => {
                "name an OpenSSH private key (as made by ssh-keygen) with --ssh-key FILE or \
                 `ssh_key` in the profile"
                    .into()
            }
            SshFailure::ForwardRefused { host, .. } => format!(
                "set AllowStreamLocalForwarding yes and AllowTcpForwarding local (or yes) in \
                 sshd_config on {host}, then reload sshd"
            ),
            SshFailure::NotOpened {
                host, socket, user, ..
            } => format!(
                "on {host}, check both: that virtgated runs with `[listen] unix = \"{socket}\"` \
                 and {user} can reach it (`ls -l {socket}` as {user}); and that sshd_config has \
                 AllowStreamLocalForwarding yes and AllowTcpForwarding local (or yes), then \
                 reload sshd. sshd's log tells which: \"refused streamlocal port forward\" or \
                 \"Received request to connect to path {socket}, but the request was denied\" \
                 is the setting, \"connect to {socket} port -2 failed\" the socket"
            ),
            SshFailure::NoSocket { host, socket, .. } => format!(
                "start virtgated on {host} with `[listen] unix = \"{socket}\"`, or put the path \
                 of its socket in the URL: virtgate+ssh://USER@{host}/PATH/TO/SOCKET"
            ),
            SshFailure::Channel { .. } => "the host's sshd log (journalctl -u ssh) says why".into(),
            SshFailure::Lost { .. } => {
                "the host's sshd log (journalctl -u ssh) says why; run the command again".into()
            }
        }
    }
}
