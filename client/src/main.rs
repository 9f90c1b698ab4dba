//! `virtgate`: parse the command line, set up logging, run, print any error as
//! `error: …` / `hint: …` and exit 0 (ok), 1 (error) or 2 (usage, from clap).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use virtgate_client::cli::{Cli, Command};
use virtgate_client::error::report;
use virtgate_client::Outcome;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `up` logs its connection's ups and downs (into its log file when in the background)
    let default = match cli.command {
        Command::Up(_) => "warn,virtgate_client::shared=info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match virtgate_client::run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::from(1)
        }
    }
}
