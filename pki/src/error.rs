//! The errors of this crate, each with the context a person needs and a hint.
//!
//! Two enums: [`KeyFileError`] for reading and writing key, certificate and passphrase
//! files (shared with the client and the gateway), and [`CaError`] for the certificate
//! authority. Messages name the file and say what is wrong in plain words; `hint()` says
//! what to do about it. The client and `virtgate-pki` print them as
//! `error: MESSAGE` then `hint: HINT`. No message ever contains a passphrase.

use std::io;
use std::path::{Path, PathBuf};

/// A short, lower-case reason for an I/O error ("permission denied" rather than
/// "Permission denied (os error 13)").
pub(crate) fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or folder".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::AlreadyExists => "file exists".to_string(),
        _ => {
            let s = e.to_string();
            // "Read-only file system (os error 30)" -> "read-only file system"
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut chars = s.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => s,
            }
        }
    }
}

/// Failure to read or write a key, certificate or passphrase file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file is not there.
    #[error("{what} {} does not exist", path.display())]
    NotFound {
        /// What the file should have been ("key file", "certificate file", …).
        what: &'static str,
        /// The path that was tried.
        path: PathBuf,
    },

    /// The file exists but could not be read.
    #[error("cannot read {what} {}: {}", path.display(), io_reason(error))]
    Unreadable {
        /// What the file should have been.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        error: io::Error,
    },

    /// The file holds no private key (maybe a certificate).
    #[error("{}", not_a_key(path, found.as_deref()))]
    NotAKey {
        /// The file.
        path: PathBuf,
        /// The PEM label found instead (`CERTIFICATE`), if any.
        found: Option<String>,
    },

    /// The file holds no certificate (maybe a private key).
    #[error("{}", not_a_cert(path, found.as_deref()))]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// The PEM label found instead (`PRIVATE KEY`), if any.
        found: Option<String>,
    },

    /// The file is PEM-shaped but broken (bad base64, missing END line, …).
    #[error("{} is not valid PEM: {detail}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },

    /// The key is encrypted and the passphrase does not decrypt it.
    #[error("wrong passphrase for {}", path.display())]
    WrongPassphrase {
        /// The encrypted key file.
        path: PathBuf,
    },

    /// The key is encrypted with a scheme this program cannot decrypt.
    #[error("{} is encrypted in a way virtgate cannot read: {detail}", path.display())]
    UnsupportedEncryption {
        /// The key file.
        path: PathBuf,
        /// The scheme, as far as it is known.
        detail: String,
    },

    /// The key decodes but is of a kind TLS cannot use (DSA, RSA under 2048 bits, …).
    #[error("{} holds a private key virtgate cannot use: {detail}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },

    /// The key's DER structure is damaged.
    #[error("{} holds a damaged private key: {detail}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },

    /// The source of a passphrase failed (no terminal, a command that failed, …).
    #[error("{reason}")]
    Passphrase {
        /// What went wrong, naming the source (never the passphrase).
        reason: String,
        /// What to do about it.
        hint: Option<String>,
    },

    /// A passphrase file could not be read.
    #[error("cannot read passphrase file {}: {}", path.display(), io_reason(error))]
    PassphraseFile {
        /// The passphrase file.
        path: PathBuf,
        /// Why reading failed.
        error: io::Error,
    },

    /// The passphrase is empty.
    #[error("empty passphrase from {source_name}")]
    EmptyPassphrase {
        /// Where it came from ("passphrase file /x/pw", "the terminal", …).
        source_name: String,
    },

    /// The passphrase typed twice did not match.
    #[error("the passphrases do not match")]
    PassphraseMismatch,

    /// Refused to overwrite a file.
    #[error("{} already exists: refusing to overwrite it", path.display())]
    Exists {
        /// The file that is in the way.
        path: PathBuf,
    },

    /// Writing a file failed.
    #[error("writing {}: {}", path.display(), io_reason(error))]
    Write {
        /// The file.
        path: PathBuf,
        /// Why writing failed.
        error: io::Error,
    },

    /// Encoding or encrypting a key failed (not expected with a valid key).
    #[error("encoding the private key for {}: {detail}", path.display())]
    Encode {
        /// The destination file.
        path: PathBuf,
        /// What the encoder said.
        detail: String,
    },
}

fn not_a_key(path: &Path, found: Option<&str>) -> String {
    match found {
        Some(label) => format!("{} holds a {label}, not a private key", path.display()),
        None => format!("no PEM private key found in {}", path.display()),
    }
}

fn not_a_cert(path: &Path, found: Option<&str>) -> String {
    match found {
        Some(label) => format!("{} holds a {label}, not a certificate", path.display()),
        None => format!("no PEM certificate found in {}", path.display()),
    }
}

impl KeyFileError {
    /// Builds a [`KeyFileError::Passphrase`]: for passphrase sources outside this crate.
    pub fn passphrase(reason: impl Into<String>, hint: Option<String>) -> Self {
        KeyFileError::Passphrase {
            reason: reason.into(),
            hint,
        }
    }

    /// Maps a failed read of `path` to `NotFound` or `Unreadable`.
    pub fn read(what: &'static str, path: &Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::NotFound {
            KeyFileError::NotFound {
                what,
                path: path.to_path_buf(),
            }
        } else {
            KeyFileError::Unreadable {
                what,
                path: path.to_path_buf(),
                error,
            }
        }
    }

    /// Maps a failed write of `path` to `Exists` or `Write`.
    pub(crate) fn write(path: &Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyFileError::Write {
                path: path.to_path_buf(),
                error,
            }
        }
    }

    /// What the user can do about this error, if there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            KeyFileError::NotFound { what, .. } => Some(format!(
                "check the path of the {what} (relative paths start from the current folder)"
            )),
            KeyFileError::Unreadable { path, error, .. }
                if error.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some(crate::share::unreadable_hint(path))
            }
            KeyFileError::Unreadable { .. } => None,
            KeyFileError::NotAKey { .. } => Some("point --key at the .key file".to_string()),
            KeyFileError::NotACertificate { .. } => {
                Some("point --cert (or --ca) at the .pem certificate file".to_string())
            }
            KeyFileError::BadPem { .. } | KeyFileError::Malformed { .. } => {
                Some("the file is damaged: restore it or issue a new key".to_string())
            }
            KeyFileError::WrongPassphrase { .. } => Some(
                "use the passphrase chosen when the key was created; a passphrase file must hold \
                 it on its first line"
                    .to_string(),
            ),
            KeyFileError::UnsupportedEncryption { .. } => Some(
                "re-encrypt the key as PKCS#8 with AES: `openssl pkcs8 -topk8 -v2 aes-256-cbc \
                 -in OLD.key -out NEW.key`"
                    .to_string(),
            ),
            KeyFileError::UnsupportedKey { .. } => Some(
                "use an ECDSA (P-256/P-384), Ed25519 or RSA (2048 bits or more) key, e.g. one \
                 made by `virtgate-pki issue-client`"
                    .to_string(),
            ),
            KeyFileError::Passphrase { hint, .. } => hint.clone(),
            KeyFileError::PassphraseFile { .. } => Some(
                "the passphrase file must exist and be readable; its first line is the passphrase"
                    .to_string(),
            ),
            KeyFileError::EmptyPassphrase { .. } => Some(
                "choose a non-empty passphrase, or use --no-passphrase for an unencrypted key"
                    .to_string(),
            ),
            KeyFileError::PassphraseMismatch => Some("type the same passphrase twice".to_string()),
            KeyFileError::Exists { .. } => {
                Some("pass --force to replace it, or choose another --out folder".to_string())
            }
            KeyFileError::Write { error, .. }
                if error.kind() == io::ErrorKind::PermissionDenied =>
            {
                Some("choose a folder you can write to (--out)".to_string())
            }
            KeyFileError::Write { .. } | KeyFileError::Encode { .. } => None,
        }
    }
}

/// Failure of a certificate authority operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// `init` on a folder that already holds a CA.
    #[error("CA already exists in {} (ca.pem present): use another --dir or delete it", dir.display())]
    AlreadyExists {
        /// The CA folder.
        dir: PathBuf,
    },

    /// A command other than `init` on a folder without a CA.
    #[error("{} holds no CA (no ca.pem)", dir.display())]
    NoCa {
        /// The folder that was given.
        dir: PathBuf,
    },

    /// Reading or writing a key, certificate or passphrase failed.
    #[error(transparent)]
    Key(#[from] KeyFileError),

    /// A file operation failed.
    #[error("{action} {}: {}", path.display(), io_reason(error))]
    Io {
        /// What was being done ("writing", "reading", "creating folder").
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why it failed.
        error: io::Error,
    },

    /// `ca.key` does not belong to `ca.pem`.
    #[error("{} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The CA key file.
        key: PathBuf,
        /// The CA certificate file.
        cert: PathBuf,
    },

    /// `index.json` or `ca.pem` cannot be understood.
    #[error("{} is damaged: {detail}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// Building or signing a certificate or CRL failed.
    #[error("{action}: {detail}")]
    Sign {
        /// What was being made ("signing the certificate", "signing the CRL").
        action: &'static str,
        /// What rcgen said.
        detail: String,
    },

    /// A certificate signing request could not be used.
    #[error("cannot sign the request: {detail}")]
    BadCsr {
        /// What is wrong with it.
        detail: String,
    },

    /// A user name that cannot become a certificate CN and a file name.
    #[error("`{name}` cannot be used as a user name: {why}")]
    InvalidUser {
        /// The name given.
        name: String,
        /// Why it was refused.
        why: &'static str,
    },

    /// A DNS name that cannot go into a certificate.
    #[error("`{name}` is not a valid DNS name: {why}")]
    InvalidDnsName {
        /// The name given.
        name: String,
        /// Why it was refused.
        why: &'static str,
    },

    /// A server certificate needs at least one name.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,

    /// A validity period that is empty or out of range.
    #[error("invalid validity period: {detail}")]
    InvalidValidity {
        /// What is wrong with it.
        detail: String,
    },

    /// `revoke` of a user or serial the CA never issued.
    #[error("no certificate of {} matches `{target}` (neither a user nor a serial)", dir.display())]
    UnknownTarget {
        /// The CA folder.
        dir: PathBuf,
        /// What was asked for.
        target: String,
        /// The users (CNs) that do have certificates.
        known: Vec<String>,
    },

    /// A revocation reason that is not one of RFC 5280's names.
    #[error("unknown revocation reason `{reason}`")]
    InvalidReason {
        /// The reason given.
        reason: String,
    },

    /// `revoke` of something already revoked.
    #[error("every certificate matching `{target}` is already revoked")]
    AlreadyRevoked {
        /// What was asked for.
        target: String,
    },

    /// `--group NAME` names a group this system does not have.
    #[error("there is no group `{name}` in /etc/group")]
    UnknownGroup {
        /// The group asked for.
        name: String,
    },
    /// `sign-csr --expect NAME` on a request for another name: nothing is signed.
    #[error("{} asks for a certificate for `{found}`, not `{expected}` (--expect {expected}): nothing signed", file.display())]
    UnexpectedRequest {
        /// The request file.
        file: PathBuf,
        /// The name the admin expected (`--expect`).
        expected: String,
        /// The CN the request asks for.
        found: String,
    },

    /// `sign-csr` without `--expect` and without a terminal to confirm the name on.
    #[error("{} asks for a certificate for `{cn}` (public key {fingerprint}) and there is no terminal to confirm it on: nothing signed", file.display())]
    NeedsExpect {
        /// The request file.
        file: PathBuf,
        /// The CN the request asks for.
        cn: String,
        /// Its public key's fingerprint.
        fingerprint: String,
    },

    /// The admin answered no when asked to confirm a request.
    #[error("not confirmed: nothing signed for `{cn}`")]
    NotConfirmed {
        /// The CN the request asks for.
        cn: String,
    },

    /// A certificate that does not belong to the key it is paired with.
    #[error("the certificate {} does not belong to the key {} (their public keys differ)", cert.display(), key.display())]
    CertKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// A certificate that the given CA would not accept.
    #[error("the certificate {} does not check against the CA {}: {reason}", cert.display(), ca.display())]
    NotIssuedBy {
        /// The certificate file.
        cert: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// Why not, in words.
        reason: String,
    },

    /// Encoding a PKCS#12 file failed.
    #[error("making the PKCS#12 file: {detail}")]
    P12 {
        /// What the encoder said.
        detail: String,
    },
}

impl CaError {
    /// Wraps an I/O error with what was being done to which path.
    pub fn io(action: &'static str, path: &Path, error: io::Error) -> Self {
        CaError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    /// What the user can do about this error, if there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            CaError::AlreadyExists { .. } => None,
            CaError::NoCa { dir } => Some(format!(
                "run `virtgate-pki --dir {} init` first, or point --dir (or VIRTGATE_PKI_DIR) at \
                 an existing CA",
                dir.display()
            )),
            CaError::Key(e) => e.hint(),
            CaError::Io {
                action: "setting the group of",
                ..
            } => Some(
                "only root (or a member of the group) may give a file to a group: run as root, \
                 or pass --group with a group you belong to"
                    .to_string(),
            ),
            CaError::Io { error, .. } if error.kind() == io::ErrorKind::PermissionDenied => Some(
                "run as the user owning the CA folder, or choose a folder you can write to"
                    .to_string(),
            ),
            CaError::Io { error, .. } if error.kind() == io::ErrorKind::AlreadyExists => {
                Some("pass --force to replace it, or choose another --out folder".to_string())
            }
            CaError::Io { .. } => None,
            CaError::KeyMismatch { .. } | CaError::Damaged { .. } => {
                Some("restore the CA folder from a backup".to_string())
            }
            CaError::Sign { .. } => None,
            CaError::BadCsr { .. } => Some(
                "make a request with e.g. `openssl req -new -key USER.key -subj /CN=USER -out \
                 USER.csr`"
                    .to_string(),
            ),
            CaError::InvalidUser { .. } => Some(
                "use letters, digits and . _ - @ (the name becomes a file name and the \
                 certificate's CN)"
                    .to_string(),
            ),
            CaError::InvalidDnsName { .. } => {
                Some("use --ip for addresses; DNS names look like host.example.org".to_string())
            }
            CaError::NoServerNames => Some(
                "pass --dns NAME and/or --ip ADDRESS (each may be repeated), e.g. --dns \
                 localhost --ip 127.0.0.1 --ip ::1"
                    .to_string(),
            ),
            CaError::InvalidValidity { .. } => {
                Some("pass --days N with N of at least 1".to_string())
            }
            CaError::UnknownTarget { known, .. } if known.is_empty() => {
                Some("this CA has not issued any certificate yet".to_string())
            }
            CaError::UnknownTarget { known, .. } => Some(format!(
                "users with certificates: {} (`virtgate-pki list` shows serials too)",
                known.join(", ")
            )),
            CaError::InvalidReason { .. } => {
                Some(format!("use one of: {}", crate::crl::REASONS.join(", ")))
            }
            CaError::AlreadyRevoked { .. } => {
                Some("`virtgate-pki list` shows every certificate and its status".to_string())
            }
            CaError::UnexpectedRequest { found, .. } => Some(format!(
                "ask the user who sent it; sign it only if `{found}` is who it should be, with \
                 --expect {found}"
            )),
            CaError::NeedsExpect { cn, .. } => Some(format!(
                "pass --expect USER with the user you expect (the request says `{cn}`; compare \
                 its fingerprint with the one `virtgate enroll` showed the user), or run \
                 sign-csr on a terminal to be asked"
            )),
            CaError::NotConfirmed { .. } => Some(
                "ask the user for a new request if this one is not theirs; answer `y` to sign it"
                    .to_string(),
            ),
            CaError::CertKeyMismatch { .. } => Some(
                "pass the certificate issued for this key (`virtgate-pki sign-csr` of the \
                 request made with it), or the key it was issued for"
                    .to_string(),
            ),
            CaError::NotIssuedBy { .. } => Some(
                "pass --ca with the ca.pem of the CA that signed the certificate (the admin \
                 sends it with the certificate)"
                    .to_string(),
            ),
            CaError::P12 { .. } => None,
            CaError::UnknownGroup { name } => Some(format!(
                "create it (`addgroup --system {name}`), or name an existing group; the virtgate \
                 package creates the `virtgate` user and group"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_key_messages() {
        let e = KeyFileError::NotAKey {
            path: "/x/alice.pem".into(),
            found: Some("CERTIFICATE".into()),
        };
        assert_eq!(
            e.to_string(),
            "/x/alice.pem holds a CERTIFICATE, not a private key"
        );
        assert_eq!(e.hint().as_deref(), Some("point --key at the .key file"));
        let e = KeyFileError::NotAKey {
            path: "/x/empty".into(),
            found: None,
        };
        assert_eq!(e.to_string(), "no PEM private key found in /x/empty");
    }

    #[test]
    fn io_messages_are_short() {
        let e = CaError::io(
            "writing",
            Path::new("/x/alice.key"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.to_string(), "writing /x/alice.key: permission denied");
        assert!(e.hint().is_some());
        let e = KeyFileError::read(
            "key file",
            Path::new("/nope.key"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(e.to_string(), "key file /nope.key does not exist");
        assert!(e.hint().is_some());
    }

    #[test]
    fn every_ca_error_that_needs_a_hint_has_one() {
        let e = CaError::NoCa { dir: "/pki".into() };
        assert_eq!(e.to_string(), "/pki holds no CA (no ca.pem)");
        assert!(e.hint().unwrap().contains("virtgate-pki --dir /pki init"));
        let e = CaError::UnknownTarget {
            dir: "/pki".into(),
            target: "carol".into(),
            known: vec!["alice".into(), "bob".into()],
        };
        assert!(e.hint().unwrap().contains("alice, bob"));
        let e = CaError::Key(KeyFileError::WrongPassphrase {
            path: "/pki/ca.key".into(),
        });
        assert_eq!(e.to_string(), "wrong passphrase for /pki/ca.key");
        assert!(e.hint().is_some());
    }

    #[test]
    fn io_reason_strips_os_error() {
        let e = io::Error::from_raw_os_error(30); // EROFS
        assert_eq!(io_reason(&e), "read-only file system");
    }
}
