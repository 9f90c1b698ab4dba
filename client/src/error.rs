//! Every failure a user can cause, each with a message naming the thing involved and a
//! hint saying what to do about it.
//!
//! `main` prints an [`Error`] with [`report`]: `error: …` (the message and its causes joined
//! by `: `) and, when there is one, `hint: …`. Nothing here is ever printed with `{:?}`.
//!
//! The TLS part ([`TlsFailure`], in `error/tls.rs`) turns rustls errors into sentences,
//! including the alerts by which the gateway rejects our certificate. The Kerberos part
//! ([`KerberosFailure`], in `error/kerberos.rs`) does the same for GSS-API status texts, and
//! the SSH part ([`SshFailure`], in `error/ssh.rs`) for host keys, logins and channels.
//! Setting a laptop up (`enroll`, `profile …`) has [`SetupFailure`] in `error/setup.rs`.

mod kerberos;
mod pkcs11;
mod setup;
mod ssh;
mod tls;

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::PathBuf;

use virtgate_proto::Problem;

pub use kerberos::{
    default_realm, krb5_conf_paths, parse_default_realm, KerberosContext, KerberosFailure,
};
pub use pkcs11::{ck_reason, ckr_name, Pkcs11Failure};
pub use setup::SetupFailure;
pub use ssh::SshFailure;
pub use tls::{find_tls_error, utc, TlsContext, TlsFailure};

use crate::url::UrlError;

/// Something went wrong; [`Error::hint`] says what the user can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither `--url` nor a profile says where the gateway is.
    #[error("no gateway to talk to: no --url given and no profile in {config}")]
    NoGateway {
        /// The config file that was looked for.
        config: PathBuf,
    },
    /// The config file could not be read (it was named explicitly, or exists but is unreadable).
    #[error("cannot read config {path}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys / wrong types.
    #[error("config {path}:{line}:{column}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// `-p NAME` or `default = NAME` names a profile the file does not have.
    #[error("no profile `{name}` in {path}")]
    UnknownProfile {
        /// The profile asked for.
        name: String,
        /// The config file.
        path: PathBuf,
        /// The profiles the file does have, for the hint.
        known: Vec<String>,
    },
    /// Several profiles and no `default`.
    #[error("{path} has several profiles and no `default`")]
    NoDefaultProfile {
        /// The config file.
        path: PathBuf,
        /// The profiles it has.
        known: Vec<String>,
    },
    /// A URL from the command line or a profile is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A feature that is designed but not built yet (SSH, unix socket).
    #[error("{what} is not supported yet")]
    Unsupported {
        /// The feature, e.g. `the SSH transport (virtgate+ssh://)`.
        what: String,
        /// What to use instead.
        hint: String,
    },
    /// A setting that is needed is missing or inconsistent.
    #[error("{message}")]
    Setting {
        /// What is missing.
        message: String,
        /// Where to set it.
        hint: String,
    },
    /// A file named in the profile or on the command line cannot be read or holds no
    /// usable content.
    #[error("cannot use {what} {path}: {reason}")]
    File {
        /// What the file was for (`CA certificate`, `client certificate`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not, already a sentence fragment (`No such file or directory`).
        reason: String,
    },
    /// The private key file may be read or written by group or others ([`crate::perms`]).
    #[error(
        "the key {} is {} (mode {mode:04o}): whoever can read it can use it or try \
         passphrases offline",
        path.display(),
        crate::perms::judge(*mode, crate::perms::KEY_BITS).unwrap_or_default()
    )]
    KeyOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The CA file may be written by group or others ([`crate::perms`]).
    #[error(
        "the CA file {} is {} (mode {mode:04o}): whoever can change it can make virtgate \
         trust a gateway of their own",
        path.display(),
        crate::perms::judge(*mode, crate::perms::CA_BITS).unwrap_or_default()
    )]
    CaWritable {
        /// The CA file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key or certificate file cannot be used: missing, not a key, wrong passphrase, ...
    /// (the message names the file).
    #[error(transparent)]
    KeyFile(#[from] virtgate_pki::error::KeyFileError),
    /// `passphrase_command` failed.
    #[error("passphrase command `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    PassphraseCommand {
        /// The command as configured.
        command: String,
        /// Exit status or spawn error.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// The key is encrypted, no other source gave a passphrase, and there is no terminal.
    #[error("the key {path} is encrypted and there is no terminal to ask for its passphrase")]
    NoTerminal {
        /// The key file.
        path: PathBuf,
    },
    /// DNS lookup of the gateway's host failed.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// Every address of the gateway refused or timed out.
    #[error("cannot connect to {}", describe_attempts(.attempts))]
    Connect {
        /// Each address tried and what happened.
        attempts: Vec<Attempt>,
    },
    /// The TLS handshake failed, or the gateway rejected our certificate right after it.
    #[error("{failure}")]
    Tls {
        /// What went wrong, in words.
        failure: TlsFailure,
        /// Context for the hint (names, files); boxed to keep `Error` small.
        context: Box<TlsContext>,
    },
    /// Kerberos login failed on our side (no ticket, KDC, mutual authentication).
    #[error("{failure}")]
    Kerberos {
        /// What went wrong, in words.
        failure: KerberosFailure,
        /// Context for the hint (service, host, user, realm); boxed to keep `Error` small.
        context: Box<KerberosContext>,
    },
    /// The SSH transport failed (sshd, host key, login, the channel to the gateway socket);
    /// boxed to keep `Error` small.
    #[error(transparent)]
    Ssh(Box<SshFailure>),
    /// `enroll` or `profile …` cannot do what was asked (nothing was overwritten); boxed to
    /// keep `Error` small.
    #[error(transparent)]
    Setup(Box<SetupFailure>),
    /// A hardware key failed (module, token, PIN, key); boxed to keep `Error` small.
    #[error(transparent)]
    Pkcs11(Box<Pkcs11Failure>),
    /// The gateway's unix socket on this machine cannot be connected to.
    #[error("cannot connect to the gateway socket {}: {}", path.display(), io_reason(error))]
    UnixSocket {
        /// The socket path.
        path: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// The gateway answered with a problem+json body.
    #[error("{problem}")]
    Problem {
        /// The body as the gateway sent it.
        problem: Problem,
    },
    /// The gateway answered something that is not the API (wrong content, bad JSON).
    #[error("unexpected answer from the gateway to {request}: {detail}")]
    BadResponse {
        /// The request, e.g. `GET /v1/domains`.
        request: String,
        /// What was wrong.
        detail: String,
    },
    /// The gateway stopped answering: no reply to an HTTP/2 PING (or SSH keepalive) in
    /// time, so the connection was given up (it froze, or the network between broke).
    #[error(
        "the gateway at {server} stopped answering: no reply to keepalive within {timeout_s} s \
         (nothing heard from it for {silent_s} s)"
    )]
    GatewayUnresponsive {
        /// `host:port` (or the SSH URL) of the gateway.
        server: String,
        /// How long a keepalive answer may take (`keepalive_timeout_s`).
        timeout_s: u64,
        /// How long nothing had arrived when the connection was given up.
        silent_s: u64,
    },
    /// The HTTP/2 connection to the gateway broke.
    #[error("lost the connection to the gateway at {server}: {reason}")]
    ConnectionLost {
        /// `host:port` of the gateway.
        server: String,
        /// The underlying error chain, joined.
        reason: String,
    },
    /// A local listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A local file or socket a command writes, creates or listens on cannot be used.
    #[error("cannot {action} {}", path.display())]
    LocalFile {
        /// What was tried (`write`, `listen on`, ...).
        action: &'static str,
        /// The file or socket.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The terminal cannot be switched to raw mode (or read).
    #[error("cannot set up the terminal for the console")]
    Terminal(#[source] std::io::Error),
    /// Writing to standard output failed (other than a closed pipe, which is not an error).
    #[error("cannot write to standard output")]
    Output(#[source] std::io::Error),
    /// Starting the async runtime failed (out of threads or file descriptors).
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The domain cannot be used the way the command wants.
    #[error("{message}")]
    Domain {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The shared-connection socket of the profile is not one to trust or use.
    #[error("the shared connection socket {path} cannot be used: {problem}")]
    SharedSocket {
        /// The socket (`$XDG_RUNTIME_DIR/virtgate/PROFILE.sock`).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `virtgate up` runs already for the profile.
    #[error("`virtgate up` already shares a connection for profile `{profile}` (pid {pid})")]
    AlreadyUp {
        /// The profile.
        profile: String,
        /// The running `up`.
        pid: u32,
        /// Its socket.
        socket: PathBuf,
    },
    /// The background process of `virtgate up` failed before it was ready (its report).
    #[error("{message}")]
    UpFailed {
        /// Its `error:` text.
        message: String,
        /// Its hint, if it gave one.
        hint: Option<String>,
    },
}

impl From<Pkcs11Failure> for Error {
    fn from(f: Pkcs11Failure) -> Error {
        Error::Pkcs11(Box::new(f))
    }
}

impl From<SetupFailure> for Error {
    fn from(f: SetupFailure) -> Error {
        Error::Setup(Box::new(f))
    }
}

impl From<SshFailure> for Error {
    fn from(f: SshFailure) -> Error {
        Error::Ssh(Box::new(f))
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// One address tried while connecting.
#[derive(Debug)]
pub struct Attempt {
    /// The socket address.
    pub addr: std::net::SocketAddr,
    /// What happened (refused, timed out, unreachable).
    pub error: std::io::Error,
}

fn describe_attempts(attempts: &[Attempt]) -> String {
    let mut out = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let family = if a.addr.is_ipv4() { "IPv4" } else { "IPv6" };
        let reason = match a.error.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => io_reason(&a.error),
        };
        let _ = write!(out, "{} ({family}): {reason}", a.addr);
    }
    out
}

/// An io::Error as text without the `(os error N)` noise.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// An error and its causes as one line: `a: b: c`, skipping causes already in the text.
pub fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io_reason(io),
            None => e.to_string(),
        };
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

impl Error {
    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NoGateway { config } => format!(
                "pass --url virtgate://HOST --ca CA.pem --cert USER.pem --key USER.key, or \
                 create {} with:\n  default = \"hv1\"\n  [profile.hv1]\n  url = \"virtgate://HOST\"\n  \
                 ca = \"ca.pem\"\n  cert = \"USER.pem\"\n  key = \"USER.key\"\n\
                 (to try it out, `virtgated demo` starts a demo gateway and writes a `demo` profile)",
                config.display()
            ),
            Error::ConfigRead { path, .. } => format!(
                "check $VIRTGATE_CONFIG and the permissions of {}",
                path.display()
            ),
            Error::Config { .. } => "profile keys are: url, ca, cert, key, auth (cert|kerberos), \
                 service (Kerberos, default HTTP), passphrase_command, ssh_key (SSH), \
                 pkcs11_module (with `key = \"pkcs11:…\"`), keepalive_interval_s, \
                 keepalive_timeout_s; the top level has `default` and [profile.NAME] tables"
                .into(),
            Error::UnknownProfile { known, .. } | Error::NoDefaultProfile { known, .. } => {
                if known.is_empty() {
                    "the file has no [profile.NAME] table yet".into()
                } else {
                    format!(
                        "pick one with -p NAME ({}) or set `default = \"NAME\"` at the top of the file",
                        known.join(", ")
                    )
                }
            }
            Error::Url(e) => e.hint(),
            Error::Unsupported { hint, .. } => hint.clone(),
            Error::Setting { hint, .. } => hint.clone(),
            Error::File { what, .. } => format!(
                "check the path (relative paths in a profile are relative to the config file's \
                 folder) and that it is a PEM {what}"
            ),
            Error::KeyOpen { path, .. } => format!(
                "run chmod 600 {} (a private key must be yours alone; OpenSSH refuses such \
                 keys too)",
                path.display()
            ),
            Error::CaWritable { path, .. } => format!("run chmod go-w {}", path.display()),
            Error::KeyFile(e) => e.hint()?,
            Error::PassphraseCommand { .. } => {
                "run the command by hand to see what it needs, or fix `passphrase_command` in the profile"
                    .into()
            }
            Error::NoTerminal { .. } => "give the passphrase with --passphrase-file FILE, the \
                 VIRTGATE_KEY_PASSPHRASE environment variable, or `passphrase_command` in the profile"
                .into(),
            Error::Resolve { host, .. } => {
                format!("check the spelling of `{host}` and this machine's DNS")
            }
            Error::Connect { .. } => {
                "is virtgated running there, and is this the port it listens on? \
                 (`listen.tcp` in its config; 16520 by default)"
                    .into()
            }
            Error::Tls { failure, context } => failure.hint(context),
            Error::Kerberos { failure, context } => failure.hint(context),
            Error::Ssh(failure) => failure.hint(),
            Error::Setup(failure) => failure.hint()?,
            Error::Pkcs11(failure) => failure.hint(),
            Error::UnixSocket { path, error } => crate::transport::unix::hint(path, error),
            Error::Problem { problem } => problem.hint.clone()?,
            Error::BadResponse { .. } => {
                "is the URL a virtgated gateway of a matching version?".into()
            }
            Error::GatewayUnresponsive { .. } => {
                "the network between here and the gateway broke (Wi-Fi, VPN, a firewall?) or the \
                 gateway's host froze; check the network and that the gateway runs, then run the \
                 command again (`keepalive_interval_s` / `keepalive_timeout_s` in the profile set \
                 how long to wait)"
                    .into()
            }
            Error::ConnectionLost { .. } => {
                "the gateway stopped, closed an idle connection (its `limits.idle_timeout_s`), \
                 the network broke, or this machine slept or froze too long; run the command \
                 again"
                    .into()
            }
            Error::Listen { .. } => {
                "pick another address or port with --listen (e.g. 127.0.0.1:0 for any free port)"
                    .into()
            }
            Error::LocalFile { action, path, .. } => {
                let folder = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| ".".into());
                if action.contains("socket") || action.contains("listen") {
                    format!(
                        "check that {folder} exists and is yours, or pick another path with --socket PATH"
                    )
                } else {
                    format!("check that {folder} exists and that you may write there, or pick another file with -o FILE")
                }
            }
            Error::Terminal(_) => {
                "run it in a real terminal, or pipe its input (`printf 'ls\\n' | virtgate console DOM`)"
                    .into()
            }
            Error::Output(_) | Error::Runtime(_) => return None,
            Error::Domain { hint, .. } => hint.clone(),
            Error::SharedSocket { path, .. } => format!(
                "`virtgate up` makes it a socket of yours in a folder only you may use; if you \
                 did not make it, look at who did, remove it (rm {}) and run `virtgate up` \
                 again; --no-shared connects directly meanwhile",
                path.display()
            ),
            Error::AlreadyUp {
                profile, socket, ..
            } => format!(
                "every command of the profile already uses it ({}); `virtgate down -p \
                 {profile}` ends it",
                socket.display()
            ),
            Error::UpFailed { hint, .. } => return hint.clone(),
        })
    }
}

/// The text `main` prints: `error: …` and, when there is one, `hint: …`.
pub fn report(err: &Error) -> String {
    let mut out = format!("error: {}", chain_text(err));
    if let Some(h) = err.hint() {
        out.push_str("\nhint: ");
        out.push_str(&h);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_name_address_and_family() {
        let e = Error::Connect {
            attempts: vec![
                Attempt {
                    addr: "[::1]:9".parse().unwrap(),
                    error: std::io::ErrorKind::ConnectionRefused.into(),
                },
                Attempt {
                    addr: "127.0.0.1:9".parse().unwrap(),
                    error: std::io::ErrorKind::TimedOut.into(),
                },
            ],
        };
        let r = report(&e);
        assert!(r.starts_with(
            "error: cannot connect to [::1]:9 (IPv6): connection refused; 127.0.0.1:9 (IPv4): timed out"
        ), "{r}");
        assert!(r.contains("hint: is virtgated running"), "{r}");
    }

    #[test]
    fn problems_print_title_detail_and_hint() {
        let p = Problem::new(404, "domain-not-found", "no such domain")
            .detail("domain `x` does not exist or is not yours")
            .hint("run `virtgate list`");
        let r = report(&Error::Problem { problem: p });
        assert_eq!(
            r,
            "error: no such domain: domain `x` does not exist or is not yours\nhint: run `virtgate list`"
        );
    }

    #[test]
    fn a_silent_gateway_is_reported_as_such() {
        let e = Error::GatewayUnresponsive {
            server: "gw:16520".into(),
            timeout_s: 5,
            silent_s: 10,
        };
        let r = report(&e);
        assert!(
            r.starts_with(
                "error: the gateway at gw:16520 stopped answering: no reply to keepalive within 5 s"
            ),
            "{r}"
        );
        assert!(
            r.contains("hint: the network between here and the gateway broke"),
            "{r}"
        );
    }

    #[test]
    fn chains_are_joined_without_repeats() {
        let e = Error::Listen {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let r = report(&e);
        assert!(
            r.starts_with("error: cannot listen on 127.0.0.1:1: address in use"),
            "{r}"
        );
    }
}
