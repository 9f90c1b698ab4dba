//! SSH login as the URL's user, with public keys only, in this order:
//!
//! 1. every key the ssh-agent (`$SSH_AUTH_SOCK`) offers (it signs; we never see the key);
//! 2. the key file from `--ssh-key` / the profile's `ssh_key`, or else whichever of
//!    `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` exist. A file whose public key the agent has
//!    already offered is skipped. An encrypted file asks for its passphrase (the same sources
//!    as the TLS key: `--passphrase-file`, `$VIRTGATE_KEY_PASSPHRASE`, `passphrase_command`,
//!    then `Enter passphrase for key PATH: ` on the terminal) only when its turn comes.
//!
//! RSA keys sign with rsa-sha2-512/256 as the server's `server-sig-algs` allows. When the
//! server accepts none, the error lists every key tried and the methods the server allows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::{HashAlg, PrivateKey, PublicKey};
use russh::keys::PrivateKeyWithHashAlg;
use russh::MethodKind;

use super::known_hosts::fingerprint;
use super::{Client, HANDSHAKE_TIMEOUT};
use crate::error::{io_reason, Error, SshFailure};
use crate::passphrase::{PassphraseSources, Source};

/// The key files tried when none is configured, in this order.
pub const DEFAULT_KEY_FILES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

/// The key files to try: the configured one (which must exist), else the default ones that
/// exist in `~/.ssh`.
pub fn key_files(configured: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = configured {
        return vec![p.to_owned()];
    }
    let Some(home) = home else {
        return Vec::new();
    };
    DEFAULT_KEY_FILES
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .filter(|p| p.is_file())
        .collect()
}

/// The public half of a key file without its passphrase: `PATH.pub`, or the public part
/// an OpenSSH private key file keeps in the clear.
pub fn public_key_of(path: &Path) -> Option<PublicKey> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(pub_path)) {
        if let Ok(k) = PublicKey::from_openssh(text.trim()) {
            return Some(k);
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    PrivateKey::from_openssh(text.trim())
        .ok()
        .map(|k| k.public_key().clone())
}

/// Where a passphrase came from, for the hint of a wrong one.
fn source_name(s: &Source) -> String {
    match s {
        Source::File(p) => format!("--passphrase-file {}", p.display()),
        Source::Env => "$VIRTGATE_KEY_PASSPHRASE".into(),
        Source::Command(c) => format!("passphrase_command `{c}`"),
        Source::Prompt => "the terminal".into(),
    }
}

/// Read a private key file, asking for its passphrase only if it is encrypted. A typed
/// passphrase may be retried (3 tries); one from a file, variable or command is not. Blocking
/// (terminal, key derivation): run it off the async threads.
pub fn load_key(path: &Path, sources: &PassphraseSources) -> Result<PrivateKey, Error> {
    let unusable = |reason: String| SshFailure::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| unusable(io_reason(&e)))?,
    );
    match russh::keys::decode_secret_key(&text, None) {
        Ok(k) => return Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => return Err(unusable(key_error_text(&e)).into()),
    }
    let source = sources.source();
    let prompt = format!("Enter passphrase for key {}: ", path.display());
    for attempt in 1..=3 {
        let pass = sources.get_with_prompt(path, &prompt)?;
        match russh::keys::decode_secret_key(&text, Some(&pass)) {
            Ok(k) => return Ok(k),
            // russh says only "cryptographic error" (FACTS): the file is a readable encrypted
            // key, so it is the passphrase
            Err(e) => tracing::debug!(error = %e, "decrypting {}", path.display()),
        }
        if source != Source::Prompt || attempt == 3 {
            break;
        }
        eprintln!("wrong passphrase, try again");
    }
    Err(SshFailure::WrongPassphrase {
        path: path.to_owned(),
        source_name: source_name(&source),
    }
    .into())
}

/// An agent error without the `(os error N)` noise.
fn agent_error_text(e: &russh::keys::Error) -> String {
    match e {
        russh::keys::Error::IO(io) => io_reason(io),
        other => other.to_string(),
    }
}

fn key_error_text(e: &russh::keys::Error) -> String {
    match e {
        russh::keys::Error::CouldNotReadKey => "it is not a private key file".into(),
        russh::keys::Error::UnsupportedKeyType {
            key_type_string, ..
        } => format!("unsupported key type {key_type_string}"),
        other => other.to_string(),
    }
}

/// What a login needs besides the connection.
#[derive(Debug)]
pub struct Login<'a> {
    /// The user to log in as.
    pub user: &'a str,
    /// The host, for messages.
    pub host: &'a str,
    /// `user@host:port`, for messages.
    pub login: &'a str,
    /// Key files to try after the agent.
    pub files: &'a [PathBuf],
    /// Whether `files` was configured (then a missing file is an error).
    pub configured: bool,
    /// Passphrase sources for encrypted files.
    pub passphrase: &'a PassphraseSources,
}

/// Keys tried so far and what the server said.
#[derive(Default)]
struct Tally {
    /// What was tried (and notes such as an unreachable agent), in words.
    tried: Vec<String>,
    /// Methods the server allows to continue, from its last answer (`None`: no answer yet).
    allowed: Option<Vec<String>>,
    /// Public keys already offered (a file with the same key is not tried again).
    offered: Vec<PublicKey>,
    /// The RSA signature hash, once asked.
    rsa: Option<Option<HashAlg>>,
}

impl Tally {
    fn failed(&mut self, what: String, remaining: &russh::MethodSet) {
        self.tried.push(what);
        self.allowed = Some(remaining.iter().map(String::from).collect());
    }

    /// Whether the server still takes public keys (it said so, or said nothing yet).
    fn publickey_allowed(&self) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.iter().any(|m| m == "publickey"))
    }
}

impl Login<'_> {
    /// Log in, or say which keys were refused.
    pub async fn run(&self, handle: &mut Handle<Client>) -> Result<(), Error> {
        let mut t = Tally::default();
        if self.agent(handle, &mut t).await? {
            return Ok(());
        }
        for path in self.files {
            if !t.publickey_allowed() {
                break;
            }
            if let Some(k) = public_key_of(path) {
                if t.offered.iter().any(|o| o.key_data() == k.key_data()) {
                    tracing::debug!(path = %path.display(), "already offered by the agent");
                    continue;
                }
            }
            if !self.configured && !path.is_file() {
                continue;
            }
            let (p, sources) = (path.clone(), self.passphrase.clone());
            let loaded = tokio::task::spawn_blocking(move || load_key(&p, &sources))
                .await
                .map_err(|e| self.lost(format!("loading the key failed: {e}")))?;
            let key = match loaded {
                Ok(k) => k,
                // a default file that is no key is passed over (as ssh does); a configured
                // one, a wrong passphrase or a failing passphrase source stop here
                Err(Error::Ssh(f)) if !self.configured => match *f {
                    SshFailure::KeyFile { reason, .. } => {
                        t.tried
                            .push(format!("key file {} (unusable: {reason})", path.display()));
                        continue;
                    }
                    other => return Err(other.into()),
                },
                Err(e) => return Err(e),
            };
            let hash = self
                .rsa_hash(handle, &mut t, &key.public_key().clone())
                .await;
            let what = format!(
                "key file {} ({} {})",
                path.display(),
                key.algorithm(),
                fingerprint(key.public_key())
            );
            t.offered.push(key.public_key().clone());
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            let res = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handle.authenticate_publickey(self.user, key),
            )
            .await;
            match res {
                Ok(Ok(AuthResult::Success)) => return Ok(()),
                Ok(Ok(AuthResult::Failure {
                    remaining_methods, ..
                })) => t.failed(what, &remaining_methods),
                Ok(Err(e)) => return Err(self.broke(t, &e.to_string())),
                Err(_) => return Err(self.broke(t, "the server did not answer in time")),
            }
        }
        if t.allowed.is_none() {
            // nothing was offered: ask what the server would take, for the message
            match handle.authenticate_none(self.user).await {
                Ok(AuthResult::Success) => return Ok(()),
                Ok(AuthResult::Failure {
                    remaining_methods, ..
                }) => t.allowed = Some(remaining_methods.iter().map(String::from).collect()),
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
        Err(self.refused(t))
    }

    /// Offer the agent's keys; `true` when one was accepted.
    async fn agent(&self, handle: &mut Handle<Client>, t: &mut Tally) -> Result<bool, Error> {
        let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) else {
            return Ok(false);
        };
        let sock = PathBuf::from(sock);
        let mut agent = match AgentClient::connect_uds(&sock).await {
            Ok(a) => a,
            Err(e) => {
                let e = agent_error_text(&e);
                tracing::info!(agent = %sock.display(), error = %e, "ssh-agent unreachable");
                t.tried
                    .push(format!("no ssh-agent at {} ({e})", sock.display()));
                return Ok(false);
            }
        };
        let identities = match agent.request_identities().await {
            Ok(ids) => ids,
            Err(e) => {
                let e = agent_error_text(&e);
                t.tried
                    .push(format!("the ssh-agent at {} ({e})", sock.display()));
                return Ok(false);
            }
        };
        for id in identities {
            let AgentIdentity::PublicKey { key, comment } = id else {
                continue; // certificates: not used
            };
            if !t.publickey_allowed() {
                break;
            }
            let hash = self.rsa_hash(handle, t, &key).await;
            let what = if comment.is_empty() {
                format!("agent key {} {}", key.algorithm(), fingerprint(&key))
            } else {
                format!(
                    "agent key {} {} ({comment})",
                    key.algorithm(),
                    fingerprint(&key)
                )
            };
            t.offered.push(key.clone());
            let res = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                handle.authenticate_publickey_with(self.user, key, hash, &mut agent),
            )
            .await;
            match res {
                Ok(Ok(AuthResult::Success)) => return Ok(true),
                Ok(Ok(AuthResult::Failure {
                    remaining_methods, ..
                })) => t.failed(what, &remaining_methods),
                // the agent would not sign (a confirm-only key declined, a locked agent)
                Ok(Err(russh::AgentAuthError::Key(e))) => {
                    t.tried
                        .push(format!("{what}: the agent did not sign ({e})"));
                }
                Ok(Err(e)) => return Err(self.broke(std::mem::take(t), &e.to_string())),
                Err(_) => {
                    return Err(self.broke(std::mem::take(t), "the server did not answer in time"))
                }
            }
        }
        Ok(false)
    }

    /// rsa-sha2-512 or -256 as the server allows (asked once); `None` for other keys.
    async fn rsa_hash(
        &self,
        handle: &Handle<Client>,
        t: &mut Tally,
        key: &PublicKey,
    ) -> Option<HashAlg> {
        if !matches!(key.algorithm(), russh::keys::ssh_key::Algorithm::Rsa { .. }) {
            return None;
        }
        if let Some(h) = t.rsa {
            return h;
        }
        let h = match handle.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            // no server-sig-algs: assume a current server (RFC 8332), as OpenSSH does
            Ok(None) | Err(_) => Some(HashAlg::Sha256),
        };
        t.rsa = Some(h);
        h
    }

    fn refused(&self, t: Tally) -> Error {
        SshFailure::AuthRefused {
            login: self.login.to_owned(),
            tried: t.tried,
            allowed: t.allowed.unwrap_or_default(),
            user: self.user.to_owned(),
            host: self.host.to_owned(),
        }
        .into()
    }

    /// The connection broke during the login: after refusals that is most likely sshd's
    /// MaxAuthTries, so report the refusals.
    fn broke(&self, mut t: Tally, reason: &str) -> Error {
        if t.tried.is_empty() {
            return self.lost(reason.to_owned());
        }
        t.tried.push(format!(
            "and then the server closed the connection ({reason}; too many keys for its MaxAuthTries?)"
        ));
        self.refused(t)
    }

    fn lost(&self, reason: String) -> Error {
        SshFailure::Lost {
            server: self.login.to_owned(),
            reason,
        }
        .into()
    }
}

/// `MethodKind` names, for tests and messages.
pub fn method_names(m: &[MethodKind]) -> Vec<String> {
    m.iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;
    use std::process::Command;

    fn keygen(path: &Path, kind: &str, pass: &str) {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", pass, "-C", "t", "-f"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen");
    }

    #[test]
    fn default_files_in_order_and_only_existing() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        for n in ["id_rsa", "id_ed25519", "id_dsa"] {
            std::fs::write(ssh.join(n), "x").unwrap();
        }
        assert_eq!(
            key_files(None, Some(dir.path())),
            vec![ssh.join("id_ed25519"), ssh.join("id_rsa")]
        );
        let mine = Path::new("/keys/mine");
        assert_eq!(key_files(Some(mine), Some(dir.path())), vec![mine]);
        assert!(key_files(None, None).is_empty());
    }

    #[test]
    fn encrypted_keys_ask_and_say_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let enc = dir.path().join("id_enc");
        keygen(&enc, "ed25519", "right one");
        let plain = dir.path().join("id_plain");
        keygen(&plain, "ecdsa", "");
        // a plain key never consults a source (this command would fail)
        let failing = PassphraseSources {
            command: Some("exit 7".into()),
            ..Default::default()
        };
        assert!(load_key(&plain, &failing).is_ok());
        // the encrypted one does, and the public half is known without it
        let e = load_key(&enc, &failing).unwrap_err();
        assert!(e.to_string().contains("exit status 7"), "{e}");
        assert_eq!(
            public_key_of(&enc).unwrap().key_data(),
            load_key(
                &enc,
                &PassphraseSources {
                    env: Some(zeroize::Zeroizing::new("right one".into())),
                    ..Default::default()
                }
            )
            .unwrap()
            .public_key()
            .key_data()
        );
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "wrong\n").unwrap();
        let wrong = PassphraseSources {
            file: Some(pw.clone()),
            env: Some(zeroize::Zeroizing::new("right one".into())),
            ..Default::default()
        };
        let e = load_key(&enc, &wrong).unwrap_err();
        let r = report(&e);
        assert!(
            r.starts_with(&format!("error: wrong passphrase for {}\n", enc.display())),
            "{r}"
        );
        assert!(
            r.contains(&format!("came from --passphrase-file {}", pw.display())),
            "{r}"
        );
        assert!(!r.contains("cryptographic"), "{r}");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = load_key(&junk, &PassphraseSources::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot use the SSH key {}", junk.display())),
            "{e}"
        );
        let e = load_key(&dir.path().join("none"), &PassphraseSources::default()).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }

    #[test]
    fn refusal_lists_keys_and_methods() {
        let l = Login {
            user: "bob",
            host: "hv1",
            login: "bob@hv1:22",
            files: &[],
            configured: false,
            passphrase: &PassphraseSources::default(),
        };
        let t = Tally {
            tried: vec![
                "agent key ssh-ed25519 SHA256:abc (bob@laptop)".into(),
                "key file /h/.ssh/id_rsa (ssh-rsa SHA256:def)".into(),
            ],
            allowed: Some(method_names(&[MethodKind::PublicKey, MethodKind::Password])),
            ..Default::default()
        };
        let r = report(&l.refused(t));
        assert!(
            r.starts_with(
                "error: ssh: bob@hv1:22 refused every key we tried (tried agent key ssh-ed25519 \
             SHA256:abc (bob@laptop), key file /h/.ssh/id_rsa (ssh-rsa SHA256:def); the server \
             allows: publickey, password)\nhint: add your public key"
            ),
            "{r}"
        );
        assert!(
            r.contains("~bob/.ssh/authorized_keys on hv1") && r.contains("ssh-add"),
            "{r}"
        );
        assert!(r.contains("--ssh-key FILE"), "{r}");
        let mut t = Tally::default();
        assert!(t.publickey_allowed());
        // a note about the agent is no answer of the server
        t.tried
            .push("no ssh-agent at /x (No such file or directory)".into());
        assert!(t.publickey_allowed());
        t.failed(
            "k".into(),
            &russh::MethodSet::from(&[MethodKind::Password][..]),
        );
        assert!(!t.publickey_allowed());
        let r = report(&l.refused(Tally::default()));
        assert!(
            r.contains(
                "(no key to try: no ssh-agent and no key file; the server allows: nothing more)"
            ),
            "{r}"
        );
    }
}
