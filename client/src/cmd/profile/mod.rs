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

use self::checks::{CertFile, KeyMatch};
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
        ProfileCommand::Add(args) => add(global, args, env),
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

/// A profile name usable as `-p NAME` and as a folder name.
fn check_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with(['.', '-']) {
        Some("it starts with `.` or `-`")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Some("it holds a character other than letters, digits and . _ -")
    } else {
        None
    };
    match why {
        Some(why) => Err(SetupFailure::InvalidProfileName {
            name: name.to_owned(),
            why,
        }
        .into()),
        None => Ok(()),
    }
}

/// A flag that does not go with the URL given.
fn not_with(flag: &str, url: &GatewayUrl, why: &str) -> Error {
    Error::Setting {
        message: format!("{flag} does not go with {url}: {why}"),
        hint: format!("leave out {flag}"),
    }
}

/// A flag the URL needs.
fn needs(flag: &str, url: &GatewayUrl, why: &str) -> Error {
    Error::Setting {
        message: format!("profile add for {url} needs {flag}"),
        hint: why.to_owned(),
    }
}

/// A file to copy into the config folder.
struct Copy {
    /// The file as given.
    from: PathBuf,
    /// Where it goes (or is already).
    to: PathBuf,
    /// Whether it must be written (`false`: it is there with the same contents, or it is
    /// inside the config folder already and used where it is).
    write: bool,
}

/// `profile add`.
fn add(global: &GlobalArgs, args: AddArgs, env: &Env) -> Result<(), Error> {
    check_name(&args.name)?;
    let url_text = global.url.clone().ok_or_else(|| Error::Setting {
        message: "profile add needs --url".into(),
        hint: "e.g. --url virtgate://hv1.example.org (TLS), virtgate+ssh://USER@HOST or \
               virtgate+unix:///run/virtgate/virtgate.sock"
            .into(),
    })?;
    let url = GatewayUrl::parse(&url_text)?;
    let config = ConfigFile::read(env)?;
    let mut doc = ConfigDoc::parse(&config.path, &config.text)?;
    if doc.has_profile(&args.name) && !args.force {
        return Err(SetupFailure::ProfileExists {
            name: args.name.clone(),
            config: config.path.clone(),
        }
        .into());
    }
    let mut keys: Vec<(&str, String)> = vec![("url", url_text.clone())];
    let mut copies = Vec::new();
    let mut report = Vec::new();
    match &url {
        GatewayUrl::Tls { .. } => {
            let auth = global.auth.unwrap_or(AuthKind::Cert);
            let ca_path = global.ca.as_ref().ok_or_else(|| {
                needs(
                    "--ca CA.pem",
                    &url,
                    "the CA certificate the admin sent checks the gateway",
                )
            })?;
            let ca = checks::read_cert(ca_path)?;
            copies.push(plan_copy(&config.folder, &args, ca_path, "ca.pem")?);
            report.push(("ca", format!("CA \"{}\"", ca.summary.cn)));
            if auth == AuthKind::Kerberos {
                for (flag, given) in [("--cert", &global.cert), ("--key", &global.key)] {
                    if given.is_some() {
                        return Err(not_with(flag, &url, "Kerberos logs in with your ticket"));
                    }
                }
                keys.push(("auth", "kerberos".into()));
            } else {
                let (Some(cert_path), Some(key_path)) = (&global.cert, &global.key) else {
                    return Err(needs(
                        "--cert USER.pem and --key USER.key",
                        &url,
                        "the certificate the admin signed and the key `virtgate enroll` made \
                         (or --auth kerberos)",
                    ));
                };
                let cert = checks::read_cert(cert_path)?;
                checks::issued_by(&cert, &ca)?;
                let matched = checks::key_matches(&cert, key_path, key_passphrase(global, env)?)?;
                let name = cert_copy_name(cert_path);
                copies.push(plan_copy(&config.folder, &args, cert_path, &name)?);
                report.push(("cert", describe_cert(&cert)));
                report.push(("key", describe_match(key_path, &matched)));
                if let KeyMatch::Unchecked(why) = &matched {
                    eprintln!("note: the key was not compared with the certificate: {why}");
                }
                let key_text = if crate::pkcs11::uri::is_uri(key_path) {
                    key_path.display().to_string()
                } else {
                    written_path(&config.folder, &absolute(key_path))
                };
                keys.push(("key", key_text));
                if let Some(m) = &global.pkcs11_module {
                    keys.push(("pkcs11_module", absolute(m).display().to_string()));
                }
            }
        }
        GatewayUrl::Ssh { .. } | GatewayUrl::Unix { .. } => {
            let why = match url {
                GatewayUrl::Ssh { .. } => "over SSH, sshd authenticates you",
                _ => "the local socket knows you by your user id",
            };
            for (flag, given) in [
                ("--ca", global.ca.is_some()),
                ("--cert", global.cert.is_some()),
                ("--key", global.key.is_some()),
                ("--auth", global.auth.is_some()),
            ] {
                if given {
                    return Err(not_with(flag, &url, why));
                }
            }
        }
    }
    if let Some(ssh_key) = &global.ssh_key {
        if !matches!(url, GatewayUrl::Ssh { .. }) {
            return Err(not_with(
                "--ssh-key",
                &url,
                "it is for virtgate+ssh:// URLs",
            ));
        }
        std::fs::metadata(ssh_key).map_err(|e| Error::File {
            what: "SSH key",
            path: ssh_key.clone(),
            reason: crate::error::io_reason(&e),
        })?;
        keys.push(("ssh_key", written_path(&config.folder, &absolute(ssh_key))));
    }
    // ca and cert in the file's usual order: url, ca, cert, key
    for (at, (copy, key)) in (1..).zip(copies.iter().zip(["ca", "cert"])) {
        keys.insert(at, (key, written_path(&config.folder, &copy.to)));
    }
    if let Some(cmd) = &args.passphrase_command {
        keys.push(("passphrase_command", cmd.clone()));
    }
    let before = doc.profile_names();
    doc.put_profile(&args.name, &keys)?;
    let default = match (args.default, doc.default(), before.as_slice()) {
        (true, _, _) | (false, None, []) => Some(args.name.clone()),
        // the one profile there was is what commands used without -p: keep it so
        (false, None, [only]) if *only != args.name => Some(only.clone()),
        _ => None,
    };
    if let Some(d) = &default {
        doc.set_default(d);
    }
    let text = doc.text()?;
    let written = write_copies(&copies)?;
    if let Err(e) = config.write(&text) {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let is_default = doc.default().as_deref() == Some(args.name.as_str());
    println!(
        "added profile {} to {}{}",
        args.name,
        config.path.display(),
        if is_default { " (the default)" } else { "" }
    );
    println!("  url   {url}");
    for (i, (key, what)) in report.iter().enumerate() {
        let place = match copies.get(i) {
            Some(c) if c.write => format!("{} (copied from {})", c.to.display(), c.from.display()),
            Some(c) => c.to.display().to_string(),
            None => String::new(),
        };
        println!(
            "  {key:<5} {place}{}{what}",
            if place.is_empty() { "" } else { ": " }
        );
    }
    let pick = if is_default {
        String::new()
    } else {
        format!("-p {} ", args.name)
    };
    println!("try it: virtgate {pick}whoami");
    Ok(())
}

/// The key passphrase given on the command line or in the environment, for comparing an
/// encrypted key with its certificate (never prompted for here).
fn key_passphrase(
    global: &GlobalArgs,
    env: &Env,
) -> Result<Option<virtgate_pki::zeroize::Zeroizing<String>>, Error> {
    if let Some(f) = &global.passphrase_file {
        return Ok(Some(virtgate_pki::passphrase::from_file(f)?));
    }
    Ok(env
        .key_passphrase
        .as_ref()
        .map(|v| virtgate_pki::zeroize::Zeroizing::new(v.to_string_lossy().into_owned())))
}

/// The name of the certificate's copy: its own file name (`ca.pem` would clash).
fn cert_copy_name(cert: &Path) -> String {
    match cert.file_name().and_then(|n| n.to_str()) {
        Some(n) if n != "ca.pem" => n.to_owned(),
        _ => "cert.pem".to_owned(),
    }
}

/// Where `file` goes: `CONFIG_DIR/NAME/name`, unless it is in the config folder already
/// or `--no-copy`. Refuses a different file in the way without `--force`.
fn plan_copy(folder: &Path, args: &AddArgs, file: &Path, name: &str) -> Result<Copy, Error> {
    let from = absolute(file);
    let inside = std::fs::canonicalize(&from)
        .ok()
        .zip(std::fs::canonicalize(folder).ok())
        .is_some_and(|(f, c)| f.starts_with(c));
    if args.no_copy || inside {
        return Ok(Copy {
            to: from.clone(),
            from,
            write: false,
        });
    }
    let to = folder.join(&args.name).join(name);
    let write = match (std::fs::read(&to), std::fs::read(&from)) {
        (Ok(there), Ok(new)) if there == new => false,
        (Ok(_), _) if !args.force => {
            return Err(SetupFailure::CopyExists { path: to }.into());
        }
        _ => true,
    };
    Ok(Copy { from, to, write })
}

/// Copies the files planned; returns those written (to remove them again on failure).
fn write_copies(copies: &[Copy]) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for c in copies.iter().filter(|c| c.write) {
        let result =
            c.to.parent()
                .map_or(Ok(false), |d| files::create_dir_mode(d, 0o700))
                .and_then(|_| std::fs::read(&c.from))
                .and_then(|bytes| {
                    files::write_file(&c.to, &bytes, files::PUBLIC_MODE, Existing::Replace)
                });
        if let Err(source) = result {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            return Err(SetupFailure::Write {
                path: c.to.clone(),
                source,
            }
            .into());
        }
        written.push(c.to.clone());
    }
    Ok(written)
}

/// `path` absolute against the current folder.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A path as the profile holds it: relative inside the config folder, else absolute.
fn written_path(folder: &Path, path: &Path) -> String {
    let folder = absolute(folder);
    match path.strip_prefix(&folder) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// A certificate in words: its user, issuer and end of validity.
fn describe_cert(cert: &CertFile) -> String {
    let s = &cert.summary;
    format!(
        "{}, issued by \"{}\", valid until {}",
        s.cn, s.issuer, s.not_after
    )
}

/// A key and how it was matched with the certificate.
fn describe_match(key: &Path, matched: &KeyMatch) -> String {
    let how = match matched {
        KeyMatch::Key => "belongs to the certificate".to_owned(),
        KeyMatch::Request(r) => format!(
            "belongs to the certificate (checked against {})",
            r.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        KeyMatch::Unchecked(_) => "not compared with the certificate".to_owned(),
    };
    format!("{}: {how}", key.display())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names() {
        for ok in ["hv1", "lab-2", "a.b_c"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ü"] {
            let e = check_name(bad).unwrap_err();
            assert!(e.to_string().contains("cannot be a profile name"), "{e}");
            assert!(e.hint().is_some());
        }
    }

    #[test]
    fn paths_inside_the_config_folder_are_relative() {
        assert_eq!(
            written_path(Path::new("/c"), Path::new("/c/hv1/ca.pem")),
            "hv1/ca.pem"
        );
        assert_eq!(
            written_path(Path::new("/c"), Path::new("/elsewhere/k.key")),
            "/elsewhere/k.key"
        );
        assert_eq!(cert_copy_name(Path::new("/d/bob.pem")), "bob.pem");
        assert_eq!(cert_copy_name(Path::new("/d/ca.pem")), "cert.pem");
    }
}
