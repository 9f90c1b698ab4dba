//! The commands. Each takes a connected [`Session`] and writes its result to stdout; notes
//! for the person at the terminal go to stderr so that stdout stays parseable.

pub mod console;
pub mod doctor;
pub mod domains;
pub mod enroll;
pub mod events;
pub mod forward;
pub mod libvirt;
pub mod lifecycle;
pub mod profile;
pub mod relay;
pub mod screenshot;
pub mod viewer;
pub mod web;
pub mod weblocal;

use std::io::Write;

use virtgate_proto::{Action, ShutdownRequest};

use crate::cli::RemoteCommand as Command;
use crate::error::Error;
use crate::session::Session;

/// Run one command on a session; `profile` is the profile in use (`None` with a bare
/// `--url`), for names of local files.
pub async fn run(
    command: Command,
    session: Session,
    profile: Option<&str>,
    url: &crate::url::GatewayUrl,
) -> Result<(), Error> {
    let shutdown = ShutdownRequest::default();
    match command {
        Command::Whoami { json } => domains::whoami(&session, json).await,
        Command::List { json } => domains::list(&session, json).await,
        Command::Info { domain, json } => domains::info(&session, &domain, json).await,
        Command::Vnc { domain, endpoint } => {
            let how = forward::Forward {
                protocol: forward::Protocol::Vnc,
                defaults: viewer::Defaults::Vnc,
            };
            forward::run(session, &domain, how, endpoint.listen, endpoint.viewer()).await
        }
        Command::Spice { domain, endpoint } => {
            let how = forward::Forward {
                protocol: forward::Protocol::Spice,
                defaults: viewer::Defaults::RemoteViewer,
            };
            forward::run(session, &domain, how, endpoint.listen, endpoint.viewer()).await
        }
        Command::Display {
            domain,
            protocol,
            endpoint,
        } => {
            let how = forward::Forward {
                protocol,
                defaults: viewer::Defaults::RemoteViewer,
            };
            forward::run(session, &domain, how, endpoint.listen, endpoint.viewer()).await
        }
        Command::Start { domain, json } => {
            lifecycle::run(&session, &domain, Action::Start, &shutdown, json).await
        }
        Command::Reboot { domain, json } => {
            lifecycle::run(&session, &domain, Action::Reboot, &shutdown, json).await
        }
        Command::Destroy { domain, json } => {
            lifecycle::run(&session, &domain, Action::Destroy, &shutdown, json).await
        }
        Command::Shutdown {
            domain,
            timeout,
            force,
            json,
        } => {
            let req = ShutdownRequest {
                timeout_s: timeout,
                force,
            };
            lifecycle::run(&session, &domain, Action::Shutdown, &req, json).await
        }
        Command::Screenshot { domain, output } => {
            screenshot::run(&session, &domain, output.as_deref()).await
        }
        Command::Events { json } => events::run(&session, json).await,
        Command::Console { domain } => console::run(&session, &domain).await,
        Command::Libvirt { socket, ro } => libvirt::run(&session, socket, ro, profile).await,
        Command::Web {
            domain,
            print,
            serial,
        } => web::run(&session, url, &web::Page::of(domain, serial), print).await,
    }
}

/// Write `text` to stdout and flush. A closed pipe (`virtgate list | head -1`) is not an
/// error: the reader has what it wanted.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output(e)),
    }
}

/// Pretty JSON of an API value, with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| Error::Output(std::io::Error::other(e)))
}
