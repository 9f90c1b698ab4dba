//! A token's key as rustls sees it ([`rustls::sign::SigningKey`]) and as rcgen sees it
//! ([`rcgen::SigningKey`], for certificate requests).
//!
//! The digest is computed here (ring) and only the digest goes to the token, with the
//! mechanisms nearly every token has: CKM_ECDSA (whose raw `r‖s` is wrapped in DER for
//! TLS and X.509), CKM_RSA_PKCS_PSS (TLS 1.3 needs RSA-PSS) and CKM_RSA_PKCS over a
//! `DigestInfo` (PKCS#1 v1.5: TLS 1.2 and certificate requests). SoftHSM, for one, has
//! no CKM_ECDSA_SHA256. Schemes are offered only when the token lists the mechanism.

use std::sync::Arc;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use ring::digest;
use rustls::pki_types::{alg_id, SubjectPublicKeyInfoDer};
use rustls::sign::{public_key_to_spki, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::der;
use super::token::{Curve, KeyKind, Token, TokenKey};
use crate::error::{chain_text, Error};

/// A private key on a logged-in token, shared by every handshake of the process.
#[derive(Debug, Clone)]
pub struct TokenSigningKey {
    /// The token (one session, behind a mutex).
    token: Arc<Token>,
    /// The key on it.
    key: TokenKey,
    /// The TLS schemes this key can make on this token, best first.
    schemes: Vec<SignatureScheme>,
}

impl TokenSigningKey {
    /// The key with the schemes the token can make for it.
    pub fn new(token: Arc<Token>, key: TokenKey) -> TokenSigningKey {
        let schemes = match &key.kind {
            KeyKind::Ec { curve, .. } if token.offers(MechanismType::ECDSA) => match curve {
                Curve::P256 => vec![SignatureScheme::ECDSA_NISTP256_SHA256],
                Curve::P384 => vec![SignatureScheme::ECDSA_NISTP384_SHA384],
            },
            KeyKind::Ec { .. } => Vec::new(),
            KeyKind::Rsa { .. } => {
                let mut s = Vec::new();
                if token.offers(MechanismType::RSA_PKCS_PSS) {
                    s.extend([
                        SignatureScheme::RSA_PSS_SHA256,
                        SignatureScheme::RSA_PSS_SHA384,
                        SignatureScheme::RSA_PSS_SHA512,
                    ]);
                }
                if token.offers(MechanismType::RSA_PKCS) {
                    s.extend([
                        SignatureScheme::RSA_PKCS1_SHA256,
                        SignatureScheme::RSA_PKCS1_SHA384,
                        SignatureScheme::RSA_PKCS1_SHA512,
                    ]);
                }
                s
            }
        };
        TokenSigningKey {
            token,
            key,
            schemes,
        }
    }

    /// The schemes this key signs TLS with (empty: the token lacks the mechanisms).
    pub fn schemes(&self) -> &[SignatureScheme] {
        &self.schemes
    }

    /// The key on the token.
    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Sign `message` by `scheme`: digest here, sign on the token, DER for ECDSA.
    pub fn sign_message(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
        let (hash, mgf, hash_mech) = match scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256
            | SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PKCS1_SHA256 => (
                &digest::SHA256,
                PkcsMgfType::MGF1_SHA256,
                MechanismType::SHA256,
            ),
            SignatureScheme::ECDSA_NISTP384_SHA384
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PKCS1_SHA384 => (
                &digest::SHA384,
                PkcsMgfType::MGF1_SHA384,
                MechanismType::SHA384,
            ),
            _ => (
                &digest::SHA512,
                PkcsMgfType::MGF1_SHA512,
                MechanismType::SHA512,
            ),
        };
        let d = digest::digest(hash, message);
        let d = d.as_ref();
        let bad = |what: &str| crate::error::Error::Setting {
            message: format!("the token \"{}\" returned {what}", self.token.label()),
            hint: "the token or its module misbehaves; try `pkcs11-tool --test --login`".into(),
        };
        match scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384 => {
                let raw = self.token.sign(&self.key, &Mechanism::Ecdsa, d)?;
                der::ecdsa_signature(&raw).ok_or_else(|| bad("an ECDSA signature of odd length"))
            }
            SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PSS_SHA512 => {
                let params = PkcsPssParams {
                    hash_alg: hash_mech,
                    mgf,
                    s_len: (d.len() as u64).into(),
                };
                self.token
                    .sign(&self.key, &Mechanism::RsaPkcsPss(params), d)
            }
            _ => {
                let info = der::digest_info(d).ok_or_else(|| bad("a digest of odd length"))?;
                self.token.sign(&self.key, &Mechanism::RsaPkcs, &info)
            }
        }
    }

    /// The public key as it appears in a certificate (BIT STRING contents): the EC point
    /// or the DER `RSAPublicKey`. `None` for an EC key whose point the token hides.
    pub fn public_key_bits(&self) -> Option<Vec<u8>> {
        match &self.key.kind {
            KeyKind::Ec { point, .. } => point.clone(),
            KeyKind::Rsa { modulus, exponent } => Some(der::rsa_public_key(modulus, exponent)),
        }
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.schemes.iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: self.clone(),
            scheme: *scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        let alg = match &self.key.kind {
            KeyKind::Ec {
                curve: Curve::P256, ..
            } => alg_id::ECDSA_P256,
            KeyKind::Ec {
                curve: Curve::P384, ..
            } => alg_id::ECDSA_P384,
            KeyKind::Rsa { .. } => alg_id::RSA_ENCRYPTION,
        };
        Some(public_key_to_spki(&alg, self.public_key_bits()?))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.kind {
            KeyKind::Ec { .. } => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa { .. } => SignatureAlgorithm::RSA,
        }
    }
}

/// One handshake's signature with the token's key.
#[derive(Debug)]
struct TokenSigner {
    /// The key (its token shared).
    key: TokenSigningKey,
    /// The scheme chosen for this handshake.
    scheme: SignatureScheme,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign_message(self.scheme, message).map_err(|e| {
            tracing::warn!(error = %chain_text(&e), "the token could not sign the handshake");
            rustls::Error::General(chain_text(&e))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The key as rcgen signs a certificate request with it: ECDSA with the curve's hash, or
/// RSA PKCS#1 v1.5 with SHA-256.
#[derive(Debug)]
pub struct CsrKey {
    /// The token's key.
    key: TokenSigningKey,
    /// The public key bits (point or `RSAPublicKey`).
    public: Vec<u8>,
    /// Why the token could not sign (rcgen's error cannot carry it).
    failure: std::sync::Mutex<Option<Error>>,
}

impl CsrKey {
    /// `None` when the token hides the public key (no public key object).
    pub fn new(key: TokenSigningKey) -> Option<CsrKey> {
        let public = key.public_key_bits()?;
        Some(CsrKey {
            key,
            public,
            failure: std::sync::Mutex::new(None),
        })
    }

    /// Why the last signature failed, if it did.
    pub fn take_failure(&self) -> Option<Error> {
        self.failure.lock().ok()?.take()
    }

    fn scheme(&self) -> SignatureScheme {
        match self.key.key.kind {
            KeyKind::Ec {
                curve: Curve::P256, ..
            } => SignatureScheme::ECDSA_NISTP256_SHA256,
            KeyKind::Ec {
                curve: Curve::P384, ..
            } => SignatureScheme::ECDSA_NISTP384_SHA384,
            KeyKind::Rsa { .. } => SignatureScheme::RSA_PKCS1_SHA256,
        }
    }
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.key.key.kind {
            KeyKind::Ec {
                curve: Curve::P256, ..
            } => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Ec {
                curve: Curve::P384, ..
            } => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for CsrKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign_message(self.scheme(), msg).map_err(|e| {
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}
