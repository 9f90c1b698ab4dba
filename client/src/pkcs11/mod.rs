//! Hardware keys: a profile's `key` may be a PKCS#11 URI (`pkcs11:token=…;object=…`,
//! RFC 7512) instead of a file; the key then never leaves the token (smartcard, YubiKey,
//! SoftHSM), which signs the TLS handshake and the certificate request.
//!
//! - [`uri`]: the URI subset virtgate reads (pure, unit-tested).
//! - [`token`]: the module loaded, the token found by its label, one logged-in session for
//!   the process, keys found or made on it.
//! - [`signer`]: the key as rustls and rcgen sign with it (digest here, CKM_ECDSA /
//!   CKM_RSA_PKCS_PSS / CKM_RSA_PKCS on the token).
//! - [`der`]: the DER wrappers the token's raw output needs.
//! - [`enroll`]: `virtgate enroll USER --key pkcs11:…`: the key made (or found) on the
//!   token, the request signed there.
//!
//! The module comes from `--pkcs11-module`, else the profile's `pkcs11_module`, else the
//! URI's `module-path`; nothing is loaded by guess (an error lists the modules found in the
//! usual places). The PIN comes from the key passphrase sources (`--passphrase-file`,
//! `$VIRTGATE_KEY_PASSPHRASE`, `passphrase_command`, then a prompt `PIN for token X:`),
//! is asked once per process and never retried.

pub mod der;
pub mod enroll;
pub mod signer;
pub mod token;
pub mod uri;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use zeroize::Zeroizing;

use crate::error::{Error, Pkcs11Failure};
use crate::passphrase::PassphraseSources;
pub use signer::{CsrKey, TokenSigningKey};
pub use token::{candidate_modules, Token, TokenKey};
pub use uri::{is_uri, Pkcs11Uri, UriError};

/// Tokens this process has logged in to, by module, token and session kind: a second
/// connection (a `virtgate up` reconnect) reuses the login instead of asking again.
type OpenTokens = Vec<((PathBuf, String, bool), Arc<Token>)>;
static OPEN: Mutex<OpenTokens> = Mutex::new(Vec::new());

/// Parse a `key` setting that [`is_uri`].
pub fn parse_uri(key: &Path) -> Result<Pkcs11Uri, Error> {
    let text = key.to_string_lossy();
    Pkcs11Uri::parse(&text).map_err(|e| {
        Pkcs11Failure::BadUri {
            uri: uri::redacted(&text),
            pin: matches!(e, UriError::Pin(_)),
            reason: e.to_string(),
        }
        .into()
    })
}

/// The module to load: the configured one (flag or profile), else the URI's `module-path`.
pub fn module_for(uri: &Pkcs11Uri, configured: Option<&Path>) -> Result<PathBuf, Error> {
    configured
        .map(Path::to_owned)
        .or_else(|| uri.module_path.clone())
        .ok_or_else(|| {
            Pkcs11Failure::NoModule {
                uri: uri.text.clone(),
                candidates: candidate_modules(),
            }
            .into()
        })
}

/// The PIN from the passphrase sources; the prompt says which token. No terminal is an
/// error about the PIN, not about a key file.
fn pin_from<'a>(
    sources: &'a PassphraseSources,
    uri: &'a Pkcs11Uri,
) -> impl Fn(&str) -> Result<Zeroizing<String>, Error> + 'a {
    move |label: &str| {
        sources
            .get_with_prompt(Path::new(&uri.text), &format!("PIN for token {label}: "))
            .map_err(|e| match e {
                Error::NoTerminal { .. } => Pkcs11Failure::NoTerminal {
                    token: label.to_owned(),
                }
                .into(),
                other => other,
            })
    }
}

/// Open (or reuse) the token the URI names, logged in.
pub fn open_token(
    uri: &Pkcs11Uri,
    module: &Path,
    passphrase: &PassphraseSources,
    write: bool,
) -> Result<Arc<Token>, Error> {
    let key = (module.to_owned(), uri.describe_token(), write);
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, token)) = open.iter().find(|(k, _)| *k == key) {
        return Ok(token.clone());
    }
    let token = Arc::new(Token::open(uri, module, &pin_from(passphrase, uri), write)?);
    open.push((key, token.clone()));
    Ok(token)
}

/// The TLS client identity: the certificate file's chain and the token's key, checked to
/// be one pair (when the token shows the public key).
pub fn client_cert(
    chain: Vec<CertificateDer<'static>>,
    cert: &Path,
    key: &Path,
    module: Option<&Path>,
    passphrase: &PassphraseSources,
) -> Result<Arc<dyn ResolvesClientCert>, Error> {
    let uri = parse_uri(key)?;
    let module = module_for(&uri, module)?;
    let token = open_token(&uri, &module, passphrase, false)?;
    let found = token.find_key(&uri)?;
    let signing = TokenSigningKey::new(token.clone(), found.clone());
    if signing.schemes().is_empty() {
        return Err(Pkcs11Failure::UnsupportedKey {
            token: token.label().to_owned(),
            key: found.describe(),
            what: "the token offers no signature mechanism virtgate uses for it (CKM_ECDSA, \
                   CKM_RSA_PKCS_PSS, CKM_RSA_PKCS)"
                .into(),
        }
        .into());
    }
    let certified = CertifiedKey::new(chain, Arc::new(signing));
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(Pkcs11Failure::KeyMismatch {
                uri: uri.text.clone(),
                cert: cert.to_owned(),
            }
            .into())
        }
    }
    tracing::debug!(token = %token.label(), key = %found.describe(), "client key on a PKCS#11 token");
    Ok(Arc::new(SingleCertAndKey::from(certified)))
}

/// A token's key ready to sign a certificate request (`virtgate enroll --key pkcs11:…`).
#[derive(Debug)]
pub struct EnrollKey {
    /// The key as rcgen signs with it (hand it to `cmd::enroll::write_request`).
    pub key: CsrKey,
    /// Whether the key was made now (else it was on the token already).
    pub generated: bool,
    /// The token's label.
    pub token: String,
    /// The key, in words (`object "alice" (id …)`).
    pub described: String,
}

/// Enrollment with a token: the key the URI names, or, when no private key on the token
/// matches, a new EC P-256 key pair made on the token under the URI's `object=` label
/// (and `id=`, else 16 random bytes).
pub fn enroll_key(
    key: &Path,
    module: Option<&Path>,
    passphrase: &PassphraseSources,
) -> Result<EnrollKey, Error> {
    let uri = parse_uri(key)?;
    let module = module_for(&uri, module)?;
    let token = open_token(&uri, &module, passphrase, true)?;
    let (found, generated) = match token.find_key(&uri) {
        Ok(k) => (k, false),
        Err(Error::Pkcs11(f)) if matches!(*f, Pkcs11Failure::KeyNotFound { .. }) => {
            let Some(label) = &uri.object else {
                return Err(Pkcs11Failure::NeedsLabel {
                    token: token.label().to_owned(),
                    uri: uri.text.clone(),
                }
                .into());
            };
            let id = match &uri.id {
                Some(id) => id.clone(),
                None => random_id()?,
            };
            (token.generate_p256(label, &id)?, true)
        }
        Err(e) => return Err(e),
    };
    let signing = TokenSigningKey::new(token.clone(), found.clone());
    let csr_key = CsrKey::new(signing).ok_or_else(|| Pkcs11Failure::UnsupportedKey {
        token: token.label().to_owned(),
        key: found.describe(),
        what: "the token shows no public key object for it, so no request can name it".into(),
    })?;
    Ok(EnrollKey {
        key: csr_key,
        generated,
        token: token.label().to_owned(),
        described: found.describe(),
    })
}

/// A CKA_ID for a new key: 16 random bytes.
fn random_id() -> Result<Vec<u8>, Error> {
    use ring::rand::SecureRandom;
    let mut id = vec![0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| Error::Setting {
            message: "the system's random number generator failed".into(),
            hint: "this is a bug or a broken system; please report it".into(),
        })?;
    Ok(id)
}
