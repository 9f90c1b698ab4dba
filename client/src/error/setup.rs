//! Failures of setting a laptop up: `virtgate enroll` (a key and a request) and
//! `virtgate profile …` (the config file written for the user). Each [`SetupFailure`]
//! names the file, profile or user involved, and its [`SetupFailure::hint`] says what to
//! do; none of them ever overwrote anything.

use std::path::PathBuf;

/// What went wrong while enrolling or editing profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupFailure {
    /// `enroll` found a key where it would write one: keys are never overwritten.
    #[error("{} already exists: enroll never overwrites a key", path.display())]
    KeyExists {
        /// The key file that is in the way.
        path: PathBuf,
        /// The user being enrolled, for the hint.
        user: String,
    },
    /// `enroll` found a request where it would write one.
    #[error("{} already exists: enroll does not overwrite it", path.display())]
    RequestExists {
        /// The request file that is in the way.
        path: PathBuf,
    },
    /// A user name that cannot be a certificate's CN.
    #[error("`{name}` cannot be a user name: {why}")]
    InvalidUser {
        /// The name given.
        name: String,
        /// Why not.
        why: String,
    },
    /// A profile name that cannot be used as a `-p NAME` and a folder name.
    #[error("`{name}` cannot be a profile name: {why}")]
    InvalidProfileName {
        /// The name given.
        name: String,
        /// Why not.
        why: &'static str,
    },
    /// Making the certificate request failed (not expected with a fresh key).
    #[error("cannot make the certificate request: {detail}")]
    Request {
        /// What rcgen said.
        detail: String,
    },
    /// A file `enroll` or `profile` writes could not be written (nothing was left behind).
    #[error("cannot write {}: {}", path.display(), super::io_reason(source))]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// `profile add` of a name the config file already has.
    #[error("profile `{name}` already exists in {}", config.display())]
    ProfileExists {
        /// The profile.
        name: String,
        /// The config file.
        config: PathBuf,
    },
    /// A file `profile add` would copy into the config folder is there with other contents.
    #[error("{} already exists with other contents", path.display())]
    CopyExists {
        /// The file in the config folder.
        path: PathBuf,
    },
    /// The certificate was not issued for the key.
    #[error(
        "the certificate {} does not belong to the key {}{}: their public keys differ",
        cert.display(),
        key.display(),
        match request {
            Some(r) => format!(" (compared with its request {})", r.display()),
            None => String::new(),
        }
    )]
    CertKeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
        /// The request next to an encrypted key that was compared instead of the key.
        request: Option<PathBuf>,
    },
    /// A gateway trusting the CA would refuse the certificate.
    #[error("the certificate {} does not check against the CA {}: {reason}", cert.display(), ca.display())]
    NotIssuedBy {
        /// The certificate.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// Why, in words (`it was not signed by this CA`, `it has expired`).
        reason: String,
    },
    /// The config file parses but has a shape the editor cannot extend.
    #[error("cannot edit {}: {detail}", path.display())]
    ConfigShape {
        /// The config file.
        path: PathBuf,
        /// What is in the way.
        detail: String,
    },
}

impl SetupFailure {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SetupFailure::KeyExists { path, user } => format!(
                "it may be the only copy of a key your certificate belongs to: keep it. Enroll \
                 into another place (--dir DIR or --key FILE) or under another name; for a new \
                 request with this same key: openssl req -new -key {} -subj /CN={user} -out \
                 {user}.csr",
                path.display()
            ),
            SetupFailure::RequestExists { path } => format!(
                "it is left from an earlier enrollment; remove it if its key is gone (rm {}; a \
                 request holds no secret), or enroll into another --dir",
                path.display()
            ),
            SetupFailure::InvalidUser { .. } => {
                "use the user name the admin gave you: letters, digits and . _ - @".into()
            }
            SetupFailure::InvalidProfileName { .. } => {
                "use letters, digits and . _ - (e.g. hv1, lab-2); it is what -p NAME picks".into()
            }
            SetupFailure::Request { .. } => return None,
            SetupFailure::Write { path, .. } => {
                let folder = path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| ".".into());
                format!("check that {folder} is yours and writable (ls -ld {folder})")
            }
            SetupFailure::ProfileExists { name, .. } => format!(
                "pick another name, pass --force to replace it, or `virtgate profile remove \
                 {name}` first; `virtgate profile show {name}` shows it"
            ),
            SetupFailure::CopyExists { .. } => {
                "pass --force to replace it, or --no-copy to use the files where they are".into()
            }
            SetupFailure::CertKeyMismatch { .. } => {
                "pass the certificate the admin signed for this key's request (USER.csr from \
                 `virtgate enroll`), or the key that request was made with"
                    .into()
            }
            SetupFailure::NotIssuedBy { reason, .. } if reason.contains("expired") => {
                "ask the admin to sign your request again (`virtgate-pki sign-csr USER.csr \
                 --expect USER --out USER.pem`): the same key can get a new certificate"
                    .into()
            }
            SetupFailure::NotIssuedBy { .. } => {
                "pass --ca with the ca.pem the admin sent with the certificate (the CA of the \
                 gateway that signed it)"
                    .into()
            }
            SetupFailure::ConfigShape { .. } => {
                "write profiles as [profile.NAME] tables (see `virtgate --help`)".into()
            }
        })
    }
}
