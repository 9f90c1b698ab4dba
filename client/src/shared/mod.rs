//! The shared connection: `virtgate up` unlocks the key once, keeps one connection to the
//! gateway and serves it on a private local socket that every other command of the
//! profile uses, like OpenSSH's ControlMaster.
//!
//! ```text
//! virtgate list ─┐  unix socket, HTTP/2      ┌─ proxy.rs ──┐   one HTTP/2 connection
//! virtgate vnc  ─┼─▶ RUNTIME/PROFILE.sock ───┤  per local  ├──▶ upstream.rs (Session,  ──▶ gateway
//! virsh (libvirt)┘   (0600, folder 0700)     │  connection │    reconnects by itself)
//!                                            └─────────────┘
//! ```
//!
//! Files, in the runtime folder ([`crate::sockets::RuntimeFolder`]) — [`Place`]:
//! - `PROFILE.sock`: the socket. A client uses it only when it is a socket owned by the user
//!   and the `up` that made it still holds the lock.
//! - `PROFILE.lock`: locked (flock) by the running `up` for as long as it lives, so a second
//!   `up` is refused and a socket left by a SIGKILLed one is known to be stale. It holds the
//!   `up`'s pid, config file and URL ([`Owner`]): a command whose settings differ (another
//!   config file of the same profile name) does not use the socket.
//! - `PROFILE.log`: what the background `up` logs (connected, lost, reconnected).
//! - `PROFILE.ended`: why an `up` stopped for good (a revoked certificate); the next command
//!   of the profile prints it once.
//!
//! [`transport_for`] is the client side (every remote command asks it first), `daemon.rs`
//! runs `up` (background start, readiness, signals), `upstream.rs` the gateway connection
//! and `proxy.rs` the local server.

mod daemon;
mod proxy;
mod upstream;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, Settings};
use crate::error::Error;
use crate::profile::{Env, Profiles};
use crate::sockets::{file_name, RuntimeFolder};
use crate::transport::unix::UnixTransport;
use crate::transport::Transport;

pub use daemon::{down, up};

/// How long `down` waits for the `up` process to end.
const DOWN_WAIT: Duration = Duration::from_secs(5);

/// Arguments of `virtgate up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Stay in the foreground (for a service manager or a terminal) instead of returning
    /// once connected; Ctrl-C ends it
    #[arg(long)]
    pub foreground: bool,
    /// Internal: the background process of `virtgate up` (passphrase on stdin, readiness
    /// on stdout)
    #[arg(long, hide = true, requires = "foreground")]
    pub detached: bool,
}

/// Where the shared connection of one profile lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The profile.
    pub profile: String,
    /// The runtime folder.
    pub folder: RuntimeFolder,
    /// `PROFILE.sock`.
    pub socket: PathBuf,
    /// `PROFILE.lock`.
    pub lock: PathBuf,
    /// `PROFILE.log`.
    pub log: PathBuf,
    /// `PROFILE.ended`.
    pub ended: PathBuf,
}

impl Place {
    /// The files of `profile` in `folder`.
    pub fn new(folder: RuntimeFolder, profile: &str) -> Place {
        let name = file_name(profile);
        let at = |ext: &str| folder.path.join(format!("{name}.{ext}"));
        Place {
            profile: profile.to_owned(),
            socket: at("sock"),
            lock: at("lock"),
            log: at("log"),
            ended: at("ended"),
            folder,
        }
    }

    /// The files of `profile` in this process's runtime folder.
    pub fn of_process(profile: &str) -> Place {
        Place::new(RuntimeFolder::of_process(), profile)
    }

    /// The running `up` of this place: `None` when its lock is free (no `up`, or one that
    /// was killed), else what it wrote into the lock file.
    pub fn running(&self) -> Option<Owner> {
        let file = File::open(&self.lock).ok()?;
        match file.try_lock_shared() {
            // nobody holds it: no `up` runs
            Ok(()) => None,
            Err(_) => {
                let mut text = String::new();
                let mut f = &file;
                f.read_to_string(&mut text).ok()?;
                Some(serde_json::from_str(&text).unwrap_or_default())
            }
        }
    }

    /// What is at the socket's place.
    pub fn inspect(&self) -> Found {
        let Ok(meta) = std::fs::symlink_metadata(&self.socket) else {
            return Found::Nothing;
        };
        let uid = rustix::process::getuid().as_raw();
        if !meta.file_type().is_socket() {
            return Found::NotOurs("it is not a socket".into());
        }
        if meta.uid() != uid {
            return Found::NotOurs(format!(
                "it belongs to uid {}, not to you (uid {uid})",
                meta.uid()
            ));
        }
        match self.running() {
            Some(owner) => Found::Running(owner),
            None => Found::Stale,
        }
    }

    /// Why the last `up` of this place stopped for good, if it did (kept for the next
    /// command to print).
    pub fn ended(&self) -> Option<String> {
        std::fs::read_to_string(&self.ended)
            .ok()
            .map(|t| t.trim_end().to_owned())
    }

    /// Whether an `up` with this owner record serves these settings (same config file and
    /// URL): another config's profile of the same name is not ours to use.
    pub fn serves(owner: &Owner, settings: &Settings, config: &Path) -> bool {
        owner.config == config && owner.url == settings.url.to_string()
    }

    /// Print (once) why the last `up` of this place stopped for good, and forget it.
    fn report_ended(&self) {
        if let Ok(text) = std::fs::read_to_string(&self.ended) {
            let _ = std::fs::remove_file(&self.ended);
            eprintln!(
                "note: the shared connection of profile `{}` (virtgate up) ended: {}",
                self.profile,
                text.trim_end()
            );
        }
    }
}

/// What is at a profile's socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: no `up` runs.
    Nothing,
    /// A socket of ours whose `up` runs (its lock record).
    Running(Owner),
    /// A socket of ours whose `up` is gone (killed): to remove.
    Stale,
    /// Something not to use or touch, and why (not a socket, another user's).
    NotOurs(String),
}

/// What a running `up` wrote into its lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its process id (for `down`).
    pub pid: u32,
    /// The config file it read the profile from.
    pub config: PathBuf,
    /// The gateway URL it connects to.
    pub url: String,
}

impl Owner {
    /// The owner record of a connection made with these settings.
    fn of(settings: &Settings, config: &Path) -> Owner {
        Owner {
            pid: std::process::id(),
            config: config.to_owned(),
            url: settings.url.to_string(),
        }
    }
}

/// Whether the flags change how the connection is made (then it is not the profile's
/// connection, and is not shared).
fn flags_override(global: &GlobalArgs) -> bool {
    global.url.is_some()
        || global.ca.is_some()
        || global.cert.is_some()
        || global.key.is_some()
        || global.auth.is_some()
        || global.ssh_key.is_some()
}

/// The transport to the profile's shared connection, when `virtgate up` keeps one and
/// `--no-shared` (or a flag that changes the connection) is not given.
///
/// A socket that is not ours (not a socket, another owner) is an error: something is
/// wrong, and connecting directly would hide it. A socket whose `up` is gone (killed) is
/// removed with a note, and the command connects directly.
pub fn transport_for(
    global: &GlobalArgs,
    settings: &Settings,
    profiles: &Profiles,
) -> Result<Option<Transport>, Error> {
    let Some(profile) = settings.profile.as_deref() else {
        return Ok(None);
    };
    if global.no_shared || flags_override(global) {
        return Ok(None);
    }
    let place = Place::of_process(profile);
    let owner = match place.inspect() {
        Found::Nothing => {
            place.report_ended();
            return Ok(None);
        }
        Found::NotOurs(problem) => {
            return Err(Error::SharedSocket {
                path: place.socket.clone(),
                problem,
            })
        }
        Found::Stale => {
            eprintln!(
                "note: removing {}: its `virtgate up` is gone; connecting directly",
                place.socket.display()
            );
            let _ = std::fs::remove_file(&place.socket);
            return Ok(None);
        }
        Found::Running(owner) => owner,
    };
    if !Place::serves(&owner, settings, &profiles.path) {
        tracing::debug!(
            ?owner,
            "the shared connection is another config's; not using it"
        );
        return Ok(None);
    }
    tracing::debug!(socket = %place.socket.display(), pid = owner.pid, "using the shared connection");
    Ok(Some(Transport::Shared(UnixTransport::shared(
        &place.socket,
        &settings.url.to_string(),
    ))))
}

/// The profile a local command (`up`, `down`) is about; they need one.
fn profile_settings(global: &GlobalArgs, env: &Env) -> Result<(Settings, Profiles), Error> {
    let profiles = Profiles::load(env)?;
    let settings = global.resolve(&profiles, env)?;
    if settings.profile.is_none() || global.url.is_some() {
        return Err(Error::Setting {
            message: "`virtgate up` and `down` work on a profile, not on a bare --url".into(),
            hint: format!(
                "add a profile (`virtgate profile add NAME --url …`) and run `virtgate up -p \
                 NAME`; profiles are in {}",
                profiles.path.display()
            ),
        });
    }
    Ok((settings, profiles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_the_profile() {
        let p = Place::new(RuntimeFolder::new(Some("/run/user/7".as_ref()), 7), "hv/1");
        assert_eq!(p.socket, Path::new("/run/user/7/virtgate/hv_1.sock"));
        assert_eq!(p.lock, Path::new("/run/user/7/virtgate/hv_1.lock"));
        assert_eq!(p.ended, Path::new("/run/user/7/virtgate/hv_1.ended"));
        assert_eq!(p.profile, "hv/1");
    }

    #[test]
    fn a_free_lock_means_nobody_runs() {
        let dir = tempfile::tempdir().unwrap();
        let folder = RuntimeFolder {
            path: dir.path().to_owned(),
            shared: false,
        };
        let p = Place::new(folder, "hv1");
        assert_eq!(p.running(), None, "no lock file");
        let owner = Owner {
            pid: 42,
            config: "/c.toml".into(),
            url: "virtgate://gw:16520".into(),
        };
        std::fs::write(&p.lock, serde_json::to_string(&owner).unwrap()).unwrap();
        assert_eq!(p.running(), None, "lock file nobody holds");
        let held = File::options().write(true).open(&p.lock).unwrap();
        held.lock().unwrap();
        assert_eq!(p.running(), Some(owner));
        drop(held);
        assert_eq!(p.running(), None);
    }

    #[test]
    fn connection_flags_turn_sharing_off() {
        assert!(!flags_override(&GlobalArgs::default()));
        for g in [
            GlobalArgs {
                url: Some("virtgate://x".into()),
                ..Default::default()
            },
            GlobalArgs {
                key: Some("k".into()),
                ..Default::default()
            },
        ] {
            assert!(flags_override(&g));
        }
    }
}
