//! Which files the gateway's service user may read, and why a user cannot read a file.
//!
//! The CA folder is private to its owner (0700, `ca.key` 0600). What `issue-server`
//! writes for the gateway goes to another folder (`--out`, e.g. `/etc/virtgate/pki`) that
//! is shared with the service's group (default: `virtgate`, which the package creates):
//!
//! ```text
//! /etc/virtgate/pki/          root:virtgate 0750
//!     server.pem, ca.pem      root:virtgate 0644
//!     server.key              root:virtgate 0640
//!     crl.pem                 root:virtgate 0644   (published by revoke / crl)
//! ```
//!
//! [`blocking_folder`] finds the folder on a path that keeps the current user out, so that
//! an error about an unreadable file can name the folder instead of the file's mode.
//!
//! User and group names come from `/etc/passwd` and `/etc/group`, parsed directly (no FFI,
//! so the crate stays free of `unsafe`): accounts that only exist in NSS sources such as
//! LDAP are not seen, and their ids are shown as numbers.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::CaError;

/// The group the package creates for the gateway; `issue-server` shares its files with it
/// when it exists and no `--group` is given.
pub const SERVICE_GROUP: &str = "virtgate";

/// Mode of a folder shared with the service group.
pub const SHARED_DIR_MODE: u32 = 0o750;

/// Mode of a private key the service group may read.
pub const SHARED_KEY_MODE: u32 = 0o640;

/// Mode of a folder of public files when there is no group to share with.
pub const PUBLIC_DIR_MODE: u32 = 0o755;

/// Which group `issue-server` shares its output with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChoice {
    /// `--group NAME`: that group, which must exist.
    Named(String),
    /// No `--group`: [`SERVICE_GROUP`] when it exists, else nobody.
    Default,
    /// Share with nobody (the key stays 0600).
    Nobody,
}

impl GroupChoice {
    /// Resolves the choice to a group id; a named group that does not exist is an error.
    pub fn resolve(&self) -> Result<Option<Group>, CaError> {
        match self {
            GroupChoice::Named(name) => group_by_name(name)
                .map(Some)
                .ok_or_else(|| CaError::UnknownGroup { name: name.clone() }),
            GroupChoice::Default => Ok(group_by_name(SERVICE_GROUP)),
            GroupChoice::Nobody => Ok(None),
        }
    }
}

/// Gives `dir` to `group` (owner unchanged) with mode 0750, or mode 0755 without a group.
pub fn share_dir(dir: &Path, group: Option<&Group>) -> Result<(), CaError> {
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(dir, None, Some(g.gid))
                .map_err(|e| CaError::io("setting the group of", dir, e))?;
            SHARED_DIR_MODE
        }
        None => PUBLIC_DIR_MODE,
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| CaError::io("setting the mode of", dir, e))
}

/// Whether `dir` is (or holds) a CA: a folder that must stay private.
pub fn is_ca_folder(dir: &Path) -> bool {
    dir.join(crate::ca::CA_KEY).exists()
}

/// The folder on the way to `path` that the current user may not enter (no search
/// permission), if that is why `path` cannot be read.
///
/// Walks the ancestors from the root: the first one whose child cannot even be looked up
/// (`stat` fails with "permission denied") is the one that blocks.
pub fn blocking_folder(path: &Path) -> Option<PathBuf> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let ancestors: Vec<&Path> = path.ancestors().collect();
    // root first; pairs of (folder, something inside it)
    for pair in ancestors.windows(2).rev() {
        let (inside, folder) = (pair[0], pair[1]);
        if let Err(e) = fs::symlink_metadata(inside) {
            if e.kind() == io::ErrorKind::PermissionDenied {
                return Some(folder.to_path_buf());
            }
            return None;
        }
    }
    None
}

/// `OWNER:GROUP MODE` of a path, e.g. `root:root 0700`, for messages.
pub fn describe(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    Some(format!(
        "{}:{} {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    ))
}

/// The hint for a file the current user may not read.
pub fn unreadable_hint(path: &Path) -> String {
    if let Some(folder) = blocking_folder(path) {
        let what = describe(&folder)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return format!(
            "the folder {0}{what} keeps this user out, whatever the file's own mode: let the \
             service's group in (`chgrp {SERVICE_GROUP} {0} && chmod 0750 {0}`), unless it is \
             a CA folder, which must stay private: then put the gateway's files in a folder \
             of their own (`virtgate-pki --dir CA issue-server ... --out /etc/virtgate/pki`)",
            folder.display()
        );
    }
    let what = describe(path)
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    format!(
        "the file{what} must be readable by the user running this program: check `ls -l {}`",
        path.display()
    )
}

/// The system's group database.
pub const GROUP_FILE: &str = "/etc/group";
/// The system's user database.
pub const PASSWD_FILE: &str = "/etc/passwd";

/// A group that may read the files written for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name (`virtgate`).
    pub name: String,
    /// Its numeric id.
    pub gid: u32,
}

/// The group called `name` in `/etc/group`; `None` when there is none (or the file cannot
/// be read).
pub fn group_by_name(name: &str) -> Option<Group> {
    group_by_name_in(&read(GROUP_FILE), name)
}

/// The name of group `gid`, or the number as text.
pub fn group_name(gid: u32) -> String {
    name_of_id(&read(GROUP_FILE), gid).unwrap_or_else(|| gid.to_string())
}

/// The name of user `uid`, or the number as text.
pub fn user_name(uid: u32) -> String {
    name_of_id(&read(PASSWD_FILE), uid).unwrap_or_else(|| uid.to_string())
}

/// Reads a database file; an unreadable one counts as empty.
fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(path)).unwrap_or_default()
}

/// Looks `name` up in `/etc/group` text (`name:x:gid:members`).
pub fn group_by_name_in(text: &str, name: &str) -> Option<Group> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let n = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?.trim().parse().ok()?;
        (n == name).then(|| Group {
            name: n.to_string(),
            gid,
        })
    })
}

/// The name with id `id` in `/etc/passwd` or `/etc/group` text (the id is the third field
/// of both).
pub fn name_of_id(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let this: u32 = fields.next()?.trim().parse().ok()?;
        (this == id && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod sysdb_tests {
    use super::*;

    const GROUPS: &str =
        "root:x:0:\nkvm:x:104:virtgate\nvirtgate:x:998:\n# junk\nbad:x:notanumber:\n";
    const USERS: &str =
        "root:x:0:0:root:/root:/bin/bash\nvirtgate:x:998:998::/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn groups_by_name_and_id() {
        assert_eq!(
            group_by_name_in(GROUPS, "virtgate"),
            Some(Group {
                name: "virtgate".into(),
                gid: 998
            })
        );
        assert_eq!(group_by_name_in(GROUPS, "libvirt"), None);
        assert_eq!(group_by_name_in(GROUPS, "bad"), None);
        assert_eq!(name_of_id(GROUPS, 104).as_deref(), Some("kvm"));
        assert_eq!(name_of_id(USERS, 998).as_deref(), Some("virtgate"));
        assert_eq!(name_of_id(USERS, 5), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_blocking_folder_for_readable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, "x").unwrap();
        assert_eq!(blocking_folder(&f), None);
        assert_eq!(blocking_folder(&dir.path().join("missing/file")), None);
        let d = describe(&f).unwrap();
        assert!(d.ends_with(" 0644") || d.ends_with(" 0600"), "{d}");
    }

    #[test]
    fn unknown_named_group_is_an_error() {
        let err = GroupChoice::Named("no-such-group-virtgate-test".into())
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string().contains("no-such-group-virtgate-test"),
            "{err}"
        );
        assert!(err.hint().is_some());
        assert_eq!(GroupChoice::Nobody.resolve().unwrap(), None);
    }
}
