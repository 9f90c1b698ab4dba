//! Transports: everything that turns a [`Settings`] into one authenticated byte stream to the
//! gateway. Whatever the transport, the session on top speaks HTTP/2 over that stream.
//!
//! Preparing a transport ([`Transport::prepare`]) is synchronous and does all the local work
//! up front (read the CA, the certificate, unlock the key, maybe prompting on the terminal);
//! connecting ([`Transport::connect`]) is the network part. Today there are TLS with a client
//! certificate (`tls.rs`) and Kerberos (`kerberos.rs`: TLS without one, plus the first
//! Negotiate token, which [`Connected::negotiation`] hands to the session); SSH (russh,
//! `direct-streamlocal`) and the local unix socket are variants to come, each ending in the
//! same [`Connected`].

pub mod kerberos;
pub mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::cli::Settings;
use crate::error::{Error, TlsContext};
use crate::profile::AuthKind;
use crate::url::GatewayUrl;

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
}

/// A prepared way to reach the gateway.
#[derive(Debug)]
#[non_exhaustive]
pub enum Transport {
    /// TLS with a client certificate (or none, if the gateway allows it).
    Tls(tls::TlsTransport),
    /// TLS without a client certificate, then HTTP Negotiate (Kerberos).
    Kerberos(kerberos::KerberosTransport),
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
            GatewayUrl::Ssh { .. } => Err(Error::Unsupported {
                what: "the SSH transport (virtgate+ssh://)".into(),
                hint: "use a virtgate://HOST URL (TLS with a client certificate) for now".into(),
            }),
            GatewayUrl::Unix { .. } => Err(Error::Unsupported {
                what: "the unix socket transport (virtgate+unix://)".into(),
                hint: "use a virtgate://HOST URL (TLS with a client certificate) for now".into(),
            }),
        }
    }

    /// Open the byte stream.
    pub async fn connect(&self) -> Result<Connected, Error> {
        match self {
            Transport::Tls(t) => t.connect().await,
            Transport::Kerberos(t) => t.connect().await,
        }
    }
}
