//! A private temporary file for QMP `screendump`.
//!
//! QEMU writes the screenshot to a path we name, so the file must be somewhere QEMU can
//! write and nobody else can read: a fresh folder (mode 0700, created atomically with a
//! name nobody could have prepared: `create_dir` fails if it exists) under the gateway's
//! temp dir, holding one file created 0600 before QEMU opens it (QEMU truncates and writes,
//! the mode stays). Both are removed when the [`TempFile`] is dropped, whatever happened.

use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Largest screenshot we read back (a 4K screen as PNG is a few MB).
const MAX_PNG: u64 = 64 << 20;
/// The eight bytes every PNG starts with.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Numbers folders within this process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// What went wrong with the temporary file.
#[derive(Debug, thiserror::Error)]
pub enum TempFileError {
    /// The folder or the file could not be created.
    #[error("cannot create a private temporary file under {}: {source}", dir.display())]
    Create {
        /// The temp dir.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// QEMU's output could not be read.
    #[error("cannot read the screenshot QEMU wrote to {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// QEMU's output is not a PNG (an older QEMU ignores `format` and writes PPM).
    #[error("QEMU did not write a PNG ({len} bytes, starting {start:02x?}); QEMU 7.1 or later is needed for PNG screenshots")]
    NotPng {
        /// Size of what QEMU wrote.
        len: usize,
        /// Its first bytes.
        start: Vec<u8>,
    },
    /// QEMU wrote more than [`MAX_PNG`].
    #[error("the screenshot is larger than {} MiB", MAX_PNG >> 20)]
    TooLarge,
}

/// A 0600 file in a 0700 folder, both removed on drop.
#[derive(Debug)]
pub struct TempFile {
    /// The private folder.
    dir: PathBuf,
    /// The file in it.
    path: PathBuf,
}

impl TempFile {
    /// Create the folder and the (empty) file under the temp dir (`$TMPDIR` or `/tmp`).
    pub fn create() -> Result<TempFile, TempFileError> {
        Self::create_in(&std::env::temp_dir())
    }

    /// [`TempFile::create`] under `base`.
    pub fn create_in(base: &Path) -> Result<TempFile, TempFileError> {
        let err = |source| TempFileError::Create {
            dir: base.to_owned(),
            source,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for _ in 0..8 {
            let n = NEXT.fetch_add(1, Relaxed);
            let dir = base.join(format!(
                "virtgate-screenshot-{}-{n}-{nanos:x}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let path = dir.join("screen.png");
                    let t = TempFile { dir, path };
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&t.path)
                        .map_err(err)?;
                    return Ok(t);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(
            last.unwrap_or_else(|| std::io::Error::other("no free name"))
        ))
    }

    /// The file's path, for QEMU.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what QEMU wrote and check that it is a PNG.
    pub fn read_png(&self) -> Result<Vec<u8>, TempFileError> {
        let read_err = |source| TempFileError::Read {
            path: self.path.clone(),
            source,
        };
        let mut data = Vec::new();
        std::fs::File::open(&self.path)
            .map_err(read_err)?
            .take(MAX_PNG + 1)
            .read_to_end(&mut data)
            .map_err(read_err)?;
        if data.len() as u64 > MAX_PNG {
            return Err(TempFileError::TooLarge);
        }
        if !data.starts_with(PNG_SIGNATURE) {
            return Err(TempFileError::NotPng {
                len: data.len(),
                start: data.iter().take(8).copied().collect(),
            });
        }
        Ok(data)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the screenshot folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_file_is_checked_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let t = TempFile::create_in(base.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(t.path()), 0o600);
        assert_eq!(mode(t.path().parent().unwrap()), 0o700);
        let e = t.read_png().unwrap_err();
        assert!(matches!(e, TempFileError::NotPng { len: 0, .. }), "{e}");
        std::fs::write(t.path(), b"P6\n720 400\n255\n").unwrap();
        assert!(t.read_png().unwrap_err().to_string().contains("7.1"));
        std::fs::write(t.path(), b"\x89PNG\r\n\x1a\nrest").unwrap();
        assert_eq!(t.read_png().unwrap().len(), 12);
        let dir = t.path().parent().unwrap().to_owned();
        drop(t);
        assert!(!dir.exists());
    }
}
