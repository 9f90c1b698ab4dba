//! What `virtgate profile add` checks before it writes anything, so that a mistake shows
//! now with the file named, not at the first connection as a TLS alert:
//!
//! - the CA and the certificate are readable PEM certificates;
//! - the key file is the user's alone (`crate::perms`: every command would refuse it);
//! - the certificate belongs to the key: an unencrypted key is compared directly; an
//!   encrypted one (whose public key cannot be read without its passphrase, PKCS#8
//!   encrypts it whole) is compared through the request `virtgate enroll` left next to it
//!   (`KEY.csr`), else decrypted when a passphrase is given (`--passphrase-file`,
//!   `$VIRTGATE_KEY_PASSPHRASE`), else not compared (said so; the first connection will);
//! - a gateway trusting the CA accepts the certificate (signed by it, in its dates, a
//!   client certificate): the gateway's own verifier, `virtgate_pki::check`.

use std::path::{Path, PathBuf};

use virtgate_pki::check::{self, CertSummary};
use virtgate_pki::csr::CsrInfo;
use virtgate_pki::rustls_pki_types::CertificateDer;
use virtgate_pki::zeroize::Zeroizing;

use crate::error::{Error, SetupFailure};

/// A certificate file read and understood.
#[derive(Debug, Clone)]
pub struct CertFile {
    /// The file.
    pub path: PathBuf,
    /// Every certificate in it (the client's first, then intermediates).
    pub certs: Vec<CertificateDer<'static>>,
    /// The first one, in words.
    pub summary: CertSummary,
}

/// Reads a PEM certificate file (`what` names it in errors: `CA certificate`, ...).
pub fn read_cert(path: &Path) -> Result<CertFile, Error> {
    let certs = virtgate_pki::load_certs(path)?;
    let summary = certs
        .first()
        .map(check::summary)
        .transpose()
        .map_err(|detail| virtgate_pki::KeyFileError::BadPem {
            path: path.to_owned(),
            detail,
        })?
        .ok_or_else(|| virtgate_pki::KeyFileError::NotACertificate {
            path: path.to_owned(),
            found: None,
        })?;
    Ok(CertFile {
        path: path.to_owned(),
        certs,
        summary,
    })
}

/// How the certificate was found to belong to the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// Compared with the key itself.
    Key,
    /// Compared with the request made with the (encrypted) key.
    Request(PathBuf),
    /// Not compared, and why.
    Unchecked(String),
}

/// Checks that `cert` was issued for `key`; `passphrase` unlocks an encrypted key that
/// has no request next to it (`None`: do not ask).
pub fn key_matches(
    cert: &CertFile,
    key: &Path,
    passphrase: Option<Zeroizing<String>>,
) -> Result<KeyMatch, Error> {
    if crate::pkcs11::uri::is_uri(key) {
        return Ok(KeyMatch::Unchecked(
            "the key is on a token: the first connection compares it".into(),
        ));
    }
    crate::perms::check_key(key)?;
    let mismatch = |request: Option<PathBuf>| -> Error {
        SetupFailure::CertKeyMismatch {
            cert: cert.path.clone(),
            key: key.to_owned(),
            request,
        }
        .into()
    };
    if !virtgate_pki::is_encrypted(key)? {
        let der = virtgate_pki::load_private_key(key, &mut || {
            Err(virtgate_pki::KeyFileError::passphrase(
                "the key turned out encrypted",
                None,
            ))
        })?;
        return match virtgate_pki::check::public_key_of(&der) {
            Some(k) if k == cert.summary.public_key => Ok(KeyMatch::Key),
            Some(_) => Err(mismatch(None)),
            None => Ok(KeyMatch::Unchecked(
                "its public key cannot be derived".into(),
            )),
        };
    }
    let request = key.with_extension("csr");
    if let Some(info) = std::fs::read_to_string(&request)
        .ok()
        .and_then(|t| CsrInfo::parse(&t).ok())
    {
        return if info.public_key == cert.summary.public_key {
            Ok(KeyMatch::Request(request))
        } else {
            Err(mismatch(Some(request)))
        };
    }
    let Some(pass) = passphrase else {
        return Ok(KeyMatch::Unchecked(format!(
            "it is encrypted and {} is not there; give --passphrase-file to compare them now",
            request.display()
        )));
    };
    let der = virtgate_pki::load_private_key(key, &mut || Ok(pass.clone()))?;
    match virtgate_pki::check::public_key_of(&der) {
        Some(k) if k == cert.summary.public_key => Ok(KeyMatch::Key),
        Some(_) => Err(mismatch(None)),
        None => Ok(KeyMatch::Unchecked(
            "its public key cannot be derived".into(),
        )),
    }
}

/// Checks that a gateway trusting `ca` accepts `cert` now.
pub fn issued_by(cert: &CertFile, ca: &CertFile) -> Result<(), Error> {
    if !ca.summary.is_ca {
        return Err(SetupFailure::NotIssuedBy {
            cert: cert.path.clone(),
            ca: ca.path.clone(),
            reason: format!(
                "{} is no CA certificate (it is the certificate of `{}`)",
                ca.path.display(),
                ca.summary.cn
            ),
        }
        .into());
    }
    check::verify_client_cert(&ca.certs, &cert.certs[0], &cert.certs[1..]).map_err(|reason| {
        SetupFailure::NotIssuedBy {
            cert: cert.path.clone(),
            ca: ca.path.clone(),
            reason,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    /// A CA, a client certificate for `bob` and its key, as files in `dir`.
    fn files(dir: &Path, encrypted: bool) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(p, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let paths = (dir.join("ca.pem"), dir.join("bob.pem"), dir.join("bob.key"));
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        let pass = encrypted.then_some("pw");
        virtgate_pki::write_private_key(
            &paths.2,
            &key.serialize_der(),
            pass,
            virtgate_pki::Existing::Refuse,
        )
        .unwrap();
        if encrypted {
            let csr = virtgate_pki::csr::request_pem("bob", &key).unwrap();
            std::fs::write(dir.join("bob.csr"), csr).unwrap();
        }
        paths
    }

    #[test]
    fn plain_keys_requests_and_passphrases() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = files(dir.path(), false);
        let cert = read_cert(&cert).unwrap();
        assert_eq!(key_matches(&cert, &key, None).unwrap(), KeyMatch::Key);
        issued_by(&cert, &read_cert(&ca).unwrap()).unwrap();
        // the CA as the client certificate's CA: not signed by it
        let e = issued_by(&read_cert(&ca).unwrap(), &cert).unwrap_err();
        assert!(
            e.to_string().contains("does not check against the CA"),
            "{e}"
        );

        let enc = tempfile::tempdir().unwrap();
        let (_, _, enc_key) = files(enc.path(), true);
        // another key's request: the mismatch names it
        let e = key_matches(&cert, &enc_key, None).unwrap_err();
        assert!(e.to_string().contains("(compared with its request"), "{e}");
        std::fs::remove_file(enc.path().join("bob.csr")).unwrap();
        assert!(matches!(
            key_matches(&cert, &enc_key, None).unwrap(),
            KeyMatch::Unchecked(_)
        ));
        let e = key_matches(&cert, &enc_key, Some(Zeroizing::new("pw".into()))).unwrap_err();
        assert!(e.to_string().contains("their public keys differ"), "{e}");
        let e = key_matches(&cert, &enc_key, Some(Zeroizing::new("no".into()))).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
    }
}
