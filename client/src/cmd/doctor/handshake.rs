//! The TLS step: the transport's own handshake on the connection the TCP step made, and what
//! the gateway's certificate says (the names it covers, its issuer, its dates).
//!
//! When the handshake fails (most often: `ca` is not the gateway's CA), `doctor` still shows
//! what the server presented: a second handshake on a new connection whose verifier only
//! records the chain and then refuses it, so nothing is ever sent over an unverified
//! connection. The step stays ✗; its hint names the CA file and the CA the gateway's
//! certificate actually comes from.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::certinfo::CertInfo;
use super::report::{Report, Status};
use crate::error::chain_text;
use crate::transport::tls::{TlsStream, TlsTransport};
use crate::transport::{connect_tcp, HANDSHAKE_TIMEOUT};

/// Run the handshake; on success the stream for the session, else `None` (the step failed).
/// `ca` is the CA file's first certificate, for the hint.
pub async fn run(
    report: &mut Report,
    transport: &TlsTransport,
    tcp: TcpStream,
    addr: SocketAddr,
    ca: Option<&CertInfo>,
) -> Option<TlsStream> {
    match transport.handshake(tcp, addr).await {
        Ok(tls) => {
            let conn = tls.get_ref().1;
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
                _ => "TLS",
            };
            let server = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| CertInfo::parse(c));
            match server {
                Some(info) => {
                    let detail = format!("{version} with {addr}: {}", describe(&info));
                    if info.expires_soon() {
                        report.add_hint(
                            "tls",
                            Status::Warn,
                            detail,
                            "the gateway's certificate ends soon: tell its admin \
                             (`virtgate-pki issue-server`)",
                        );
                    } else {
                        report.ok("tls", detail);
                    }
                }
                None => report.ok("tls", format!("{version} with {addr}")),
            }
            Some(tls)
        }
        Err(e) => {
            let mut detail = chain_text(&e);
            let mut hint = e.hint().unwrap_or_default();
            match presented(transport.server_name(), addr).await {
                Ok(chain) => match chain.first().and_then(|c| CertInfo::parse(c)) {
                    Some(info) => {
                        detail.push_str(&format!("; the gateway presented {}", describe(&info)));
                        if let Some(ca) = ca.filter(|ca| ca.subject != info.issuer) {
                            let file = transport
                                .context()
                                .ca
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|| "the CA file".into());
                            hint.push_str(&format!(
                                "\n{file} holds the CA {}, but the gateway's certificate was \
                                 issued by {}: use the ca.pem of that CA",
                                ca.subject, info.issuer
                            ));
                        }
                    }
                    None => detail.push_str("; the gateway presented no certificate"),
                },
                Err(why) => tracing::debug!(%why, "no second look at the server's certificate"),
            }
            report.add_hint("tls", Status::Fail, detail, hint);
            None
        }
    }
}

/// `a certificate for localhost, 127.0.0.1, ::1 (CN=localhost), issued by CN=…, valid until …`
fn describe(info: &CertInfo) -> String {
    format!(
        "a certificate for {} ({}), issued by {}, {}",
        info.names_text(),
        info.subject,
        info.issuer,
        info.validity_text()
    )
}

/// The chain the server at `addr` presents, read by a handshake that refuses it.
pub async fn presented(
    name: &ServerName<'static>,
    addr: SocketAddr,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let (tcp, _) = connect_tcp(vec![addr])
        .await
        .map_err(|_| format!("{addr} did not take a second connection"))?;
    let handshake = TlsConnector::from(Arc::new(config)).connect(name.clone(), tcp);
    // it fails by design: the recorder refuses every certificate
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(chain)
}

/// A verifier that records the server's chain and refuses it.
#[derive(Debug)]
struct Recorder {
    /// The chain the server sent, end entity first.
    chain: Mutex<Vec<CertificateDer<'static>>>,
    /// The signature schemes of the crypto provider (rustls asks for them).
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        Err(rustls::Error::General(
            "recorded for doctor; not trusted".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
