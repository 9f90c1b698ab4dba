//! Per-user profiles: `$VIRTGATE_CONFIG`, else `$XDG_CONFIG_HOME/virtgate/config.toml`, else
//! `~/.config/virtgate/config.toml`.
//!
//! ```toml
//! default = "hv1"
//! [profile.hv1]
//! url = "virtgate://hv1.example.org"
//! ca = "hv1/ca.pem"            # relative to this file's folder
//! cert = "hv1/alice.pem"
//! key = "hv1/alice.key"
//! auth = "cert"                # cert | kerberos
//! service = "HTTP"             # kerberos: the gateway is HTTP/host@REALM (the default)
//! passphrase_command = "pass show virtgate/hv1"
//! keepalive_interval_s = 5     # optional: PING the gateway after 5 s of silence (default 5)
//! keepalive_timeout_s = 5      # optional: and give it up 5 s later (default 5)
//!
//! [profile.yubikey]
//! url = "virtgate://hv1.example.org"
//! ca = "hv1/ca.pem"
//! cert = "hv1/alice.pem"
//! key = "pkcs11:token=alice;object=virtgate"   # a key on a token (RFC 7512), not a file
//! pkcs11_module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
//!
//! [profile.hv2]
//! url = "virtgate+ssh://alice@hv2.example.org"   # ca/cert/key/auth are not used over SSH
//! ssh_key = "~/.ssh/id_hv2"    # optional: the key file to try after the ssh-agent's keys
//! ```
//!
//! Unknown keys are errors that name the line and column. Nothing under /etc is read.
//!
//! The keepalive keys bound how long a command waits on a gateway that stopped answering
//! (a frozen host, a broken network): after `keepalive_interval_s` without a word from it
//! the client sends an HTTP/2 PING (and SSH keepalives on `virtgate+ssh://`), and when no
//! answer came `keepalive_timeout_s` later the command ends with "the gateway stopped
//! answering". `--url` without `-p` still takes these, and `ca`/`cert`/`key`/`auth`, from
//! the default profile (see [`Profiles::select`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// How the client proves who it is on a TLS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// A client certificate (`cert` + `key`).
    Cert,
    /// Kerberos single sign-on (HTTP Negotiate).
    Kerberos,
}

/// The environment variables the client reads, captured once so that resolution is a pure
/// function (and testable).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$VIRTGATE_CONFIG`: an explicit config file.
    pub virtgate_config: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`, for the default config folder and `~/` in profile paths.
    pub home: Option<OsString>,
    /// `$VIRTGATE_KEY_PASSPHRASE`.
    pub key_passphrase: Option<OsString>,
    /// `$USER` (else `$LOGNAME`): the SSH login name when the URL names none.
    pub user: Option<OsString>,
}

impl Env {
    /// Read the process environment. Empty variables count as unset.
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Env {
            virtgate_config: get("VIRTGATE_CONFIG"),
            xdg_config_home: get("XDG_CONFIG_HOME"),
            home: get("HOME"),
            key_passphrase: get("VIRTGATE_KEY_PASSPHRASE"),
            user: get("USER").or_else(|| get("LOGNAME")),
        }
    }

    /// Where the config file is, and whether it was named explicitly (then it must exist).
    pub fn config_path(&self) -> (PathBuf, bool) {
        if let Some(p) = &self.virtgate_config {
            return (PathBuf::from(p), true);
        }
        let base = match (&self.xdg_config_home, &self.home) {
            (Some(x), _) => PathBuf::from(x),
            (None, Some(h)) => Path::new(h).join(".config"),
            (None, None) => PathBuf::from(".config"),
        };
        (base.join("virtgate").join("config.toml"), false)
    }
}

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The profile used when `-p` is not given.
    default: Option<String>,
    /// `[profile.NAME]` tables.
    #[serde(default)]
    profile: BTreeMap<String, ProfileFile>,
}

/// One `[profile.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    /// Gateway URL (`virtgate://host[:port]`, ...).
    url: String,
    /// CA certificate that verifies the gateway; relative to the config folder.
    ca: Option<PathBuf>,
    /// Client certificate; relative to the config folder.
    cert: Option<PathBuf>,
    /// Client key (PKCS#8 PEM, usually encrypted); relative to the config folder. Or a
    /// `pkcs11:` URI naming a key on a token (kept as written).
    key: Option<PathBuf>,
    /// The PKCS#11 module (`.so`) that reaches the token of a `pkcs11:` key.
    pkcs11_module: Option<PathBuf>,
    /// `cert` or `kerberos`.
    auth: Option<AuthKind>,
    /// Kerberos service name of the gateway (`HTTP`).
    service: Option<String>,
    /// Shell command whose first stdout line is the key passphrase.
    passphrase_command: Option<String>,
    /// SSH private key file (OpenSSH format, may be encrypted); relative to the config folder.
    ssh_key: Option<PathBuf>,
    /// Seconds without a word from the gateway before it is sent a keepalive PING.
    keepalive_interval_s: Option<u64>,
    /// Seconds the gateway has to answer a keepalive before it is given up.
    keepalive_timeout_s: Option<u64>,
}

/// A profile with its paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name, for messages.
    pub name: String,
    /// The gateway URL, parsed later so that errors can name the profile.
    pub url: String,
    /// CA certificate that verifies the gateway.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM chain).
    pub cert: Option<PathBuf>,
    /// Client private key (PKCS#8 PEM, usually encrypted), or a `pkcs11:` URI (as written).
    pub key: Option<PathBuf>,
    /// The PKCS#11 module for a `pkcs11:` key.
    pub pkcs11_module: Option<PathBuf>,
    /// How to authenticate on TLS transports.
    pub auth: Option<AuthKind>,
    /// Kerberos service name of the gateway (`HTTP` when unset).
    pub service: Option<String>,
    /// Shell command whose first stdout line is the key passphrase.
    pub passphrase_command: Option<String>,
    /// SSH private key file for `virtgate+ssh://` URLs (tried after the ssh-agent's keys).
    pub ssh_key: Option<PathBuf>,
    /// `keepalive_interval_s`: seconds of silence before a keepalive PING (default 5).
    pub keepalive_interval_s: Option<u64>,
    /// `keepalive_timeout_s`: seconds a keepalive may go unanswered (default 5).
    pub keepalive_timeout_s: Option<u64>,
}

/// All profiles of one config file.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// The file they came from (for messages); it may not exist.
    pub path: PathBuf,
    /// Whether the file exists.
    pub exists: bool,
    /// `default = "NAME"`.
    pub default: Option<String>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Load the config file named by the environment. A missing default-location file is an
    /// empty set of profiles; a missing `$VIRTGATE_CONFIG` is an error.
    pub fn load(env: &Env) -> Result<Profiles, Error> {
        let (path, explicit) = env.config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Profiles::parse(&path, &text, env.home.as_deref().map(Path::new)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Profiles {
                path,
                ..Default::default()
            }),
            Err(source) => Err(Error::ConfigRead { path, source }),
        }
    }

    /// Parse config text; `path` makes relative paths absolute and names errors.
    pub fn parse(path: &Path, text: &str, home: Option<&Path>) -> Result<Profiles, Error> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            Error::Config {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let fix = |p: Option<PathBuf>| p.map(|p| resolve_path(folder, home, &p));
        let profiles = file
            .profile
            .into_iter()
            .map(|(name, p)| {
                let profile = Profile {
                    name: name.clone(),
                    url: p.url,
                    ca: fix(p.ca),
                    cert: fix(p.cert),
                    key: p.key.map(|k| match crate::pkcs11::is_uri(&k) {
                        true => k,
                        false => resolve_path(folder, home, &k),
                    }),
                    pkcs11_module: fix(p.pkcs11_module),
                    auth: p.auth,
                    service: p.service,
                    passphrase_command: p.passphrase_command,
                    ssh_key: fix(p.ssh_key),
                    keepalive_interval_s: p.keepalive_interval_s,
                    keepalive_timeout_s: p.keepalive_timeout_s,
                };
                (name, profile)
            })
            .collect();
        let profiles = Profiles {
            path: path.to_owned(),
            exists: true,
            default: file.default,
            profiles,
        };
        if let Some(d) = &profiles.default {
            if !profiles.profiles.contains_key(d) {
                return Err(profiles.unknown(d));
            }
        }
        Ok(profiles)
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownProfile {
            name: name.to_owned(),
            path: self.path.clone(),
            known: self.profiles.keys().cloned().collect(),
        }
    }

    /// The profile to use: `-p NAME`, else `default`, else the only one. `Ok(None)` means
    /// "no profile"; the caller needs `--url` then. With `--url` (`have_url`) the same
    /// profile supplies everything but the URL (its `ca`, `cert`, `key`, `auth`, ...: the
    /// same gateway reached by another address), and when no profile is the obvious one
    /// that is no error: the flags must say it all.
    pub fn select(&self, name: Option<&str>, have_url: bool) -> Result<Option<&Profile>, Error> {
        if let Some(n) = name {
            return self
                .profiles
                .get(n)
                .map(Some)
                .ok_or_else(|| self.unknown(n));
        }
        if have_url && self.default.is_none() && self.profiles.len() != 1 {
            return Ok(None);
        }
        if let Some(d) = &self.default {
            return self
                .profiles
                .get(d)
                .map(Some)
                .ok_or_else(|| self.unknown(d));
        }
        match self.profiles.len() {
            0 => Ok(None),
            1 => Ok(self.profiles.values().next()),
            _ => Err(Error::NoDefaultProfile {
                path: self.path.clone(),
                known: self.profiles.keys().cloned().collect(),
            }),
        }
    }
}

/// A profile path: `~/x` from home, relative from the config folder, absolute as is.
fn resolve_path(folder: &Path, home: Option<&Path>, p: &Path) -> PathBuf {
    if let (Ok(rest), Some(h)) = (p.strip_prefix("~"), home) {
        return h.join(rest);
    }
    if p.is_absolute() {
        p.to_owned()
    } else {
        folder.join(p)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
default = "hv1"
[profile.hv1]
url = "virtgate://hv1.example.org"
ca = "hv1/ca.pem"
cert = "/abs/alice.pem"
key = "~/keys/alice.key"
auth = "cert"
passphrase_command = "pass show x"

[profile.lab]
url = "virtgate://[::1]:7000"

[profile.ssh]
url = "virtgate+ssh://alice@hv2"
ssh_key = "keys/id_hv2"
"#;

    fn parsed() -> Profiles {
        Profiles::parse(
            Path::new("/home/a/.config/virtgate/config.toml"),
            CONF,
            Some(Path::new("/home/a")),
        )
        .unwrap()
    }

    #[test]
    fn paths_are_relative_to_the_config_folder() {
        let p = parsed();
        let hv1 = &p.profiles["hv1"];
        assert_eq!(
            hv1.ca.as_deref(),
            Some(Path::new("/home/a/.config/virtgate/hv1/ca.pem"))
        );
        assert_eq!(hv1.cert.as_deref(), Some(Path::new("/abs/alice.pem")));
        assert_eq!(
            hv1.key.as_deref(),
            Some(Path::new("/home/a/keys/alice.key"))
        );
        assert_eq!(hv1.auth, Some(AuthKind::Cert));
        assert_eq!(
            p.profiles["ssh"].ssh_key.as_deref(),
            Some(Path::new("/home/a/.config/virtgate/keys/id_hv2"))
        );
    }

    #[test]
    fn selection_order() {
        let p = parsed();
        assert_eq!(p.select(None, false).unwrap().unwrap().name, "hv1");
        assert_eq!(p.select(Some("lab"), false).unwrap().unwrap().name, "lab");
        assert_eq!(p.select(Some("lab"), true).unwrap().unwrap().name, "lab");
        // --url alone keeps the default profile's files: the same gateway by another address
        assert_eq!(p.select(None, true).unwrap().unwrap().name, "hv1");
        let e = p.select(Some("nope"), false).unwrap_err();
        assert!(e.to_string().contains("no profile `nope`"));
        assert!(e.hint().unwrap().contains("hv1, lab, ssh"));
    }

    #[test]
    fn several_profiles_without_default_need_a_choice() {
        let text = "[profile.a]\nurl = \"virtgate://a\"\n[profile.b]\nurl = \"virtgate://b\"\n";
        let p = Profiles::parse(Path::new("/c/config.toml"), text, None).unwrap();
        assert!(matches!(
            p.select(None, false),
            Err(Error::NoDefaultProfile { .. })
        ));
        let one = Profiles::parse(
            Path::new("/c/config.toml"),
            "[profile.a]\nurl = \"x\"\n",
            None,
        )
        .unwrap();
        assert_eq!(one.select(None, false).unwrap().unwrap().name, "a");
        assert_eq!(one.select(None, true).unwrap().unwrap().name, "a");
        // --url with several profiles and no default: none of them, and no error
        assert!(p.select(None, true).unwrap().is_none());
    }

    #[test]
    fn pkcs11_keys_are_kept_as_written() {
        let text = "[profile.a]\nurl = \"virtgate://a\"\nkey = \"pkcs11:token=t;object=k\"\n\
                    pkcs11_module = \"lib/p11.so\"\n";
        let p = Profiles::parse(Path::new("/c/config.toml"), text, None).unwrap();
        let a = &p.profiles["a"];
        assert_eq!(a.key.as_deref(), Some(Path::new("pkcs11:token=t;object=k")));
        assert_eq!(a.pkcs11_module.as_deref(), Some(Path::new("/c/lib/p11.so")));
    }

    #[test]
    fn keepalive_keys_are_read() {
        let text = "[profile.a]\nurl = \"virtgate://a\"\nkeepalive_interval_s = 2\nkeepalive_timeout_s = 3\n";
        let p = Profiles::parse(Path::new("/c/config.toml"), text, None).unwrap();
        let a = &p.profiles["a"];
        assert_eq!(
            (a.keepalive_interval_s, a.keepalive_timeout_s),
            (Some(2), Some(3))
        );
        assert_eq!(parsed().profiles["hv1"].keepalive_interval_s, None);
    }

    #[test]
    fn unknown_keys_are_rejected_with_line_and_column() {
        let text = "[profile.a]\nurl = \"virtgate://a\"\n  cetr = \"x\"\n";
        let e = Profiles::parse(Path::new("/c/config.toml"), text, None).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("config /c/config.toml:3:3: unknown field `cetr`"),
            "{s}"
        );
        let e = Profiles::parse(Path::new("/c/config.toml"), "defualt = 1\n", None).unwrap_err();
        assert!(
            e.to_string().contains(":1:1: unknown field `defualt`"),
            "{e}"
        );
        let e = Profiles::parse(
            Path::new("/c/config.toml"),
            "[profile.a]\nurl = \"x\"\nauth = \"password\"\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains(":3:8:"), "{e}");
    }

    #[test]
    fn default_must_exist() {
        let e = Profiles::parse(Path::new("/c/x.toml"), "default = \"zz\"\n", None).unwrap_err();
        assert!(e.to_string().contains("no profile `zz`"));
    }

    #[test]
    fn config_path_precedence() {
        let mut env = Env {
            home: Some("/home/a".into()),
            ..Default::default()
        };
        assert_eq!(
            env.config_path(),
            (PathBuf::from("/home/a/.config/virtgate/config.toml"), false)
        );
        env.xdg_config_home = Some("/xdg".into());
        assert_eq!(
            env.config_path(),
            (PathBuf::from("/xdg/virtgate/config.toml"), false)
        );
        env.virtgate_config = Some("/etc-free/c.toml".into());
        assert_eq!(env.config_path(), (PathBuf::from("/etc-free/c.toml"), true));
    }

    #[test]
    fn missing_default_file_is_empty_but_explicit_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            xdg_config_home: Some(dir.path().into()),
            ..Default::default()
        };
        let p = Profiles::load(&env).unwrap();
        assert!(!p.exists && p.profiles.is_empty());
        let env = Env {
            virtgate_config: Some(dir.path().join("nope.toml").into()),
            ..Default::default()
        };
        assert!(matches!(
            Profiles::load(&env),
            Err(Error::ConfigRead { .. })
        ));
    }
}
