//! `virtgated demo`: everything needed to try virtgate on one machine, in one folder.
//!
//! [`prepare`] makes a throwaway CA (virtgate-pki), a server certificate for localhost,
//! 127.0.0.1 and ::1, a client certificate for the current user whose key is encrypted with
//! a random passphrase (stored 0600 beside it), and `gateway.toml` with one diskless TCG
//! QEMU domain `demo` that the gateway starts itself and a rule making the user admin.
//! Once the gateway is bound, [`Demo::ready`] writes profile `demo` into the client's
//! config (only `[profile.demo]` changes, with toml_edit) and `DIR/ready` (the URL), and
//! prints what to try. Folder layout: `ca/`, `server/`, `client/`, `vm/`, `run/` (the VM's
//! pidfile and QEMU log), `gateway.toml`, `audit.jsonl`, `ready`. The VM stops with the
//! demo (`stop_domains_on_exit = true`).

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use virtgate_pki::{Ca, ClientOptions, Existing, InitOptions, ServerOptions, Validity};

use crate::listen::Listeners;
use crate::{config, Config, Error};

/// File that marks a folder as made by `virtgated demo` (so a re-run may clear it).
const MARKER: &str = ".virtgate-demo";

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A file or folder of the demo could not be written or cleared.
    #[error("demo: cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The folder exists, is not empty, and was not made by the demo.
    #[error("demo: {} is not empty and was not made by `virtgated demo`", path.display())]
    NotADemoDir {
        /// The folder.
        path: PathBuf,
    },
    /// The certificate authority failed.
    #[error("demo PKI: {0}")]
    Pki(#[from] virtgate_pki::CaError),
    /// The client configuration exists but is not TOML.
    #[error("demo: client config {} is not valid TOML: {detail}", path.display())]
    ClientConfig {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
}

impl DemoError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            DemoError::Write { .. } => Some("choose another folder with --dir".into()),
            DemoError::NotADemoDir { .. } => {
                Some("choose an empty or new folder with --dir".into())
            }
            DemoError::Pki(e) => e.hint(),
            DemoError::ClientConfig { path, .. } => Some(format!(
                "fix {} or point VIRTGATE_CONFIG at another file",
                path.display()
            )),
        }
    }
}

/// A prepared demo: its folder, user and gateway configuration.
#[derive(Debug)]
pub struct Demo {
    /// The demo's folder (absolute).
    pub dir: PathBuf,
    /// The user the client certificate is for.
    pub user: String,
    /// The generated gateway configuration (loaded back through the normal path).
    pub config: Config,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Write {
        path: path.to_owned(),
        source,
    }
}

/// The default folder: `$XDG_RUNTIME_DIR/virtgate-demo`, else `/tmp/virtgate-demo-$USER`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("virtgate-demo"),
        _ => PathBuf::from(format!("/tmp/virtgate-demo-{}", user_name())),
    }
}

/// The current user's name (`$USER`), or `demo` when it is unset or unusable as a CN.
fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| virtgate_pki::names::check_user(u).is_ok())
        .unwrap_or_else(|| "demo".into())
}

/// A fresh (or cleared) demo folder.
fn fresh_dir(dir: &Path) -> Result<(), DemoError> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            if !dir.join(MARKER).exists() {
                return Err(DemoError::NotADemoDir {
                    path: dir.to_owned(),
                });
            }
            std::fs::remove_dir_all(dir).map_err(write_err(dir))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(write_err(dir))?;
    let marker = dir.join(MARKER);
    std::fs::write(&marker, "made by virtgated demo; may be deleted\n").map_err(write_err(&marker))
}

/// `n` random bytes as hex, from the kernel.
fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A TOML string literal.
fn q(s: impl AsRef<str>) -> String {
    toml_edit::Value::from(s.as_ref())
        .to_string()
        .trim()
        .to_owned()
}

/// Make the PKI, the VM's folder and `gateway.toml` in `dir` (default [`default_dir`]).
pub fn prepare(dir: Option<&Path>, listen: &str) -> Result<Demo, Error> {
    let listen_addr: SocketAddr = listen.parse().map_err(|_| {
        Error::Config(config::ConfigError::Invalid {
            path: "--listen".into(),
            problems: vec![config::Invalid {
                key: "--listen".into(),
                message: format!("`{listen}` is not an IP:PORT address"),
                hint: "e.g. --listen 127.0.0.1:0 or --listen [::1]:16520".into(),
            }],
        })
    })?;
    let dir = match dir {
        Some(d) => std::path::absolute(d).map_err(write_err(d))?,
        None => default_dir(),
    };
    fresh_dir(&dir)?;
    let user = user_name();

    // PKI: CA in ca/, server files in server/, the user's files in client/.
    let mut ca = Ca::init(
        &dir.join("ca"),
        &InitOptions {
            name: "virtgate demo CA".into(),
            ..InitOptions::default()
        },
    )
    .map_err(DemoError::from)?;
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if !listen_addr.ip().is_unspecified() && !ips.contains(&listen_addr.ip()) {
        ips.push(listen_addr.ip());
    }
    let server = ca
        .issue_server(&ServerOptions {
            dns: vec!["localhost".into()],
            ips,
            validity: Validity::Days(30),
        })
        .map_err(DemoError::from)?;
    ca.write_server_files(&server, &dir.join("server"), Existing::Replace)
        .map_err(DemoError::from)?;
    let client = ca
        .issue_client(
            &user,
            &ClientOptions {
                validity: Validity::Days(30),
            },
        )
        .map_err(DemoError::from)?;
    let passphrase = random_hex(24).map_err(write_err(Path::new("/dev/urandom")))?;
    let client_dir = dir.join("client");
    ca.write_client_files(&client, &client_dir, Some(&passphrase), Existing::Replace)
        .map_err(DemoError::from)?;
    let pass_file = client_dir.join("passphrase");
    virtgate_pki::files::write_file(
        &pass_file,
        format!("{passphrase}\n").as_bytes(),
        0o600,
        Existing::Replace,
    )
    .map_err(write_err(&pass_file))?;
    let crl = ca.write_crl().map_err(DemoError::from)?;

    // The VM: diskless, TCG, sockets in vm/.
    let vm = dir.join("vm");
    std::fs::create_dir_all(&vm).map_err(write_err(&vm))?;
    let sock = |n: &str| vm.join(n).display().to_string();
    let uuid = random_hex(16).map_err(write_err(Path::new("/dev/urandom")))?;
    let uuid = format!(
        "{}-{}-4{}-8{}-{}",
        &uuid[0..8],
        &uuid[8..12],
        &uuid[13..16],
        &uuid[17..20],
        &uuid[20..32]
    );
    let command = [
        "qemu-system-x86_64".to_owned(),
        "-name".into(),
        "demo".into(),
        "-uuid".into(),
        uuid,
        "-machine".into(),
        "pc,accel=tcg".into(),
        "-m".into(),
        "64".into(),
        "-nodefaults".into(),
        "-vga".into(),
        "std".into(),
        "-display".into(),
        "none".into(),
        "-vnc".into(),
        format!("unix:{}", sock("vnc.sock")),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock("qmp.sock")),
        "-serial".into(),
        format!("unix:{},server=on,wait=off", sock("serial.sock")),
    ];
    let command_list: Vec<String> = command.iter().map(q).collect();
    let d = |p: &str| q(dir.join(p).display().to_string());
    let text = format!(
        "# Made by `virtgated demo`; throwaway.\n\
         [listen]\ntcp = [{listen}]\n\n\
         [tls]\ncert = {cert}\nkey = {key}\nclient_ca = {ca}\ncrl = {crl}\n\n\
         [backend]\nkind = \"qemu\"\nruntime_dir = {run}\nstop_domains_on_exit = true\n\n\
         [[backend.domain]]\nname = \"demo\"\nqmp = {qmp}\nvnc = {vnc}\nserial = {serial}\ncommand = [{command}]\n\n\
         [[rule]]\nwho = [{user}]\ndomains = [\"*\"]\nrole = \"admin\"\n\n\
         [audit]\npath = {audit}\n",
        listen = q(listen_addr.to_string()),
        cert = d("server/server.pem"),
        key = d("server/server.key"),
        ca = d("ca/ca.pem"),
        crl = q(crl.display().to_string()),
        qmp = q(sock("qmp.sock")),
        vnc = q(sock("vnc.sock")),
        serial = q(sock("serial.sock")),
        command = command_list.join(", "),
        user = q(&user),
        audit = d("audit.jsonl"),
        run = d("run"),
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, text).map_err(write_err(&config_path))?;
    let config = config::load(&config_path)?;
    Ok(Demo { dir, user, config })
}

/// Where the client keeps its profiles: `$VIRTGATE_CONFIG`, else
/// `$XDG_CONFIG_HOME/virtgate/config.toml`, else `~/.config/virtgate/config.toml`.
pub fn client_config_path() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("VIRTGATE_CONFIG") {
        return p;
    }
    let base = env("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("virtgate").join("config.toml")
}

/// Set `[profile.demo]` in the client config at `path`, keeping everything else as it was.
pub fn write_profile(path: &Path, url: &str, dir: &Path, user: &str) -> Result<(), DemoError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(write_err(path)(e)),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| DemoError::ClientConfig {
                path: path.to_owned(),
                detail: e.message().to_owned(),
            })?;
    let profiles = doc
        .entry("profile")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| DemoError::ClientConfig {
            path: path.to_owned(),
            detail: "`profile` is not a table".into(),
        })?;
    let s = |p: &str| dir.join(p).display().to_string();
    let mut demo = toml_edit::Table::new();
    demo["url"] = toml_edit::value(url);
    demo["ca"] = toml_edit::value(s("ca/ca.pem"));
    demo["cert"] = toml_edit::value(s(&format!("client/{user}.pem")));
    demo["key"] = toml_edit::value(s(&format!("client/{user}.key")));
    demo["auth"] = toml_edit::value("cert");
    demo["passphrase_command"] = toml_edit::value(format!("cat {}", s("client/passphrase")));
    profiles.insert("demo", toml_edit::Item::Table(demo));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_err(parent))?;
    }
    virtgate_pki::files::write_file(path, doc.to_string().as_bytes(), 0o600, Existing::Replace)
        .map_err(write_err(path))
}

impl Demo {
    /// Called once the gateway is bound: write the client profile and `DIR/ready`, and tell
    /// the user what to try.
    pub fn ready(&self, listeners: &Listeners) -> Result<(), Error> {
        let Some(addr) = listeners.tcp.first().map(|(a, _)| *a) else {
            return Ok(());
        };
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
            }
            _ => addr,
        };
        let url = format!("virtgate://{host}");
        let profile_path = client_config_path();
        write_profile(&profile_path, &url, &self.dir, &self.user)?;
        let ready = self.dir.join("ready");
        std::fs::write(&ready, format!("{url}\n")).map_err(write_err(&ready))?;
        let d = self.dir.display();
        println!(
            "\nvirtgate demo is running: {url} (files in {d})\n\
             profile `demo` written to {profile}\n\n\
             try:\n  virtgate -p demo list\n  virtgate -p demo vnc demo\n  \
             curl --cacert {d}/ca/ca.pem --cert {d}/client/{u}.pem --key {d}/client/{u}.key \
             --pass \"$(cat {d}/client/passphrase)\" https://{host}/v1/domains\n\n\
             Ctrl-C stops the gateway and the VM.",
            profile = profile_path.display(),
            u = self.user,
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_update_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtgate/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "# mine\ndefault = \"hv1\"\n\n[profile.hv1]\nurl = \"virtgate://hv1\" # keep\n\n[profile.demo]\nurl = \"old\"\nextra = 1\n").unwrap();
        write_profile(&path, "virtgate://127.0.0.1:5", Path::new("/d"), "alice").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\ndefault = \"hv1\""), "{text}");
        assert!(text.contains("url = \"virtgate://hv1\" # keep"), "{text}");
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let demo = &doc["profile"]["demo"];
        assert_eq!(demo["url"].as_str(), Some("virtgate://127.0.0.1:5"));
        assert_eq!(demo["key"].as_str(), Some("/d/client/alice.key"));
        assert_eq!(
            demo["passphrase_command"].as_str(),
            Some("cat /d/client/passphrase")
        );
        assert!(demo.get("extra").is_none());
        let fresh = dir.path().join("new/config.toml");
        write_profile(&fresh, "virtgate://[::1]:7", Path::new("/d"), "bob").unwrap();
        assert!(std::fs::read_to_string(&fresh)
            .unwrap()
            .contains("[profile.demo]"));
    }

    #[test]
    fn a_foreign_non_empty_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious"), "x").unwrap();
        assert!(matches!(
            fresh_dir(dir.path()),
            Err(DemoError::NotADemoDir { .. })
        ));
        let demo_dir = dir.path().join("demo");
        fresh_dir(&demo_dir).unwrap();
        std::fs::write(demo_dir.join("old"), "x").unwrap();
        fresh_dir(&demo_dir).unwrap();
        assert!(!demo_dir.join("old").exists());
    }
}
