//! User and group names from `/etc/passwd` and `/etc/group`.
//!
//! `virtgate-pki` needs a group's id to make the gateway's files readable by its service
//! user (`issue-server --group virtgate`), and names for ids to explain which folder keeps
//! a user out. The files are parsed directly (no FFI, so the crate stays free of `unsafe`):
//! accounts that only exist in NSS sources such as LDAP are not seen, and their ids are
//! shown as numbers.

use std::path::Path;

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
mod tests {
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
