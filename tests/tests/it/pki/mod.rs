//! OpenSSL interop and virtgate-pki CLI tests: helpers here, tests in `keys` (key files both
//! ways), `ca` (certificates, CRLs, CSRs, CA handling) and `service` (the files a service
//! user may read, as `nobody`).
//!
//! Every test drives the real `virtgate-pki` binary and the real `openssl` in a temp
//! folder of its own; key loading goes through `virtgate_pki::load_private_key`, the
//! function the client and the gateway use.

mod ca;
mod keys;
mod service;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;
use virtgate_pki::time::{Duration, OffsetDateTime};
use virtgate_pki::zeroize::Zeroizing;
use virtgate_pki::{
    load_certs, load_private_key, signing_key, Ca, ClientOptions, InitOptions, KeyFileError,
    Validity,
};
use virtgate_tests::{bin, system_bin};

/// A finished command's status and output as text.
pub(super) struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(self, what: &str) -> Ran {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// `virtgate-pki --dir DIR ARGS` with no passphrase variables inherited, run in `cwd`.
pub(super) fn pki_in(cwd: &Path, dir: &Path, args: &[&str]) -> Ran {
    let out = Command::new(bin("virtgate-pki"))
        .current_dir(cwd)
        .env_remove("VIRTGATE_PKI_DIR")
        .env_remove("VIRTGATE_CA_PASSPHRASE")
        .env_remove("VIRTGATE_KEY_PASSPHRASE")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run virtgate-pki");
    Ran::from(out)
}

/// `virtgate-pki --dir DIR ARGS`.
pub(super) fn pki(dir: &Path, args: &[&str]) -> Ran {
    pki_in(dir.parent().unwrap_or(Path::new("/")), dir, args)
}

/// `openssl ARGS` in `cwd`.
pub(super) fn openssl(cwd: &Path, args: &[&str]) -> Ran {
    let out = Command::new(system_bin("openssl", "openssl"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run openssl");
    Ran::from(out)
}

/// A temp folder with a CA in `ca/` and the passphrase `pw123` in `pw`.
pub(super) fn setup() -> (TempDir, PathBuf) {
    let tmp = virtgate_tests::tempdir();
    let ca = tmp.path().join("ca");
    pki(&ca, &["init", "--name", "Test CA"]).ok("init");
    std::fs::write(tmp.path().join("pw"), "pw123\n").unwrap();
    std::fs::write(tmp.path().join("wrongpw"), "nope\n").unwrap();
    (tmp, ca)
}

pub(super) fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub(super) fn pass(s: &str) -> impl FnMut() -> Result<Zeroizing<String>, KeyFileError> + '_ {
    move || Ok(Zeroizing::new(s.to_string()))
}

pub(super) fn never() -> Result<Zeroizing<String>, KeyFileError> {
    panic!("passphrase asked for an unencrypted key")
}

/// Make a key with `openssl` in folder `t`.
fn make_key(t: &Path, args: &[&str]) {
    openssl(t, args).ok(&format!("openssl {args:?}"));
}
