//! The viewer the graphical forwarders (`vnc`, `spice`, `display`) start once their local
//! endpoint is up, and how its exit ends the forwarding.
//!
//! Which one: `--viewer CMD`, else `$VIRTGATE_VIEWER`, else the first installed of the
//! command's [`Defaults`] (`remote-viewer` from virt-viewer; for `vnc` first `vncviewer`);
//! `{}` in a command is replaced by the URL, which is appended when there is no `{}`. The
//! command runs through `sh -c` (it is the user's own flag or environment; the URL is built
//! here from a local address). None installed: a hint how to install virt-viewer, and the
//! endpoint stays open until Ctrl-C. The viewer exiting ends the forwarding (status 0),
//! unless it was a launcher that exits at once ([`LAUNCHER_GRACE`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use virtgate_proto::ConsoleKind;

use super::forward::{classic_vnc, url};
use crate::error::Error;

/// A viewer that exits this soon with success was only a launcher (xdg-open): keep serving.
const LAUNCHER_GRACE: Duration = Duration::from_secs(3);

/// The environment variable that names the viewer when `--viewer` does not.
pub const VIEWER_ENV: &str = "VIRTGATE_VIEWER";

/// How to install a viewer, for the hint when none is found.
const INSTALL_HINT: &str = "install virt-viewer for remote-viewer (Debian/Ubuntu: \
     `sudo apt install virt-viewer`, Fedora: `sudo dnf install virt-viewer`), or pass \
     --viewer CMD / set VIRTGATE_VIEWER";

/// Which viewer to start once the endpoint is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// `--no-viewer`: only print the URL.
    None,
    /// `--viewer CMD`: `{}` replaced by the URL, or the URL appended.
    Command(String),
    /// Neither flag: `$VIRTGATE_VIEWER`, else the command's [`Defaults`] when installed.
    Auto,
}

/// The viewers a command tries, in order, when neither `--viewer` nor `$VIRTGATE_VIEWER`
/// names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    /// `virtgate vnc`: `vncviewer HOST::PORT`, `remote-viewer URL`, `xdg-open URL`.
    Vnc,
    /// `virtgate spice` and `virtgate display`: `remote-viewer URL` (virt-viewer).
    RemoteViewer,
}

/// The shell command line that starts a viewer, if any: `viewer`, else `env` (the value of
/// `$VIRTGATE_VIEWER`), else the first of `defaults` that `have` finds installed.
pub fn viewer_command(
    viewer: &Viewer,
    env: Option<&str>,
    defaults: Defaults,
    kind: ConsoleKind,
    addr: SocketAddr,
    have: impl Fn(&str) -> bool,
) -> Option<String> {
    let url = url(kind, addr);
    let with_url = |cmd: &str| {
        if cmd.contains("{}") {
            cmd.replace("{}", &url)
        } else {
            format!("{cmd} {url}")
        }
    };
    match (viewer, env.map(str::trim).filter(|e| !e.is_empty())) {
        (Viewer::None, _) => None,
        (Viewer::Command(cmd), _) => Some(with_url(cmd)),
        (Viewer::Auto, Some(env)) => Some(with_url(env)),
        (Viewer::Auto, None) => {
            let classic = kind == ConsoleKind::Vnc && defaults == Defaults::Vnc;
            if classic && have("vncviewer") {
                // TigerVNC/TightVNC/RealVNC all take HOST::PORT
                Some(format!("vncviewer {}", classic_vnc(addr)))
            } else if have("remote-viewer") {
                Some(with_url("remote-viewer"))
            } else if classic && have("xdg-open") {
                Some(with_url("xdg-open"))
            } else {
                None
            }
        }
    }
}

/// Whether a program is on `$PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Start the viewer the flags, the environment or the installed programs give, if any;
/// says on stderr when none was found.
pub fn launch(
    viewer: &Viewer,
    defaults: Defaults,
    kind: ConsoleKind,
    addr: SocketAddr,
) -> Option<tokio::process::Child> {
    let env = std::env::var(VIEWER_ENV).ok();
    match viewer_command(viewer, env.as_deref(), defaults, kind, addr, on_path) {
        Some(cmd) => start(&cmd),
        None => {
            if *viewer == Viewer::Auto {
                eprintln!(
                    "no viewer found: {INSTALL_HINT}; {} stays open until Ctrl-C",
                    url(kind, addr)
                );
            }
            None
        }
    }
}

/// Resolves when the viewer has exited for good; a launcher that quickly exits with
/// success (xdg-open) leaves the endpoint open, so does a viewer that quickly fails.
pub async fn watch(
    child: &mut Option<tokio::process::Child>,
    started: Instant,
    url: &str,
) -> Result<(), Error> {
    loop {
        let status = wait_child(child).await;
        *child = None;
        let quick = started.elapsed() < LAUNCHER_GRACE;
        match status {
            Ok(s) if s.success() && quick => {}
            Ok(s) if quick => eprintln!("warning: the viewer exited with {s}; {url} stays open"),
            _ => {
                eprintln!("the viewer exited; stopping");
                return Ok(());
            }
        }
    }
}

/// Start the viewer command (through `sh -c`: it is the user's own flag or environment,
/// and the URL is ours); failures are warnings.
fn start(cmd: &str) -> Option<tokio::process::Child> {
    tracing::debug!(%cmd, "starting viewer");
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false)
        .spawn()
    {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("warning: cannot start the viewer `{cmd}`: {e}");
            None
        }
    }
}

async fn wait_child(
    child: &mut Option<tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_commands() {
        use ConsoleKind::{Spice, Vnc};
        let a: SocketAddr = "[::1]:5".parse().unwrap();
        let cmd = |v: &Viewer, env: Option<&str>, d, k, have: &dyn Fn(&str) -> bool| {
            viewer_command(v, env, d, k, a, have)
        };
        let all = |_: &str| true;
        let none = |_: &str| false;
        // --no-viewer wins over everything
        assert_eq!(
            cmd(&Viewer::None, Some("x"), Defaults::Vnc, Vnc, &all),
            None
        );
        // --viewer CMD: {} replaced, else appended; wins over $VIRTGATE_VIEWER
        let v = Viewer::Command("v --url={} -x".into());
        assert_eq!(
            cmd(&v, Some("e"), Defaults::Vnc, Vnc, &none).as_deref(),
            Some("v --url=vnc://[::1]:5 -x")
        );
        let v = Viewer::Command("v".into());
        assert_eq!(
            cmd(&v, None, Defaults::RemoteViewer, Spice, &none).as_deref(),
            Some("v spice://[::1]:5")
        );
        // $VIRTGATE_VIEWER the same way, before any installed viewer; blank is unset
        assert_eq!(
            cmd(
                &Viewer::Auto,
                Some("my-viewer {} --full"),
                Defaults::RemoteViewer,
                Spice,
                &all
            )
            .as_deref(),
            Some("my-viewer spice://[::1]:5 --full")
        );
        assert_eq!(
            cmd(&Viewer::Auto, Some("my-viewer"), Defaults::Vnc, Vnc, &all).as_deref(),
            Some("my-viewer vnc://[::1]:5")
        );
        assert_eq!(
            cmd(
                &Viewer::Auto,
                Some("  "),
                Defaults::RemoteViewer,
                Spice,
                &all
            )
            .as_deref(),
            Some("remote-viewer spice://[::1]:5")
        );
        // display / spice: remote-viewer or nothing
        assert_eq!(
            cmd(&Viewer::Auto, None, Defaults::RemoteViewer, Vnc, &all).as_deref(),
            Some("remote-viewer vnc://[::1]:5")
        );
        let only_vncviewer = |p: &str| p == "vncviewer" || p == "xdg-open";
        assert_eq!(
            cmd(
                &Viewer::Auto,
                None,
                Defaults::RemoteViewer,
                Spice,
                &only_vncviewer
            ),
            None
        );
        // vnc: vncviewer HOST::PORT, then remote-viewer, then xdg-open
        assert_eq!(
            cmd(&Viewer::Auto, None, Defaults::Vnc, Vnc, &all).as_deref(),
            Some("vncviewer [::1]::5")
        );
        assert_eq!(
            cmd(&Viewer::Auto, None, Defaults::Vnc, Vnc, &|p| p
                != "vncviewer")
            .as_deref(),
            Some("remote-viewer vnc://[::1]:5")
        );
        assert_eq!(
            cmd(&Viewer::Auto, None, Defaults::Vnc, Vnc, &|p| p
                == "xdg-open")
            .as_deref(),
            Some("xdg-open vnc://[::1]:5")
        );
        assert_eq!(cmd(&Viewer::Auto, None, Defaults::Vnc, Vnc, &none), None);
        assert!(INSTALL_HINT.contains("apt install virt-viewer"));
        assert!(INSTALL_HINT.contains("dnf install virt-viewer"));
    }
}
