//! Modes of the files a profile trusts with the user's identity, checked the way OpenSSH
//! checks `~/.ssh/id_*`: a private key file (PEM or PKCS#8, encrypted or not; a `pkcs11:`
//! URI is no file) that group or others may read or write is refused, since whoever reads
//! it can try passphrases offline, or use it at once when it is not encrypted; the CA file
//! that verifies the gateway is refused when group or others may write it, since whoever
//! changes it can make this client trust a gateway of their own. Each refusal names the file,
//! its mode and the `chmod` that fixes it ([`Error::KeyOpen`], [`Error::CaWritable`]).
//!
//! [`judge`] is the pure rule (mode → what is wrong); [`check_key`] and [`check_ca`] look
//! at the file. A file that cannot be looked at is left to the code that reads it, which
//! names the file and says why.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::error::Error;

/// What a private key file may not have: read or write for group or others.
pub const KEY_BITS: u32 = 0o066;
/// What the CA file may not have: write for group or others.
pub const CA_BITS: u32 = 0o022;

/// The offending bits of `mode` among `bits`, in words (shared with the gateway).
pub use virtgate_pki::files::loose_bits as judge;

/// The permission bits of `path`, when it can be looked at.
fn mode_of(path: &Path) -> Option<u32> {
    Some(std::fs::metadata(path).ok()?.permissions().mode() & 0o7777)
}

/// Refuse a private key file that group or others may read or write. A file that holds no
/// PEM private key (a certificate given as `--key` by mistake) is left to the loader, which
/// says what it holds instead.
pub fn check_key(path: &Path) -> Result<(), Error> {
    match mode_of(path) {
        Some(mode) if judge(mode, KEY_BITS).is_some() && holds_private_key(path) => {
            Err(Error::KeyOpen {
                path: path.to_owned(),
                mode,
            })
        }
        _ => Ok(()),
    }
}

/// Whether `path` holds a PEM private key of any kind (`PRIVATE KEY`, `ENCRYPTED PRIVATE
/// KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`, `OPENSSH PRIVATE KEY`).
fn holds_private_key(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        bytes
            .windows(b"PRIVATE KEY-----".len())
            .any(|w| w == b"PRIVATE KEY-----")
    })
}

/// Refuse a CA file that group or others may write.
pub fn check_ca(path: &Path) -> Result<(), Error> {
    match mode_of(path) {
        Some(mode) if judge(mode, CA_BITS).is_some() => Err(Error::CaWritable {
            path: path.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_the_users_alone_like_openssh_wants() {
        for ok in [0o600, 0o400, 0o700, 0o611] {
            assert_eq!(judge(ok, KEY_BITS), None, "{ok:o}");
        }
        assert_eq!(
            judge(0o644, KEY_BITS).as_deref(),
            Some("readable by its group and other users")
        );
        assert_eq!(
            judge(0o640, KEY_BITS).as_deref(),
            Some("readable by its group")
        );
        assert_eq!(
            judge(0o606, KEY_BITS).as_deref(),
            Some("readable and writable by other users")
        );
        assert_eq!(
            judge(0o664, KEY_BITS).as_deref(),
            Some("readable and writable by its group and readable by other users")
        );
    }

    #[test]
    fn the_ca_may_be_read_by_all_but_written_by_its_owner_only() {
        for ok in [0o644, 0o444, 0o600] {
            assert_eq!(judge(ok, CA_BITS), None, "{ok:o}");
        }
        assert_eq!(
            judge(0o666, CA_BITS).as_deref(),
            Some("writable by its group and other users")
        );
        assert_eq!(
            judge(0o664, CA_BITS).as_deref(),
            Some("writable by its group")
        );
    }

    #[test]
    fn refusals_name_the_file_the_mode_and_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("alice.key");
        std::fs::write(
            &key,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_key(&key).unwrap_err();
        let shown = crate::error::report(&e);
        assert!(
            shown.starts_with(&format!(
                "error: the key {} is readable by its group and other users (mode 0644)",
                key.display()
            )),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("hint: run chmod 600 {}", key.display())),
            "{shown}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key(&key).is_ok());

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "c").unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o666)).unwrap();
        let shown = crate::error::report(&check_ca(&ca).unwrap_err());
        assert!(
            shown.starts_with(&format!(
                "error: the CA file {} is writable by its group and other users (mode 0666)",
                ca.display()
            )),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("hint: run chmod go-w {}", ca.display())),
            "{shown}"
        );
        // a file that is not there, or holds no private key, is left to the code that reads
        // it (which says what is wrong with it)
        assert!(check_key(&dir.path().join("gone.key")).is_ok());
        assert!(check_key(&ca).is_ok(), "a certificate given as the key");
    }
}
