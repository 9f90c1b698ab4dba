//! `virtgate vnc DOM`: a local TCP endpoint whose every connection is one tunnel stream on the
//! session's single HTTP/2 connection (the listener and the splicing are [`super::relay`]).
//!
//! Contract: the FIRST line on stdout is `vnc://HOST:PORT` (IPv6 as `vnc://[::1]:PORT`),
//! printed only after the gateway confirmed the domain, and flushed at once; everything else
//! goes to stderr. A tunnel that fails is reported on stderr and only its local connection is
//! closed. Ctrl-C or SIGTERM ends everything with status 0; losing the gateway ends it with
//! an error (status 1).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use virtgate_proto::{ApiPath, ConsoleKind, Domain, DomainState, TunnelKind};

use super::print;
use super::relay::{self, Local, Stop};
use crate::error::Error;
use crate::session::Session;

/// A viewer that exits this soon with success was only a launcher (xdg-open): keep serving.
const LAUNCHER_GRACE: Duration = Duration::from_secs(3);

/// Which VNC viewer to start once the endpoint is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// `--no-viewer`: only print the URL.
    None,
    /// `--viewer CMD`: `{}` replaced by the URL, or the URL appended.
    Command(String),
    /// Neither flag: `vncviewer` or `xdg-open` when installed.
    Auto,
}

/// `vnc://HOST:PORT` for a bound address.
pub fn vnc_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("vnc://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("vnc://[{}]:{}", a.ip(), a.port()),
    }
}

/// The shell command line to start a viewer, if any.
pub fn viewer_command(
    viewer: &Viewer,
    addr: SocketAddr,
    have: impl Fn(&str) -> bool,
) -> Option<String> {
    let url = vnc_url(addr);
    match viewer {
        Viewer::None => None,
        Viewer::Command(cmd) if cmd.contains("{}") => Some(cmd.replace("{}", &url)),
        Viewer::Command(cmd) => Some(format!("{cmd} {url}")),
        Viewer::Auto if have("vncviewer") => {
            // TigerVNC/TightVNC/RealVNC all take HOST::PORT
            let host = match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            };
            Some(format!("vncviewer {host}::{}", addr.port()))
        }
        Viewer::Auto if have("xdg-open") => Some(format!("xdg-open {url}")),
        Viewer::Auto => None,
    }
}

/// Whether a program is on `$PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Refuse before printing a URL when the domain cannot give a VNC console to this user.
pub fn check_vnc(d: &Domain) -> Result<(), Error> {
    if d.state == DomainState::Unavailable {
        return Err(Error::Domain {
            message: format!(
                "domain `{}` is unavailable{}",
                d.name,
                d.state_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            hint: "the gateway cannot reach its hypervisor process; ask the gateway's admin".into(),
        });
    }
    if !d.consoles.is_empty() && !d.consoles.contains(&ConsoleKind::Vnc) {
        return Err(Error::Domain {
            message: format!("domain `{}` has no VNC console", d.name),
            hint: format!("`virtgate info {}` lists the consoles it has", d.name),
        });
    }
    if d.role.as_deref() == Some("viewer") {
        return Err(Error::Domain {
            message: format!(
                "your role on `{}` is viewer, which may not use its VNC console",
                d.name
            ),
            hint: "ask the gateway's admin for the operator role on this domain".into(),
        });
    }
    if matches!(d.state, DomainState::ShutOff | DomainState::Crashed) {
        return Err(Error::Domain {
            message: format!(
                "domain `{}` is not running ({}): it has no VNC console now",
                d.name, d.state
            ),
            hint: format!("start it with `virtgate start {}`", d.name),
        });
    }
    Ok(())
}

/// Run the forwarder until Ctrl-C, SIGTERM, the viewer closing, or the gateway going away.
pub async fn vnc(
    session: Session,
    name: &str,
    listen: SocketAddr,
    viewer: Viewer,
) -> Result<(), Error> {
    let domain: Domain = session.get_json(&ApiPath::Domain(name.to_owned())).await?;
    check_vnc(&domain)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen.to_string(),
        source,
    })?;
    let url = vnc_url(local);
    print(&format!("{url}\n"))?;
    eprintln!(
        "forwarding {url} to the VNC console of `{name}` on {}; Ctrl-C to stop",
        session.server()
    );
    let stop = Stop::install()?;
    let mut viewer_child = start_viewer(&viewer, local);
    let tunnel = ApiPath::Tunnel {
        domain: Some(name.to_owned()),
        kind: TunnelKind::Vnc,
    };
    let watch = watch_viewer(&mut viewer_child, Instant::now(), &url);
    let result = relay::serve(&session, Local::Tcp(listener), tunnel, stop, watch).await;
    if let Some(mut c) = viewer_child {
        let _ = c.start_kill();
    }
    result
}

/// Resolves when the viewer has exited for good; a launcher that quickly exits with
/// success (xdg-open) leaves the endpoint open, so does a viewer that quickly fails.
async fn watch_viewer(
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

/// Start the viewer, if one is wanted and available; failures are warnings.
fn start_viewer(viewer: &Viewer, addr: SocketAddr) -> Option<tokio::process::Child> {
    let cmd = viewer_command(viewer, addr, on_path)?;
    tracing::debug!(%cmd, "starting viewer");
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
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
    fn urls_bracket_ipv6() {
        assert_eq!(
            vnc_url("127.0.0.1:5901".parse().unwrap()),
            "vnc://127.0.0.1:5901"
        );
        assert_eq!(vnc_url("[::1]:40000".parse().unwrap()), "vnc://[::1]:40000");
    }

    #[test]
    fn viewer_commands() {
        let a: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(viewer_command(&Viewer::None, a, |_| true), None);
        assert_eq!(
            viewer_command(&Viewer::Command("v --url={} -x".into()), a, |_| false).as_deref(),
            Some("v --url=vnc://[::1]:5 -x")
        );
        assert_eq!(
            viewer_command(&Viewer::Command("v".into()), a, |_| false).as_deref(),
            Some("v vnc://[::1]:5")
        );
        assert_eq!(
            viewer_command(&Viewer::Auto, a, |p| p == "vncviewer").as_deref(),
            Some("vncviewer [::1]::5")
        );
        assert_eq!(
            viewer_command(&Viewer::Auto, a, |p| p == "xdg-open").as_deref(),
            Some("xdg-open vnc://[::1]:5")
        );
        assert_eq!(viewer_command(&Viewer::Auto, a, |_| false), None);
    }

    #[test]
    fn vnc_is_refused_before_any_url_when_it_cannot_work() {
        let mut d = Domain {
            name: "vm1".into(),
            uuid: None,
            state: DomainState::Running,
            state_reason: None,
            vcpus: None,
            memory_mib: None,
            consoles: vec![ConsoleKind::Vnc],
            role: Some("operator".into()),
        };
        assert!(check_vnc(&d).is_ok());
        d.role = Some("viewer".into());
        assert!(check_vnc(&d).unwrap_err().to_string().contains("viewer"));
        d.role = None;
        d.consoles = vec![ConsoleKind::Serial];
        assert!(check_vnc(&d)
            .unwrap_err()
            .to_string()
            .contains("no VNC console"));
        d.state = DomainState::Unavailable;
        d.state_reason = Some("QMP socket gone".into());
        assert_eq!(
            check_vnc(&d).unwrap_err().to_string(),
            "domain `vm1` is unavailable: QMP socket gone"
        );
    }
}
