//! Certificate signing requests (PKCS#10): made on the user's machine, read on the CA's.
//!
//! [`request_pem`] writes the request `virtgate enroll` sends to the admin: subject
//! `CN=USER`, nothing else, self-signed by any key rcgen can sign with (a key in a file,
//! or one on a hardware token behind [`rcgen::SigningKey`]). [`CsrInfo::parse`] reads a
//! request the way `sign-csr` must before it signs anything: the signature verifies, the
//! CN is a valid user name, and the public key is shown by its [`fingerprint`].
//!
//! The fingerprint is the SHA-256 of the DER SubjectPublicKeyInfo, in upper-case hex
//! pairs separated by `:`; both sides print it so that the admin can compare it with the
//! user over another channel. OpenSSL computes the same value:
//! `openssl req -in USER.csr -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`.

use rcgen::{CertificateParams, DistinguishedName, DnType, SigningKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::error::CaError;
use crate::names;

/// What a request asks for, checked: the user and the public key.
#[derive(Debug, Clone)]
pub struct CsrInfo {
    /// The CN of the subject: the user the certificate will name.
    pub cn: String,
    /// The DER SubjectPublicKeyInfo the certificate will carry.
    pub spki_der: Vec<u8>,
    /// The public key's bits (the BIT STRING inside the SPKI), to compare with a key or a
    /// certificate whatever the encoding of the algorithm's parameters.
    pub public_key: Vec<u8>,
    /// The kind of key in words (`EC P-256`, `RSA 3072 bits`, `Ed25519`).
    pub key_kind: String,
}

impl CsrInfo {
    /// Reads a PEM request: its signature must verify and its CN be a valid user name.
    pub fn parse(csr_pem: &str) -> Result<CsrInfo, CaError> {
        let bad = |detail: String| CaError::BadCsr { detail };
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| bad(format!("no PEM CERTIFICATE REQUEST found ({e})")))?;
        Self::from_der(der.as_ref())
    }

    /// Reads a DER request (see [`CsrInfo::parse`]).
    pub fn from_der(der: &[u8]) -> Result<CsrInfo, CaError> {
        let bad = |detail: String| CaError::BadCsr { detail };
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|e| bad(format!("not a PKCS#10 request ({e})")))?;
        csr.verify_signature()
            .map_err(|e| bad(format!("its signature does not verify ({e})")))?;
        let info = &csr.certification_request_info;
        let cn = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| bad("the subject has no common name (CN=user)".to_string()))?
            .to_string();
        names::check_user(&cn)?;
        let spki = &info.subject_pki;
        Ok(CsrInfo {
            cn,
            spki_der: spki.raw.to_vec(),
            public_key: spki.subject_public_key.data.to_vec(),
            key_kind: key_kind(spki),
        })
    }

    /// The public key's SHA-256 [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.spki_der)
    }
}

/// A request for `CN=user`, signed by `key`, as PEM.
///
/// `key` is any key rcgen signs with: a [`rcgen::KeyPair`] from a file, or a key that
/// stays on a token.
pub fn request_pem(user: &str, key: &impl SigningKey) -> Result<String, CaError> {
    names::check_user(user)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    let sign = |e: rcgen::Error| CaError::Sign {
        action: "making the certificate request",
        detail: e.to_string(),
    };
    params
        .serialize_request(key)
        .map_err(sign)?
        .pem()
        .map_err(sign)
}

/// SHA-256 of a DER SubjectPublicKeyInfo as `AB:CD:…` (32 pairs).
pub fn fingerprint(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// The kind of a public key in words.
pub fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "EC P-256".to_string(),
                Some("1.3.132.0.34") => "EC P-384".to_string(),
                Some("1.3.132.0.35") => "EC P-521".to_string(),
                Some(other) => format!("EC (curve {other})"),
                None => "EC".to_string(),
            }
        }
        Ok(PublicKey::RSA(rsa)) => format!("RSA {} bits", rsa.key_size()),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".to_string(),
        _ => format!("algorithm {}", spki.algorithm.algorithm.to_id_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_with_its_name_and_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = request_pem("bob", &key).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let info = CsrInfo::parse(&pem).unwrap();
        assert_eq!(info.cn, "bob");
        assert_eq!(info.key_kind, "EC P-256");
        assert_eq!(info.public_key, key.public_key_raw());
        assert_eq!(
            info.spki_der,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        let fp = info.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn bad_names_and_bad_requests_are_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            request_pem("-rf", &key),
            Err(CaError::InvalidUser { .. })
        ));
        let e = CsrInfo::parse("hello").unwrap_err();
        assert!(e.to_string().contains("no PEM CERTIFICATE REQUEST"), "{e}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let info = CsrInfo::parse(&request_pem("carol", &ed).unwrap()).unwrap();
        assert_eq!(info.key_kind, "Ed25519");
    }
}
