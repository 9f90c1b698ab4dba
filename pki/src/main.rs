//! `virtgate-pki`: the certificate authority's command line.
//!
//! Parsing and the commands live in the library's `cli.rs` (so that `virtgate-dist` can
//! make man pages and completions from the same definition); this file runs them and turns a failure
//! into `error: …` / `hint: …` on stderr and exit status 1 (clap exits 2 on bad usage).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use virtgate_pki::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = err.chain().find_map(virtgate_pki::hint_of) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
