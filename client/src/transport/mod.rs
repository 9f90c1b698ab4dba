//! Transports: everything that turns a [`Settings`] into one authenticated byte stream to the
//! gateway. Whatever the transport, the session on top speaks HTTP/2 over that stream.
//!
//! Preparing a transport ([`Transport::prepare`]) is synchronous and does all the local work
//! up front (read the CA, the certificate, unlock the key, maybe prompting on the terminal);
//! connecting ([`Transport::connect`]) is the network part. There are TLS with a client
//! certificate (`tls.rs`), Kerberos (`kerberos.rs`: TLS without one, plus the first
//! Negotiate token, which [`Connected::negotiation`] hands to the session), SSH (`ssh.rs`:
//! russh to the host's sshd, then a `direct-streamlocal` channel to the gateway's socket;
//! the key passphrase is asked for only when a key file is needed) and the local unix
//! socket (`unix.rs`), each ending in the same [`Connected`]: HTTP/2 does not care which.

pub mod kerberos;
pub mod quickack;
pub mod ssh;
pub mod tls;
pub mod unix;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::cli::Settings;
use crate::error::{io_reason, Attempt, Error, TlsContext};
use crate::profile::AuthKind;
use crate::url::{GatewayUrl, Host};

/// How long one TCP connect may take before the next address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A full-duplex byte stream to the gateway.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connected transport, ready for HTTP/2.
pub struct Connected {
    /// The byte stream.
    pub stream: Box<dyn Stream>,
    /// `:authority` for requests (`host:port`).
    pub authority: String,
    /// What error messages about this connection need to know.
    pub context: TlsContext,
    /// Kerberos: the login the first request must carry (`None`: already authenticated).
    pub negotiation: Option<kerberos::Negotiation>,
    /// HTTP/2 receive window per stream: a relayed path (SSH) needs more bytes in flight to
    /// stay full than a direct one (`virtgate_proto::tuning`).
    pub stream_window: u32,
}

/// A prepared way to reach the gateway.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// TLS with a client certificate (or none, if the gateway allows it).
    Tls(tls::TlsTransport),
    /// TLS without a client certificate, then HTTP Negotiate (Kerberos).
    Kerberos(kerberos::KerberosTransport),
    /// SSH to the host's sshd, then its unix socket (`direct-streamlocal@openssh.com`).
    Ssh(ssh::SshTransport),
    /// The gateway's unix socket on this machine.
    Unix(unix::UnixTransport),
    /// The profile's shared connection: `virtgate up`'s socket (same protocol as `Unix`).
    Shared(unix::UnixTransport),
}

impl Transport {
    /// Check the settings and load what the transport needs (files, key passphrase).
    pub fn prepare(settings: &Settings) -> Result<Transport, Error> {
        match &settings.url {
            GatewayUrl::Tls { .. } => match settings.auth {
                AuthKind::Kerberos => Ok(Transport::Kerberos(
                    kerberos::KerberosTransport::prepare(settings)?,
                )),
                AuthKind::Cert => Ok(Transport::Tls(tls::TlsTransport::prepare(settings)?)),
            },
            // sshd authenticates: the profile's auth, ca, cert and key are not used
            GatewayUrl::Ssh { .. } => Ok(Transport::Ssh(ssh::SshTransport::prepare(settings)?)),
            GatewayUrl::Unix { path } => Ok(Transport::Unix(unix::UnixTransport::new(path))),
        }
    }

    /// Open the byte stream.
    pub async fn connect(&self) -> Result<Connected, Error> {
        match self {
            Transport::Tls(t) => t.connect().await,
            Transport::Kerberos(t) => t.connect().await,
            Transport::Ssh(t) => t.connect().await,
            Transport::Unix(t) | Transport::Shared(t) => t.connect().await,
        }
    }
}

/// The addresses of `host`: an IP literal as is, a name through the resolver (with a timeout).
pub async fn resolve(host: &Host, port: u16) -> Result<Vec<SocketAddr>, Error> {
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Dns(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            let err = |reason: String| Error::Resolve {
                host: name.clone(),
                reason,
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => {
                    let v: Vec<SocketAddr> = addrs.collect();
                    if v.is_empty() {
                        Err(err("no addresses".into()))
                    } else {
                        Ok(v)
                    }
                }
                Ok(Err(e)) => Err(err(io_reason(&e))),
                Err(_) => Err(err("the lookup timed out".into())),
            }
        }
    }
}

/// Connect to the first address that answers, each within [`CONNECT_TIMEOUT`]; when none
/// does, what happened at each (for an error naming every address and its family).
pub async fn connect_tcp(addrs: Vec<SocketAddr>) -> Result<(TcpStream, SocketAddr), Vec<Attempt>> {
    let mut attempts = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                // Keep bulk data queued in h2 (which interleaves streams), not in the kernel.
                let _ = socket2::SockRef::from(&s)
                    .set_tcp_notsent_lowat(virtgate_proto::tuning::NOTSENT_LOWAT);
                return Ok((s, addr));
            }
            Ok(Err(error)) => attempts.push(Attempt { addr, error }),
            Err(_) => attempts.push(Attempt {
                addr,
                error: std::io::ErrorKind::TimedOut.into(),
            }),
        }
    }
    Err(attempts)
}
