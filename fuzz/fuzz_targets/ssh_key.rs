//! The client's SSH private key files (`ssh.key`, ~/.ssh/id_*): `transport::ssh::auth::
//! public_key_of` (the public half an OpenSSH key keeps in the clear) and `load_key` on a
//! temporary file per input. The passphrase source is a file that does not exist, so an
//! encrypted key ends at "cannot read the passphrase file" instead of running a key
//! derivation whose rounds the input chooses (bcrypt: seconds per input, no parser there).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use virtgate_client::passphrase::PassphraseSources;
use virtgate_client::transport::ssh::auth::{load_key, public_key_of};

/// The key file each input is written to, and the passphrase sources.
fn setup() -> &'static (PathBuf, PassphraseSources) {
    static SETUP: OnceLock<(PathBuf, PassphraseSources)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("virtgate-fuzz-ssh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sources = PassphraseSources {
            file: Some(dir.join("no-such-passphrase-file")),
            ..PassphraseSources::default()
        };
        (dir.join("id_key"), sources)
    })
}

fuzz_target!(|data: &[u8]| {
    let (path, sources) = setup();
    std::fs::write(path, data).unwrap();
    let public = public_key_of(path);
    if let Ok(key) = load_key(path, sources) {
        if let Some(public) = public {
            assert_eq!(&public, key.public_key());
        }
    }
});
