//! `virtgate vnc DOM`, `virtgate spice DOM` and `virtgate display DOM`: one forwarder,
//! parametrised by the console kind, that opens a local TCP endpoint whose every connection
//! is one tunnel stream on the session's single HTTP/2 connection (the listener and the
//! splicing are [`super::relay`]). SPICE opens one connection per channel (main, display,
//! inputs, cursor, ...), so a SPICE viewer makes several streams; VNC viewers make one.
//! `display` picks SPICE when the domain has it, else VNC, and starts `remote-viewer`.
//!
//! Contract: the FIRST line on stdout is `vnc://HOST:PORT` or `spice://HOST:PORT` (IPv6 as
//! `[::1]`), printed only after the gateway confirmed the domain has that console and the
//! role allows it, and flushed at once; everything else goes to stderr. A tunnel that fails
//! is reported on stderr and only its local connection is closed. Ctrl-C or SIGTERM ends
//! everything with status 0, and so does the viewer exiting (unless it was a launcher that
//! exits at once); losing the gateway ends it with status 1.
//!
//! The viewer and its end are [`super::viewer`].

use std::net::SocketAddr;
use std::time::Instant;

use clap::Args;
use tokio::net::TcpListener;
use virtgate_proto::{ApiPath, ConsoleKind, Domain, DomainState, TunnelKind};

use super::print;
use super::relay::{self, Local, Stop};
use super::viewer::{self, Defaults, Viewer};
use crate::cli::parse_listen;
use crate::error::Error;
use crate::session::Session;

/// `virtgate display --protocol`: which graphical console to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// SPICE when the domain has it, else VNC.
    Auto,
    /// SPICE only.
    Spice,
    /// VNC only.
    Vnc,
}

/// `HOST:PORT` with IPv6 in brackets.
fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// `vnc://HOST:PORT` or `spice://HOST:PORT` for a bound address.
pub fn url(kind: ConsoleKind, addr: SocketAddr) -> String {
    format!("{}://{}", kind.as_str(), host_port(addr))
}

/// `HOST::PORT`, the form classic VNC viewers (vncviewer, vncsnapshot) take; they read
/// `HOST:N` and even `vnc://HOST:N` as display number N (port 5900 + N).
pub fn classic_vnc(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}::{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]::{}", a.ip(), a.port()),
    }
}

/// `VNC` or `SPICE`, for messages.
fn label(kind: ConsoleKind) -> &'static str {
    match kind {
        ConsoleKind::Spice => "SPICE",
        ConsoleKind::Serial => "serial",
        _ => "VNC",
    }
}

/// Refuse a domain the gateway cannot reach at all.
fn check_available(d: &Domain) -> Result<(), Error> {
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
    Ok(())
}

/// Refuse before printing a URL when the domain cannot give this user a `kind` console:
/// unavailable, no such console, the viewer role, not running.
pub fn check(d: &Domain, kind: ConsoleKind) -> Result<(), Error> {
    check_available(d)?;
    let name = label(kind);
    if !d.consoles.contains(&kind) {
        let other = [ConsoleKind::Spice, ConsoleKind::Vnc]
            .into_iter()
            .find(|k| *k != kind && d.consoles.contains(k));
        let hint = match other {
            Some(k) => format!(
                "it has a {} console: `virtgate {} {}` (or `virtgate display {}`)",
                label(k),
                k.as_str(),
                d.name,
                d.name
            ),
            None => format!("`virtgate info {}` lists the consoles it has", d.name),
        };
        return Err(Error::Domain {
            message: format!("domain `{}` has no {name} console", d.name),
            hint,
        });
    }
    if d.role.as_deref() == Some("viewer") {
        return Err(Error::Domain {
            message: format!(
                "your role on `{}` is viewer, which may not use its {name} console",
                d.name
            ),
            hint: "ask the gateway's admin for the operator role on this domain".into(),
        });
    }
    if matches!(d.state, DomainState::ShutOff | DomainState::Crashed) {
        return Err(Error::Domain {
            message: format!(
                "domain `{}` is not running ({}): it has no {name} console now",
                d.name, d.state
            ),
            hint: format!("start it with `virtgate start {}`", d.name),
        });
    }
    Ok(())
}

/// The console `virtgate display --protocol` forwards for this domain, checked as by
/// [`check`]: `auto` is SPICE when the domain has it, else VNC.
pub fn choose(d: &Domain, protocol: Protocol) -> Result<ConsoleKind, Error> {
    check_available(d)?;
    let kind = match protocol {
        Protocol::Spice => ConsoleKind::Spice,
        Protocol::Vnc => ConsoleKind::Vnc,
        Protocol::Auto if d.consoles.contains(&ConsoleKind::Spice) => ConsoleKind::Spice,
        Protocol::Auto if d.consoles.contains(&ConsoleKind::Vnc) => ConsoleKind::Vnc,
        Protocol::Auto => {
            return Err(Error::Domain {
                message: format!("domain `{}` has no graphical console", d.name),
                hint: format!(
                    "it has neither VNC nor SPICE (`virtgate info {}` lists its consoles); \
                     the gateway's admin can give it a display",
                    d.name
                ),
            })
        }
    };
    check(d, kind)?;
    Ok(kind)
}

/// What to forward and which viewers to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The console asked for (`display` resolves `auto` against the domain).
    pub protocol: Protocol,
    /// The viewers tried when none is named.
    pub defaults: Defaults,
}

/// Run the forwarder until Ctrl-C, SIGTERM, the viewer closing, or the gateway going away.
pub async fn run(
    session: Session,
    name: &str,
    forward: Forward,
    listen: SocketAddr,
    viewer: Viewer,
) -> Result<(), Error> {
    let domain: Domain = session.get_json(&ApiPath::Domain(name.to_owned())).await?;
    let kind = choose(&domain, forward.protocol)?;
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
    let url = url(kind, local);
    print(&format!("{url}\n"))?;
    eprintln!(
        "forwarding {url} to the {} console of `{name}` on {}; Ctrl-C to stop",
        label(kind),
        session.server()
    );
    if kind == ConsoleKind::Vnc {
        eprintln!(
            "classic VNC viewers take {}: `vncviewer {}` (they read HOST:N as display N)",
            classic_vnc(local),
            classic_vnc(local)
        );
    } else {
        eprintln!("open it with `remote-viewer {url}` (virt-viewer); every SPICE channel is a stream on the one connection");
    }
    let stop = Stop::install()?;
    let mut viewer_child = viewer::launch(&viewer, forward.defaults, kind, local);
    let tunnel = ApiPath::Tunnel {
        domain: Some(name.to_owned()),
        kind: match kind {
            ConsoleKind::Spice => TunnelKind::Spice,
            _ => TunnelKind::Vnc,
        },
    };
    let watch = viewer::watch(&mut viewer_child, Instant::now(), &url);
    let result = relay::serve(&session, Local::Tcp(listener), tunnel, stop, watch).await;
    if let Some(mut c) = viewer_child {
        let _ = c.start_kill();
    }
    result
}

/// The local end of `vnc`, `spice` and `display`: where to listen, which viewer to start.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// Local address to listen on (IP[:PORT]; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Run this viewer; `{}` is replaced by the vnc:// or spice:// URL (appended when
    /// absent). Default: $VIRTGATE_VIEWER, else an installed viewer (remote-viewer, ...)
    #[arg(long, value_name = "CMD", conflicts_with = "no_viewer")]
    pub viewer: Option<String>,
    /// Do not start a viewer, only print the URL
    #[arg(long)]
    pub no_viewer: bool,
}

impl Endpoint {
    /// The viewer the flags ask for.
    pub fn viewer(&self) -> Viewer {
        match (&self.viewer, self.no_viewer) {
            (_, true) => Viewer::None,
            (Some(cmd), false) => Viewer::Command(cmd.clone()),
            (None, false) => Viewer::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(consoles: &[ConsoleKind]) -> Domain {
        Domain {
            name: "vm1".into(),
            uuid: None,
            state: DomainState::Running,
            state_reason: None,
            vcpus: None,
            memory_mib: None,
            consoles: consoles.to_vec(),
            role: Some("operator".into()),
        }
    }

    #[test]
    fn urls_bracket_ipv6() {
        let v4: SocketAddr = "127.0.0.1:5901".parse().unwrap();
        let v6: SocketAddr = "[::1]:40000".parse().unwrap();
        assert_eq!(url(ConsoleKind::Vnc, v4), "vnc://127.0.0.1:5901");
        assert_eq!(url(ConsoleKind::Vnc, v6), "vnc://[::1]:40000");
        assert_eq!(url(ConsoleKind::Spice, v4), "spice://127.0.0.1:5901");
        assert_eq!(url(ConsoleKind::Spice, v6), "spice://[::1]:40000");
        assert_eq!(classic_vnc(v4), "127.0.0.1::5901");
        assert_eq!(classic_vnc(v6), "[::1]::40000");
    }

    #[test]
    fn graphical_console_commands_parse() {
        use crate::cli::{Cli, Command, RemoteCommand};
        use clap::Parser;
        let parse = |args: &str| Cli::try_parse_from(args.split(' ')).map(|c| c.command);
        let Ok(Command::Remote(RemoteCommand::Spice { domain, endpoint })) =
            parse("virtgate spice web1 --listen [::1]:0 --no-viewer")
        else {
            panic!("spice")
        };
        assert_eq!(domain, "web1");
        assert_eq!(endpoint.listen, "[::1]:0".parse().unwrap());
        assert_eq!(endpoint.viewer(), Viewer::None);
        let Ok(Command::Remote(RemoteCommand::Display {
            protocol, endpoint, ..
        })) = parse("virtgate display web1")
        else {
            panic!("display")
        };
        assert_eq!(
            (protocol, endpoint.viewer()),
            (Protocol::Auto, Viewer::Auto)
        );
        assert_eq!(endpoint.listen, "127.0.0.1:0".parse().unwrap());
        let Ok(Command::Remote(RemoteCommand::Display {
            protocol, endpoint, ..
        })) = parse("virtgate display web1 --protocol vnc --viewer v")
        else {
            panic!("display --protocol vnc")
        };
        assert_eq!(
            (protocol, endpoint.viewer()),
            (Protocol::Vnc, Viewer::Command("v".into()))
        );
        for bad in [
            "virtgate display web1 --protocol rdp",
            "virtgate spice web1 --viewer x --no-viewer",
            "virtgate display",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_prefers_spice_then_vnc() {
        use ConsoleKind::{Serial, Spice, Vnc};
        let both = domain(&[Vnc, Spice, Serial]);
        assert_eq!(choose(&both, Protocol::Auto).unwrap(), Spice);
        assert_eq!(choose(&both, Protocol::Vnc).unwrap(), Vnc);
        assert_eq!(choose(&both, Protocol::Spice).unwrap(), Spice);
        let vnc = domain(&[Vnc, Serial]);
        assert_eq!(choose(&vnc, Protocol::Auto).unwrap(), Vnc);
        let e = choose(&vnc, Protocol::Spice).unwrap_err();
        assert_eq!(e.to_string(), "domain `vm1` has no SPICE console");
        assert!(
            e.hint().unwrap().contains("virtgate vnc vm1"),
            "{:?}",
            e.hint()
        );
        let e = choose(&domain(&[Serial]), Protocol::Auto).unwrap_err();
        assert_eq!(e.to_string(), "domain `vm1` has no graphical console");
        assert!(e.hint().unwrap().contains("virtgate info vm1"));
    }

    #[test]
    fn refused_before_any_url_when_it_cannot_work() {
        use ConsoleKind::{Serial, Spice, Vnc};
        let mut d = domain(&[Vnc]);
        assert!(check(&d, Vnc).is_ok());
        let e = check(&d, Spice).unwrap_err();
        assert!(e.to_string().contains("no SPICE console"), "{e}");
        d.consoles = vec![Spice];
        assert!(check(&d, Spice).is_ok());
        assert!(check(&d, Vnc)
            .unwrap_err()
            .hint()
            .unwrap()
            .contains("virtgate spice vm1"));
        d.role = Some("viewer".into());
        let e = check(&d, Spice).unwrap_err();
        assert!(
            e.to_string().contains("viewer") && e.to_string().contains("SPICE"),
            "{e}"
        );
        assert!(choose(&d, Protocol::Auto).is_err());
        d.role = None;
        d.state = DomainState::ShutOff;
        let e = check(&d, Spice).unwrap_err();
        assert!(e.hint().unwrap().contains("virtgate start vm1"), "{e}");
        d.consoles = vec![Serial];
        d.state = DomainState::Running;
        assert!(check(&d, Vnc)
            .unwrap_err()
            .to_string()
            .contains("no VNC console"));
        d.state = DomainState::Unavailable;
        d.state_reason = Some("QMP socket gone".into());
        assert_eq!(
            check(&d, Vnc).unwrap_err().to_string(),
            "domain `vm1` is unavailable: QMP socket gone"
        );
        // unavailable comes first, even when it lists no graphical console
        assert_eq!(
            choose(&d, Protocol::Auto).unwrap_err().to_string(),
            "domain `vm1` is unavailable: QMP socket gone"
        );
    }
}
