//! Where the passphrase of an encrypted private key comes from, in the documented order:
//! `--passphrase-file`, `$VIRTGATE_KEY_PASSPHRASE`, the profile's `passphrase_command`, and
//! last a prompt on the terminal.
//!
//! The first source that is configured is the one used; a wrong passphrase from it is an
//! error, not a reason to try the next (silently falling through would hide a stale file or
//! variable). Sources are only consulted when the key is actually encrypted. Passphrases
//! live in [`Zeroizing`] strings and never reach a log or an error message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::error::{io_reason, Error};

/// Which source a passphrase comes from, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--passphrase-file FILE`: its first line.
    File(PathBuf),
    /// `$VIRTGATE_KEY_PASSPHRASE`.
    Env,
    /// The profile's `passphrase_command`, run with `sh -c`: its first stdout line.
    Command(String),
    /// Ask on the terminal.
    Prompt,
}

/// The configured passphrase sources.
#[derive(Clone, Default)]
pub struct PassphraseSources {
    /// `--passphrase-file`.
    pub file: Option<PathBuf>,
    /// The value of `$VIRTGATE_KEY_PASSPHRASE`.
    pub env: Option<Zeroizing<String>>,
    /// The profile's `passphrase_command`.
    pub command: Option<String>,
    /// The last passphrase handed out (shared by clones): `virtgate up` passes the one that
    /// unlocked the key on to its background process instead of asking twice.
    pub handed_out: Arc<Mutex<Option<Zeroizing<String>>>>,
}

impl std::fmt::Debug for PassphraseSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseSources")
            .field("file", &self.file)
            .field("env", &self.env.as_ref().map(|_| "<set>"))
            .field("command", &self.command)
            .finish()
    }
}

impl PassphraseSources {
    /// The source that will be used.
    pub fn source(&self) -> Source {
        if let Some(f) = &self.file {
            Source::File(f.clone())
        } else if self.env.is_some() {
            Source::Env
        } else if let Some(c) = &self.command {
            Source::Command(c.clone())
        } else {
            Source::Prompt
        }
    }

    /// Get the passphrase for `key` from the first configured source.
    pub fn get(&self, key: &Path) -> Result<Zeroizing<String>, Error> {
        self.get_with_prompt(key, &format!("passphrase for {}: ", key.display()))
    }

    /// [`PassphraseSources::get`] with the terminal prompt's text given (SSH keys are
    /// asked for as OpenSSH does: `Enter passphrase for key PATH: `).
    pub fn get_with_prompt(&self, key: &Path, text: &str) -> Result<Zeroizing<String>, Error> {
        let passphrase = match self.source() {
            Source::File(path) => read_file(&path),
            Source::Env => Ok(self.env.clone().unwrap_or_default()),
            Source::Command(cmd) => run_command(&cmd),
            Source::Prompt => prompt(key, text),
        }?;
        if let Ok(mut last) = self.handed_out.lock() {
            *last = Some(passphrase.clone());
        }
        Ok(passphrase)
    }

    /// The last passphrase [`PassphraseSources::get`] handed out, if any (after a key was
    /// loaded: the one that unlocked it).
    pub fn last_handed_out(&self) -> Option<Zeroizing<String>> {
        self.handed_out.lock().ok().and_then(|last| last.clone())
    }
}

/// First line of a file, without its line ending.
fn read_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::File {
        what: "passphrase file",
        path: path.to_owned(),
        reason: io_reason(&e),
    })?);
    Ok(first_line(&text))
}

fn first_line(text: &str) -> Zeroizing<String> {
    let line = text.split('\n').next().unwrap_or("");
    Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Run `sh -c CMD`; stdin stays the terminal so that tools like `pass` can ask for their own
/// unlock; stdout's first line is the passphrase.
fn run_command(cmd: &str) -> Result<Zeroizing<String>, Error> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::PassphraseCommand {
            command: cmd.to_owned(),
            status: format!("cannot start sh: {}", io_reason(&e)),
            stderr: String::new(),
        })?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let status = match out.status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_owned(),
        };
        return Err(Error::PassphraseCommand {
            command: cmd.to_owned(),
            status,
            stderr,
        });
    }
    let text = Zeroizing::new(String::from_utf8_lossy(&stdout).into_owned());
    Ok(first_line(&text))
}

/// Ask on the controlling terminal; no terminal is an error naming the other sources.
fn prompt(key: &Path, text: &str) -> Result<Zeroizing<String>, Error> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|_| Error::NoTerminal {
            path: key.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_file_env_command_prompt() {
        let mut s = PassphraseSources {
            file: Some("/pw".into()),
            env: Some(Zeroizing::new("e".into())),
            command: Some("echo c".into()),
            ..Default::default()
        };
        assert_eq!(s.source(), Source::File("/pw".into()));
        s.file = None;
        assert_eq!(s.source(), Source::Env);
        assert_eq!(&*s.get(Path::new("k")).unwrap(), "e");
        assert_eq!(
            s.last_handed_out().as_deref().map(|p| p.as_str()),
            Some("e")
        );
        s.env = None;
        assert_eq!(s.source(), Source::Command("echo c".into()));
        s.command = None;
        assert_eq!(s.source(), Source::Prompt);
    }

    #[test]
    fn file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\nignored\n").unwrap();
        let s = PassphraseSources {
            file: Some(p),
            ..Default::default()
        };
        assert_eq!(&*s.get(Path::new("k")).unwrap(), "s3cret");
        let missing = PassphraseSources {
            file: Some(dir.path().join("nope")),
            ..Default::default()
        };
        let e = missing.get(Path::new("k")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn command_output_and_failure() {
        let s = PassphraseSources {
            command: Some("printf 'pw one\\nrest'".into()),
            ..Default::default()
        };
        assert_eq!(&*s.get(Path::new("k")).unwrap(), "pw one");
        let s = PassphraseSources {
            command: Some("echo 'vault is locked' >&2; exit 3".into()),
            ..Default::default()
        };
        let e = s.get(Path::new("k")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "passphrase command `echo 'vault is locked' >&2; exit 3` failed (exit status 3): vault is locked"
        );
        assert!(e.hint().is_some());
    }

    #[test]
    fn debug_hides_the_env_value() {
        let s = PassphraseSources {
            env: Some(Zeroizing::new("topsecret".into())),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
