//! TLS to `virtgate://host[:port]`: rustls (ring), roots from the profile's `ca` only, ALPN
//! `h2`, the client certificate and its (usually encrypted) key, or a key on a PKCS#11 token
//! that signs the handshake (`crate::pkcs11`); with `auth = "kerberos"` no
//! client certificate (the key is not even read: `transport/kerberos.rs` logs in instead).
//!
//! The server certificate is checked against the URL's host: DNS names against DNS SANs,
//! IP literals (`127.0.0.1`, `[::1]`) against IP SANs. Every address the host resolves to is
//! tried in turn, each with a timeout; a failure names each address and its family.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use virtgate_pki::error::KeyFileError;
use virtgate_pki::keyfile;

use super::{Connected, HANDSHAKE_TIMEOUT};

/// A TLS connection to the gateway.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;
use crate::cli::Settings;
use crate::error::{find_tls_error, io_reason, Error, TlsContext, TlsFailure};
use crate::passphrase::Source;
use crate::profile::AuthKind;
use crate::url::{GatewayUrl, Host};

/// A prepared TLS transport: config built, key unlocked.
pub struct TlsTransport {
    /// rustls settings shared by every connection this transport makes.
    config: Arc<ClientConfig>,
    /// Host to resolve and connect to.
    host: Host,
    /// TCP port.
    port: u16,
    /// The name the server certificate must cover.
    server_name: ServerName<'static>,
    /// Names and files for error messages.
    context: TlsContext,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("server", &self.context.server)
            .field("cert", &self.context.cert)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Read the CA, certificate and key named in `settings` (asking for the key's passphrase
    /// if it is encrypted) and build the rustls configuration. With Kerberos auth only the
    /// CA is read.
    pub fn prepare(settings: &Settings) -> Result<TlsTransport, Error> {
        let GatewayUrl::Tls { host, port } = &settings.url else {
            return Err(Error::Setting {
                message: format!("{} is not a TLS URL", settings.url),
                hint: "use virtgate://HOST[:PORT]".into(),
            });
        };
        let ca = settings.ca.as_ref().ok_or_else(|| Error::Setting {
            message: format!(
                "no CA certificate to verify the gateway at {}",
                settings.url
            ),
            hint: format!(
                "{} (the ca.pem that came with your certificate)",
                settings.where_to_set("ca", "--ca FILE")
            ),
        })?;
        let roots = load_roots(ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_setup_error(&e))?
            .with_root_certificates(roots);
        let kerberos = settings.auth == AuthKind::Kerberos;
        let mut config = match (&settings.cert, &settings.key) {
            // Kerberos: server authentication only; cert and key are ignored, never unlocked
            _ if kerberos => builder.with_no_client_auth(),
            (Some(cert), Some(key_path)) if crate::pkcs11::is_uri(key_path) => {
                let chain = keyfile::load_certs(cert)?;
                builder.with_client_cert_resolver(crate::pkcs11::client_cert(
                    chain,
                    cert,
                    key_path,
                    settings.pkcs11_module.as_deref(),
                    &settings.passphrase,
                )?)
            }
            (Some(cert), Some(key_path)) => {
                let chain = keyfile::load_certs(cert)?;
                let key = load_key(key_path, settings)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| key_mismatch(cert, key_path, &e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(Error::Setting {
                    message: "a client certificate is configured but no key".into(),
                    hint: settings.where_to_set("key", "--key FILE"),
                })
            }
            (None, Some(_)) => {
                return Err(Error::Setting {
                    message: "a client key is configured but no certificate".into(),
                    hint: settings.where_to_set("cert", "--cert FILE"),
                })
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = match host {
            Host::Dns(name) => ServerName::try_from(name.clone()).map_err(|_| Error::Setting {
                message: format!("`{name}` cannot be checked against a certificate"),
                hint: "use a DNS name or an IP address in the URL".into(),
            })?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        Ok(TlsTransport {
            config: Arc::new(config),
            host: host.clone(),
            port: *port,
            server_name,
            context: TlsContext {
                server: format!("{host}:{port}"),
                ca: Some(ca.clone()),
                cert: settings.cert.clone().filter(|_| !kerberos),
                kerberos,
            },
        })
    }

    /// Resolve, connect (trying every address) and run the TLS handshake.
    pub async fn connect(&self) -> Result<Connected, Error> {
        let addrs = super::resolve(&self.host, self.port).await?;
        let (tcp, addr) = super::connect_tcp(addrs)
            .await
            .map_err(|attempts| Error::Connect { attempts })?;
        let tls = self.handshake(tcp, addr).await?;
        Ok(self.connected(tls))
    }

    /// The TLS handshake (with its timeout) on a TCP connection to `addr`, ALPN `h2`
    /// required. `doctor` calls it on its own connection and looks at the server's
    /// certificates (`get_ref().1.peer_certificates()`) before [`TlsTransport::connected`].
    pub async fn handshake(&self, tcp: TcpStream, addr: SocketAddr) -> Result<TlsStream, Error> {
        tracing::debug!(%addr, "TCP connected; TLS handshake");
        let connector = TlsConnector::from(self.config.clone());
        let handshake = connector.connect(self.server_name.clone(), tcp);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(self.handshake_error(addr, &e)),
            Err(_) => {
                return Err(self.tls_error(TlsFailure::Cut(format!(
                    "the handshake with {addr} did not finish within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))))
            }
        };
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(self.tls_error(TlsFailure::NoH2));
        }
        tracing::debug!(%addr, "TLS established");
        Ok(tls)
    }

    /// A finished handshake as the stream the session runs on.
    pub fn connected(&self, tls: TlsStream) -> Connected {
        Connected {
            stream: Box::new(tls),
            authority: self.context.server.clone(),
            context: self.context.clone(),
            negotiation: None,
            stream_window: virtgate_proto::tuning::STREAM_WINDOW,
        }
    }

    /// The host to resolve and connect to, and the TCP port.
    pub fn target(&self) -> (&Host, u16) {
        (&self.host, self.port)
    }

    /// The name the server certificate must cover.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Names and files for messages (and the hints of [`Error::Tls`]).
    pub fn context(&self) -> &TlsContext {
        &self.context
    }

    fn tls_error(&self, failure: TlsFailure) -> Error {
        Error::Tls {
            failure: failure.refine(&self.context),
            context: Box::new(self.context.clone()),
        }
    }

    fn handshake_error(&self, addr: SocketAddr, e: &std::io::Error) -> Error {
        if let Some(t) = find_tls_error(e) {
            return self.tls_error(TlsFailure::from_rustls(&t));
        }
        let failure = match e.kind() {
            std::io::ErrorKind::UnexpectedEof => TlsFailure::Cut(format!(
                "{addr} closed the connection during the TLS handshake"
            )),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                TlsFailure::Cut(format!(
                    "{addr} reset the connection during the TLS handshake"
                ))
            }
            _ => TlsFailure::Other(format!("handshake with {addr}: {}", io_reason(e))),
        };
        self.tls_error(failure)
    }
}

/// The certificate and key do not form a pair (or the key cannot sign).
fn key_mismatch(cert: &Path, key: &Path, e: &rustls::Error) -> Error {
    let message = match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key {} does not belong to the certificate {}",
            key.display(),
            cert.display()
        ),
        other => format!(
            "cannot use the key {} with the certificate {}: {other}",
            key.display(),
            cert.display()
        ),
    };
    Error::Setting {
        message,
        hint: "`cert` and `key` must be the two halves of one pair (USER.pem and USER.key from \
               `virtgate-pki issue-client USER`)"
            .into(),
    }
}

fn tls_setup_error(e: &rustls::Error) -> Error {
    Error::Setting {
        message: format!("cannot set up TLS: {e}"),
        hint: "this is a bug in virtgate; please report it".into(),
    }
}

/// The CA file as the only trust anchors; refused when group or others may write it.
pub fn load_roots(ca: &Path) -> Result<RootCertStore, Error> {
    crate::perms::check_ca(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in keyfile::load_certs(ca)? {
        roots.add(cert).map_err(|e| Error::File {
            what: "CA certificate",
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Load the client key; its passphrase is asked from the configured sources only when the
/// key is encrypted. A source's own failure (command failed, no terminal) is reported as is.
/// A passphrase typed at the prompt may be retried; one from a file, the environment or a
/// command is not (it would be wrong again). A key group or others may read or write is
/// refused before anything is asked.
fn load_key(
    key: &Path,
    settings: &Settings,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, Error> {
    crate::perms::check_key(key)?;
    let prompting = settings.passphrase.source() == Source::Prompt;
    let mut tries = 0;
    loop {
        tries += 1;
        let mut source_error: Option<Error> = None;
        let mut ask = || match settings.passphrase.get(key) {
            Ok(p) => Ok(p),
            Err(e) => {
                let reason = e.to_string();
                let hint = e.hint();
                source_error = Some(e);
                Err(KeyFileError::passphrase(reason, hint))
            }
        };
        let loaded = keyfile::load_private_key(key, &mut ask);
        match (loaded, source_error) {
            (Ok(k), _) => return Ok(k),
            (Err(_), Some(e)) => return Err(e),
            (Err(KeyFileError::WrongPassphrase { .. }), None) if prompting && tries < 3 => {
                eprintln!("wrong passphrase, try again");
            }
            (Err(e), None) => return Err(e.into()),
        }
    }
}
