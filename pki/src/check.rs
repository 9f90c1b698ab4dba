//! Checks of a client certificate before it is used: does it belong to this key (or to
//! this request), and would a gateway trusting this CA accept it?
//!
//! The second check is the gateway's own: rustls' WebPKI client verifier (ring), the CA
//! file as its roots, at the current time. So "signed by another CA", "expired", "not a
//! client certificate" come out here in the same terms as at the first connection, only
//! earlier (`virtgate profile add`, `virtgate-pki export-p12`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use x509_parser::prelude::FromDer;

use crate::csr;

/// The parts of a certificate a person recognises it by.
#[derive(Debug, Clone)]
pub struct CertSummary {
    /// The subject's CN (the user of a client certificate).
    pub cn: String,
    /// The issuer's CN (the CA's name).
    pub issuer: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whether it is a CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// The public key's bits, to compare with a key.
    pub public_key: Vec<u8>,
    /// SHA-256 fingerprint of its public key ([`csr::fingerprint`]).
    pub key_fingerprint: String,
}

/// Reads the parts of a DER certificate shown to people; `Err` says why it is no X.509.
pub fn summary(cert: &CertificateDer<'_>) -> Result<CertSummary, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| name.to_string())
    };
    let not_after = x509
        .validity()
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| x509.validity().not_after.to_string());
    Ok(CertSummary {
        cn: cn(x509.subject()),
        issuer: cn(x509.issuer()),
        not_after,
        is_ca: x509.is_ca(),
        public_key: x509.public_key().subject_public_key.data.to_vec(),
        key_fingerprint: csr::fingerprint(x509.public_key().raw),
    })
}

/// The public key bits of a private key (any kind rustls signs with), or `None` when
/// the key cannot say.
pub fn public_key_of(key: &PrivateKeyDer<'_>) -> Option<Vec<u8>> {
    let signer = crate::keyfile::signing_key(key).ok()?;
    let spki = signer.public_key()?;
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()).ok()?;
    Some(parsed.subject_public_key.data.to_vec())
}

/// Whether `cert` was issued for `key`. `None` when the key's public half is unknown.
pub fn cert_matches_key(cert: &CertificateDer<'_>, key: &PrivateKeyDer<'_>) -> Option<bool> {
    let cert = summary(cert).ok()?;
    Some(public_key_of(key)? == cert.public_key)
}

/// Why a gateway trusting `ca` would refuse `cert` as a client certificate, in words;
/// `Ok` when it would accept it (today).
pub fn verify_client_cert(
    ca: &[CertificateDer<'static>],
    cert: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("the CA file holds a certificate that is no CA ({e})"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("the CA file cannot verify anything ({e})"))?;
    verifier
        .verify_client_cert(cert, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(c) => certificate_error(&c),
            other => other.to_string(),
        })
}

/// A WebPKI certificate error as a sentence fragment.
fn certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "it was not signed by this CA".to_string(),
        CertificateError::BadSignature => {
            "its signature does not verify with this CA's key".to_string()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (check this machine's clock)".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not a client certificate (no clientAuth extended key usage)".to_string()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(p, key))
    }

    fn client(issuer: &Issuer<'static, KeyPair>) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (p.signed_by(&key, issuer).unwrap().der().clone(), key)
    }

    #[test]
    fn matches_and_chains() {
        let (ca_der, issuer) = ca("one");
        let (other_ca, _) = ca("two");
        let (cert, key) = client(&issuer);
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        assert_eq!(cert_matches_key(&cert, &key_der), Some(true));
        let stranger = KeyPair::generate().unwrap();
        let stranger = PrivateKeyDer::try_from(stranger.serialize_der()).unwrap();
        assert_eq!(cert_matches_key(&cert, &stranger), Some(false));
        assert_eq!(
            verify_client_cert(std::slice::from_ref(&ca_der), &cert, &[]),
            Ok(())
        );
        assert_eq!(
            verify_client_cert(&[other_ca], &cert, &[]).unwrap_err(),
            "it was not signed by this CA"
        );
        let s = summary(&cert).unwrap();
        assert_eq!(
            (s.cn.as_str(), s.issuer.as_str(), s.is_ca),
            ("bob", "one", false)
        );
        assert!(summary(&ca_der).unwrap().is_ca);
    }
}
