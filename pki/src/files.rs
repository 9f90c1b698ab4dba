//! Writing files atomically, with the right mode from the first byte.
//!
//! Every file this crate writes goes through [`write_file`]: the contents land in a
//! temporary file in the same folder, created with `create_new` and its final mode (0600
//! for private keys), then the temporary file takes the final name in one step. There is
//! never a moment where a key is readable by others, and a crash leaves either the old
//! file or the new one, never half of one.
//!
//! Existing files are either refused ([`Existing::Refuse`], the default everywhere: a key
//! is never overwritten silently) or replaced ([`Existing::Replace`], `--force`).
//!
//! Folders this crate creates are private ([`DIR_MODE`]); missing parents on the way are
//! created [`PARENT_MODE`], so that `--dir /etc/virtgate/ca` does not lock the service user
//! out of `/etc/virtgate` (where its configuration and certificates live).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of files holding a private key: readable by the owner only.
pub const KEY_MODE: u32 = 0o600;

/// Mode of every other file (certificates, CRLs, the index).
pub const PUBLIC_MODE: u32 = 0o644;

/// Mode of folders this crate creates: they may hold keys.
pub const DIR_MODE: u32 = 0o700;

/// Mode of missing parent folders created on the way to a folder: traversable by all.
pub const PARENT_MODE: u32 = 0o755;

/// What to do when the destination of a write already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with [`io::ErrorKind::AlreadyExists`] and leave the file untouched.
    Refuse,
    /// Replace the file atomically (the `--force` flag).
    Replace,
}

impl Existing {
    /// What the `--force` flag asks for.
    pub fn from_force(force: bool) -> Existing {
        if force {
            Existing::Replace
        } else {
            Existing::Refuse
        }
    }

    /// Whether writing to `path` would be refused (checked before anything is asked for).
    pub fn refuses(self, path: &Path) -> bool {
        self == Existing::Refuse && fs::symlink_metadata(path).is_ok()
    }
}

/// Tells temporary names apart when one process writes several files at once.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` to `path` with permission bits `mode`, atomically.
///
/// The file is complete and flushed to disk before it appears under its name. With
/// [`Existing::Refuse`], an existing `path` gives an error of kind
/// [`io::ErrorKind::AlreadyExists`] and is left as it was.
pub fn write_file(path: &Path, contents: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    write_file_for_group(path, contents, mode, existing, None)
}

/// Like [`write_file`], the file also belonging to group `gid` (when given) from the
/// first byte: a key 0640 for the gateway's group is never readable by anyone else.
pub fn write_file_for_group(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
    gid: Option<u32>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;

    if existing.refuses(path) {
        return Err(already_exists());
    }

    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp(&tmp, contents, mode, gid).and_then(|()| match existing {
        Existing::Replace => fs::rename(&tmp, path),
        Existing::Refuse => publish_no_replace(&tmp, path),
    });
    // Whatever happened, the temporary name must not stay behind (after a successful
    // rename it no longer exists, and the error is ignored).
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(&dir);
    Ok(())
}

/// Creates `tmp` (which must not exist) with `mode` and group `gid`, writes and flushes
/// `contents`.
fn write_temp(tmp: &Path, contents: &[u8], mode: u32, gid: Option<u32>) -> io::Result<()> {
    // Created owner-only; the group is set before the group bits are.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o700)
        .open(tmp)?;
    if let Some(gid) = gid {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    // The umask may have removed bits from `mode`; set exactly what was asked for.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Gives `tmp` the name `path` unless `path` exists, without a window where another
/// writer could slip in: a hard link fails when its name is taken. Falls back to a
/// check-then-rename on file systems without hard links.
fn publish_no_replace(tmp: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists()),
        Err(_) => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(already_exists());
            }
            fs::rename(tmp, path)
        }
    }
}

/// The error for a destination that is already there.
fn already_exists() -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, "file exists")
}

/// Flushes a folder's entries, so a new name survives a crash (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates `dir` ([`DIR_MODE`]) and its missing parents ([`PARENT_MODE`]); an existing
/// `dir` is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    create_dir_mode(dir, DIR_MODE).map(|_| ())
}

/// Creates `dir` with `mode` and its missing parents with [`PARENT_MODE`] (whatever the
/// umask). Returns whether `dir` was created; an existing one is left as it is.
pub fn create_dir_mode(dir: &Path, mode: u32) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            create_dir_mode(parent, PARENT_MODE)?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        // another process made it meanwhile
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(false),
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    Ok(true)
}

/// The offending bits of `mode` among `bits`, in words (`readable by its group and other
/// users`, `writable by other users`, ...); `None` when there are none. The client's and the
/// gateway's refusals of loose key and CA files both say it this way.
pub fn loose_bits(mode: u32, bits: u32) -> Option<String> {
    let bad = mode & bits;
    let words = |r: bool, w: bool| match (r, w) {
        (true, true) => Some("readable and writable"),
        (true, false) => Some("readable"),
        (false, true) => Some("writable"),
        (false, false) => None,
    };
    let group = words(bad & 0o040 != 0, bad & 0o020 != 0);
    let others = words(bad & 0o004 != 0, bad & 0o002 != 0);
    Some(match (group, others) {
        (None, None) => return None,
        (Some(g), Some(o)) if g == o => format!("{g} by its group and other users"),
        (Some(g), Some(o)) => format!("{g} by its group and {o} by other users"),
        (Some(g), None) => format!("{g} by its group"),
        (None, Some(o)) => format!("{o} by other users"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_file(&p, b"one", KEY_MODE, Existing::Refuse).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"one");

        let err = write_file(&p, b"two", KEY_MODE, Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");

        write_file(&p, b"three", PUBLIC_MODE, Existing::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);

        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn parents_are_traversable_and_the_folder_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("etc/virtgate/ca");
        create_dir(&ca).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca), 0o700);
        assert_eq!(mode(&dir.path().join("etc/virtgate")), 0o755);
        assert_eq!(mode(&dir.path().join("etc")), 0o755);
        assert!(!create_dir_mode(&ca, 0o750).unwrap());
        assert_eq!(mode(&ca), 0o700);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/k.key");
        let err = write_file(&p, b"x", KEY_MODE, Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
