//! The commands of the command line: [`Command`], which is either a [`RemoteCommand`]
//! (one that talks to the gateway over a session) or one of the local ones (enrollment,
//! profiles, the shared connection, `doctor`), each of which brings its own arguments.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Subcommand;

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The commands that talk to the gateway.
    #[command(flatten)]
    Remote(RemoteCommand),
    /// Make a private key on this machine and a certificate request (CSR) for the admin
    Enroll(crate::cmd::enroll::EnrollArgs),
    /// Add, import, show or list profiles (the config file is written for you)
    #[command(subcommand)]
    Profile(crate::cmd::profile::ProfileCommand),
    /// Unlock the key once and keep one connection that every command of the profile shares
    Up(crate::shared::UpArgs),
    /// End the shared connection `virtgate up` keeps for the profile
    Down,
    /// Check every step from the profile to the gateway's answer, and say what is wrong
    Doctor(crate::cmd::doctor::DoctorArgs),
}

/// The commands that talk to a gateway: each runs on one [`crate::session::Session`].
#[derive(Debug, Clone, Subcommand)]
pub enum RemoteCommand {
    /// Show who the gateway thinks you are
    Whoami {
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// List the domains you may see
    List {
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one domain
    Info {
        /// Domain name
        domain: String,
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Forward a local TCP port to a domain's VNC console; prints vnc://HOST:PORT first
    Vnc {
        /// Domain name
        domain: String,
        /// Where to listen and which viewer to start.
        #[command(flatten)]
        endpoint: crate::cmd::forward::Endpoint,
    },
    /// Forward a local TCP port to a domain's SPICE console; prints spice://HOST:PORT first
    ///
    /// Every SPICE channel a viewer opens is one stream on the same gateway connection.
    Spice {
        /// Domain name
        domain: String,
        /// Where to listen and which viewer to start.
        #[command(flatten)]
        endpoint: crate::cmd::forward::Endpoint,
    },
    /// Show a domain's screen in a viewer: its SPICE console, else VNC; prints the URL first
    ///
    /// Starts remote-viewer (virt-viewer) or $VIRTGATE_VIEWER, and stops when the viewer
    /// exits. Without a viewer it keeps forwarding until Ctrl-C.
    Display {
        /// Domain name
        domain: String,
        /// Which console: SPICE when the domain has it, else VNC (auto), or only one of them
        #[arg(long, value_enum, default_value = "auto")]
        protocol: crate::cmd::forward::Protocol,
        /// Where to listen and which viewer to start.
        #[command(flatten)]
        endpoint: crate::cmd::forward::Endpoint,
    },
    /// Start a domain
    Start {
        /// Domain name
        domain: String,
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Shut a domain down gracefully (ACPI power button)
    Shutdown {
        /// Domain name
        domain: String,
        /// Seconds to wait for the guest to power off
        #[arg(long, value_name = "S", default_value_t = virtgate_proto::lifecycle::DEFAULT_SHUTDOWN_TIMEOUT_S)]
        timeout: u64,
        /// Destroy (power off hard) the domain when the timeout passes
        #[arg(long)]
        force: bool,
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Reboot a domain
    Reboot {
        /// Domain name
        domain: String,
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Power a domain off hard (like pulling the plug)
    Destroy {
        /// Domain name
        domain: String,
        /// Print the gateway's JSON
        #[arg(long)]
        json: bool,
    },
    /// Save a PNG screenshot of a domain's display; prints `FILE: WxH PNG, N bytes`
    Screenshot {
        /// Domain name
        domain: String,
        /// Where to write it (default DOM.png in the current folder; `-` for stdout)
        #[arg(short = 'o', long = "output", value_name = "FILE.png")]
        output: Option<PathBuf>,
    },
    /// Follow domain lifecycle events (started, stopped, crashed) until Ctrl-C
    Events {
        /// Print the gateway's JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Connect to a domain's serial console; Ctrl-] leaves
    Console {
        /// Domain name
        domain: String,
    },
    /// Serve libvirt's RPC on a local unix socket for virsh / virt-manager; prints the URI first
    Libvirt {
        /// The local socket (default $XDG_RUNTIME_DIR/virtgate/libvirt-PROFILE.sock)
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Read-only: libvirtd's read-only socket (the viewer role suffices)
        #[arg(long)]
        ro: bool,
    },
    /// Open the browser console logged in as you (a one-time link); prints the link first
    ///
    /// The link works once, within a minute; the browser keeps a session cookie for 8 h (or
    /// until logout or a gateway restart). Opens it with $BROWSER or xdg-open.
    Web {
        /// Domain whose console to open (the domain list without one)
        domain: Option<String>,
        /// Only print the link
        #[arg(long)]
        print: bool,
        /// The serial console instead of the screen
        #[arg(long, requires = "domain")]
        serial: bool,
    },
}

/// `IP:PORT`, `[v6]:PORT`, or a bare IP (port 0).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    if s == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    }
    Err(format!(
        "`{s}` is not IP:PORT (e.g. 127.0.0.1:5900, [::1]:0, 0.0.0.0:5900)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
        assert_eq!(parse_listen("::1").unwrap(), "[::1]:0".parse().unwrap());
        assert_eq!(
            parse_listen("0.0.0.0").unwrap(),
            "0.0.0.0:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:5900").unwrap(),
            "127.0.0.1:5900".parse().unwrap()
        );
        assert!(parse_listen("nowhere:1").is_err());
    }

    #[test]
    fn lifecycle_and_console_commands_parse() {
        let parse = |args: &[&str]| {
            let mut v = vec!["virtgate"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).map(|c| match c.command {
                Command::Remote(r) => r,
                c => panic!("{c:?}"),
            })
        };
        match parse(&["shutdown", "web1", "--timeout", "2", "--force"]).unwrap() {
            RemoteCommand::Shutdown {
                domain,
                timeout,
                force,
                json,
            } => assert!(domain == "web1" && timeout == 2 && force && !json),
            c => panic!("{c:?}"),
        }
        match parse(&["shutdown", "web1"]).unwrap() {
            RemoteCommand::Shutdown { timeout, force, .. } => {
                assert!(timeout == virtgate_proto::lifecycle::DEFAULT_SHUTDOWN_TIMEOUT_S && !force)
            }
            c => panic!("{c:?}"),
        }
        assert!(parse(&["shutdown", "web1", "--timeout", "soon"]).is_err());
        assert!(matches!(
            parse(&["start", "web1", "--json"]).unwrap(),
            RemoteCommand::Start { json: true, .. }
        ));
        assert!(matches!(
            parse(&["reboot", "a"]).unwrap(),
            RemoteCommand::Reboot { .. }
        ));
        assert!(matches!(
            parse(&["destroy", "a"]).unwrap(),
            RemoteCommand::Destroy { .. }
        ));
        assert!(parse(&["start"]).is_err());
        match parse(&["screenshot", "web1", "-o", "x.png"]).unwrap() {
            RemoteCommand::Screenshot { domain, output } => {
                assert_eq!(
                    (domain.as_str(), output),
                    ("web1", Some(PathBuf::from("x.png")))
                )
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            parse(&["events", "--json"]).unwrap(),
            RemoteCommand::Events { json: true }
        ));
        assert!(matches!(
            parse(&["console", "web1"]).unwrap(),
            RemoteCommand::Console { .. }
        ));
        match parse(&["libvirt", "--ro", "--socket", "/tmp/l.sock"]).unwrap() {
            RemoteCommand::Libvirt { socket, ro } => {
                assert!(ro && socket == Some(PathBuf::from("/tmp/l.sock")))
            }
            c => panic!("{c:?}"),
        }
    }
}
