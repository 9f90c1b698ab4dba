//! `virtgate up` and `virtgate down`.
//!
//! `up` (no flag) unlocks the key in the foreground (prompt, passphrase_command, …), then
//! starts itself again as a background process (`up --foreground --detached`, its own
//! session: no terminal, stdin carries the passphrase that worked, stdout one readiness
//! line, stderr the log file) and returns once that process is connected and serving, or
//! with its error. `up --foreground` does the same work in the terminal until Ctrl-C.
//!
//! The process holds `PROFILE.lock` (flock) for its whole life, writes its [`Owner`] into
//! it, binds `PROFILE.sock`, keeps the upstream connection and serves local connections
//! until SIGTERM (`down`), SIGINT or SIGHUP, or until the gateway refuses it for good (then
//! `PROFILE.ended` says why). The socket goes when it ends; a SIGKILLed `up` leaves a socket
//! whose lock is free, which the next command or `up` knows to be stale.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::proxy;
use super::upstream::Upstream;
use super::{profile_settings, Owner, Place, UpArgs, DOWN_WAIT};
use crate::cli::GlobalArgs;
use crate::cmd::relay::Stop;
use crate::error::{chain_text, Error};
use crate::passphrase::PassphraseSources;
use crate::profile::Env;
use crate::sockets::{bind, RemoveOnDrop};
use crate::transport::Transport;

/// How long `up` keeps trying to take a lock that a command holds for a moment.
const LOCK_TRIES: u32 = 10;

/// The background process's one line on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Readiness {
    /// Connected and serving.
    Ready {
        /// Its pid.
        pid: u32,
        /// The user the gateway sees.
        user: String,
    },
    /// It failed before that.
    Failed {
        /// The `error:` text.
        message: String,
        /// The hint.
        hint: Option<String>,
    },
}

/// Run `virtgate up`.
pub fn up(global: &GlobalArgs, args: UpArgs, env: &Env) -> Result<(), Error> {
    let (mut settings, profiles) = profile_settings(global, env)?;
    let profile = settings.profile.clone().unwrap_or_default();
    let place = Place::of_process(&profile);
    if args.detached {
        // no terminal from here on: a prompt fails instead of stopping the process
        let _ = rustix::process::setsid();
        let passphrase = read_passphrase_line();
        if !passphrase.is_empty() {
            settings.passphrase = PassphraseSources {
                env: Some(passphrase),
                ..Default::default()
            };
        }
        let result = serve(&settings, &profiles.path, &place, |ready| {
            print_readiness(&ready);
        });
        if let Err(e) = &result {
            print_readiness(&Readiness::Failed {
                message: chain_text(e),
                hint: e.hint(),
            });
            eprintln!("{}", crate::error::report(e));
        }
        return result;
    }
    place.folder.create()?;
    if let Some(owner) = place.running() {
        return Err(already_up(&place, &owner));
    }
    if args.foreground {
        return serve(&settings, &profiles.path, &place, |ready| {
            if let Readiness::Ready { pid, user } = ready {
                eprintln!(
                    "virtgate up: profile `{profile}` shares one connection to {} as {user} (pid \
                     {pid})\n  on {}; every command of the profile uses it; Ctrl-C ends it",
                    settings.url,
                    place.socket.display()
                );
            }
        });
    }
    background(&settings, &place)
}

/// Unlock in the foreground, start the background process, wait for its word.
fn background(settings: &crate::cli::Settings, place: &Place) -> Result<(), Error> {
    // every file read and the key unlocked here, where the terminal is
    drop(Transport::prepare(settings)?);
    let passphrase = settings.passphrase.last_handed_out().unwrap_or_default();
    let log = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&place.log)
        .map_err(|source| Error::LocalFile {
            action: "write the log of",
            path: place.log.clone(),
            source,
        })?;
    let exe = std::env::current_exe().map_err(Error::Runtime)?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .args(["--foreground", "--detached"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(Error::Runtime)?;
    if let Some(mut stdin) = child.stdin.take() {
        let line = Zeroizing::new(format!("{}\n", passphrase.as_str()));
        let _ = stdin.write_all(line.as_bytes());
    }
    let mut word = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut word);
    }
    match serde_json::from_str::<Readiness>(word.trim()) {
        Ok(Readiness::Ready { pid, user }) => {
            let profile = &place.profile;
            eprintln!(
                "virtgate up: profile `{profile}` shares one connection to {} as {user} (pid \
                 {pid})\n  every command of the profile uses it (--no-shared: not); `virtgate \
                 down -p {profile}` ends it; log: {}",
                settings.url,
                place.log.display()
            );
            Ok(())
        }
        Ok(Readiness::Failed { message, hint }) => {
            let _ = child.wait();
            Err(Error::UpFailed { message, hint })
        }
        Err(_) => {
            let status = child.wait().map_err(Error::Runtime)?;
            Err(Error::UpFailed {
                message: format!(
                    "the background process of `virtgate up` ended without a word ({status})"
                ),
                hint: Some(format!("its log is {}", place.log.display())),
            })
        }
    }
}

/// The work of `up`, in this process: lock, connect, serve until a signal or a final
/// refusal. `ready` is told once serving starts.
fn serve(
    settings: &crate::cli::Settings,
    config: &std::path::Path,
    place: &Place,
    ready: impl FnOnce(Readiness),
) -> Result<(), Error> {
    place.folder.create()?;
    let _lock = take_lock(place, &Owner::of(settings, config))?;
    let transport = Transport::prepare(settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let server = settings.url.to_string();
    let keepalive = settings.keepalive;
    let result = runtime.block_on(async move {
        let mut stop = Stop::install()?;
        let (upstream, me) = Upstream::connect(transport, keepalive, server).await?;
        let listener = bind(&place.socket)?;
        let _remove = RemoveOnDrop(place.socket.clone());
        let _ = std::fs::remove_file(&place.ended);
        ready(Readiness::Ready {
            pid: std::process::id(),
            user: me.user.clone(),
        });
        tracing::info!(user = %me.user, socket = %place.socket.display(), "serving the shared connection");
        tokio::select! {
            r = proxy::serve(listener, upstream.clone()) => r,
            fatal = upstream.run() => {
                let why = crate::error::report(&fatal);
                let _ = std::fs::write(&place.ended, format!("{why}\n"));
                tracing::error!("stopped for good: {}", chain_text(&fatal));
                Err(fatal)
            }
            () = stop.wait() => {
                tracing::info!("stopping");
                Ok(())
            }
        }
    });
    runtime.shutdown_background();
    result
}

/// Take the profile's lock (retrying briefly: a command may hold it shared for a moment)
/// and write our owner record into it.
fn take_lock(place: &Place, owner: &Owner) -> Result<File, Error> {
    let fail = |source: std::io::Error| Error::LocalFile {
        action: "lock",
        path: place.lock.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&place.lock)
        .map_err(fail)?;
    let mut tries = 0;
    while file.try_lock().is_err() {
        tries += 1;
        if tries >= LOCK_TRIES {
            let running = place.running().unwrap_or_default();
            return Err(already_up(place, &running));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = serde_json::to_string(owner).unwrap_or_default();
    file.set_len(0).map_err(fail)?;
    file.write_all(record.as_bytes()).map_err(fail)?;
    file.flush().map_err(fail)?;
    Ok(file)
}

fn already_up(place: &Place, owner: &Owner) -> Error {
    Error::AlreadyUp {
        profile: place.profile.clone(),
        pid: owner.pid,
        socket: place.socket.clone(),
    }
}

/// The first line of stdin (the passphrase from the starting `up`; empty: none).
fn read_passphrase_line() -> Zeroizing<String> {
    let mut line = Zeroizing::new(String::new());
    let _ = std::io::stdin().lock().read_line(&mut line);
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    Zeroizing::new(trimmed)
}

/// Tell the starting `up` how it went (one JSON line on stdout).
fn print_readiness(r: &Readiness) {
    if let Ok(line) = serde_json::to_string(r) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

/// Run `virtgate down`.
pub fn down(global: &GlobalArgs, env: &Env) -> Result<(), Error> {
    let (settings, _) = profile_settings(global, env)?;
    let profile = settings.profile.clone().unwrap_or_default();
    let place = Place::of_process(&profile);
    let Some(owner) = place.running() else {
        place.report_ended();
        eprintln!("no shared connection is up for profile `{profile}`");
        return Ok(());
    };
    let pid =
        rustix::process::Pid::from_raw(owner.pid as i32).ok_or_else(|| Error::SharedSocket {
            path: place.lock.clone(),
            problem: "its lock file names no process".into(),
        })?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).map_err(|e| {
        Error::SharedSocket {
            path: place.lock.clone(),
            problem: format!("cannot stop pid {}: {e}", owner.pid),
        }
    })?;
    let started = Instant::now();
    while place.running().is_some() {
        if started.elapsed() > DOWN_WAIT {
            return Err(Error::SharedSocket {
                path: place.socket.clone(),
                problem: format!(
                    "pid {} did not end within {} s of SIGTERM",
                    owner.pid,
                    DOWN_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the shared connection of profile `{profile}` has ended");
    Ok(())
}
