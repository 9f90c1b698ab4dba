//! Where passphrases come from: a file, an environment variable, or the terminal.
//!
//! Each source returns the passphrase in memory that is wiped when dropped, or a
//! [`KeyFileError`] that names the source (never the passphrase) and says what to do.
//! The order in which sources are tried is the caller's business (the client and
//! `virtgate-pki` each document theirs).

use std::fs::OpenOptions;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::KeyFileError;

/// Reads a passphrase file: its first line, without the line ending.
pub fn from_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let bytes =
        Zeroizing::new(
            std::fs::read(path).map_err(|error| KeyFileError::PassphraseFile {
                path: path.to_path_buf(),
                error,
            })?,
        );
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        KeyFileError::passphrase(
            format!("passphrase file {} is not UTF-8 text", path.display()),
            Some("write the passphrase as text on the first line".to_string()),
        )
    })?;
    let line = text.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    non_empty(
        Zeroizing::new(line.to_string()),
        format!("passphrase file {}", path.display()),
    )
}

/// Reads a passphrase from the environment variable `var`; `None` when it is unset.
pub fn from_env(var: &str) -> Option<Result<Zeroizing<String>, KeyFileError>> {
    let value = std::env::var_os(var)?;
    let Some(value) = value.to_str() else {
        return Some(Err(KeyFileError::passphrase(
            format!("environment variable {var} is not UTF-8"),
            None,
        )));
    };
    Some(non_empty(
        Zeroizing::new(value.to_string()),
        format!("environment variable {var}"),
    ))
}

/// Whether a terminal is there to ask on (the process has a controlling terminal).
pub fn have_terminal() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Asks for a passphrase on the terminal (input not echoed).
///
/// Without a terminal, fails with `no_terminal_hint` as the hint.
pub fn prompt(prompt: &str, no_terminal_hint: &str) -> Result<Zeroizing<String>, KeyFileError> {
    if !have_terminal() {
        return Err(KeyFileError::passphrase(
            "no passphrase given and no terminal to ask for one",
            Some(no_terminal_hint.to_string()),
        ));
    }
    let pass = rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| {
            KeyFileError::passphrase(
                format!("reading the passphrase from the terminal: {e}"),
                Some(no_terminal_hint.to_string()),
            )
        })?;
    non_empty(pass, "the terminal".to_string())
}

/// Asks for a new passphrase twice and refuses a mismatch.
pub fn prompt_new(prompt: &str, no_terminal_hint: &str) -> Result<Zeroizing<String>, KeyFileError> {
    let first = self::prompt(prompt, no_terminal_hint)?;
    let second = self::prompt("Repeat the passphrase: ", no_terminal_hint)?;
    if first != second {
        return Err(KeyFileError::PassphraseMismatch);
    }
    Ok(first)
}

/// Refuses an empty passphrase, naming where it came from.
fn non_empty(
    pass: Zeroizing<String>,
    source_name: String,
) -> Result<Zeroizing<String>, KeyFileError> {
    if pass.is_empty() {
        return Err(KeyFileError::EmptyPassphrase { source_name });
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_first_line_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "correct horse\r\nsecond line\n").unwrap();
        assert_eq!(from_file(&p).unwrap().as_str(), "correct horse");
        std::fs::write(&p, "no newline").unwrap();
        assert_eq!(from_file(&p).unwrap().as_str(), "no newline");
        std::fs::write(&p, "\nsecret on line 2\n").unwrap();
        let err = from_file(&p).unwrap_err();
        assert!(matches!(err, KeyFileError::EmptyPassphrase { .. }));
        assert!(err.to_string().ends_with("pw"), "{err}");
        let err = from_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(err.hint().is_some());
    }
}
