//! `virtgate enroll`: a private key born on this machine and a certificate request for the
//! admin (being built).

use clap::Args;

use crate::error::Error;
use crate::profile::Env;

/// Arguments of `virtgate enroll`.
#[derive(Debug, Clone, Args)]
pub struct EnrollArgs {}

/// Run `virtgate enroll`.
pub fn run(_args: EnrollArgs, _env: &Env) -> Result<(), Error> {
    Err(Error::Unsupported {
        what: "enroll".into(),
        hint: "being built".into(),
    })
}
