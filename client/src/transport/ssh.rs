//! SSH to `virtgate+ssh://user@host[:port][/socket]`: russh (ring) to the host's own sshd,
//! then one `direct-streamlocal@openssh.com` channel to the gateway's unix socket, and
//! HTTP/2 with prior knowledge over that channel. Every API call and every tunnel of the
//! command rides that one channel. Nothing is ever run on the host (no exec, shell or
//! subsystem), so the user's login shell does not matter; the gateway knows the user by the
//! uid sshd connects to its socket with (SO_PEERCRED), so `whoami` shows method `unix`.
//!
//! In order: resolve and connect (every address, each with a timeout; failures name the
//! address and its family); the SSH handshake (with a timeout) during which the host key is
//! checked against `~/.ssh/known_hosts` (`known_hosts.rs`: an unknown key stops unless
//! `--accept-new-host-key`, which stores it; a changed key always stops); login with the
//! agent's keys and then key files (`auth.rs`); the channel, whose refusal is told apart by
//! what sshd says (forwarding disabled, or no socket at that path).

pub mod auth;
pub mod known_hosts;
pub mod stream;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{Algorithm, PublicKey};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelId, ChannelOpenFailure};

use self::known_hosts::{fingerprint, KnownHosts, Verdict};
use self::stream::SshStream;
use super::{Connected, HANDSHAKE_TIMEOUT};
use crate::cli::Settings;
use crate::error::{Error, SshFailure, TlsContext};
use crate::passphrase::PassphraseSources;
use crate::url::{GatewayUrl, Host};

/// A prepared SSH transport: who, where, and which files to use.
#[derive(Debug)]
pub struct SshTransport {
    /// The login name on the host.
    user: String,
    /// The SSH server.
    host: Host,
    /// sshd's port.
    port: u16,
    /// The gateway's socket on the host.
    socket: String,
    /// `~/.ssh/known_hosts`.
    known_hosts: PathBuf,
    /// Store an unknown host key instead of stopping.
    accept_new: bool,
    /// Key files to try after the agent.
    files: Vec<PathBuf>,
    /// Whether `files` is the configured key (`--ssh-key`, `ssh_key`).
    configured: bool,
    /// Passphrase sources for encrypted key files.
    passphrase: PassphraseSources,
    /// The URL, for messages about the connection once it stands.
    url: String,
    /// How often a silent SSH connection is probed, and how many unanswered probes end it
    /// (from the profile's HTTP/2 keepalive, so that both give up after the same silence).
    keepalive: (Duration, usize),
}

impl SshTransport {
    /// Check the settings: a user name, a home with `~/.ssh`, the configured key file.
    pub fn prepare(settings: &Settings) -> Result<SshTransport, Error> {
        let GatewayUrl::Ssh {
            user,
            host,
            port,
            socket,
        } = &settings.url
        else {
            return Err(Error::Setting {
                message: format!("{} is not an SSH URL", settings.url),
                hint: "use virtgate+ssh://USER@HOST[:PORT][/SOCKET]".into(),
            });
        };
        let user = user
            .clone()
            .or_else(|| settings.local_user.clone())
            .ok_or_else(|| SshFailure::NoUser {
                url: settings.url.to_string(),
            })?;
        let home = settings.home.as_ref().ok_or(SshFailure::NoHome)?;
        let configured = settings.ssh_key.as_deref();
        if let Some(k) = configured {
            if let Err(e) = std::fs::metadata(k) {
                return Err(SshFailure::KeyFile {
                    path: k.to_owned(),
                    reason: crate::error::io_reason(&e),
                }
                .into());
            }
        }
        Ok(SshTransport {
            user,
            host: host.clone(),
            port: *port,
            socket: socket.clone(),
            known_hosts: home.join(".ssh").join("known_hosts"),
            accept_new: settings.accept_new_host_key,
            files: auth::key_files(configured, Some(home)),
            configured: configured.is_some(),
            passphrase: settings.passphrase.clone(),
            url: settings.url.to_string(),
            keepalive: settings.keepalive.ssh(),
        })
    }

    /// `user@host:port`, for messages.
    fn login(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// Connect, check the host key, log in and open the channel to the gateway's socket.
    pub async fn connect(&self) -> Result<Connected, Error> {
        let known = KnownHosts::load(&self.known_hosts)?;
        let name = known_hosts::host_name(&self.host, self.port);
        let addrs = super::resolve(&self.host, self.port).await?;
        let (tcp, addr) =
            super::connect_tcp(addrs)
                .await
                .map_err(|attempts| SshFailure::Connect {
                    server: format!("{}:{}", self.host, self.port),
                    attempts,
                })?;
        tracing::debug!(%addr, "TCP connected; SSH handshake");
        let config = Arc::new(client_config(&known.algorithms_for(&name), self.keepalive));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client = Client {
            known,
            name,
            accept_new: self.accept_new,
            shared: shared.clone(),
        };
        // russh reads each packet with two exact reads (its length, then the rest): buffered,
        // one recv (and one TCP_QUICKACK re-arm) takes in many packets instead.
        let tcp =
            tokio::io::BufReader::with_capacity(READ_BUFFER, super::quickack::QuickAck::new(tcp));
        let handshake = russh::client::connect_stream(config, tcp, client);
        let mut handle = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(h)) => h,
            Ok(Err(ClientError::HostKey(f))) => return Err(f.into()),
            Ok(Err(ClientError::Russh(e))) => {
                return Err(SshFailure::Handshake {
                    addr,
                    reason: russh_text(&e),
                }
                .into())
            }
            Err(_) => {
                return Err(SshFailure::Handshake {
                    addr,
                    reason: format!("it did not finish within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                }
                .into())
            }
        };
        let login = self.login();
        let host = self.host.to_string();
        auth::Login {
            user: &self.user,
            host: &host,
            login: &login,
            files: &self.files,
            configured: self.configured,
            passphrase: &self.passphrase,
        }
        .run(&mut handle)
        .await?;
        tracing::debug!(%login, socket = %self.socket, "logged in; opening the channel");
        let open = handle.channel_open_direct_streamlocal(self.socket.clone());
        let channel = match tokio::time::timeout(HANDSHAKE_TIMEOUT, open).await {
            Ok(Ok(c)) => c,
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => {
                let text = lock(&shared).open_failure.take().unwrap_or_default();
                return Err(open_failure(&reason, &text, &self.socket, &host, &self.user).into());
            }
            Ok(Err(e)) => {
                return Err(SshFailure::Lost {
                    server: login,
                    reason: russh_text(&e),
                }
                .into())
            }
            Err(_) => {
                return Err(SshFailure::Lost {
                    server: login,
                    reason: "the channel to the gateway socket did not open in time".into(),
                }
                .into())
            }
        };
        tracing::debug!(socket = %self.socket, "channel open; HTTP/2 over it");
        Ok(Connected {
            stream: Box::new(SshStream::new(channel, handle)),
            authority: "localhost".into(),
            context: TlsContext {
                server: self.url.clone(),
                ..Default::default()
            },
            negotiation: None,
            stream_window: virtgate_proto::tuning::RELAYED_STREAM_WINDOW,
        })
    }
}

/// russh settings: keepalives (interval, unanswered probes before giving up), no Nagle,
/// and the host key types known_hosts has for this host asked for first.
fn client_config(known: &[Algorithm], keepalive: (Duration, usize)) -> russh::client::Config {
    let mut preferred = russh::Preferred::default();
    let family = |a: &Algorithm, b: &Algorithm| {
        a == b || (matches!(a, Algorithm::Rsa { .. }) && matches!(b, Algorithm::Rsa { .. }))
    };
    let mut keys: Vec<Algorithm> = preferred
        .key
        .iter()
        .filter(|a| known.iter().any(|k| family(k, a)))
        .cloned()
        .collect();
    keys.extend(
        preferred
            .key
            .iter()
            .filter(|a| !keys.contains(a))
            .cloned()
            .collect::<Vec<_>>(),
    );
    preferred.key = Cow::Owned(keys);
    preferred.cipher = Cow::Borrowed(CIPHERS);
    russh::client::Config {
        preferred,
        keepalive_interval: Some(keepalive.0),
        keepalive_max: keepalive.1,
        nodelay: true,
        ..Default::default()
    }
}

/// Ciphers, best first: AES-GCM (AES-NI; OpenSSH's sshd offers both) before
/// chacha20-poly1305, which russh prefers but which costs ~3× the CPU per byte here (ring's
/// poly1305 was 25 % of the client's profile alone); the CTR modes last, as russh has them.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// Read buffer of the connection to sshd: several 32 KiB SSH packets per `recv`.
const READ_BUFFER: usize = 256 << 10;

/// What OpenSSH's sshd says when a `direct-streamlocal` channel cannot be opened, whatever
/// the reason (refused by AllowStreamLocalForwarding / AllowTcpForwarding, or no socket):
/// reason code 2 (connect failed) with this text. Verified against OpenSSH 9.2.
pub const OPENSSH_OPEN_FAILED: &str = "open failed";

/// Classify sshd's refusal of the `direct-streamlocal` channel by its reason code and text:
/// code 1 (administratively prohibited) is a refused forward; code 2 (connect failed) with
/// OpenSSH's generic text can be either; code 2 with a text of its own is a missing socket.
pub fn open_failure(
    reason: &ChannelOpenFailure,
    text: &str,
    socket: &str,
    host: &str,
    user: &str,
) -> SshFailure {
    let detail = if text.is_empty() {
        format!("reason code {}", reason.code())
    } else {
        format!("\"{text}\", reason code {}", reason.code())
    };
    let (socket, host) = (socket.to_owned(), host.to_owned());
    match reason {
        ChannelOpenFailure::AdministrativelyProhibited => SshFailure::ForwardRefused {
            socket,
            host,
            detail,
        },
        ChannelOpenFailure::ConnectFailed if text.is_empty() || text == OPENSSH_OPEN_FAILED => {
            SshFailure::NotOpened {
                socket,
                host,
                user: user.to_owned(),
                detail,
            }
        }
        ChannelOpenFailure::ConnectFailed => SshFailure::NoSocket {
            socket,
            host,
            detail,
        },
        _ => SshFailure::Channel { socket, detail },
    }
}

/// A russh error in words.
fn russh_text(e: &russh::Error) -> String {
    match e {
        russh::Error::Disconnect | russh::Error::HUP => "the server closed the connection".into(),
        russh::Error::IO(io) => crate::error::io_reason(io),
        other => other.to_string(),
    }
}

/// What the handler learns that the transport needs after the fact.
#[derive(Debug, Default)]
struct Shared {
    /// The text of sshd's last CHANNEL_OPEN_FAILURE.
    open_failure: Option<String>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The russh client handler: checks the host key, records channel refusals.
#[derive(Debug)]
pub struct Client {
    /// `~/.ssh/known_hosts`, as read before connecting.
    known: KnownHosts,
    /// The host's name there (`host` or `[host]:port`).
    name: String,
    /// Store an unknown key instead of refusing it.
    accept_new: bool,
    /// Shared with the transport.
    shared: Arc<Mutex<Shared>>,
}

/// Why the handler stopped the connection.
#[derive(Debug)]
pub enum ClientError {
    /// russh's own error.
    Russh(russh::Error),
    /// The host key is unknown, changed or revoked (or could not be stored).
    HostKey(SshFailure),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Russh(e)
    }
}

impl Client {
    /// The known_hosts verdict on `key`, as a decision: `Ok` to go on, else the refusal.
    fn judge(&self, key: &PublicKey) -> Result<(), SshFailure> {
        let key_type = key.algorithm().to_string();
        let fp = fingerprint(key);
        let path = self.known.path.clone();
        match self.known.check(&self.name, key) {
            Verdict::Known { line } => {
                tracing::debug!(host = %self.name, line, "host key known");
                Ok(())
            }
            Verdict::Unknown { other_types } if !self.accept_new => {
                Err(SshFailure::HostKeyUnknown {
                    host: self.name.clone(),
                    key_type,
                    fingerprint: fp,
                    known_hosts: path,
                    other_types,
                })
            }
            Verdict::Unknown { .. } => {
                known_hosts::append(&path, &self.name, key)?;
                eprintln!(
                    "added the SSH host key of {} ({key_type} {fp}) to {}",
                    self.name,
                    path.display()
                );
                Ok(())
            }
            Verdict::Changed { line } => Err(SshFailure::HostKeyChanged {
                host: self.name.clone(),
                key_type,
                fingerprint: fp,
                known_hosts: path,
                line,
            }),
            Verdict::Revoked { line } => Err(SshFailure::HostKeyRevoked {
                host: self.name.clone(),
                key_type,
                fingerprint: fp,
                known_hosts: path,
                line,
            }),
        }
    }
}

impl russh::client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, ClientError> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.judge(key).map_err(ClientError::HostKey)?;
                Ok(true)
            }
            // not asked for (no certificate algorithms are offered)
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut russh::client::Session,
    ) -> Result<(), ClientError> {
        eprint!("{banner}");
        Ok(())
    }

    async fn channel_open_failure(
        &mut self,
        _channel: ChannelId,
        reason: ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut russh::client::Session,
    ) -> Result<(), ClientError> {
        tracing::debug!(code = reason.code(), %description, "channel open failure");
        lock(&self.shared).open_failure = Some(description.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    fn rep(code: ChannelOpenFailure, text: &str) -> String {
        report(&open_failure(&code, text, "/run/v.sock", "hv1", "bob").into())
    }

    #[test]
    fn channel_refusals_in_words() {
        // OpenSSH 9.2: the same answer for forwarding off and for no socket
        let r = rep(ChannelOpenFailure::ConnectFailed, "open failed");
        assert!(r.starts_with("error: the SSH server did not open the gateway socket /run/v.sock on hv1 (\"open failed\", reason code 2): either there is no gateway socket at /run/v.sock on hv1 (is virtgated running with listen.unix = /run/v.sock?) or the SSH server refused to forward to the gateway socket"), "{r}");
        assert!(
            r.contains("AllowStreamLocalForwarding yes and AllowTcpForwarding local (or yes)"),
            "{r}"
        );
        assert!(r.contains("bob can reach it"), "{r}");
        let r = rep(ChannelOpenFailure::AdministrativelyProhibited, "prohibited");
        assert!(
            r.starts_with(
                "error: the SSH server refused to forward to the gateway socket /run/v.sock"
            ),
            "{r}"
        );
        assert!(r.contains("hint: set AllowStreamLocalForwarding yes and AllowTcpForwarding local (or yes) in sshd_config on hv1, then reload sshd"), "{r}");
        let r = rep(
            ChannelOpenFailure::ConnectFailed,
            "connect failed: No such file or directory",
        );
        assert!(r.starts_with("error: no gateway socket at /run/v.sock on hv1 (is virtgated running with listen.unix = /run/v.sock?)"), "{r}");
        let r = rep(ChannelOpenFailure::ResourceShortage, "");
        assert!(
            r.starts_with(
                "error: the SSH server did not open a channel to /run/v.sock: reason code 4"
            ),
            "{r}"
        );
    }

    #[test]
    fn known_host_key_types_are_asked_first() {
        let ecdsa = Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        };
        let keepalive = crate::session::Keepalive::default().ssh();
        let c = client_config(std::slice::from_ref(&ecdsa), keepalive);
        assert_eq!(c.preferred.key[0], ecdsa);
        assert_eq!(c.keepalive_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.keepalive_max, 1);
        assert_eq!(c.preferred.key.len(), russh::Preferred::default().key.len());
        // an ssh-rsa entry brings the rsa-sha2 variants forward
        let c = client_config(&[Algorithm::Rsa { hash: None }], keepalive);
        assert!(matches!(c.preferred.key[0], Algorithm::Rsa { .. }));
        assert!(c
            .preferred
            .key
            .iter()
            .take(3)
            .all(|a| matches!(a, Algorithm::Rsa { .. })));
        let c = client_config(&[], keepalive);
        assert_eq!(c.preferred.key, russh::Preferred::default().key);
    }

    #[test]
    fn aes_gcm_is_asked_before_chacha20() {
        let c = client_config(&[], crate::session::Keepalive::default().ssh());
        let ciphers: Vec<&str> = c.preferred.cipher.iter().map(|c| c.as_ref()).collect();
        assert_eq!(
            ciphers[..3],
            [
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com"
            ]
        );
        // nothing russh offers by default is dropped
        for name in russh::Preferred::default().cipher.iter() {
            assert!(c.preferred.cipher.contains(name), "{name:?}");
        }
        assert!(c.nodelay);
    }
}
