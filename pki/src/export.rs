//! `virtgate-pki export-p12`: a user's certificate and key as one PKCS#12 file for a
//! browser, made where the key is (the laptop); no CA folder is needed.
//!
//! Steps, each failing before anything is written: read the certificate, the CA
//! certificate and the key (unlocked with its passphrase: `--passphrase-file`, then
//! `$VIRTGATE_KEY_PASSPHRASE`, then a prompt); check that the certificate belongs to the
//! key and that a gateway trusting the CA accepts it; get the .p12 password
//! (`--p12-passphrase-file`, then `$VIRTGATE_P12_PASSPHRASE`, then `--same-passphrase`
//! for the key's own, then a prompt asked twice); write the file 0600 ([`crate::p12`]).
//!
//! The CA certificate is `--ca`, else the CA folder's `ca.pem` when `--dir` is given, else
//! `ca.pem` next to the certificate (where `issue-client` and `virtgate profile add` put
//! it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use zeroize::Zeroizing;

use crate::error::{CaError, KeyFileError};
use crate::p12::{self, P12Contents};
use crate::{check, keyfile, passphrase, Existing};

/// Environment variable holding the .p12 password.
const P12_PASSPHRASE_ENV: &str = "VIRTGATE_P12_PASSPHRASE";
/// Environment variable holding the key's passphrase.
const KEY_PASSPHRASE_ENV: &str = "VIRTGATE_KEY_PASSPHRASE";

/// Arguments of `export-p12`.
#[derive(Debug, Clone, Args)]
pub struct ExportP12 {
    /// The client certificate (PEM), e.g. USER.pem
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, usually encrypted), e.g. USER.key
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The CA certificate to include (default: --dir's ca.pem, else ca.pem next to --cert)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Where to write the PKCS#12 file (0600), e.g. USER.p12
    #[arg(long, value_name = "FILE.p12")]
    pub out: PathBuf,
    /// File whose first line is the key's passphrase (else $VIRTGATE_KEY_PASSPHRASE, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// File whose first line is the .p12 password (else $VIRTGATE_P12_PASSPHRASE, else a
    /// prompt, twice)
    #[arg(long, value_name = "FILE")]
    pub p12_passphrase_file: Option<PathBuf>,
    /// Protect the .p12 with the key's own passphrase
    #[arg(long, conflicts_with = "p12_passphrase_file")]
    pub same_passphrase: bool,
    /// The name a browser shows for it (default: the certificate's CN)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace an existing --out file
    #[arg(long)]
    pub force: bool,
}

/// Runs `export-p12`; `ca_dir` is `--dir` when given.
pub fn run(args: ExportP12, ca_dir: Option<&Path>) -> Result<()> {
    let ctx = format!("export-p12 {}", args.out.display());
    let existing = Existing::from_force(args.force);
    if existing.refuses(&args.out) {
        return Err(KeyFileError::Exists { path: args.out }).context(ctx);
    }
    let ca_path = ca_file(&args, ca_dir);
    let chain = keyfile::load_certs(&args.cert).context(ctx.clone())?;
    let ca = keyfile::load_certs(&ca_path).context(ctx.clone())?;
    let leaf = chain.first().cloned().context("no certificate")?;
    let summary = check::summary(&leaf)
        .map_err(|detail| KeyFileError::BadPem {
            path: args.cert.clone(),
            detail,
        })
        .context(ctx.clone())?;
    // Checked before the key is unlocked: no passphrase typed for a pair that cannot work.
    check::verify_client_cert(&ca, &leaf, &chain[1..])
        .map_err(|reason| CaError::NotIssuedBy {
            cert: args.cert.clone(),
            ca: ca_path.clone(),
            reason,
        })
        .context(ctx.clone())?;
    let mut key_pass: Option<Zeroizing<String>> = None;
    let key = keyfile::load_private_key(&args.key, &mut || {
        let p = key_passphrase(args.passphrase_file.as_deref(), &args.key)?;
        key_pass = Some(p.clone());
        Ok(p)
    })
    .context(ctx.clone())?;
    if check::cert_matches_key(&leaf, &key) != Some(true) {
        return Err(CaError::CertKeyMismatch {
            cert: args.cert.clone(),
            key: args.key.clone(),
        })
        .context(ctx);
    }
    let password = p12_password(&args, key_pass).context(ctx.clone())?;
    let alias = args.name.clone().unwrap_or_else(|| summary.cn.clone());
    let contents = P12Contents {
        chain: &chain,
        ca: &ca,
        key: &key,
        alias: &alias,
    };
    p12::export(&args.out, &contents, &password, &args.key, existing).context(ctx)?;
    println!(
        "wrote {} (0600): the certificate of {} issued by {}, its key and the CA certificate; \
         PKCS#12 with AES-256 (PBES2) and an HMAC-SHA256 MAC",
        args.out.display(),
        summary.cn,
        summary.issuer
    );
    println!(
        "import it in Firefox (Settings > Privacy & Security > View Certificates > Your \
         Certificates > Import) or Chromium (Settings > Privacy and security > Security > \
         Manage certificates > Import), or: pk12util -i {} -d sql:$HOME/.pki/nssdb",
        args.out.display()
    );
    Ok(())
}

/// `--ca`, else `--dir`'s `ca.pem`, else `ca.pem` next to the certificate.
fn ca_file(args: &ExportP12, ca_dir: Option<&Path>) -> PathBuf {
    if let Some(ca) = &args.ca {
        return ca.clone();
    }
    if let Some(dir) = ca_dir {
        return dir.join(crate::ca::CA_CERT);
    }
    let folder = args
        .cert
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    folder.join(crate::ca::CA_CERT)
}

/// The key's passphrase: `--passphrase-file`, `$VIRTGATE_KEY_PASSPHRASE`, a prompt.
fn key_passphrase(file: Option<&Path>, key: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    if let Some(f) = file {
        return passphrase::from_file(f);
    }
    if let Some(p) = passphrase::from_env(KEY_PASSPHRASE_ENV) {
        return p;
    }
    passphrase::prompt(
        &format!("Passphrase for {}: ", key.display()),
        "pass --passphrase-file FILE or set VIRTGATE_KEY_PASSPHRASE",
    )
}

/// The .p12 password: `--p12-passphrase-file`, `$VIRTGATE_P12_PASSPHRASE`, the key's with
/// `--same-passphrase`, else a new one asked twice.
fn p12_password(
    args: &ExportP12,
    key_pass: Option<Zeroizing<String>>,
) -> Result<Zeroizing<String>, KeyFileError> {
    if let Some(f) = &args.p12_passphrase_file {
        return passphrase::from_file(f);
    }
    if let Some(p) = passphrase::from_env(P12_PASSPHRASE_ENV) {
        return p;
    }
    if args.same_passphrase {
        return key_pass.ok_or_else(|| {
            KeyFileError::passphrase(
                format!(
                    "--same-passphrase: the key {} is not encrypted, so it has no passphrase to reuse",
                    args.key.display()
                ),
                Some("pass --p12-passphrase-file FILE or leave out --same-passphrase to be asked".into()),
            )
        });
    }
    passphrase::prompt_new(
        &format!("New password for {}: ", args.out.display()),
        "pass --p12-passphrase-file FILE, set VIRTGATE_P12_PASSPHRASE, or --same-passphrase",
    )
}
