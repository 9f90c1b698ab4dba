//! File modes of what the gateway reads: a secret (the TLS key, the Kerberos keytab) that
//! other users may read or write, or that its group may change, is refused, and so is a
//! file the gateway trusts (the certificate chain, the client CA, the CRL, the
//! configuration file itself) that group or others may write: whoever can change it can make
//! the gateway accept them. Every refusal names the file, the mode and the exact `chmod`.
//!
//! A secret may be group-readable: the package's layout is `server.key` root:virtgate 0640,
//! read by the service user through its group. When a secret is group-readable on purpose
//! (its group is not the group the gateway runs as, or the gateway reads it through that
//! group), the fix is `chmod 640`, which keeps the gateway's way in; otherwise `chmod 600`.
//!
//! [`judge`] is the pure rule (mode → verdict); [`check`] applies it to every file a
//! configuration names, when it is loaded (`run`, `check-config`, `reload`, every reload of
//! a running gateway). A file that is missing is left to the code that reads it, which says
//! so with its own hint.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::Config;

/// A file whose mode lets someone other than the gateway's user read a secret or change
/// what the gateway trusts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    /// A private key or keytab that other users may read or write, or its group may write.
    #[error("{key} {} is {} (mode {mode:04o})", path.display(), describe(*mode, SECRET_BITS))]
    Secret {
        /// The setting that names it (`tls.key`, `kerberos.keytab`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set: 0o600, or 0o640 when the gateway reads it through its group.
        fix: u32,
    },
    /// A file the gateway trusts that its group or other users may write.
    #[error("{key} {} is {}: whoever can change it can make the gateway trust them (mode {mode:04o})", path.display(), describe(*mode, TRUST_BITS))]
    Trust {
        /// The setting that names it (`tls.cert`, `tls.client_ca`, `tls.crl`, or `config`
        /// for the configuration file).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl ModeError {
    /// The exact command that fixes it.
    pub fn hint(&self) -> String {
        match self {
            ModeError::Secret { path, fix, .. } if *fix == 0o640 => format!(
                "run chmod 640 {} (the gateway's user reads it through the file's group; \
                 nobody else may)",
                path.display()
            ),
            ModeError::Secret { path, fix, .. } => {
                format!("run chmod {fix:o} {}", path.display())
            }
            ModeError::Trust { path, .. } => format!("run chmod go-w {}", path.display()),
        }
    }
}

/// What a secret may not have: read or write for others, write for the group.
const SECRET_BITS: u32 = 0o026;
/// What a trusted file may not have: write for group or others.
const TRUST_BITS: u32 = 0o022;

/// Whether a file holds a secret or something the gateway trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A private key or keytab.
    Secret,
    /// A certificate, CA, CRL or the configuration.
    Trust,
}

/// The `chmod` that fixes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// `chmod MODE` (a secret: 0o600, or 0o640 when its group reads it on purpose).
    Mode(u32),
    /// `chmod go-w` (a trusted file).
    NoGroupOtherWrite,
}

/// The verdict on a file's mode: `None` when it is fine, else the fix. `via_group`: the
/// file's group reads it on purpose (see [`shared_with_group`]).
pub fn judge(kind: Kind, mode: u32, via_group: bool) -> Option<Fix> {
    match kind {
        Kind::Secret if mode & SECRET_BITS != 0 => {
            Some(Fix::Mode(if via_group { 0o640 } else { 0o600 }))
        }
        Kind::Trust if mode & TRUST_BITS != 0 => Some(Fix::NoGroupOtherWrite),
        _ => None,
    }
}

/// What the offending bits of `mode` (among `bits`) allow, in words (the client's words too:
/// [`virtgate_pki::files::loose_bits`]).
pub fn describe(mode: u32, bits: u32) -> String {
    virtgate_pki::files::loose_bits(mode, bits).unwrap_or_else(|| "open to other users".into())
}

/// Whether the gateway (effective uid `euid`, groups `groups` with the primary one first)
/// reads a group-readable file of owner `uid` and group `gid` through that group on purpose:
/// someone else's file whose group is one of ours, or our own file given to a group other
/// than our primary one (root's `root:virtgate` files of the package).
pub fn shared_with_group(mode: u32, uid: u32, gid: u32, euid: u32, groups: &[u32]) -> bool {
    if mode & 0o040 == 0 {
        return false;
    }
    if uid == euid {
        groups.first() != Some(&gid)
    } else {
        groups.contains(&gid)
    }
}

/// Check one file: its mode against the rule for `kind`; a file that cannot be looked at is
/// left to whoever reads it.
pub fn check_file(key: &'static str, path: &Path, kind: Kind) -> Result<(), ModeError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.mode() & 0o7777;
    let via_group = || {
        let mut groups = vec![rustix::process::getegid().as_raw()];
        groups.extend(
            rustix::process::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.as_raw()),
        );
        let euid = rustix::process::geteuid().as_raw();
        shared_with_group(mode, meta.uid(), meta.gid(), euid, &groups)
    };
    match judge(kind, mode, kind == Kind::Secret && via_group()) {
        None => Ok(()),
        Some(Fix::Mode(fix)) => Err(ModeError::Secret {
            key,
            path: path.to_owned(),
            mode,
            fix,
        }),
        Some(Fix::NoGroupOtherWrite) => Err(ModeError::Trust {
            key,
            path: path.to_owned(),
            mode,
        }),
    }
}

/// Check the configuration file at `path` and every key, keytab, certificate, CA and CRL
/// that `config` names.
pub fn check(config: &Config, path: &Path) -> Result<(), ModeError> {
    check_file("config", path, Kind::Trust)?;
    if let Some(t) = &config.tls {
        check_file("tls.key", &t.key, Kind::Secret)?;
        check_file("tls.cert", &t.cert, Kind::Trust)?;
        if let Some(ca) = &t.client_ca {
            check_file("tls.client_ca", ca, Kind::Trust)?;
        }
        if let Some(crl) = &t.crl {
            check_file("tls.crl", crl, Kind::Trust)?;
        }
    }
    if let Some(keytab) = config.kerberos.as_ref().and_then(|k| k.keytab.as_ref()) {
        check_file("kerberos.keytab", keytab, Kind::Secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_may_be_group_readable_but_nothing_more() {
        for ok in [0o600, 0o400, 0o640, 0o440, 0o700, 0o601] {
            assert_eq!(judge(Kind::Secret, ok, false), None, "{ok:o}");
        }
        assert_eq!(judge(Kind::Secret, 0o644, false), Some(Fix::Mode(0o600)));
        assert_eq!(judge(Kind::Secret, 0o644, true), Some(Fix::Mode(0o640)));
        assert_eq!(judge(Kind::Secret, 0o660, false), Some(Fix::Mode(0o600)));
        assert_eq!(judge(Kind::Secret, 0o602, false), Some(Fix::Mode(0o600)));
        assert_eq!(judge(Kind::Secret, 0o666, true), Some(Fix::Mode(0o640)));
    }

    #[test]
    fn trusted_files_may_be_read_by_all_and_written_by_the_owner_only() {
        for ok in [0o644, 0o444, 0o600, 0o755] {
            assert_eq!(judge(Kind::Trust, ok, false), None, "{ok:o}");
        }
        for bad in [0o664, 0o646, 0o666, 0o620] {
            assert_eq!(
                judge(Kind::Trust, bad, false),
                Some(Fix::NoGroupOtherWrite),
                "{bad:o}"
            );
        }
    }

    #[test]
    fn messages_say_who_may_do_what_with_the_mode_and_the_chmod() {
        let e = ModeError::Secret {
            key: "tls.key",
            path: "/etc/virtgate/key.pem".into(),
            mode: 0o644,
            fix: 0o600,
        };
        assert_eq!(
            e.to_string(),
            "tls.key /etc/virtgate/key.pem is readable by other users (mode 0644)"
        );
        assert_eq!(e.hint(), "run chmod 600 /etc/virtgate/key.pem");
        let e = ModeError::Secret {
            key: "kerberos.keytab",
            path: "/k".into(),
            mode: 0o664,
            fix: 0o640,
        };
        assert_eq!(
            e.to_string(),
            "kerberos.keytab /k is writable by its group and readable by other users (mode 0664)"
        );
        assert!(e.hint().starts_with("run chmod 640 /k "), "{}", e.hint());
        let e = ModeError::Trust {
            key: "tls.client_ca",
            path: "/ca.pem".into(),
            mode: 0o666,
        };
        assert!(
            e.to_string().starts_with(
                "tls.client_ca /ca.pem is writable by its group and other users: whoever"
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("(mode 0666)"), "{e}");
        assert_eq!(e.hint(), "run chmod go-w /ca.pem");
        assert_eq!(
            describe(0o606, SECRET_BITS),
            "readable and writable by other users"
        );
        assert_eq!(describe(0o620, TRUST_BITS), "writable by its group");
    }

    #[test]
    fn group_sharing_is_on_purpose_for_the_packaged_layout_only() {
        // root:virtgate 0644 read by the service user (uid 100, groups 101 = virtgate)
        assert!(shared_with_group(0o644, 0, 101, 100, &[101]));
        // root checks the same file (root's primary group is 0)
        assert!(shared_with_group(0o644, 0, 101, 0, &[0]));
        // root's own root:root file, and the service user's own file
        assert!(!shared_with_group(0o644, 0, 0, 0, &[0]));
        assert!(!shared_with_group(0o644, 100, 101, 100, &[101]));
        // not group-readable, or a group we are not in
        assert!(!shared_with_group(0o604, 0, 101, 100, &[101]));
        assert!(!shared_with_group(0o644, 0, 5, 100, &[101]));
    }

    #[test]
    fn files_on_disk_are_judged_and_missing_ones_left_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.pem");
        std::fs::write(&f, "k").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = check_file("tls.key", &f, Kind::Secret).unwrap_err();
        assert!(matches!(e, ModeError::Secret { mode: 0o604, .. }), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_file("tls.key", &f, Kind::Secret), Ok(()));
        let gone = dir.path().join("gone.pem");
        assert_eq!(check_file("tls.cert", &gone, Kind::Trust), Ok(()));
    }
}
