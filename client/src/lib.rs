//! `virtgate`, the client of virtgate gateways.
//!
//! # Layout
//!
//! Data flows one way, from the command line to the gateway and back:
//!
//! ```text
//! argv ──▶ cli::Cli (clap) ──┐
//! env ───▶ profile::Env      ├─▶ cli::GlobalArgs::resolve ──▶ cli::Settings
//! config.toml ─▶ profile::Profiles ┘        (flags > profile > defaults; url::GatewayUrl)
//!
//! Settings ──▶ shared::transport_for            `virtgate up` runs for the profile (its
//!                                              socket ours, its lock held): Transport::
//!                                              Shared, no unlock, no handshake; else:
//!          ──▶ transport::Transport::prepare   read CA/cert, unlock key (passphrase::…)
//!                                              or log in to its token (pkcs11::client_cert);
//!                                              kerberos: CA only, no cert/key; ssh: user,
//!                                              ~/.ssh, key files named (not read yet)
//!          ──▶ Transport::connect              TCP + TLS 1.3 (ALPN h2) → one byte stream;
//!                                              kerberos: + first GSS-API token (SPNEGO,
//!                                              HTTP@host, blocking pool), concurrently;
//!                                              ssh: TCP + SSH (host key ↔ known_hosts,
//!                                              agent keys, then key files) → one
//!                                              direct-streamlocal channel to the socket;
//!                                              unix: connect to the local socket
//!          ──▶ session::Session::connect       HTTP/2 over that stream, driven by a task;
//!                                              PING keepalive (profile keepalive_*_s):
//!                                              a silent gateway ends the command
//!          ──▶ (kerberos) first request        `Authorization: Negotiate` (others wait);
//!                                              gateway's mutual token checked → bound
//!          ──▶ cmd::run                        whoami/list/info: Session::get_json
//!                                              start/shutdown/reboot/destroy: post_json
//!                                              screenshot: get_bytes → PNG check → file
//!                                              events: get_stream, line by line
//!                                              console: one serial tunnel ⇄ stdin/stdout
//!                                                   (raw tty, restored on every exit)
//!                                              vnc / spice / display (TCP; display
//!                                                   picks SPICE, else VNC, and runs
//!                                                   remote-viewer) / libvirt (unix socket):
//!                                                   cmd::relay: local listener →
//!                                                   Session::open_tunnel per connection
//!                                                   (extended CONNECT)
//! (doctor) Settings ──▶ cmd::doctor           the same steps one at a time: prepare,
//!                                              resolve (A, AAAA), connect_tcp per address,
//!                                              TlsTransport::handshake, Session::over,
//!                                              whoami, domains: ✓ / ! / ✗ / – with hints
//!                                              (or JSON), exit 1 when a step failed;
//!                                              never over the shared connection
//! (up) Settings ──▶ shared (daemon)           prepare once, re-exec in the background,
//!                                              upstream: Session + whoami, reconnecting;
//!                                              proxy: PROFILE.sock (HTTP/2) → each request
//!                                              and tunnel onto that one Session
//! any failure ──▶ error::Error ──▶ error::report  `error: …` / `hint: …`, exit 1
//! ```
//!
//! - [`cli`]: flags and commands, and their resolution into [`cli::Settings`].
//! - [`profile`]: the per-user config file (`$VIRTGATE_CONFIG`, XDG), profile selection.
//! - [`url`]: `virtgate://`, `virtgate+ssh://`, `virtgate+unix://` URLs.
//! - [`passphrase`]: where an encrypted key's passphrase comes from (and a token's PIN).
//! - [`pkcs11`]: hardware keys: `key = "pkcs11:token=…;object=…"` (RFC 7512) with
//!   `pkcs11_module`; the token (smartcard, YubiKey, SoftHSM) signs the TLS handshake and,
//!   for `enroll`, makes the key and signs the request (cryptoki; one login per process).
//! - [`transport`]: how the byte stream to the gateway is made (TLS with a certificate;
//!   Kerberos: TLS without one plus HTTP Negotiate; SSH: the host's sshd and a
//!   `direct-streamlocal` channel to the gateway's socket, nothing run on the host; the
//!   local unix socket), all ending in the same stream.
//! - [`session`]: the one HTTP/2 connection every call and tunnel of a command shares; with
//!   Kerberos its first request logs the connection in.
//! - [`cmd`]: the commands: `domains` (whoami, list, info), `lifecycle`, `screenshot`,
//!   `events`, `console`, and the forwarders `forward` (vnc, spice, display: one forwarder
//!   parametrised by the console kind, plus the viewer) and `libvirt` on `relay`;
//!   `doctor` checks every step from the profile to the gateway's answer (local files,
//!   network, TLS, gateway; Kerberos and SSH), one file per stage.
//! - [`shared`]: `virtgate up` / `down`: one unlock and one gateway connection that every
//!   command of the profile uses through a private local socket (ControlMaster-like).
//! - [`perms`]: modes of the key and CA files (a key group or others may read or write is
//!   refused like OpenSSH does; a CA they may write too), with the `chmod` that fixes them.
//! - [`sockets`]: the per-user runtime folder and private 0600 sockets (`libvirt`, `up`).
//! - [`error`]: every failure with a message and a hint (TLS alerts, GSS-API statuses, SSH
//!   host keys, logins and channel refusals in words).
//!
//! Wire types and paths come from `virtgate-proto`; key and certificate files are read with
//! `virtgate-pki`. The client never links the gateway.

#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd;
pub mod error;
pub mod passphrase;
pub mod perms;
pub mod pkcs11;
pub mod profile;
pub mod session;
pub mod shared;
pub mod sockets;
pub mod transport;
pub mod url;

use crate::cli::{Cli, Command, RemoteCommand};
use crate::error::Error;
use crate::profile::{Env, Profiles};
use crate::session::Session;
use crate::transport::Transport;

/// How a command that did not fail with an [`Error`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Everything worked: exit status 0.
    Success,
    /// The command printed what went wrong itself (`doctor`'s failed checks): exit status 1.
    Failure,
}

/// Run a parsed command line to completion.
///
/// Local preparation (config, files, the key passphrase prompt) happens before the async
/// runtime starts, so a prompt never blocks a runtime thread.
pub fn run(cli: Cli) -> Result<Outcome, Error> {
    let env = Env::from_process();
    let remote = match cli.command {
        Command::Remote(remote) => remote,
        Command::Enroll(args) => {
            return cmd::enroll::run(&cli.global, args, &env).map(|()| Outcome::Success)
        }
        Command::Profile(command) => {
            return cmd::profile::run(&cli.global, command, &env).map(|()| Outcome::Success)
        }
        Command::Doctor(args) => {
            return cmd::doctor::run(&cli.global, args, &env).map(|ok| match ok {
                true => Outcome::Success,
                false => Outcome::Failure,
            })
        }
        Command::Up(args) => return shared::up(&cli.global, args, &env).map(|()| Outcome::Success),
        Command::Down => return shared::down(&cli.global, &env).map(|()| Outcome::Success),
    };
    run_remote(&cli.global, remote, &env).map(|()| Outcome::Success)
}

/// Run a command that talks to the gateway: over the profile's shared connection when
/// `virtgate up` keeps one, else over a connection of its own.
fn run_remote(global: &cli::GlobalArgs, command: RemoteCommand, env: &Env) -> Result<(), Error> {
    let profiles = Profiles::load(env)?;
    let settings = global.resolve(&profiles, env)?;
    tracing::debug!(url = %settings.url, profile = ?settings.profile, "resolved settings");
    let transport = match shared::transport_for(global, &settings, &profiles)? {
        Some(shared) => shared,
        None => Transport::prepare(&settings)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let profile = settings.profile.clone();
    let keepalive = settings.keepalive;
    let url = settings.url.clone();
    let result = runtime.block_on(async move {
        let session = Session::connect(&transport, keepalive).await?;
        cmd::run(command, session, profile.as_deref(), &url).await
    });
    // Do not wait for tunnels or the connection task: the command is over. (Not even for a
    // clean GOAWAY: it would reset the tunnel streams first, which the gateway reads as a
    // half-close, and a serial console that never reads its input would keep the tunnel;
    // a connection that just ends fails every stream on it at once. The gateway logs that
    // as "the client went away", no error.)
    runtime.shutdown_background();
    result
}
