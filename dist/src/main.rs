//! `virtgate-dist`: what the Debian package needs besides the binaries, made from the
//! sources themselves so that it cannot drift from them.
//!
//! ```text
//! virtgate-dist docs DIR        man pages and bash/zsh/fish completions of virtgated,
//!                               virtgate and virtgate-pki, from their clap definitions
//! virtgate-dist licenses        every crate linked into the three programs, with its licence;
//!                               --check fails on a licence outside the allow-list
//! virtgate-dist copyright       deploy/debian/copyright (DEP-5) from that inventory;
//!                               --check fails when the file in the tree is not up to date
//! ```
//!
//! Layout: `docs.rs` (clap_mangen, clap_complete), `inventory.rs` (`cargo metadata`, the
//! linked closure), `spdx.rs` (licence expressions and the allow-list), `copyright.rs`
//! (the DEP-5 file and the licence texts it carries).
//! `scripts/package.sh` runs `docs` before `cargo deb`; the tests run the `--check`s.

#![forbid(unsafe_code)]

mod copyright;
mod docs;
mod inventory;
mod spdx;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// virtgate's packaging helper: man pages, completions, licence inventory.
#[derive(Debug, Parser)]
#[command(name = "virtgate-dist", version, max_term_width = 100)]
struct Cli {
    /// What to make or check.
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write man pages (DIR/man) and completions (DIR/bash, DIR/zsh, DIR/fish)
    Docs {
        /// Folder to write into (created when missing)
        dir: PathBuf,
    },
    /// List every crate linked into virtgated, virtgate and virtgate-pki with its licence
    Licenses {
        /// Workspace manifest (default: the one cargo finds from the current folder)
        #[arg(long, value_name = "FILE")]
        manifest_path: Option<PathBuf>,
        /// Fail when a licence is not in the allow-list
        #[arg(long)]
        check: bool,
    },
    /// Print the DEP-5 copyright file of the package, or check the one in the tree
    Copyright {
        /// Workspace manifest (default: the one cargo finds from the current folder)
        #[arg(long, value_name = "FILE")]
        manifest_path: Option<PathBuf>,
        /// Compare with this file instead of printing; fail when it differs
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = err.chain().find_map(hint_of) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The hint of the first of our errors in a chain.
fn hint_of(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(e) = err.downcast_ref::<inventory::InventoryError>() {
        return Some(e.hint());
    }
    if let Some(e) = err.downcast_ref::<spdx::Refused>() {
        return Some(e.hint());
    }
    if let Some(e) = err.downcast_ref::<copyright::Stale>() {
        return Some(e.hint());
    }
    None
}

/// Runs one command.
fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Docs { dir } => {
            let written = docs::write_all(&dir).context("docs")?;
            for p in written {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Licenses {
            manifest_path,
            check,
        } => {
            let crates = inventory::linked_crates(manifest_path.as_deref())?;
            let refused = spdx::refused(&crates);
            for c in &crates {
                let mark = if refused.iter().any(|r| r.name == c.name) {
                    "  REFUSED"
                } else {
                    ""
                };
                println!("{:<28} {:<12} {}{mark}", c.name, c.version, c.license);
            }
            println!("{} crates", crates.len());
            if check && !refused.is_empty() {
                return Err(spdx::Refused { crates: refused }.into());
            }
            Ok(())
        }
        Command::Copyright {
            manifest_path,
            check,
        } => {
            let crates = inventory::linked_crates(manifest_path.as_deref())?;
            let text = copyright::render(&crates);
            match check {
                None => {
                    print!("{text}");
                    Ok(())
                }
                Some(path) => copyright::check(&path, &text),
            }
        }
    }
}
