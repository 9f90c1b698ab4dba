//! `virtgate profile …`: the config file written for the user, so that nobody edits TOML
//! by hand.
//!
//! ```text
//! virtgate profile add NAME --url URL [--ca F --cert F --key F] [--auth cert|kerberos]
//!                  [--ssh-key F] [--passphrase-command CMD] [--default] [--force] [--no-copy]
//! virtgate profile list [--json] | show NAME | remove NAME
//! ```
//!
//! `add` checks first what would fail later ([`checks`]: the URL, the files for that kind
//! of URL, certificate ↔ key, certificate ↔ CA, the name not taken unless `--force`),
//! then copies the CA and the certificate the admin sent into `CONFIG_DIR/NAME/` (unless
//! they are inside the config folder already, or `--no-copy`), so that the profile does
//! not depend on ~/Downloads; the key is never copied (it stays where `enroll` made it).
//! Paths inside the config folder are written relative to it, others absolute. The first
//! profile becomes the `default`; adding a second to a file without `default` makes the
//! one that was there the default, so that commands without `-p` keep working.
//!
//! The config file ([`edit`]) keeps the user's comments and other profiles, is created
//! 0600 in a folder made 0700 when missing (an existing file keeps its mode), is written
//! atomically (through a symlink to its target), and is never left half-written: when the
//! config cannot be written, the files copied for it are removed again. `remove` deletes
//! the profile, the files `add` copied for it, and a `default` naming it; never a key.

mod add;
pub mod checks;
pub mod edit;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use virtgate_pki::files::{self, Existing};

use crate::cli::GlobalArgs;
use crate::cmd::enroll::config_folder;
use crate::error::{Error, SetupFailure};
use crate::profile::{AuthKind, Env, Profiles};
use crate::url::GatewayUrl;

use self::add::{absolute, describe_cert};
use self::edit::ConfigDoc;

/// The `virtgate profile` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfileCommand {
    /// Add a gateway: `profile add NAME --url URL --ca CA.pem --cert USER.pem --key USER.key`
    ///
    /// Checks the files first (certificate against key and CA), copies the CA and the
    /// certificate into CONFIG_DIR/NAME/, and writes [profile.NAME] into the config file.
    Add(AddArgs),
    /// List the profiles (* marks the default)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one profile's settings and what its certificate and key are
    Show {
        /// The profile
        name: String,
    },
    /// Remove a profile (and the files `add` copied for it; never a key)
    Remove {
        /// The profile
        name: String,
    },
}

/// `profile add` (with the global --url, --ca, --cert, --key, --auth, --ssh-key).
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The profile's name, what `-p NAME` picks (e.g. the gateway's host name)
    pub name: String,
    /// Make it the default profile (the first profile is anyway)
    #[arg(long)]
    pub default: bool,
    /// Replace a profile of that name (and files copied for it)
    #[arg(long)]
    pub force: bool,
    /// Refer to --ca and --cert where they are instead of copying them to CONFIG_DIR/NAME/
    #[arg(long)]
    pub no_copy: bool,
    /// Shell command whose first stdout line is the key passphrase (e.g. `pass show hv1`)
    #[arg(long, value_name = "CMD")]
    pub passphrase_command: Option<String>,
}

/// Run a `virtgate profile` command.
pub fn run(global: &GlobalArgs, command: ProfileCommand, env: &Env) -> Result<(), Error> {
    match command {
        ProfileCommand::Add(args) => add::add(global, args, env),
        ProfileCommand::List { json } => list(env, json),
        ProfileCommand::Show { name } => show(env, &name),
        ProfileCommand::Remove { name } => remove(env, &name),
    }
}

/// The config file as found on disk.
struct ConfigFile {
    /// Where to write it (a symlink's target).
    path: PathBuf,
    /// The folder relative profile paths start from (the config file's as named).
    folder: PathBuf,
    /// Its text (empty when it does not exist yet).
    text: String,
    /// Its mode, to keep; `None` when it does not exist yet.
    mode: Option<u32>,
}

impl ConfigFile {
    /// Reads the config file the environment names; a missing one is empty.
    fn read(env: &Env) -> Result<ConfigFile, Error> {
        let (named, _) = env.config_path();
        let folder = config_folder(env);
        let path = std::fs::canonicalize(&named).unwrap_or(named);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .ok();
                Ok(ConfigFile {
                    path,
                    folder,
                    text,
                    mode,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile {
                path,
                folder,
                text: String::new(),
                mode: None,
            }),
            Err(source) => Err(Error::ConfigRead { path, source }),
        }
    }

    /// Writes `text` atomically (0600 and a 0700 folder when new).
    fn write(&self, text: &str) -> Result<(), Error> {
        let folder = self.path.parent().unwrap_or(Path::new("."));
        let failed = |path: &Path, source| SetupFailure::Write {
            path: path.to_owned(),
            source,
        };
        files::create_dir_mode(folder, 0o700).map_err(|e| failed(folder, e))?;
        let mode = self.mode.unwrap_or(0o600);
        files::write_file(&self.path, text.as_bytes(), mode, Existing::Replace)
            .map_err(|e| failed(&self.path, e).into())
    }
}

/// `profile list`.
fn list(env: &Env, json: bool) -> Result<(), Error> {
    let profiles = Profiles::load(env)?;
    let is_default = |name: &str| {
        profiles.default.as_deref() == Some(name)
            || (profiles.default.is_none() && profiles.profiles.len() == 1)
    };
    if json {
        let out: Vec<serde_json::Value> = profiles
            .profiles
            .values()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "default": is_default(&p.name),
                    "url": p.url,
                    "auth": auth_of(p),
                    "ca": p.ca,
                    "cert": p.cert,
                    "key": p.key,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&out).unwrap_or_default();
        println!("{text}");
        return Ok(());
    }
    if profiles.profiles.is_empty() {
        println!(
            "no profiles in {}: add one with `virtgate profile add NAME --url URL …`",
            profiles.path.display()
        );
        return Ok(());
    }
    let width = profiles
        .profiles
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let url_width = profiles
        .profiles
        .values()
        .map(|p| p.url.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "  {:<width$}  {:<url_width$}  {:<8}  CERTIFICATE",
        "NAME", "URL", "AUTH"
    );
    for p in profiles.profiles.values() {
        let mark = if is_default(&p.name) { '*' } else { ' ' };
        let cert = match (&p.cert, auth_of(p)) {
            (Some(c), "cert") => match checks::read_cert(c) {
                Ok(c) => format!("{}, valid until {}", c.summary.cn, c.summary.not_after),
                Err(e) => format!("unusable: {e}"),
            },
            _ => "-".to_owned(),
        };
        println!(
            "{mark} {:<width$}  {:<url_width$}  {:<8}  {cert}",
            p.name,
            p.url,
            auth_of(p)
        );
    }
    Ok(())
}

/// How a profile logs in, in one word.
fn auth_of(p: &crate::profile::Profile) -> &'static str {
    match GatewayUrl::parse(&p.url) {
        Ok(GatewayUrl::Ssh { .. }) => "ssh",
        Ok(GatewayUrl::Unix { .. }) => "unix",
        _ if p.auth == Some(AuthKind::Kerberos) => "kerberos",
        _ => "cert",
    }
}

/// `profile show NAME`.
fn show(env: &Env, name: &str) -> Result<(), Error> {
    let profiles = Profiles::load(env)?;
    let Some(p) = profiles.select(Some(name), false)? else {
        return Ok(());
    };
    let default = profiles.default.as_deref() == Some(name);
    println!(
        "profile {name}{} in {}",
        if default { " (the default)" } else { "" },
        profiles.path.display()
    );
    println!("  url                 {}", p.url);
    println!("  auth                {}", auth_of(p));
    let file = |path: &Path, what: String| format!("{} ({what})", path.display());
    if let Some(ca) = &p.ca {
        let what = checks::read_cert(ca)
            .map(|c| format!("CA \"{}\"", c.summary.cn))
            .unwrap_or_else(|e| format!("unusable: {e}"));
        println!("  ca                  {}", file(ca, what));
    }
    if let Some(cert) = &p.cert {
        let what = checks::read_cert(cert)
            .map(|c| describe_cert(&c))
            .unwrap_or_else(|e| format!("unusable: {e}"));
        println!("  cert                {}", file(cert, what));
    }
    if let Some(key) = &p.key {
        let what = if crate::pkcs11::uri::is_uri(key) {
            "on a PKCS#11 token".to_owned()
        } else {
            match virtgate_pki::is_encrypted(key) {
                Ok(true) => "encrypted".to_owned(),
                Ok(false) => "NOT encrypted".to_owned(),
                Err(e) => format!("unusable: {e}"),
            }
        };
        println!("  key                 {}", file(key, what));
    }
    let optional = [
        ("service", p.service.clone()),
        ("passphrase_command", p.passphrase_command.clone()),
        (
            "ssh_key",
            p.ssh_key.as_ref().map(|k| k.display().to_string()),
        ),
        (
            "keepalive_interval_s",
            p.keepalive_interval_s.map(|v| v.to_string()),
        ),
        (
            "keepalive_timeout_s",
            p.keepalive_timeout_s.map(|v| v.to_string()),
        ),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            println!("  {key:<20}{v}");
        }
    }
    Ok(())
}

/// `profile remove NAME`.
fn remove(env: &Env, name: &str) -> Result<(), Error> {
    let config = ConfigFile::read(env)?;
    let profiles = Profiles::parse(
        &config.path,
        &config.text,
        env.home.as_deref().map(Path::new),
    )?;
    let Some(profile) = profiles.select(Some(name), false)?.cloned() else {
        return Ok(());
    };
    let mut doc = ConfigDoc::parse(&config.path, &config.text)?;
    let (_, was_default) = doc.remove_profile(name);
    config.write(&doc.text()?)?;
    println!("removed profile {name} from {}", config.path.display());
    if was_default {
        println!("it was the default: pick another with `virtgate profile add NAME … --default` or -p NAME");
    }
    // the copies `add` made for it, in CONFIG_DIR/NAME/; never a key
    let own = absolute(&config.folder.join(name));
    for file in [&profile.ca, &profile.cert].into_iter().flatten() {
        if file.starts_with(&own) && std::fs::remove_file(file).is_ok() {
            println!("removed {}", file.display());
        }
    }
    let _ = std::fs::remove_dir(&own);
    if let Some(key) = &profile.key {
        println!("kept the key {}", key.display());
    }
    Ok(())
}
