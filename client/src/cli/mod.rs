//! The command line ([`Cli`], parsed by clap) and its resolution against the profile into
//! [`Settings`], the one struct the rest of the client reads.
//!
//! Precedence: a flag beats the profile, the profile beats the built-in default. `--url`
//! replaces the URL of the profile in use, which is the default one unless `-p NAME` names
//! another: `--url virtgate://10.0.0.5` reaches the default profile's gateway by another
//! address with that profile's `ca`, `cert`, `key` and `auth`. With no profile (or several
//! and no `default`), `--url` needs no profile and the flags say the rest.
//! Paths given as flags are relative to the current folder, paths in a profile relative to
//! the config file's folder.

mod command;

use std::path::PathBuf;

use clap::{Args, Parser};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::passphrase::PassphraseSources;
use crate::profile::{AuthKind, Env, Profiles};
use crate::session::Keepalive;
use crate::url::GatewayUrl;

pub use command::{parse_listen, Command, RemoteCommand};

/// Reach the virtual machines behind a virtgated gateway.
///
/// One connection to the gateway carries every call and console. Profiles live in
/// $XDG_CONFIG_HOME/virtgate/config.toml (~/.config/virtgate/config.toml, or
/// $VIRTGATE_CONFIG), one [profile.NAME] per gateway with url, ca, cert, key and auth; relative
/// paths are relative to that folder. The key passphrase comes from --passphrase-file, then
/// $VIRTGATE_KEY_PASSPHRASE, then the profile's passphrase_command, then a prompt. Exit
/// status: 0 ok, 1 error, 2 usage.
#[derive(Debug, Parser)]
#[command(name = "virtgate", version, max_term_width = 100)]
pub struct Cli {
    /// Flags that say which gateway and how to log in.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which gateway, and how to authenticate; each overrides the profile.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Profile from the config file (default: its `default`)
    #[arg(short = 'p', long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Gateway URL: virtgate://HOST[:PORT], virtgate+ssh://USER@HOST[:PORT][/SOCKET] or
    /// virtgate+unix:///SOCKET. Replaces only the URL of the profile in use (the default one
    /// unless -p), whose ca/cert/key/auth still apply; no profile is needed with this
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// CA certificate (PEM) that verifies the gateway
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM)
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PKCS#8 PEM, may be encrypted), or a key on a token:
    /// pkcs11:token=LABEL;object=KEY
    #[arg(long, global = true, value_name = "FILE|URI")]
    pub key: Option<PathBuf>,
    /// PKCS#11 module (.so) of the token a pkcs11: key is on
    #[arg(long, global = true, value_name = "FILE")]
    pub pkcs11_module: Option<PathBuf>,
    /// How to authenticate
    #[arg(long, global = true, value_enum)]
    pub auth: Option<AuthKind>,
    /// File whose first line is the key passphrase (or the token's PIN)
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// SSH private key to try after the ssh-agent's keys (instead of ~/.ssh/id_*)
    #[arg(long, global = true, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// SSH: trust an unknown host key and store it in ~/.ssh/known_hosts (never a changed one)
    #[arg(long, global = true)]
    pub accept_new_host_key: bool,
    /// Connect directly even when `virtgate up` shares a connection for the profile
    #[arg(long, global = true)]
    pub no_shared: bool,
}

/// The Kerberos service name of a gateway unless the profile says otherwise.
pub const DEFAULT_SERVICE: &str = "HTTP";

/// Everything the transports and commands need, after flags and profile are combined.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the gateway is.
    pub url: GatewayUrl,
    /// The profile used, for messages (`None` with a bare `--url`).
    pub profile: Option<String>,
    /// CA that verifies the gateway (TLS).
    pub ca: Option<PathBuf>,
    /// Client certificate (TLS, `auth = cert`).
    pub cert: Option<PathBuf>,
    /// Client key (TLS, `auth = cert`): a file, or a `pkcs11:` URI
    /// ([`crate::pkcs11::is_uri`]).
    pub key: Option<PathBuf>,
    /// The PKCS#11 module of a `pkcs11:` key (`--pkcs11-module` or `pkcs11_module`).
    pub pkcs11_module: Option<PathBuf>,
    /// How to authenticate.
    pub auth: AuthKind,
    /// Kerberos service name of the gateway (`HTTP`): its principal is `SERVICE/host@REALM`.
    pub service: String,
    /// Where an encrypted key's passphrase comes from.
    pub passphrase: PassphraseSources,
    /// SSH: the key file to try after the agent (`--ssh-key` or the profile's `ssh_key`).
    pub ssh_key: Option<PathBuf>,
    /// SSH: store an unknown host key in known_hosts instead of stopping.
    pub accept_new_host_key: bool,
    /// `$HOME`: where `~/.ssh` is.
    pub home: Option<PathBuf>,
    /// The local user name (`$USER`), the SSH login when the URL names none.
    pub local_user: Option<String>,
    /// How soon a gateway that stopped answering is given up (profile keys
    /// `keepalive_interval_s`, `keepalive_timeout_s`).
    pub keepalive: Keepalive,
}

impl GlobalArgs {
    /// Combine the flags with the selected profile.
    pub fn resolve(&self, profiles: &Profiles, env: &Env) -> Result<Settings, Error> {
        let profile = profiles.select(self.profile.as_deref(), self.url.is_some())?;
        let url_text = match (&self.url, profile) {
            (Some(u), _) => u.clone(),
            (None, Some(p)) => p.url.clone(),
            (None, None) => {
                return Err(Error::NoGateway {
                    config: profiles.path.clone(),
                })
            }
        };
        let url = GatewayUrl::parse(&url_text)?;
        if matches!(url, GatewayUrl::Ssh { .. }) && self.auth == Some(AuthKind::Kerberos) {
            return Err(Error::Setting {
                message: format!("--auth kerberos does not go with the SSH URL {url}"),
                hint: "over SSH, sshd authenticates you (ssh-agent or key files); use a \
                       virtgate://HOST URL for Kerberos single sign-on"
                    .into(),
            });
        }
        let pick = |flag: &Option<PathBuf>, prof: Option<&PathBuf>| flag.clone().or(prof.cloned());
        let keepalive = Keepalive::from_profile(profile)?;
        if let (Some(p), Some(_), None) = (profile, &self.url, &self.profile) {
            tracing::debug!(profile = %p.name, "--url replaces the URL of the default profile; its other settings apply");
        }
        Ok(Settings {
            url,
            profile: profile.map(|p| p.name.clone()),
            ca: pick(&self.ca, profile.and_then(|p| p.ca.as_ref())),
            cert: pick(&self.cert, profile.and_then(|p| p.cert.as_ref())),
            key: pick(&self.key, profile.and_then(|p| p.key.as_ref())),
            pkcs11_module: pick(
                &self.pkcs11_module,
                profile.and_then(|p| p.pkcs11_module.as_ref()),
            ),
            auth: self
                .auth
                .or(profile.and_then(|p| p.auth))
                .unwrap_or(AuthKind::Cert),
            service: profile
                .and_then(|p| p.service.clone())
                .unwrap_or_else(|| DEFAULT_SERVICE.to_owned()),
            passphrase: PassphraseSources {
                file: self.passphrase_file.clone(),
                env: env
                    .key_passphrase
                    .as_ref()
                    .map(|v| Zeroizing::new(v.to_string_lossy().into_owned())),
                command: profile.and_then(|p| p.passphrase_command.clone()),
                handed_out: Default::default(),
            },
            ssh_key: pick(&self.ssh_key, profile.and_then(|p| p.ssh_key.as_ref())),
            accept_new_host_key: self.accept_new_host_key,
            home: env.home.as_ref().map(PathBuf::from),
            local_user: env.user.as_ref().map(|u| u.to_string_lossy().into_owned()),
            keepalive,
        })
    }
}

impl Settings {
    /// "in profile `x`" or "on the command line", for hints that say where to fix a setting.
    pub fn where_to_set(&self, key: &str, flag: &str) -> String {
        match &self.profile {
            Some(p) => format!("set `{key}` in profile `{p}` or pass {flag}"),
            None => format!("pass {flag} (or set `{key}` in a profile)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passphrase::Source;
    use std::path::Path;

    fn profiles() -> Profiles {
        let text = r#"
default = "hv1"
[profile.hv1]
url = "virtgate://hv1.example.org"
ca = "ca.pem"
cert = "alice.pem"
key = "alice.key"
passphrase_command = "pass show hv1"
"#;
        Profiles::parse(Path::new("/cfg/config.toml"), text, None).unwrap()
    }

    #[test]
    fn profile_supplies_everything() {
        let s = GlobalArgs::default()
            .resolve(&profiles(), &Env::default())
            .unwrap();
        assert_eq!(s.url.to_string(), "virtgate://hv1.example.org:16520");
        assert_eq!(s.ca.as_deref(), Some(Path::new("/cfg/ca.pem")));
        assert_eq!(s.key.as_deref(), Some(Path::new("/cfg/alice.key")));
        assert_eq!(s.auth, AuthKind::Cert);
        assert_eq!(
            s.passphrase.source(),
            Source::Command("pass show hv1".into())
        );
    }

    #[test]
    fn flags_override_the_profile() {
        let g = GlobalArgs {
            profile: Some("hv1".into()),
            url: Some("virtgate://[::1]:7".into()),
            cert: Some("me.pem".into()),
            passphrase_file: Some("pw".into()),
            auth: Some(AuthKind::Kerberos),
            ..Default::default()
        };
        let env = Env {
            key_passphrase: Some("x".into()),
            ..Default::default()
        };
        let s = g.resolve(&profiles(), &env).unwrap();
        assert_eq!(s.url.authority(), "[::1]:7");
        assert_eq!(s.cert.as_deref(), Some(Path::new("me.pem")));
        assert_eq!(s.key.as_deref(), Some(Path::new("/cfg/alice.key")));
        assert_eq!(s.auth, AuthKind::Kerberos);
        assert_eq!(s.passphrase.source(), Source::File("pw".into()));
    }

    #[test]
    fn auth_and_service_come_from_profile_or_flag() {
        let text =
            "[profile.k]\nurl = \"virtgate://gw\"\nauth = \"kerberos\"\nservice = \"host\"\n\
                    [profile.c]\nurl = \"virtgate://gw\"\n";
        let p = Profiles::parse(Path::new("/cfg/config.toml"), text, None).unwrap();
        let k = GlobalArgs {
            profile: Some("k".into()),
            ..Default::default()
        };
        let s = k.resolve(&p, &Env::default()).unwrap();
        assert_eq!((s.auth, s.service.as_str()), (AuthKind::Kerberos, "host"));
        let forced = GlobalArgs {
            auth: Some(AuthKind::Cert),
            ..k
        };
        assert_eq!(
            forced.resolve(&p, &Env::default()).unwrap().auth,
            AuthKind::Cert
        );
        let c = GlobalArgs {
            profile: Some("c".into()),
            auth: Some(AuthKind::Kerberos),
            ..Default::default()
        };
        let s = c.resolve(&p, &Env::default()).unwrap();
        assert_eq!((s.auth, s.service.as_str()), (AuthKind::Kerberos, "HTTP"));
        let cli = Cli::try_parse_from(["virtgate", "--auth", "kerberos", "whoami"]).unwrap();
        assert_eq!(cli.global.auth, Some(AuthKind::Kerberos));
    }

    #[test]
    fn url_alone_keeps_the_default_profile_and_needs_none() {
        let g = GlobalArgs {
            url: Some("virtgate://10.0.0.1".into()),
            ..Default::default()
        };
        // the same gateway by another address: the default profile's files still apply
        let s = g.resolve(&profiles(), &Env::default()).unwrap();
        assert_eq!(s.url.authority(), "10.0.0.1:16520");
        assert_eq!(
            (s.profile.as_deref(), s.key),
            (Some("hv1"), Some("/cfg/alice.key".into()))
        );
        // flags still beat it; with no profile at all they say everything
        let own = GlobalArgs {
            ca: Some("my-ca.pem".into()),
            ..g.clone()
        };
        let s = own.resolve(&profiles(), &Env::default()).unwrap();
        assert_eq!(s.ca.as_deref(), Some(Path::new("my-ca.pem")));
        let s = g.resolve(&Profiles::default(), &Env::default()).unwrap();
        assert!(s.profile.is_none() && s.ca.is_none());
    }

    #[test]
    fn keepalive_comes_from_the_profile() {
        let s = GlobalArgs::default()
            .resolve(&profiles(), &Env::default())
            .unwrap();
        assert_eq!(s.keepalive, Keepalive::default());
        let text = "[profile.k]\nurl = \"virtgate://gw\"\nkeepalive_timeout_s = 0\n";
        let p = Profiles::parse(Path::new("/cfg/config.toml"), text, None).unwrap();
        let e = GlobalArgs::default().resolve(&p, &Env::default());
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("keepalive_timeout_s = 0"));
    }

    #[test]
    fn nothing_configured_says_how_to_make_a_profile() {
        let p = Profiles {
            path: "/home/a/.config/virtgate/config.toml".into(),
            ..Default::default()
        };
        let e = GlobalArgs::default()
            .resolve(&p, &Env::default())
            .unwrap_err();
        assert!(e.to_string().contains("no --url"), "{e}");
        let h = e.hint().unwrap();
        assert!(
            h.contains("[profile.hv1]") && h.contains("virtgated demo"),
            "{h}"
        );
        assert!(h.contains("/home/a/.config/virtgate/config.toml"), "{h}");
    }

    #[test]
    fn bad_url_is_reported_with_hint() {
        let g = GlobalArgs {
            url: Some("http://x".into()),
            ..Default::default()
        };
        let e = g
            .resolve(&Profiles::default(), &Env::default())
            .unwrap_err();
        assert!(e.to_string().contains("unknown scheme `http`"));
        assert!(e.hint().unwrap().contains("virtgate://HOST"));
    }

    #[test]
    fn ssh_settings_from_flags_profile_and_env() {
        let text = "[profile.s]\nurl = \"virtgate+ssh://hv2\"\nssh_key = \"k/id\"\n\
                    auth = \"kerberos\"\n";
        let p = Profiles::parse(Path::new("/cfg/config.toml"), text, None).unwrap();
        let env = Env {
            home: Some("/home/a".into()),
            user: Some("alice".into()),
            ..Default::default()
        };
        let s = GlobalArgs::default().resolve(&p, &env).unwrap();
        assert_eq!(s.ssh_key.as_deref(), Some(Path::new("/cfg/k/id")));
        assert_eq!(s.home.as_deref(), Some(Path::new("/home/a")));
        assert_eq!(s.local_user.as_deref(), Some("alice"));
        assert!(!s.accept_new_host_key);
        let cli = Cli::try_parse_from([
            "virtgate",
            "whoami",
            "--ssh-key",
            "mine",
            "--accept-new-host-key",
        ])
        .unwrap();
        let s = cli.global.resolve(&p, &env).unwrap();
        assert_eq!(s.ssh_key.as_deref(), Some(Path::new("mine")));
        assert!(s.accept_new_host_key);
        // the profile's auth is ignored over SSH, the flag is an error
        let g = GlobalArgs {
            auth: Some(AuthKind::Kerberos),
            ..Default::default()
        };
        let e = g.resolve(&p, &env).unwrap_err();
        assert!(e.to_string().contains("--auth kerberos"), "{e}");
        assert!(e.hint().unwrap().contains("sshd authenticates"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "virtgate",
            "vnc",
            "vm1",
            "--no-viewer",
            "--url",
            "virtgate://[::1]:5",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("virtgate://[::1]:5"));
        assert!(
            Cli::try_parse_from(["virtgate", "vnc", "vm1", "--no-viewer", "--viewer", "x"])
                .is_err()
        );
    }
}
