//! PKCS#12 (`.p12`) files for browsers: a client certificate, its key and the CA.
//!
//! Browsers (Firefox, Chromium through NSS; Safari and Edge through the system store)
//! import a client certificate only as PKCS#12. [`export`] writes one with the
//! p12-keystore crate: the key in a PKCS#8 shrouded key bag and the certificates in an
//! encrypted safe, both PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), and the whole file
//! under an HMAC-SHA256 MAC: what `openssl pkcs12 -export` writes by default since
//! OpenSSL 3, read by OpenSSL 3 and NSS (`pk12util`). No legacy RC2/3DES/SHA-1.
//!
//! The chain in the file is the certificate, then the CA certificate(s), so that a browser
//! shows who issued it. The file is written 0600 (it holds the key, encrypted with the
//! .p12 password), atomically, and an existing file is refused unless replaced on purpose.

use std::path::Path;

use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::error::{CaError, KeyFileError};
use crate::files::{self, Existing};

/// PBKDF2 rounds for the key and certificate bags and the MAC's key derivation: the
/// figure our PKCS#8 keys use ([`crate::keyfile`]), ≈0.1 s each to open.
pub const P12_ROUNDS: u32 = 600_000;

/// What goes into a `.p12`.
pub struct P12Contents<'a> {
    /// The client certificate (first) and any intermediates.
    pub chain: &'a [CertificateDer<'static>],
    /// The CA certificate(s) that issued it.
    pub ca: &'a [CertificateDer<'static>],
    /// The certificate's private key, decrypted (PKCS#8).
    pub key: &'a PrivateKeyDer<'static>,
    /// The name a browser shows for the entry (the user).
    pub alias: &'a str,
}

/// Encodes `contents` as PKCS#12 protected by `password`.
///
/// `key_path` only names the key in errors.
pub fn encode(
    contents: &P12Contents<'_>,
    password: &str,
    key_path: &Path,
) -> Result<Vec<u8>, CaError> {
    let fail = |detail: String| CaError::P12 { detail };
    let pkcs8 = match contents.key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
        _ => {
            return Err(KeyFileError::UnsupportedEncryption {
                path: key_path.to_path_buf(),
                detail: "a PKCS#12 file needs a PKCS#8 key (this one is SEC1 or PKCS#1)"
                    .to_string(),
            }
            .into())
        }
    };
    let key = p12_keystore::PrivateKey::from_der(pkcs8).map_err(|e| fail(e.to_string()))?;
    let mut certs = Vec::new();
    for der in contents.chain.iter().chain(contents.ca) {
        certs.push(p12_keystore::Certificate::from_der(der).map_err(|e| fail(e.to_string()))?);
    }
    let Some(leaf) = contents.chain.first() else {
        return Err(fail("no certificate to export".to_string()));
    };
    // localKeyId pairs the key with its certificate; any bytes do, these are stable.
    let local_key_id = Sha256::digest(leaf.as_ref()).to_vec();
    let chain = PrivateKeyChain::new(local_key_id, key, certs);
    let mut store = KeyStore::new();
    store.add_entry(contents.alias, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(P12_ROUNDS)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
        .mac_iterations(P12_ROUNDS)
        .write()
        .map_err(|e| fail(e.to_string()))
}

/// Writes `contents` to `out` (0600, atomically) as PKCS#12 protected by `password`.
pub fn export(
    out: &Path,
    contents: &P12Contents<'_>,
    password: &str,
    key_path: &Path,
    existing: Existing,
) -> Result<(), CaError> {
    if password.is_empty() {
        return Err(KeyFileError::EmptyPassphrase {
            source_name: "the .p12 password".to_string(),
        }
        .into());
    }
    let der = zeroize::Zeroizing::new(encode(contents, password, key_path)?);
    files::write_file(out, &der, files::KEY_MODE, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CaError::Key(KeyFileError::Exists {
                path: out.to_path_buf(),
            })
        } else {
            CaError::io("writing", out, e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_with_the_password_only() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        let cert = p.self_signed(&key).unwrap().der().clone();
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let contents = P12Contents {
            chain: std::slice::from_ref(&cert),
            ca: &[],
            key: &key_der,
            alias: "bob",
        };
        let der = encode(&contents, "pw", Path::new("bob.key")).unwrap();
        let store =
            KeyStore::from_pkcs12(&der, "pw", p12_keystore::Pkcs12ImportPolicy::Relaxed).unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        assert_eq!(chain.key().as_der(), key.serialize_der());
        assert!(KeyStore::from_pkcs12(&der, "wrong", Default::default()).is_err());
    }
}
