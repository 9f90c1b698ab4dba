//! Unix groups of a user on the gateway host, for `group:NAME` rules.
//!
//! Every identity gets its groups by user name, whatever proved it: a unix peer (uid →
//! name through `/etc/passwd`), a certificate (CN) or Kerberos (the principal's user after
//! `strip_realm`). The groups are the user's primary group (the gid in `/etc/passwd`) plus
//! every group in `/etc/group` that lists the user as a member. The files are parsed
//! directly (no NSS, no FFI): users and groups that only live in LDAP/SSSD are not seen.
//! A user name that is not in `/etc/passwd` still gets the groups that list it by name.

use std::path::Path;

/// The system's account databases.
const PASSWD: &str = "/etc/passwd";
/// The system's group database.
const GROUP: &str = "/etc/group";

/// One `/etc/passwd` entry, as much as we need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Parse the `/etc/passwd` format, skipping malformed lines and comments.
pub fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0].is_empty() {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// The groups of `user` (primary gid `gid`, if known) in `/etc/group` text, in file order,
/// without duplicates.
pub fn groups_in(group_text: &str, user: &str, gid: Option<u32>) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for l in group_text.lines() {
        if l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0].is_empty() {
            continue;
        }
        let primary = gid.is_some() && f[2].parse::<u32>().ok() == gid;
        let member = f[3].split(',').any(|m| m.trim() == user);
        if (primary || member) && !groups.iter().any(|g| g == f[0]) {
            groups.push(f[0].to_owned());
        }
    }
    groups
}

/// The groups of the user named `user`, from passwd and group text (pure; tests use it).
pub fn groups_for_user_in(passwd_text: &str, group_text: &str, user: &str) -> Vec<String> {
    let gid = parse_passwd(passwd_text)
        .find(|e| e.name == user)
        .map(|e| e.gid);
    groups_in(group_text, user, gid)
}

/// The groups of the user named `user` on this host (empty when the files cannot be read;
/// a user name with `@`, a foreign Kerberos realm, is no local user and has none).
pub fn groups_for_user(user: &str) -> Vec<String> {
    if user.is_empty() || user.contains(['@', ':', '\n']) {
        return Vec::new();
    }
    let passwd = read(Path::new(PASSWD));
    let group = read(Path::new(GROUP));
    groups_for_user_in(&passwd, &group, user)
}

/// A database file's text; a missing or unreadable one counts as empty (logged).
pub fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the account database; no groups");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/zsh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n\
        broken line\n";
    const GROUP_TEXT: &str = "root:x:0:\n\
        users:x:100:\n\
        alice:x:1000:\n\
        wheel:x:10:bob,alice\n\
        kvm:x:20:bob\n\
        libvirt:x:30: carol \n";

    #[test]
    fn primary_and_member_groups() {
        assert_eq!(
            groups_for_user_in(PASSWD_TEXT, GROUP_TEXT, "alice"),
            ["alice", "wheel"]
        );
        assert_eq!(
            groups_for_user_in(PASSWD_TEXT, GROUP_TEXT, "bob"),
            ["users", "wheel", "kvm"]
        );
    }

    #[test]
    fn a_user_without_passwd_entry_gets_member_groups_only() {
        // e.g. a certificate CN that names no local account
        assert_eq!(
            groups_for_user_in(PASSWD_TEXT, GROUP_TEXT, "carol"),
            ["libvirt"]
        );
        assert!(groups_for_user_in(PASSWD_TEXT, GROUP_TEXT, "mallory").is_empty());
    }

    #[test]
    fn passwd_parsing_skips_junk() {
        let names: Vec<_> = parse_passwd(PASSWD_TEXT).map(|e| e.name).collect();
        assert_eq!(names, ["root", "alice", "bob"]);
    }

    #[test]
    fn foreign_principals_have_no_local_groups() {
        assert!(groups_for_user("alice@OTHER.ORG").is_empty());
        assert!(groups_for_user("").is_empty());
    }
}
