//! The `virtgate-pki` command line: flags (clap) and what each command does.
//!
//! Passphrases, in order:
//! - CA key (`init` encrypts with it; other commands unlock with it):
//!   `--ca-passphrase-file` (or `init --passphrase-file`), then `VIRTGATE_CA_PASSPHRASE`,
//!   then a prompt when `ca.key` is encrypted. `init` with none of them leaves `ca.key`
//!   unencrypted (0600) and says so.
//! - client key (`issue-client`): `--no-passphrase`, `--passphrase-file`, then
//!   `VIRTGATE_KEY_PASSPHRASE`, then a prompt (twice).
//! - `export-p12` (`export.rs`): the key's as for `issue-client` (one prompt); the .p12's
//!   `--p12-passphrase-file`, then `VIRTGATE_P12_PASSPHRASE`, then `--same-passphrase`,
//!   then a prompt (twice). It is the one command that needs no `--dir`.
//!
//! `sign-csr` (`sign.rs`) signs only a request for the user expected: `--expect USER`, or
//! the admin's `y` on the terminal after seeing the CN and the key's fingerprint.
//!
//! Files: the CA folder is private (0700); `issue-server --out DIR` writes the gateway's
//! files to DIR shared with the gateway's group (`--group`, default `virtgate`) and
//! publishes the CRL there (`publish.rs`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ca::CA_CERT;
use crate::share::GroupChoice;
use crate::zeroize::Zeroizing;
use crate::{
    passphrase, Ca, ClientOptions, Existing, InitOptions, KeyFileError, ServerOptions, Validity,
};
use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Environment variable holding the CA key's passphrase.
const CA_PASSPHRASE_ENV: &str = "VIRTGATE_CA_PASSPHRASE";
/// Environment variable holding a new client key's passphrase.
const KEY_PASSPHRASE_ENV: &str = "VIRTGATE_KEY_PASSPHRASE";

/// virtgate's certificate authority: issue, sign and revoke the certificates of a
/// gateway and its users.
///
/// The CA lives in one private folder (--dir, 0700: ca.pem, ca.key, index.json, crl.pem).
/// `issue-server --out /etc/virtgate/pki` writes the gateway's certificate and key to a
/// folder its service group may read, and publishes the CRL there; `revoke` and `crl`
/// rewrite every published CRL. Encrypt ca.key: `init --passphrase-file FILE`.
#[derive(Debug, Parser)]
#[command(name = "virtgate-pki", version, max_term_width = 100)]
pub struct Cli {
    /// Folder holding the CA (ca.pem, ca.key, index.json, crl.pem)
    #[arg(long, global = true, env = "VIRTGATE_PKI_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,

    /// File whose first line is the CA key's passphrase (else $VIRTGATE_CA_PASSPHRASE, else a prompt)
    #[arg(long, global = true, value_name = "FILE")]
    ca_passphrase_file: Option<PathBuf>,

    /// What to do
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA in --dir (0700; missing parents 0755)
    Init {
        /// The CA's name (CN of its certificate)
        #[arg(long, default_value = "virtgate CA")]
        name: String,
        /// Validity of the CA certificate in days
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Encrypt ca.key with the passphrase on this file's first line
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Issue a gateway (TLS server) certificate: OUT/server.pem, OUT/server.key, OUT/ca.pem
    /// and OUT/crl.pem
    ///
    /// OUT (0750) and server.key (0640) belong to --group, so that the gateway's service
    /// user can read them and nothing else of the CA; OUT/crl.pem is rewritten by every
    /// later `revoke` and `crl`.
    IssueServer {
        /// DNS name clients use to reach the gateway (repeatable)
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// IP address clients use to reach the gateway, IPv4 or IPv6 (repeatable)
        #[arg(long, value_name = "ADDRESS", value_parser = parse_ip)]
        ip: Vec<IpAddr>,
        /// Folder to write to, e.g. /etc/virtgate/pki (default: the CA folder, which stays
        /// private: only for a gateway running as the CA's owner)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Group that may read OUT and server.key (default: `virtgate` when it exists)
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Validity in days
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Issue a user's certificate: OUT/USER.pem, OUT/USER.key (encrypted), OUT/ca.pem
    IssueClient {
        /// The user name (the certificate's CN, the identity the gateway sees)
        user: String,
        /// Folder to write to
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Encrypt USER.key with the passphrase on this file's first line
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Write USER.key unencrypted (still mode 0600)
        #[arg(long, conflicts_with = "passphrase_file")]
        no_passphrase: bool,
        /// Validity in days
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace existing files
        #[arg(long)]
        force: bool,
    },
    /// Sign a certificate request (PEM) as a client certificate; the user is its CN
    ///
    /// Nothing is signed unless the request is for the user expected: --expect USER, or
    /// on a terminal its CN and key fingerprint are shown and you confirm.
    SignCsr {
        /// The request, e.g. USER.csr from `virtgate enroll USER`, or from `openssl req -new
        /// -key USER.key -subj /CN=USER`
        file: PathBuf,
        /// Where to write the certificate (PEM)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The user the request must be for (its CN); without it you are asked on the terminal
        #[arg(long, value_name = "USER")]
        expect: Option<String>,
        /// Validity in days
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Write a PKCS#12 file (.p12) for a browser: a certificate, its key and the CA
    /// certificate (no --dir needed)
    ExportP12(crate::export::ExportP12),
    /// Revoke every certificate of a user, or one serial; rewrites DIR/crl.pem and every
    /// published copy
    Revoke {
        /// A user name (CN) or a serial number in hex
        target: String,
        /// Reason recorded in the CRL
        #[arg(long, default_value = "unspecified", value_parser = clap::builder::PossibleValuesParser::new(crate::crl::REASONS))]
        reason: String,
    },
    /// Sign a fresh CRL into DIR/crl.pem and every published copy (run it before the
    /// current one's nextUpdate, 30 days ahead: e.g. monthly from virtgate-crl.timer)
    Crl {
        /// Also write it here, now and at every later `revoke` and `crl`
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List every certificate issued, with its status
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Accepts `::1`, `[::1]` and `127.0.0.1`.
fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        // export-p12 runs where the key is (a laptop): it needs no CA folder
        let command = match self.command {
            Command::ExportP12(args) => return crate::export::run(args, self.dir.as_deref()),
            command => command,
        };
        let Some(dir) = self.dir.clone() else {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the CA folder is missing: pass --dir DIR or set VIRTGATE_PKI_DIR",
                )
                .exit();
        };
        let ca_pass_file = self.ca_passphrase_file.clone();
        let open = |dir: &Path| -> Result<Ca> {
            let key_path = dir.join(crate::ca::CA_KEY);
            let mut ask = || ca_passphrase(ca_pass_file.as_deref(), &key_path);
            Ok(Ca::open(dir, &mut ask)?)
        };
        match command {
            Command::Init {
                name,
                days,
                passphrase_file,
            } => init(
                &dir,
                name,
                days,
                passphrase_file.or(self.ca_passphrase_file),
            ),
            Command::IssueServer {
                dns,
                ip,
                out,
                group,
                days,
                force,
            } => {
                let opts = ServerOptions {
                    dns,
                    ips: ip,
                    validity: Validity::Days(days),
                };
                opts.check().context("issue-server")?;
                let mut ca = open(&dir)?;
                let out = out.unwrap_or_else(|| dir.clone());
                let existing = existing(force);
                let choice = group.map_or(GroupChoice::Default, GroupChoice::Named);
                let group = choice.resolve().context("issue-server")?;
                ca.check_out(&out, "server", existing)
                    .context("issue-server")?;
                let issued = ca.issue_server(&opts).context("issue-server")?;
                let files = ca
                    .write_server_files_shared(&issued, &out, existing, group.as_ref())
                    .context("issue-server")?;
                println!(
                    "issued server certificate {} for {} (serial {}, valid until {})",
                    issued.entry.cn,
                    issued.entry.sans.join(", "),
                    issued.entry.serial,
                    date(issued.entry.not_after)
                );
                print_written(&files.written);
                report_sharing(&out, &files);
                Ok(())
            }
            Command::IssueClient {
                user,
                out,
                passphrase_file,
                no_passphrase,
                days,
                force,
            } => {
                let ctx = format!("issue-client {user}");
                let mut ca = open(&dir).context(ctx.clone())?;
                crate::names::check_user(&user).context(ctx.clone())?;
                let existing = existing(force);
                ca.check_out(&out, &user, existing).context(ctx.clone())?;
                let pass = client_passphrase(&user, passphrase_file.as_deref(), no_passphrase)
                    .context(ctx.clone())?;
                let opts = ClientOptions {
                    validity: Validity::Days(days),
                };
                let issued = ca.issue_client(&user, &opts).context(ctx.clone())?;
                let written = ca
                    .write_client_files(&issued, &out, pass.as_ref().map(|p| p.as_str()), existing)
                    .context(ctx)?;
                println!(
                    "issued client certificate for {user} (serial {}, valid until {}); key {}",
                    issued.entry.serial,
                    date(issued.entry.not_after),
                    if pass.is_some() {
                        "encrypted"
                    } else {
                        "NOT encrypted"
                    }
                );
                print_written(&written);
                Ok(())
            }
            Command::SignCsr {
                file,
                out,
                expect,
                days,
                force,
            } => crate::sign::run(
                crate::sign::SignCsr {
                    file,
                    out,
                    days,
                    force,
                    expect,
                },
                || open(&dir),
            ),
            Command::ExportP12(args) => crate::export::run(args, Some(&dir)),
            Command::Revoke { target, reason } => {
                let mut ca = open(&dir)?;
                let revoked = ca
                    .revoke(&target, &reason)
                    .with_context(|| format!("revoke {target}"))?;
                let serials: Vec<&str> = revoked.iter().map(|e| e.serial.as_str()).collect();
                let noun = if revoked.len() == 1 {
                    "certificate"
                } else {
                    "certificates"
                };
                println!(
                    "revoked {} {noun} of {}: {}",
                    revoked.len(),
                    revoked.first().map(|e| e.cn.as_str()).unwrap_or(&target),
                    serials.join(", ")
                );
                let mut written = vec![dir.join(crate::ca::CRL)];
                written.extend(ca.crl_copies().iter().cloned());
                print_written(&written);
                println!(
                    "reload the gateway so that it reads the new CRL: `systemctl reload \
                     virtgated` (or `rc-service virtgated reload`)"
                );
                Ok(())
            }
            Command::Crl { out } => {
                let mut ca = open(&dir)?;
                let own = dir.join(crate::ca::CRL);
                // `--out DIR/crl.pem` is the CA's own file, not a copy.
                if let Some(out) = out.filter(|o| !same_file(o, &own)) {
                    let path = ca.publish_crl_to(&out).context("crl")?;
                    println!(
                        "every later `revoke` and `crl` also writes {}",
                        path.display()
                    );
                }
                let written = ca.write_crl_everywhere().context("crl")?;
                print_written(&written);
                Ok(())
            }
            Command::List { json } => list(&dir, json),
        }
    }
}

/// `init`: creates the CA.
fn init(dir: &Path, name: String, days: u32, pass_file: Option<PathBuf>) -> Result<()> {
    let passphrase = match pass_file {
        Some(f) => Some(passphrase::from_file(&f)?),
        None => passphrase::from_env(CA_PASSPHRASE_ENV).transpose()?,
    };
    let encrypted = passphrase.is_some();
    let opts = InitOptions {
        name,
        passphrase,
        validity: Validity::Days(days),
    };
    let ca = Ca::init(dir, &opts).context("init")?;
    println!("created CA \"{}\" in {}", opts.name, ca.dir().display());
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).map_or(0, |m| m.permissions().mode() & 0o777);
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is mode {mode:04o}: other users may enter the CA folder; `chmod 0700 {}`",
                dir.display(),
                dir.display()
            );
        }
    }
    print_written(&[
        dir.join(CA_CERT),
        dir.join(crate::ca::CA_KEY),
        dir.join(crate::ca::INDEX),
        dir.join(crate::ca::CRL),
    ]);
    if !encrypted {
        eprintln!(
            "warning: {} is NOT encrypted: anyone who reads it (a backup, a copy of the disk) \
             can issue certificates that the gateway accepts",
            dir.join(crate::ca::CA_KEY).display()
        );
        eprintln!(
            "hint: make the CA again with `--passphrase-file FILE` (the passphrase on its first \
             line; keep FILE off this machine), or encrypt this key in place: `(umask 077; \
             openssl pkcs8 -topk8 -v2 aes-256-cbc -in ca.key -out ca.key.new) && mv \
             ca.key.new ca.key`"
        );
    }
    Ok(())
}

/// `list`: the index as a table or JSON.
fn list(dir: &Path, json: bool) -> Result<()> {
    let index = Ca::load_index(dir)?;
    let now = OffsetDateTime::now_utc();
    if json {
        let mut out = Vec::new();
        for e in &index.certs {
            let mut v = serde_json::to_value(e)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("status".into(), e.status(now).to_string().into());
            }
            out.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if index.certs.is_empty() {
        println!("no certificates issued yet");
        return Ok(());
    }
    let cn_width = index
        .certs
        .iter()
        .map(|e| e.cn.len())
        .max()
        .unwrap_or(2)
        .max(2);
    println!(
        "{:<32}  {:<6}  {:<cn_width$}  {:<20}  STATUS",
        "SERIAL", "KIND", "CN", "NOT AFTER"
    );
    for e in &index.certs {
        println!(
            "{:<32}  {:<6}  {:<cn_width$}  {:<20}  {}",
            e.serial,
            e.kind.to_string(),
            e.cn,
            date(e.not_after),
            e.status(now)
        );
    }
    Ok(())
}

/// The CA key's passphrase, from the first source that has one.
fn ca_passphrase(file: Option<&Path>, key: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    if let Some(f) = file {
        return passphrase::from_file(f);
    }
    if let Some(p) = passphrase::from_env(CA_PASSPHRASE_ENV) {
        return p;
    }
    passphrase::prompt(
        &format!("Passphrase for {}: ", key.display()),
        "pass --ca-passphrase-file FILE or set VIRTGATE_CA_PASSPHRASE",
    )
}

/// The passphrase for a new client key; `None` for an unencrypted key.
fn client_passphrase(
    user: &str,
    file: Option<&Path>,
    none: bool,
) -> Result<Option<Zeroizing<String>>, KeyFileError> {
    if none {
        return Ok(None);
    }
    if let Some(f) = file {
        return passphrase::from_file(f).map(Some);
    }
    if let Some(p) = passphrase::from_env(KEY_PASSPHRASE_ENV) {
        return p.map(Some);
    }
    passphrase::prompt_new(
        &format!("New passphrase for {user}.key: "),
        "pass --passphrase-file FILE, set VIRTGATE_KEY_PASSPHRASE, or use --no-passphrase",
    )
    .map(Some)
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Tells the admin who may read the server files, and what to do when nobody but their
/// owner can.
fn report_sharing(out: &Path, files: &crate::publish::ServerFiles) {
    if files.in_ca_folder {
        eprintln!(
            "warning: the server files are in the CA folder {}, which stays private (0700): \
             a gateway running as another user (the `virtgate` service) cannot read them",
            out.display()
        );
        eprintln!(
            "hint: issue them into the gateway's folder instead: `--out /etc/virtgate/pki --force`"
        );
        return;
    }
    match &files.group {
        Some(g) => println!(
            "{} and server.key are readable by group {} (gid {})",
            out.display(),
            g.name,
            g.gid
        ),
        None => eprintln!(
            "note: no `{}` group and no --group: server.key (0600) is readable by its owner only; \
             install the virtgate package or pass --group NAME for the gateway's group",
            crate::share::SERVICE_GROUP
        ),
    }
    if files.folder_untouched {
        eprintln!(
            "note: {} holds other files, so its own group and mode were left as they are",
            out.display()
        );
    }
}

/// Maps `--force` to what to do with existing files.
fn existing(force: bool) -> Existing {
    Existing::from_force(force)
}

/// A date as RFC 3339 (UTC, seconds).
pub(crate) fn date(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Prints the files written, one a line.
fn print_written(paths: &[PathBuf]) {
    for p in paths {
        println!("wrote {}", p.display());
    }
}
