//! Man pages and shell completions, generated from the clap definitions of the three
//! programs (`virtgate_gateway::cli::Cli`, `virtgate_client::cli::Cli`,
//! `virtgate_pki::cli::Cli`).
//!
//! ```text
//! DIR/man/virtgated.8 virtgated-run.8 …        the daemon and the CA tool: section 8
//! DIR/man/virtgate.1 virtgate-list.1 …         the client: section 1
//! DIR/bash/virtgate   DIR/zsh/_virtgate   DIR/fish/virtgate.fish   (and the other two)
//! ```
//!
//! Every subcommand gets a page of its own (`virtgate-list.1`), named in the SUBCOMMANDS
//! list of its parent page, as `git` does.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// One program: its name, man section and clap command.
struct Program {
    /// The command's name (`virtgated`).
    name: &'static str,
    /// Man page section: 1 user commands, 8 administration.
    section: &'static str,
    /// Its clap definition.
    command: clap::Command,
}

/// The three programs of the package.
fn programs() -> Vec<Program> {
    vec![
        Program {
            name: "virtgated",
            section: "8",
            command: virtgate_gateway::cli::Cli::command(),
        },
        Program {
            name: "virtgate",
            section: "1",
            command: virtgate_client::cli::Cli::command(),
        },
        Program {
            name: "virtgate-pki",
            section: "8",
            command: virtgate_pki::cli::Cli::command(),
        },
    ]
}

/// Writes every man page and completion file under `dir`; returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let mut written = Vec::new();
    for sub in ["man", "bash", "zsh", "fish"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    for program in programs() {
        let mut cmd = program.command.clone();
        cmd.build();
        written.extend(write_man(&man, &cmd, program.section)?);
        for (shell, sub) in [
            (Shell::Bash, "bash"),
            (Shell::Zsh, "zsh"),
            (Shell::Fish, "fish"),
        ] {
            let mut cmd = program.command.clone();
            let mut path = clap_complete::generate_to(shell, &mut cmd, program.name, dir.join(sub))
                .with_context(|| format!("writing the {sub} completion of {}", program.name))?;
            if shell == Shell::Bash {
                // bash-completion loads completions/NAME when NAME is first completed
                let plain = dir.join(sub).join(program.name);
                fs::rename(&path, &plain).with_context(|| {
                    format!("renaming {} to {}", path.display(), plain.display())
                })?;
                path = plain;
            }
            written.push(path);
        }
    }
    Ok(written)
}

/// Writes the page of `cmd` and, recursively, of each of its subcommands.
fn write_man(dir: &Path, cmd: &clap::Command, section: &str) -> Result<Vec<PathBuf>> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let path = dir.join(format!("{name}.{section}"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(section)
        .manual("virtgate")
        .source(format!("virtgate {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .with_context(|| format!("rendering the man page of {name}"))?;
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    let mut written = vec![path];
    // every page the SUBCOMMANDS list names, `help` included
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(write_man(dir, sub, section)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_gets_pages_and_completions() {
        let tmp = tempfile::tempdir().unwrap();
        let written = write_all(tmp.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(tmp.path()).unwrap().display().to_string())
            .collect();
        for want in [
            "man/virtgated.8",
            "man/virtgated-check-config.8",
            "man/virtgate.1",
            "man/virtgate-list.1",
            "man/virtgate-pki.8",
            "man/virtgate-pki-issue-server.8",
            "bash/virtgate",
            "zsh/_virtgated",
            "fish/virtgate-pki.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let page = fs::read_to_string(tmp.path().join("man/virtgate-pki-issue-server.8")).unwrap();
        assert!(page.contains("group"), "{page}");
    }
}
