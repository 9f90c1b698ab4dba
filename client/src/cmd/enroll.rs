//! `virtgate enroll USER`: a private key born on this machine and a certificate request
//! (CSR) for the admin, so that the key never travels.
//!
//! ```text
//! virtgate enroll USER [--dir DIR | --key FILE] [--no-passphrase] [--passphrase-file F]
//!   DIR/USER.key   EC P-256, PKCS#8 encrypted (PBES2: PBKDF2-SHA256, AES-256-CBC), 0600:
//!                  the format and code of `virtgate-pki issue-client`
//!   DIR/USER.csr   PKCS#10, subject CN=USER, signed by that key (0644: no secret)
//! ```
//!
//! DIR is the config file's folder (`$VIRTGATE_CONFIG`'s, else
//! `$XDG_CONFIG_HOME/virtgate/`), created 0700 when missing; `--key FILE` names the key
//! (the request goes next to it as FILE's stem `.csr`). The passphrase comes from
//! `--passphrase-file`, then `$VIRTGATE_KEY_PASSPHRASE`, then a prompt asked twice.
//!
//! An existing key is never overwritten, nor an existing request, and a failure leaves
//! nothing behind: both places are checked before the passphrase is asked for, the key is
//! written atomically (`virtgate_pki::files`), and when the request cannot be written the
//! new key is removed again. Then it prints what to send to whom and the next commands.
//!
//! A key on a hardware token (`--key pkcs11:…`) is made and used by [`crate::pkcs11`];
//! the request is then signed by the token ([`write_request`] and [`next_steps`] are the
//! same for both).

use std::path::{Path, PathBuf};

use clap::Args;
use virtgate_pki::csr::{self, CsrInfo};
use virtgate_pki::files::{self, Existing};
use virtgate_pki::zeroize::Zeroizing;
use virtgate_pki::CaError;

use crate::cli::GlobalArgs;
use crate::error::{Error, SetupFailure};
use crate::profile::Env;

/// Arguments of `virtgate enroll` (with the global `--key` and `--passphrase-file`).
#[derive(Debug, Clone, Args)]
pub struct EnrollArgs {
    /// Your user name on the gateway, as the admin knows you: the certificate's CN
    pub user: String,
    /// Folder for USER.key and USER.csr (default: the config file's folder,
    /// ~/.config/virtgate); or name the key itself with --key FILE
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write the key unencrypted (still 0600); only for machines nobody else touches
    #[arg(long)]
    pub no_passphrase: bool,
}

/// Where the key and the request go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The private key file.
    pub key: PathBuf,
    /// The request file, next to it.
    pub csr: PathBuf,
}

impl Place {
    /// `--key FILE` (request next to it), else `DIR/USER.key` and `DIR/USER.csr` with DIR
    /// from `--dir` or the config file's folder.
    pub fn resolve(
        user: &str,
        dir: Option<&Path>,
        key: Option<&Path>,
        env: &Env,
    ) -> Result<Place, Error> {
        if let (Some(_), Some(_)) = (dir, key) {
            return Err(Error::Setting {
                message: "enroll takes --dir DIR or --key FILE, not both".into(),
                hint: "--dir DIR writes DIR/USER.key and DIR/USER.csr; --key FILE names the key \
                       (the request goes next to it)"
                    .into(),
            });
        }
        if let Some(key) = key {
            return Ok(Place {
                key: key.to_owned(),
                csr: key.with_extension("csr"),
            });
        }
        let folder = match dir {
            Some(d) => d.to_owned(),
            None => config_folder(env),
        };
        Ok(Place {
            key: folder.join(format!("{user}.key")),
            csr: folder.join(format!("{user}.csr")),
        })
    }

    /// Refuses when the key or the request is there already (or the key cannot be looked
    /// at): nothing is asked or written then.
    pub fn check_free(&self, user: &str) -> Result<(), Error> {
        if std::fs::symlink_metadata(&self.key).is_ok() {
            return Err(SetupFailure::KeyExists {
                path: self.key.clone(),
                user: user.to_owned(),
            }
            .into());
        }
        if std::fs::symlink_metadata(&self.csr).is_ok() {
            return Err(SetupFailure::RequestExists {
                path: self.csr.clone(),
            }
            .into());
        }
        Ok(())
    }
}

/// The folder of the config file: where keys and profiles' files live by default.
pub fn config_folder(env: &Env) -> PathBuf {
    let (path, _) = env.config_path();
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run `virtgate enroll`.
pub fn run(global: &GlobalArgs, args: EnrollArgs, env: &Env) -> Result<(), Error> {
    check_user(&args.user)?;
    if let Some(uri) = global.key.as_deref().filter(|k| crate::pkcs11::is_uri(k)) {
        return crate::pkcs11::enroll::run(global, &args, env, uri);
    }
    if args.no_passphrase && global.passphrase_file.is_some() {
        return Err(Error::Setting {
            message: "--no-passphrase and --passphrase-file contradict each other".into(),
            hint: "leave out --no-passphrase to encrypt the key (recommended)".into(),
        });
    }
    let place = Place::resolve(&args.user, args.dir.as_deref(), global.key.as_deref(), env)?;
    place.check_free(&args.user)?;
    if let Some(folder) = place.key.parent().filter(|p| !p.as_os_str().is_empty()) {
        files::create_dir(folder).map_err(|source| SetupFailure::Write {
            path: folder.to_owned(),
            source,
        })?;
    }
    let passphrase = new_passphrase(global, &args, env, &place.key)?;
    let info = new_file_key(
        &args.user,
        &place,
        passphrase.as_deref().map(|p| p.as_str()),
    )?;
    let encrypted = if passphrase.is_some() {
        "encrypted"
    } else {
        "NOT encrypted"
    };
    println!(
        "wrote {} ({encrypted}, 0600): your private key; it never leaves this machine",
        place.key.display()
    );
    print!("{}", next_steps(&args.user, &place.key, &place.csr, &info));
    Ok(())
}

/// A user name the CA will accept as a CN.
fn check_user(user: &str) -> Result<(), Error> {
    virtgate_pki::names::check_user(user).map_err(|e| match e {
        CaError::InvalidUser { name, why } => SetupFailure::InvalidUser {
            name,
            why: why.to_owned(),
        }
        .into(),
        other => SetupFailure::InvalidUser {
            name: user.to_owned(),
            why: other.to_string(),
        }
        .into(),
    })
}

/// The new key's passphrase: `--passphrase-file`, `$VIRTGATE_KEY_PASSPHRASE`, a prompt
/// asked twice; `None` with `--no-passphrase`.
fn new_passphrase(
    global: &GlobalArgs,
    args: &EnrollArgs,
    env: &Env,
    key: &Path,
) -> Result<Option<Zeroizing<String>>, Error> {
    if args.no_passphrase {
        return Ok(None);
    }
    if let Some(f) = &global.passphrase_file {
        return Ok(Some(virtgate_pki::passphrase::from_file(f)?));
    }
    if let Some(v) = &env.key_passphrase {
        let text = v.to_str().ok_or_else(|| {
            virtgate_pki::KeyFileError::passphrase(
                "VIRTGATE_KEY_PASSPHRASE is not UTF-8",
                Some("use --passphrase-file FILE or type it at the prompt".into()),
            )
        })?;
        return Ok(Some(Zeroizing::new(text.to_owned())));
    }
    let name = key.file_name().map(Path::new).unwrap_or(key);
    Ok(Some(virtgate_pki::passphrase::prompt_new(
        &format!("New passphrase for {}: ", name.display()),
        "pass --passphrase-file FILE, set VIRTGATE_KEY_PASSPHRASE, or use --no-passphrase",
    )?))
}

/// Makes an EC P-256 key, writes it to `place.key` (encrypted when `passphrase` is given)
/// and the request to `place.csr`; on failure neither file stays.
pub fn new_file_key(user: &str, place: &Place, passphrase: Option<&str>) -> Result<CsrInfo, Error> {
    let key = virtgate_pki::rcgen::KeyPair::generate().map_err(|e| SetupFailure::Request {
        detail: format!("generating the key: {e}"),
    })?;
    let der = Zeroizing::new(key.serialize_der());
    virtgate_pki::write_private_key(&place.key, &der, passphrase, Existing::Refuse)?;
    match write_request(user, &key, &place.csr) {
        Ok(info) => Ok(info),
        Err(e) => {
            // the key was made now, for this request only: remove it again
            let _ = std::fs::remove_file(&place.key);
            Err(e)
        }
    }
}

/// Writes the request for `CN=user` signed by `key` (any key rcgen signs with: a file's,
/// or a token's) to `path` (0644, never over an existing file); returns what it asks for.
pub fn write_request(
    user: &str,
    key: &impl virtgate_pki::rcgen::SigningKey,
    path: &Path,
) -> Result<CsrInfo, Error> {
    let request = |e: CaError| SetupFailure::Request {
        detail: e.to_string(),
    };
    let pem = csr::request_pem(user, key).map_err(request)?;
    let info = CsrInfo::parse(&pem).map_err(request)?;
    files::write_file(path, pem.as_bytes(), files::PUBLIC_MODE, Existing::Refuse).map_err(
        |source| -> Error {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                SetupFailure::RequestExists {
                    path: path.to_owned(),
                }
                .into()
            } else {
                SetupFailure::Write {
                    path: path.to_owned(),
                    source,
                }
                .into()
            }
        },
    )?;
    Ok(info)
}

/// What the user does next: send the request, what the admin runs, then `profile add`.
pub fn next_steps(user: &str, key: &Path, csr: &Path, info: &CsrInfo) -> String {
    let csr_name = csr
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{user}.csr"));
    let key_arg = absolute(key);
    format!(
        "wrote {csr} (the certificate request for `{user}`; no secret in it)\n\
         \n\
         public key {kind}, SHA-256 fingerprint:\n  {fp}\n\
         \n\
         Next:\n\
         1. Send the request to the admin of the gateway (mail or chat is fine):\n     \
              {csr}\n   \
            and tell them the fingerprint above another way (phone, in person), so that they\n   \
            can check that the request is yours.\n\
         2. The admin signs it and sends back {user}.pem and the CA certificate ca.pem:\n     \
              virtgate-pki sign-csr {csr_name} --expect {user} --out {user}.pem\n\
         3. Then add the gateway as a profile (it copies {user}.pem and ca.pem next to your config):\n     \
              virtgate profile add NAME --url virtgate://HOST --ca ca.pem --cert {user}.pem --key {key}\n",
        csr = csr.display(),
        kind = info.key_kind,
        fp = info.fingerprint(),
        key = shell_word(&key_arg.display().to_string()),
    )
}

/// `path` made absolute against the current folder (for a command printed to copy).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A word for a shell command line: quoted when it holds anything but safe characters.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-@%+=:,~".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &Path) -> Env {
        Env {
            xdg_config_home: Some(dir.into()),
            ..Default::default()
        }
    }

    #[test]
    fn places() {
        let env = env_in(Path::new("/x"));
        let p = Place::resolve("bob", None, None, &env).unwrap();
        assert_eq!(p.key, Path::new("/x/virtgate/bob.key"));
        assert_eq!(p.csr, Path::new("/x/virtgate/bob.csr"));
        let p = Place::resolve("bob", Some(Path::new("/d")), None, &env).unwrap();
        assert_eq!(p.csr, Path::new("/d/bob.csr"));
        let p = Place::resolve("bob", None, Some(Path::new("k/me.key")), &env).unwrap();
        assert_eq!(
            (p.key.as_path(), p.csr.as_path()),
            (Path::new("k/me.key"), Path::new("k/me.csr"))
        );
        assert!(Place::resolve("bob", Some(Path::new("/d")), Some(Path::new("k")), &env).is_err());
        let env = Env {
            virtgate_config: Some("/etc-free/c.toml".into()),
            ..env
        };
        assert_eq!(config_folder(&env), Path::new("/etc-free"));
    }

    #[test]
    fn a_key_and_its_request_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let place = Place::resolve("bob", Some(dir.path()), None, &Env::default()).unwrap();
        place.check_free("bob").unwrap();
        let info = new_file_key("bob", &place, Some("pw")).unwrap();
        assert_eq!(info.cn, "bob");
        let key =
            virtgate_pki::load_private_key(&place.key, &mut || Ok(Zeroizing::new("pw".to_owned())))
                .unwrap();
        assert_eq!(
            virtgate_pki::check::public_key_of(&key),
            Some(info.public_key.clone())
        );
        let before = std::fs::read(&place.key).unwrap();
        let e = place.check_free("bob").unwrap_err();
        assert!(e
            .to_string()
            .ends_with("bob.key already exists: enroll never overwrites a key"));
        assert!(e.hint().unwrap().contains("openssl req -new -key"));
        assert_eq!(std::fs::read(&place.key).unwrap(), before);
    }

    #[test]
    fn a_request_that_cannot_be_written_takes_its_key_along() {
        let dir = tempfile::tempdir().unwrap();
        let place = Place {
            key: dir.path().join("bob.key"),
            csr: dir.path().join("missing/bob.csr"),
        };
        assert!(new_file_key("bob", &place, None).is_err());
        assert!(!place.key.exists());
    }

    #[test]
    fn next_steps_name_the_commands() {
        let key = rcgen::KeyPair::generate().unwrap();
        let info = CsrInfo::parse(&csr::request_pem("bob", &key).unwrap()).unwrap();
        let t = next_steps(
            "bob",
            Path::new("/c/my key.key"),
            Path::new("/c/bob.csr"),
            &info,
        );
        assert!(
            t.contains("virtgate-pki sign-csr bob.csr --expect bob --out bob.pem"),
            "{t}"
        );
        assert!(t.contains("--cert bob.pem --key '/c/my key.key'"), "{t}");
        assert!(t.contains(&info.fingerprint()), "{t}");
        assert_eq!(shell_word("/a/b.key"), "/a/b.key");
    }
}
