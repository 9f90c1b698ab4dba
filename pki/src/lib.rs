//! virtgate's certificate authority and key files.
//!
//! # Layout
//!
//! ```text
//! main.rs           the `virtgate-pki` command: prints `error:` / `hint:`
//! cli.rs            its flags (clap; also read by virtgate-dist for man pages) and commands
//!  ├─ sign.rs       sign-csr: only for the user expected (--expect, or asked on a terminal)
//!  ├─ export.rs     export-p12: certificate + key + CA as PKCS#12 for a browser
//!        │
//! ca.rs             Ca: init/open a CA folder, issue server and client certificates,
//!  │  │             sign CSRs, revoke, write files next to the certificates
//!  │  ├─ publish.rs the gateway's files in a folder shared with its group; CRL copies
//!  │  ├─ share.rs   groups and modes of shared folders, which folder keeps a user out,
//!  │  │             user and group names from /etc/passwd and /etc/group
//!  │  ├─ csr.rs     certificate requests: made for `virtgate enroll` (any rcgen signing
//!  │  │             key), read and fingerprinted before `sign-csr` signs
//!  │  ├─ crl.rs     signed CRLs from the revoked entries of the index
//!  │  ├─ options.rs validity periods and the options of init / issue-*
//!  │  ├─ index.rs   index.json: what was issued, revocations, CRL number (pure data)
//!  │  └─ names.rs   which user and DNS names may go into certificates
//!  │
//! keyfile.rs        PEM key and certificate files, OpenSSL-compatible both ways:
//!  │                encrypted PKCS#8 (PBES2) in and out, SEC1, PKCS#1 in
//!  ├─ check.rs      does a certificate belong to a key, would a CA's gateway accept it
//!  ├─ p12.rs        PKCS#12 for browsers (export-p12): PBES2 AES-256, HMAC-SHA256 MAC
//!  ├─ passphrase.rs passphrases from a file, the environment or the terminal
//!  ├─ files.rs      atomic writes with the final mode (0600 keys) from the first byte
//!  └─ error.rs      KeyFileError and CaError, each with hint()
//! ```
//!
//! The client and the gateway use [`keyfile`] (and [`passphrase`]) to read their keys
//! and certificates; the tests use [`ca`] to build PKIs, including expired certificates
//! and certificates of a foreign CA.

#![forbid(unsafe_code)]

pub mod ca;
pub mod check;
pub mod cli;
pub mod crl;
pub mod csr;
pub mod error;
pub mod export;
pub mod files;
pub mod index;
pub mod keyfile;
pub mod names;
pub mod options;
pub mod p12;
pub mod passphrase;
pub mod publish;
pub mod share;
pub mod sign;

pub use ca::{Ca, ClientOptions, InitOptions, IssuedCert, ServerOptions, Validity};
pub use error::{CaError, KeyFileError};
pub use files::Existing;
pub use index::{CertKind, IndexEntry, Status};
pub use keyfile::{is_encrypted, load_certs, load_private_key, signing_key, write_private_key};

/// Re-exported so that a key on a token can implement [`rcgen::SigningKey`] for
/// [`csr::request_pem`].
pub use rcgen;
/// Re-exported so that users of this crate name the same key and certificate types.
pub use rustls_pki_types;
/// Re-exported for `time::OffsetDateTime` in [`Validity::Between`].
pub use time;
/// Re-exported for [`zeroize::Zeroizing`] passphrases.
pub use zeroize;

/// Returns the hint of the first [`CaError`] or [`KeyFileError`] in an error chain.
pub fn hint_of(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(e) = e.downcast_ref::<CaError>() {
            return e.hint();
        }
        if let Some(e) = e.downcast_ref::<KeyFileError>() {
            return e.hint();
        }
        cur = e.source();
    }
    None
}
