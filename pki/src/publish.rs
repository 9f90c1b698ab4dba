//! What the CA hands to a gateway: its server files in a folder shared with the gateway's
//! group, and every new CRL written where the gateway reads it.
//!
//! ```text
//! virtgate-pki --dir /etc/virtgate/ca issue-server --dns hv1 --out /etc/virtgate/pki
//!   /etc/virtgate/pki/            root:virtgate 0750  (created, or adjusted when it holds
//!                                                      nothing but these files)
//!   /etc/virtgate/pki/server.key  root:virtgate 0640
//!   /etc/virtgate/pki/server.pem  0644, ca.pem 0644
//!   /etc/virtgate/pki/crl.pem     0644, remembered in index.json (`crl_copies`)
//! virtgate-pki --dir /etc/virtgate/ca revoke alice    # rewrites ca/crl.pem AND pki/crl.pem
//! ```
//!
//! Without a group (no `virtgate` group and no `--group`), the folder is 0755 and the key
//! 0600: readable by its owner only. The CA folder itself is never shared: server files
//! written into it stay private.

use std::fs;
use std::path::{Path, PathBuf};

use crate::ca::{write_public, Ca, IssuedCert, CA_CERT, CRL};
use crate::error::{CaError, KeyFileError};
use crate::files::{self, Existing};
use crate::keyfile;
use crate::share::Group;
use crate::share::{self, is_ca_folder, SHARED_DIR_MODE, SHARED_KEY_MODE};

/// File names `issue-server` writes into its output folder.
const SERVER_FILES: &[&str] = &["server.pem", "server.key", CA_CERT, CRL];

/// What [`Ca::write_server_files_shared`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// Every file written, in order.
    pub written: Vec<PathBuf>,
    /// The group that may read the key, if any.
    pub group: Option<Group>,
    /// The folder is the CA folder, so it stayed private: a gateway running as another
    /// user cannot read these files.
    pub in_ca_folder: bool,
    /// The folder existed with other files in it, so its group and mode were left alone.
    pub folder_untouched: bool,
}

impl Ca {
    /// Writes `out/server.key` (readable by `group`), `out/server.pem`, `out/ca.pem` and a
    /// fresh `out/crl.pem`, and remembers `out/crl.pem` as a published copy of the CRL.
    pub fn write_server_files_shared(
        &mut self,
        issued: &IssuedCert,
        out: &Path,
        existing: Existing,
        group: Option<&Group>,
    ) -> Result<ServerFiles, CaError> {
        let out = absolute(out)?;
        if is_ca_folder(&out) || same_dir(&out, &self.dir) {
            let written = self.write_server_files(issued, &out, existing)?;
            return Ok(ServerFiles {
                written,
                group: None,
                in_ca_folder: true,
                folder_untouched: true,
            });
        }
        self.check_out(&out, "server", existing)?;
        let mode = if group.is_some() {
            SHARED_DIR_MODE
        } else {
            share::PUBLIC_DIR_MODE
        };
        let created = files::create_dir_mode(&out, mode)
            .map_err(|e| CaError::io("creating folder", &out, e))?;
        let adjust = created || holds_only_server_files(&out);
        if adjust {
            share::share_dir(&out, group)?;
        }
        let gid = group.map(|g| g.gid);
        let mut written = Vec::new();
        if let Some(der) = &issued.key_pkcs8_der {
            let key_path = out.join("server.key");
            let pem = keyfile::encode_private_key(&key_path, der, None)?;
            let mode = if gid.is_some() {
                SHARED_KEY_MODE
            } else {
                files::KEY_MODE
            };
            files::write_file_for_group(&key_path, pem.as_bytes(), mode, existing, gid)
                .map_err(|e| KeyFileError::write(&key_path, e))?;
            written.push(key_path);
        }
        let cert_path = out.join("server.pem");
        write_public(&cert_path, issued.cert_pem.as_bytes(), existing)?;
        written.push(cert_path);
        if let Some(ca_path) = self.write_ca_copy(&out)? {
            written.push(ca_path);
        }
        let crl_path = out.join(CRL);
        self.add_crl_copy(&crl_path);
        written.extend(self.write_crl_everywhere()?.into_iter().skip(1));
        written.dedup();
        Ok(ServerFiles {
            written,
            group: group.cloned(),
            in_ca_folder: false,
            folder_untouched: !adjust,
        })
    }

    /// Remembers `path` as a copy of the CRL that every later `revoke` and `crl` rewrites
    /// (saved in `index.json`); the CA's own `crl.pem` is refused.
    pub fn publish_crl_to(&mut self, path: &Path) -> Result<PathBuf, CaError> {
        let path = absolute(path)?;
        self.add_crl_copy(&path);
        self.save_index()?;
        Ok(path)
    }

    /// The published copies of the CRL (absolute paths).
    pub fn crl_copies(&self) -> &[PathBuf] {
        &self.index.crl_copies
    }

    /// Signs a new CRL and writes it to `DIR/crl.pem`, then to every published copy.
    /// Returns every path written, `DIR/crl.pem` first.
    ///
    /// A copy that cannot be written (its folder is gone, …) is an error naming it; the
    /// CA's own `crl.pem` and the index are up to date by then.
    pub fn write_crl_everywhere(&mut self) -> Result<Vec<PathBuf>, CaError> {
        let pem = self.crl_pem()?;
        let own = self.dir.join(CRL);
        write_public(&own, pem.as_bytes(), Existing::Replace)?;
        let mut written = vec![own.clone()];
        for copy in self.index.crl_copies.clone() {
            if same_file(&copy, &own) {
                continue;
            }
            files::write_file(&copy, pem.as_bytes(), files::PUBLIC_MODE, Existing::Replace)
                .map_err(|e| CaError::io("publishing the CRL to", &copy, e))?;
            written.push(copy);
        }
        Ok(written)
    }

    /// Adds `path` to the published copies unless it is there or is `DIR/crl.pem`.
    fn add_crl_copy(&mut self, path: &Path) {
        let own = self.dir.join(CRL);
        if same_file(path, &own) || path == own {
            return;
        }
        if !self.index.crl_copies.iter().any(|p| p == path) {
            self.index.crl_copies.push(path.to_path_buf());
        }
    }
}

/// `path` made absolute against the current folder (no symlinks resolved).
fn absolute(path: &Path) -> Result<PathBuf, CaError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| CaError::io("finding", Path::new("."), e))?;
    Ok(cwd.join(path))
}

/// Whether `dir` holds nothing but files `issue-server` writes (so its group and mode may
/// be changed without touching anything else: never /tmp or /etc).
fn holds_only_server_files(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        SERVER_FILES.contains(&name.as_ref()) || name.starts_with('.') && name.contains(".tmp-")
    })
}

/// Whether two paths name the same existing folder or file.
fn same_dir(a: &Path, b: &Path) -> bool {
    same_file(a, b)
}

/// Whether two paths name the same existing file (false when either is missing).
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, ServerOptions, Validity};
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn server_files_and_crl_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("etc/virtgate/ca");
        let mut ca = Ca::init(&ca_dir, &InitOptions::default()).unwrap();
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&tmp.path().join("etc/virtgate")), 0o755);
        let opts = ServerOptions {
            dns: vec!["localhost".into()],
            ips: vec![],
            validity: Validity::Days(1),
        };
        let issued = ca.issue_server(&opts).unwrap();
        let out = tmp.path().join("etc/virtgate/pki");
        let files = ca
            .write_server_files_shared(&issued, &out, Existing::Refuse, None)
            .unwrap();
        assert!(!files.in_ca_folder && !files.folder_untouched);
        assert_eq!(mode(&out), 0o755);
        assert_eq!(mode(&out.join("server.key")), 0o600);
        assert_eq!(mode(&out.join("crl.pem")), 0o644);
        assert_eq!(ca.crl_copies(), [out.join("crl.pem")]);
        let before = fs::read(out.join("crl.pem")).unwrap();
        let written = ca.write_crl_everywhere().unwrap();
        assert_eq!(written, [ca_dir.join("crl.pem"), out.join("crl.pem")]);
        assert_ne!(fs::read(out.join("crl.pem")).unwrap(), before);
        assert_eq!(
            fs::read(out.join("crl.pem")).unwrap(),
            fs::read(ca_dir.join("crl.pem")).unwrap()
        );

        // into the CA folder: stays private
        let issued = ca.issue_server(&opts).unwrap();
        let files = ca
            .write_server_files_shared(&issued, &ca_dir, Existing::Refuse, None)
            .unwrap();
        assert!(files.in_ca_folder);
        assert_eq!(mode(&ca_dir), 0o700);
    }
}
