//! `virtgate-pki sign-csr`: sign a user's request, but only for the name the admin meant.
//!
//! A request names its user itself (its CN), so signing one blindly lets anyone who can
//! hand the admin a file become anybody. Before anything is signed:
//!
//! - `--expect NAME`: the request's CN must be NAME, else nothing is signed and the error
//!   names both;
//! - without it, on a terminal: the CN and the public key's fingerprint are shown and the
//!   admin answers `y` (the user saw the same fingerprint from `virtgate enroll`);
//! - without it and without a terminal (a script, cron): refused, with a hint to pass
//!   `--expect`.
//!
//! The CA key is unlocked only after that, and the certificate file is written atomically,
//! never over an existing one without `--force`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::csr::CsrInfo;
use crate::error::{CaError, KeyFileError};
use crate::{files, passphrase, Ca, ClientOptions, Existing, Validity};

/// What `sign-csr` was asked to do.
#[derive(Debug, Clone)]
pub struct SignCsr {
    /// The request file (PEM).
    pub file: PathBuf,
    /// Where the certificate goes.
    pub out: PathBuf,
    /// Validity in days.
    pub days: u32,
    /// Replace an existing `out`.
    pub force: bool,
    /// The user the admin expects the request to be for.
    pub expect: Option<String>,
}

/// Runs `sign-csr`; `open` unlocks the CA (asked only once the request is accepted).
pub fn run(args: SignCsr, open: impl FnOnce() -> Result<Ca>) -> Result<()> {
    let ctx = format!("sign-csr {}", args.file.display());
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| KeyFileError::read("request file", &args.file, e))
        .context(ctx.clone())?;
    let request = CsrInfo::parse(&text).context(ctx.clone())?;
    accept(&args, &request).context(ctx.clone())?;
    let existing = Existing::from_force(args.force);
    if existing.refuses(&args.out) {
        return Err(KeyFileError::Exists { path: args.out }).context(ctx);
    }
    let mut ca = open()?;
    let opts = ClientOptions {
        validity: Validity::Days(args.days),
    };
    let issued = ca.sign_request(&request, &opts).context(ctx.clone())?;
    files::write_file(
        &args.out,
        issued.cert_pem.as_bytes(),
        files::PUBLIC_MODE,
        existing,
    )
    .with_context(|| format!("{ctx}: writing {}", args.out.display()))?;
    println!(
        "signed a client certificate for {} (serial {}, valid until {})",
        issued.entry.cn,
        issued.entry.serial,
        crate::cli::date(issued.entry.not_after)
    );
    println!(
        "public key {}, SHA-256 {}",
        request.key_kind,
        request.fingerprint()
    );
    println!("wrote {}", args.out.display());
    println!(
        "send {} and the CA certificate {} back to {}",
        args.out.display(),
        ca.dir().join(crate::ca::CA_CERT).display(),
        issued.entry.cn
    );
    Ok(())
}

/// Whether the request may be signed: `--expect`, else the admin's answer on a terminal.
fn accept(args: &SignCsr, request: &CsrInfo) -> Result<(), CaError> {
    if let Some(expected) = &args.expect {
        if *expected != request.cn {
            return Err(CaError::UnexpectedRequest {
                file: args.file.clone(),
                expected: expected.clone(),
                found: request.cn.clone(),
            });
        }
        return Ok(());
    }
    let Some(mut tty) = terminal() else {
        return Err(CaError::NeedsExpect {
            file: args.file.clone(),
            cn: request.cn.clone(),
            fingerprint: request.fingerprint(),
        });
    };
    let question = question(&args.file, request, args.days);
    let answer = ask(&mut tty, &question)
        .map_err(|e| CaError::io("asking on the terminal", Path::new("/dev/tty"), e))?;
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(CaError::NotConfirmed {
            cn: request.cn.clone(),
        })
    }
}

/// What the admin is shown before answering.
fn question(file: &Path, request: &CsrInfo, days: u32) -> String {
    format!(
        "request {}\n  user (CN)   {}\n  public key  {}, SHA-256 {}\n\
         Sign a client certificate for `{}`, valid {days} days? [y/N] ",
        file.display(),
        request.cn,
        request.key_kind,
        request.fingerprint(),
        request.cn
    )
}

/// The controlling terminal, for reading and writing, when there is one.
fn terminal() -> Option<std::fs::File> {
    if !passphrase::have_terminal() {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}

/// Writes `question` to the terminal and reads one line of answer.
fn ask(tty: &mut std::fs::File, question: &str) -> std::io::Result<String> {
    tty.write_all(question.as_bytes())?;
    tty.flush()?;
    let mut line = String::new();
    BufReader::new(tty).read_line(&mut line)?;
    Ok(line)
}

/// `y` or `yes`, in any case.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str) -> CsrInfo {
        let key = rcgen::KeyPair::generate().unwrap();
        CsrInfo::parse(&crate::csr::request_pem(cn, &key).unwrap()).unwrap()
    }

    #[test]
    fn expect_names_both_users() {
        let args = SignCsr {
            file: "bob.csr".into(),
            out: "bob.pem".into(),
            days: 1,
            force: false,
            expect: Some("alice".into()),
        };
        let e = accept(&args, &request("bob")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bob.csr asks for a certificate for `bob`, not `alice` (--expect alice): nothing signed"
        );
        assert!(e.hint().unwrap().contains("--expect bob"));
        let args = SignCsr {
            expect: Some("bob".into()),
            ..args
        };
        accept(&args, &request("bob")).unwrap();
    }

    #[test]
    fn the_question_shows_name_and_fingerprint() {
        let r = request("bob");
        let q = question(Path::new("bob.csr"), &r, 365);
        assert!(q.contains("user (CN)   bob"), "{q}");
        assert!(q.contains(&r.fingerprint()), "{q}");
        assert!(q.ends_with("valid 365 days? [y/N] "), "{q}");
        assert!(is_yes("Y\n") && is_yes(" yes ") && !is_yes("\n") && !is_yes("no"));
    }
}
