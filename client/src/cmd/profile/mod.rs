//! `virtgate profile …`: write profiles so that nobody edits TOML by hand (being built).

use clap::Subcommand;

use crate::error::Error;
use crate::profile::Env;

/// The `virtgate profile` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles
    List,
}

/// Run a `virtgate profile` command.
pub fn run(_command: ProfileCommand, _env: &Env) -> Result<(), Error> {
    Err(Error::Unsupported {
        what: "profile".into(),
        hint: "being built".into(),
    })
}
