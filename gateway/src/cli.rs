//! The command line of `virtgated` (clap): here in the library so that man pages and shell
//! completions can be generated from the same definition (`virtgate-dist`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// The virtgate gateway: management API, VNC, SPICE and serial consoles and libvirt RPC over
/// one connection per client.
///
/// Reads /etc/virtgate/gateway.toml (`virtgated schema` describes every key). Runs as the
/// `virtgate` user under systemd (virtgated.service, Type=notify) or OpenRC
/// (/etc/init.d/virtgated). SIGHUP, `virtgated reload` and `systemctl reload virtgated`
/// re-read the configuration and every file it names without dropping connections; SIGTERM
/// drains the connections and stops. Certificates come from virtgate-pki(8):
/// /etc/virtgate/pki holds what the gateway reads, the CA in /etc/virtgate/ca stays private.
/// The audit log is in /var/log/virtgate, the sockets in /run/virtgate. `run` and `demo`
/// refuse to run as root unless --allow-root is given; keys other users may read and
/// certificates, CAs or CRLs they may write are refused with the `chmod` that fixes them.
#[derive(Debug, Parser)]
#[command(name = "virtgated", version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "VIRTGATE_GATEWAY_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Write the gateway's pid here once it listens (removed when it stops); `reload`
    /// signals the pid in it when the configuration has no `[listen] control` socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// Let `run` and `demo` run as root (effective uid 0), which they refuse otherwise: a
    /// flaw in a network-facing service running as root gives away the whole host. Run the
    /// gateway as its own user instead (the package's unit has User=virtgate).
    #[arg(long, global = true)]
    pub allow_root: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Run,
    /// Check the configuration file and the files it names, then exit.
    CheckConfig,
    /// Make the running gateway re-read its configuration and every file it names (TLS,
    /// CRL, rules, keytab, audit log) without dropping connections; prints the outcome.
    /// A configuration that does not check is refused and the old one stays in force.
    Reload,
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Throwaway PKI, a demo VM and a `demo` client profile, then serve until Ctrl-C.
    Demo {
        /// Folder for the demo's files (default: $XDG_RUNTIME_DIR/virtgate-demo or /tmp/virtgate-demo-$USER).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}
