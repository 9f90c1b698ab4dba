//! Private local sockets: the per-user runtime folder (`$XDG_RUNTIME_DIR/virtgate`, else
//! `/tmp/virtgate-UID`), created 0700 and refused when it is not ours or open to others;
//! sockets bound mode 0600 in it, a stale socket file replaced, a live one or a file that is
//! not a socket left alone; and removal of the socket however its server ends. Used by
//! `virtgate libvirt` and by the shared connection of `virtgate up`.

use std::ffi::OsStr;
use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::Error;

/// The folder for a user's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFolder {
    /// `$XDG_RUNTIME_DIR/virtgate` or `/tmp/virtgate-UID`.
    pub path: PathBuf,
    /// Whether it is in a shared place (/tmp) and must be checked to be ours.
    pub shared: bool,
}

impl RuntimeFolder {
    /// The folder from `$XDG_RUNTIME_DIR` (empty counts as unset) and the uid.
    pub fn new(runtime_dir: Option<&OsStr>, uid: u32) -> RuntimeFolder {
        match runtime_dir.filter(|d| !d.is_empty()) {
            Some(d) => RuntimeFolder {
                path: Path::new(d).join("virtgate"),
                shared: false,
            },
            None => RuntimeFolder {
                path: PathBuf::from(format!("/tmp/virtgate-{uid}")),
                shared: true,
            },
        }
    }

    /// The folder of this process's user.
    pub fn of_process() -> RuntimeFolder {
        RuntimeFolder::new(
            std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
            rustix::process::getuid().as_raw(),
        )
    }

    /// Create it 0700, or check that it is private (see [`private_folder`]).
    pub fn create(&self) -> Result<(), Error> {
        private_folder(&self.path, self.shared, rustix::process::getuid().as_raw())
    }
}

/// A profile name as a file name: anything but `[A-Za-z0-9._-]` becomes `_`.
pub fn file_name(profile: &str) -> String {
    profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Create the socket folder 0700, or check that an existing one is private.
pub fn private_folder(folder: &Path, shared: bool, uid: u32) -> Result<(), Error> {
    let fail = |source: std::io::Error| Error::LocalFile {
        action: "create the socket folder",
        path: folder.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(fail)?;
    let meta = std::fs::symlink_metadata(folder).map_err(fail)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("it is not a folder owned by uid {uid}; not using it"),
        )));
    }
    if meta.mode() & 0o077 != 0 {
        if shared {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "others may use it (mode {:o}); not using it",
                    meta.mode() & 0o777
                ),
            )));
        }
        std::fs::set_permissions(folder, Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// Bind the socket (mode 0600), replacing a stale socket file.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let fail = |source: std::io::Error| Error::LocalFile {
        action: "listen on socket",
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another program (another `virtgate libvirt`?) listens on it",
                )));
            }
            tracing::debug!(path = %path.display(), "removing a stale socket");
            std::fs::remove_file(path).map_err(fail)?;
        }
        Ok(_) => {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; not touching it",
            )))
        }
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    if let Err(e) = std::fs::set_permissions(path, Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(listener)
}

/// Removes the socket file when the forwarder ends, however it ends.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::debug!(path = %self.0.display(), error = %e, "socket not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let f = dir.path().join("a/virtgate");
        private_folder(&f, true, uid).unwrap();
        let mode = std::fs::metadata(&f).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&f, Permissions::from_mode(0o755)).unwrap();
        let e = private_folder(&f, true, uid).unwrap_err();
        assert!(e.to_string().contains("socket folder"), "{e}");
        private_folder(&f, false, uid).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o700);
        assert!(private_folder(&f, false, uid.wrapping_add(1)).is_err());
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_and_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("l.sock");
        let live = bind(&s).unwrap();
        assert_eq!(std::fs::metadata(&s).unwrap().mode() & 0o777, 0o600);
        let e = bind(&s).unwrap_err();
        assert!(
            crate::error::chain_text(&e).contains("listens on it"),
            "{e}"
        );
        drop(live); // the file stays: now it is stale
        assert!(s.exists());
        let again = bind(&s).unwrap();
        drop(again);
        {
            let _r = RemoveOnDrop(s.clone());
        }
        assert!(!s.exists());
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(bind(&f).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
    }
}
