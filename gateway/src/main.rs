//! `virtgated`: flags, logging, exit codes. Everything else lives in the library.
//!
//! Exit status: 0 ok (including a stop by SIGTERM/SIGINT), 1 error, 2 usage (clap).
//! Errors print as `error: ...` and `hint: ...` on stderr; logs go to stderr too
//! (`RUST_LOG`, default `info`); stdout carries only machine-readable lines such as
//! `listening on ADDR`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use virtgate_gateway::cli::{Cli, Command};
use virtgate_gateway::config;
use virtgate_gateway::{demo, Error, Shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Schema => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::CheckConfig => report(check_config(&cli.config)),
        Command::Run => report(serve(|| Ok((config::load(&cli.config)?, None)))),
        Command::Demo { dir, listen } => report(serve(|| {
            let d = demo::prepare(dir.as_deref(), &listen)?;
            Ok((d.config.clone(), Some(d)))
        })),
    }
}

fn check_config(path: &std::path::Path) -> Result<(), Error> {
    let c = config::load(path)?;
    virtgate_gateway::check(&c)?;
    println!("{}: ok ({})", path.display(), c.summary());
    for note in virtgate_gateway::check_notes(&c) {
        println!("note: {note}");
    }
    Ok(())
}

/// Set up logging and the runtime, then run the gateway (`demo` writes its files when ready).
fn serve(
    load: impl FnOnce() -> Result<(config::Config, Option<demo::Demo>), Error>,
) -> Result<(), Error> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let (config, demo) = load()?;
        let shutdown = Shutdown::on_signals().map_err(Error::Runtime)?;
        virtgate_gateway::run(&config, shutdown, |l| match &demo {
            Some(d) => d.ready(l),
            None => Ok(()),
        })
        .await
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn report(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line (like anyhow's `{:#}`), leaving out causes whose
/// text the message already carries.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        let core = text
            .split(" (os error")
            .next()
            .unwrap_or(&text)
            .to_lowercase();
        if !msg.to_lowercase().contains(&core) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}
