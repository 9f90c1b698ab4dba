//! Identity of a unix socket peer: its uid (SO_PEERCRED, via tokio) mapped to a user name and
//! groups through the passwd and group databases (`authn::groups`).
//!
//! The databases are read from `/etc/passwd` and `/etc/group` (no FFI, so the crate stays
//! `forbid(unsafe_code)`); users that only exist in NSS sources such as LDAP are named
//! `uid:N` here, and an `getpwuid_r` based lookup can replace [`lookup`] when that matters.

use std::path::Path;

use virtgate_proto::AuthMethod;

use super::{groups, Identity};

/// The identity of the process with `uid` on this host.
pub fn identity_for_uid(uid: u32) -> Identity {
    lookup(uid, Path::new("/etc/passwd"), Path::new("/etc/group"))
}

/// [`identity_for_uid`] with the database files given (tests use their own).
pub fn lookup(uid: u32, passwd: &Path, group: &Path) -> Identity {
    let passwd = groups::read(passwd);
    let entry = groups::parse_passwd(&passwd).find(|e| e.uid == uid);
    let (user, gid) = match entry {
        Some(e) => (e.name, Some(e.gid)),
        None => (format!("uid:{uid}"), None),
    };
    let groups = groups::groups_in(&groups::read(group), &user, gid);
    Identity {
        principal: Some(format!("uid={uid}")),
        user,
        method: AuthMethod::Unix,
        groups,
        peer: Some("unix".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_groups_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        let g = dir.path().join("group");
        std::fs::write(
            &p,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/zsh\n",
        )
        .unwrap();
        std::fs::write(&g, "alice:x:1000:\nwheel:x:10:bob,alice\nkvm:x:20:bob\n").unwrap();
        let id = lookup(1000, &p, &g);
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["alice", "wheel"]);
        assert_eq!(id.method, AuthMethod::Unix);
        assert_eq!(lookup(4242, &p, &g).user, "uid:4242");
    }
}
