//! The shared connection: `virtgate up` unlocks the key once, keeps one connection to the
//! gateway and serves it on a private local socket that every other command of the
//! profile uses (being built).

use clap::Args;

/// Arguments of `virtgate up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Stay in the foreground (for a service manager) instead of returning once connected
    #[arg(long)]
    pub foreground: bool,
}

use crate::cli::{GlobalArgs, Settings};
use crate::error::Error;
use crate::profile::Env;
use crate::transport::Transport;

/// Run `virtgate up`.
pub fn up(_global: &GlobalArgs, _args: UpArgs, _env: &Env) -> Result<(), Error> {
    Err(Error::Unsupported {
        what: "up".into(),
        hint: "being built".into(),
    })
}

/// Run `virtgate down`.
pub fn down(_global: &GlobalArgs, _env: &Env) -> Result<(), Error> {
    Err(Error::Unsupported {
        what: "down".into(),
        hint: "being built".into(),
    })
}

/// The transport to the profile's shared connection, when `virtgate up` keeps one and
/// `--no-shared` is not given.
pub fn transport_for(
    _global: &GlobalArgs,
    _settings: &Settings,
    _env: &Env,
) -> Result<Option<Transport>, Error> {
    Ok(None)
}
