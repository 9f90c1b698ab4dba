//! `virtgated`: flags, logging, exit codes. Everything else lives in the library.
//!
//! Exit status: 0 ok (including a stop by SIGTERM/SIGINT), 1 error, 2 usage (clap).
//! Errors print as `error: ...` and `hint: ...` on stderr; logs go to stderr too
//! (`RUST_LOG`, default `info`); stdout carries only machine-readable lines such as
//! `listening on ADDR`.
//!
//! `run` and `demo` refuse to start as root (effective uid 0) unless `--allow-root` is
//! given, and then log one warning; `check-config`, `schema` and `reload` run as anyone.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use virtgate_gateway::cli::{Cli, Command};
use virtgate_gateway::config;
use virtgate_gateway::{demo, Error, RunOptions, Shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Schema => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::CheckConfig => report(check_config(&cli.config)),
        Command::Reload => report(reload(&cli.config, cli.pidfile.as_deref())),
        Command::Run => {
            let options = RunOptions {
                config_path: Some(cli.config.clone()),
                pidfile: cli.pidfile.clone(),
            };
            report(
                as_root("run", cli.allow_root).and_then(|root| {
                    serve(options, root, || Ok((config::load(&cli.config)?, None)))
                }),
            )
        }
        Command::Demo { dir, listen } => {
            let options = RunOptions {
                config_path: None,
                pidfile: cli.pidfile.clone(),
            };
            report(as_root("demo", cli.allow_root).and_then(|root| {
                serve(options, root, || {
                    let d = demo::prepare(dir.as_deref(), &listen)?;
                    Ok((d.config.clone(), Some(d)))
                })
            }))
        }
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

/// `virtgated reload`: check the file here first (same errors as the gateway would give),
/// then ask the running gateway and print its answer.
fn reload(path: &std::path::Path, pidfile: Option<&std::path::Path>) -> Result<(), Error> {
    let c = config::load(path)?;
    virtgate_gateway::check(&c)?;
    let said = virtgate_gateway::reload::request(&c, pidfile)?;
    println!("{said}");
    Ok(())
}

/// Whether `command` runs as root (effective uid 0): an error unless `allow` (--allow-root).
fn as_root(command: &'static str, allow: bool) -> Result<bool, Error> {
    let root = rustix::process::geteuid().is_root();
    if root && !allow {
        return Err(Error::Root { command });
    }
    Ok(root)
}

/// Set up logging and the runtime, then run the gateway (`demo` writes its files when ready);
/// `root`: it runs as root, allowed by --allow-root, which is logged once as a warning.
fn serve(
    options: RunOptions,
    root: bool,
    load: impl FnOnce() -> Result<(config::Config, Option<demo::Demo>), Error>,
) -> Result<(), Error> {
    init_tracing();
    if root {
        tracing::warn!(
            "running as root (--allow-root): a flaw in the gateway would give away the whole \
             host; run it as its own user (User=virtgate in the package's unit)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let (config, demo) = load()?;
        let shutdown = Shutdown::on_signals().map_err(Error::Runtime)?;
        virtgate_gateway::run(&config, &options, shutdown, |l| match &demo {
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
            eprintln!("error: {}", virtgate_gateway::error_text(&e));
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}
