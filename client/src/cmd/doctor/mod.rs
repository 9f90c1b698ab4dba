//! `virtgate doctor`: every step from the profile to the gateway's answer, checked in order
//! (being built).

use clap::Args;

use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::profile::Env;

/// Arguments of `virtgate doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}

/// Run `virtgate doctor`; `Ok(false)` when a check failed (exit status 1).
pub fn run(_global: &GlobalArgs, _args: DoctorArgs, _env: &Env) -> Result<bool, Error> {
    Err(Error::Unsupported {
        what: "doctor".into(),
        hint: "being built".into(),
    })
}
