//! Private key and certificate files: PEM in, PEM out, OpenSSL-compatible both ways.
//!
//! Reading ([`load_private_key`]) accepts what OpenSSL writes:
//!
//! | PEM label | format | note |
//! |---|---|---|
//! | `ENCRYPTED PRIVATE KEY` | PKCS#8 PBES2 | PBKDF2 (HMAC-SHA256 or the older HMAC-SHA1) or scrypt, AES-CBC/GCM |
//! | `PRIVATE KEY` | PKCS#8 | |
//! | `EC PRIVATE KEY` | SEC1 | |
//! | `RSA PRIVATE KEY` | PKCS#1 | |
//!
//! The passphrase is asked for (through a closure) only when the key is encrypted, and a
//! passphrase that does not decrypt the key is reported as [`KeyFileError::WrongPassphrase`].
//! A loaded key is checked to be usable for TLS signing before it is returned.
//!
//! Writing ([`write_private_key`]) produces PKCS#8, encrypted with PBES2
//! (PBKDF2-HMAC-SHA256, 600 000 rounds, AES-256-CBC) when a passphrase is given: the
//! format `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes, readable by every OpenSSL,
//! LibreSSL and curl. The file is created 0600 and published atomically.

use std::path::Path;
use std::sync::Arc;

use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::{self, pbes2};
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef, SecretDocument};
use rustls::sign::SigningKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::error::KeyFileError;
use crate::files::{self, Existing};

/// PBKDF2-HMAC-SHA256 rounds for keys we encrypt (OWASP's 2023 figure; ≈0.1 s to unlock).
const PBKDF2_ROUNDS: u32 = 600_000;

/// The closure type that supplies a passphrase when a key turns out to be encrypted.
pub type PassphraseFn<'a> = dyn FnMut() -> Result<Zeroizing<String>, KeyFileError> + 'a;

/// Reads the private key in the PEM file `path`, decrypting it when it is encrypted.
///
/// `passphrase` is called at most once, and only for an `ENCRYPTED PRIVATE KEY`. The
/// result is checked to be a key rustls can sign with (ECDSA, Ed25519, RSA ≥ 2048 bits).
pub fn load_private_key(
    path: &Path,
    passphrase: &mut PassphraseFn<'_>,
) -> Result<PrivateKeyDer<'static>, KeyFileError> {
    let pem = read("key file", path)?;
    let key = parse_private_key(path, &pem, passphrase)?;
    signing_key(&key).map_err(|e| KeyFileError::UnsupportedKey {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(key)
}

/// Whether the PEM file `path` holds an encrypted private key (so a passphrase is needed).
pub fn is_encrypted(path: &Path) -> Result<bool, KeyFileError> {
    let pem = read("key file", path)?;
    Ok(labels(&pem).any(|l| l == "ENCRYPTED PRIVATE KEY") || is_legacy_encrypted(&pem))
}

/// Reads every certificate in the PEM file `path` (a chain or a bundle of CAs).
///
/// A file without a certificate is an error that says what it holds instead.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyFileError> {
    let pem = read("certificate file", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(KeyFileError::NotACertificate {
            path: path.to_path_buf(),
            found: labels(&pem).next().map(str::to_string),
        });
    }
    Ok(certs)
}

/// Builds a rustls signing key (ring provider) from a private key: the proof that the
/// key can be used for TLS.
pub fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    rustls::crypto::ring::sign::any_supported_type(key)
}

/// Writes the PKCS#8 DER key `pkcs8_der` to `path` as PEM, mode 0600, atomically.
///
/// With a passphrase the key is encrypted (`ENCRYPTED PRIVATE KEY`, PBES2); without one it
/// is written in the clear (`PRIVATE KEY`), e.g. for a daemon that starts unattended. An
/// existing file is refused unless `existing` is [`Existing::Replace`]. An empty
/// passphrase is refused.
pub fn write_private_key(
    path: &Path,
    pkcs8_der: &[u8],
    passphrase: Option<&str>,
    existing: Existing,
) -> Result<(), KeyFileError> {
    let pem = encode_private_key(path, pkcs8_der, passphrase)?;
    files::write_file(path, pem.as_bytes(), files::KEY_MODE, existing)
        .map_err(|e| KeyFileError::write(path, e))
}

/// Encodes a PKCS#8 key as PEM, encrypted when a passphrase is given.
///
/// `path` only names the destination in errors.
pub fn encode_private_key(
    path: &Path,
    pkcs8_der: &[u8],
    passphrase: Option<&str>,
) -> Result<Zeroizing<String>, KeyFileError> {
    let encode_err = |detail: String| KeyFileError::Encode {
        path: path.to_path_buf(),
        detail,
    };
    let parsed = PrivateKeyInfoRef::try_from(pkcs8_der).map_err(|e| encode_err(e.to_string()))?;
    // PKCS#8 v2 (with the public key, as ring writes Ed25519 keys) is not understood by
    // OpenSSL 3.0: write v1, which holds everything needed.
    let info = PrivateKeyInfoRef::new(parsed.algorithm, parsed.private_key);
    let pem = match passphrase {
        Some("") => {
            return Err(KeyFileError::EmptyPassphrase {
                source_name: "the caller".to_string(),
            })
        }
        Some(pass) => {
            let params = pbkdf2_params().map_err(|e| encode_err(e.to_string()))?;
            info.encrypt_with_params(params, pass.as_bytes())
                .and_then(|doc| Ok(doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)?))
        }
        None => SecretDocument::try_from(&info)
            .and_then(|doc| Ok(doc.to_pem("PRIVATE KEY", LineEnding::LF)?)),
    };
    pem.map_err(|e| encode_err(e.to_string()))
}

/// PBES2 parameters: PBKDF2-HMAC-SHA256 and AES-256-CBC, with a fresh salt and IV.
fn pbkdf2_params() -> Result<pbes2::Parameters, pkcs5::Error> {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    let random = rustls::crypto::ring::default_provider().secure_random;
    random.fill(&mut salt).map_err(|_| pkcs5::Error::Rng)?;
    random.fill(&mut iv).map_err(|_| pkcs5::Error::Rng)?;
    pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(PBKDF2_ROUNDS, &salt, iv)
}

/// Reads a whole file into memory that is wiped afterwards.
fn read(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| KeyFileError::read(what, path, e))
}

/// Decodes the first private key in `pem`.
fn parse_private_key(
    path: &Path,
    pem: &[u8],
    passphrase: &mut PassphraseFn<'_>,
) -> Result<PrivateKeyDer<'static>, KeyFileError> {
    if let Some(section) = section(pem, "ENCRYPTED PRIVATE KEY") {
        return decrypt(path, section, passphrase);
    }
    if is_legacy_encrypted(pem) {
        return Err(KeyFileError::UnsupportedEncryption {
            path: path.to_path_buf(),
            detail: "legacy PEM encryption (Proc-Type: 4,ENCRYPTED)".to_string(),
        });
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(KeyFileError::NotAKey {
            path: path.to_path_buf(),
            found: labels(pem).next().map(str::to_string),
        }),
        Err(e) => Err(bad_pem(path, e)),
    }
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` section.
fn decrypt(
    path: &Path,
    section: &[u8],
    passphrase: &mut PassphraseFn<'_>,
) -> Result<PrivateKeyDer<'static>, KeyFileError> {
    let (_, der) = pkcs8::der::pem::decode_vec(section).map_err(|e| KeyFileError::BadPem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let info = EncryptedPrivateKeyInfoRef::try_from(der.as_slice()).map_err(|e| {
        KeyFileError::UnsupportedEncryption {
            path: path.to_path_buf(),
            detail: format!("unreadable encryption parameters ({e})"),
        }
    })?;
    let scheme = info.encryption_algorithm;
    if scheme.pbes2().is_none() {
        return Err(KeyFileError::UnsupportedEncryption {
            path: path.to_path_buf(),
            detail: format!("PBES1 ({})", scheme.oid()),
        });
    }
    let pass = passphrase()?;
    let plain = scheme
        .decrypt(pass.as_bytes(), info.encrypted_data.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| match e {
            pkcs5::Error::DecryptFailed => KeyFileError::WrongPassphrase {
                path: path.to_path_buf(),
            },
            pkcs5::Error::UnsupportedAlgorithm { oid } => KeyFileError::UnsupportedEncryption {
                path: path.to_path_buf(),
                detail: format!("algorithm {oid}"),
            },
            other => KeyFileError::UnsupportedEncryption {
                path: path.to_path_buf(),
                detail: other.to_string(),
            },
        })?;
    // With CBC a wrong passphrase sometimes yields valid padding and garbage: a plaintext
    // that is not a PKCS#8 structure means the passphrase was wrong.
    if PrivateKeyInfoRef::try_from(plain.as_slice()).is_err() {
        return Err(KeyFileError::WrongPassphrase {
            path: path.to_path_buf(),
        });
    }
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_slice().to_vec(),
    )))
}

/// Maps a PEM parse error of `path`.
fn bad_pem(path: &Path, e: pem::Error) -> KeyFileError {
    match e {
        pem::Error::Io(error) => KeyFileError::Unreadable {
            what: "file",
            path: path.to_path_buf(),
            error,
        },
        other => KeyFileError::BadPem {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// The labels of the PEM sections in `pem`, in order (`CERTIFICATE`, `PRIVATE KEY`, …).
fn labels(pem: &[u8]) -> impl Iterator<Item = &str> {
    pem.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        line.strip_prefix("-----BEGIN ")?.strip_suffix("-----")
    })
}

/// The bytes of the first PEM section labelled `label`, BEGIN and END lines included.
fn section<'a>(pem: &'a [u8], label: &str) -> Option<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = find(pem, begin.as_bytes())?;
    let stop = start + find(&pem[start..], end.as_bytes())? + end.len();
    Some(&pem[start..stop])
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `pem` uses OpenSSL's legacy (pre-PKCS#8) PEM encryption.
fn is_legacy_encrypted(pem: &[u8]) -> bool {
    find(pem, b"Proc-Type: 4,ENCRYPTED").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pass() -> Result<Zeroizing<String>, KeyFileError> {
        panic!("passphrase asked for a plain key")
    }

    fn generated_pkcs8() -> Vec<u8> {
        rcgen::KeyPair::generate().unwrap().serialize_der()
    }

    #[test]
    fn round_trip_encrypted_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let der = generated_pkcs8();

        let enc = dir.path().join("enc.key");
        write_private_key(&enc, &der, Some("s3cret"), Existing::Refuse).unwrap();
        assert!(is_encrypted(&enc).unwrap());
        let text = std::fs::read_to_string(&enc).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let mut asked = 0;
        let key = load_private_key(&enc, &mut || {
            asked += 1;
            Ok(Zeroizing::new("s3cret".to_string()))
        })
        .unwrap();
        assert_eq!(asked, 1);
        assert_eq!(key.secret_der(), der.as_slice());

        let err =
            load_private_key(&enc, &mut || Ok(Zeroizing::new("nope".to_string()))).unwrap_err();
        assert!(matches!(err, KeyFileError::WrongPassphrase { .. }), "{err}");
        assert!(!err.to_string().contains("nope"));

        let plain = dir.path().join("plain.key");
        write_private_key(&plain, &der, None, Existing::Refuse).unwrap();
        assert!(!is_encrypted(&plain).unwrap());
        let key = load_private_key(&plain, &mut no_pass).unwrap();
        assert_eq!(key.secret_der(), der.as_slice());

        let err = write_private_key(&plain, &der, None, Existing::Refuse).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
    }

    #[test]
    fn ed25519_is_written_as_pkcs8_v1() {
        // ring writes Ed25519 as PKCS#8 v2 (public key included), which OpenSSL 3.0
        // cannot load: the written file must hold v1.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let der = key.serialize_der();
        assert!(PrivateKeyInfoRef::try_from(der.as_slice())
            .unwrap()
            .public_key
            .is_some());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ed.key");
        write_private_key(&p, &der, Some("pw"), Existing::Refuse).unwrap();
        let loaded = load_private_key(&p, &mut || Ok(Zeroizing::new("pw".to_string()))).unwrap();
        let info = PrivateKeyInfoRef::try_from(loaded.secret_der()).unwrap();
        assert!(info.public_key.is_none());
    }

    #[test]
    fn empty_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let err =
            write_private_key(&p, &generated_pkcs8(), Some(""), Existing::Refuse).unwrap_err();
        assert!(matches!(err, KeyFileError::EmptyPassphrase { .. }));
        assert!(!p.exists());
    }

    #[test]
    fn passphrase_source_errors_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_private_key(&p, &generated_pkcs8(), Some("x"), Existing::Refuse).unwrap();
        let err = load_private_key(&p, &mut || {
            Err(KeyFileError::passphrase(
                "no terminal",
                Some("use --passphrase-file".into()),
            ))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "no terminal");
        assert_eq!(err.hint().as_deref(), Some("use --passphrase-file"));
    }

    #[test]
    fn certificate_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, cert.cert.pem()).unwrap();
        let err = load_private_key(&p, &mut no_pass).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("holds a CERTIFICATE, not a private key"),
            "{err}"
        );
        assert_eq!(load_certs(&p).unwrap().len(), 1);

        let k = dir.path().join("x.key");
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let err = load_certs(&k).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("holds a PRIVATE KEY, not a certificate"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "hello\n").unwrap();
        let err = load_private_key(&empty, &mut no_pass).unwrap_err();
        assert!(err.to_string().starts_with("no PEM private key found in"));
    }

    #[test]
    fn legacy_encryption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("legacy.key");
        std::fs::write(
            &p,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n\
             -----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(is_encrypted(&p).unwrap());
        let err = load_private_key(&p, &mut no_pass).unwrap_err();
        assert!(matches!(err, KeyFileError::UnsupportedEncryption { .. }));
        assert!(err.hint().unwrap().contains("openssl pkcs8 -topk8"));
    }

    #[test]
    fn labels_and_sections() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\r\nAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN ENCRYPTED PRIVATE KEY-----\nBB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let l: Vec<_> = labels(pem).collect();
        assert_eq!(l, ["CERTIFICATE", "ENCRYPTED PRIVATE KEY"]);
        let s = section(pem, "ENCRYPTED PRIVATE KEY").unwrap();
        assert!(s.starts_with(b"-----BEGIN ENCRYPTED"));
        assert!(s.ends_with(b"-----END ENCRYPTED PRIVATE KEY-----"));
        assert!(section(pem, "PRIVATE KEY").is_none());
    }
}
