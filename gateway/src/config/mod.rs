//! The gateway's configuration file, `/etc/virtgate/gateway.toml` (contract: DESIGN.md).
//!
//! The types here are the file's schema: serde reads them with `deny_unknown_fields`
//! everywhere, and schemars turns the same types into the JSON Schema that
//! `virtgated schema` prints, so the file, the schema and the code cannot drift apart.
//! [`load`](load::load) reads and parses a file (errors carry FILE:LINE:COLUMN and a hint
//! naming the valid keys), then [`validate`](validate::validate) checks what a type cannot
//! express (duplicates, absolute paths, rules naming a known role, ...).

mod load;
pub mod perms;
mod role;
mod validate;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

pub use load::{load, parse, ConfigError, ParseError};
pub use role::Role;
pub use validate::{validate, Invalid};

/// Where `virtgated` looks for its configuration unless `--config` or
/// `VIRTGATE_GATEWAY_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/virtgate/gateway.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    pub listen: Listen,
    /// Server certificate and the CA that signs client certificates; required for TCP listeners.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Kerberos (HTTP Negotiate) login for TLS clients without a certificate.
    #[serde(default)]
    pub kerberos: Option<Kerberos>,
    /// The hypervisor behind the gateway.
    pub backend: Backend,
    /// Authorization rules; a domain no rule grants does not exist for that identity.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Where authorization decisions are recorded; no audit log when absent.
    #[serde(default)]
    pub audit: Option<Audit>,
    /// Bounds on what one peer may hold, and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// Browser logins: one-time `virtgate web` tickets and session cookies.
    #[serde(default)]
    pub web: Web,
}

/// `[web]`: browser logins with a one-time ticket (`virtgate web`) and a session cookie.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// Let browsers connect over TLS without a client certificate (off by default; always
    /// possible with `[kerberos]`). Such a connection can do nothing but trade a
    /// `virtgate web` ticket for a session cookie and then act as that cookie's user;
    /// without a valid cookie (or a Kerberos login) every call answers 401.
    pub ticket_login: bool,
    /// Seconds a `virtgate web` ticket stays valid (default 60); tests shorten it.
    pub ticket_lifetime_s: u64,
    /// Seconds a browser session lasts after its login (default 28800, 8 h).
    pub session_lifetime_s: u64,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            ticket_login: false,
            ticket_lifetime_s: 60,
            session_lifetime_s: 8 * 3600,
        }
    }
}

/// `[listen]`: the gateway's sockets.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// TCP addresses (`IP:PORT`, IPv6 in brackets); `[::]:PORT` accepts IPv4 and IPv6 alike.
    /// Port 0 picks a free port (printed as `listening on ADDR`).
    #[serde(default)]
    pub tcp: Vec<String>,
    /// A unix socket speaking HTTP/2 with prior knowledge; peers are identified by uid.
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// The control socket (mode 0600, for the gateway's own user and root) that
    /// `virtgated reload` asks for a reload and gets the outcome from, e.g.
    /// `/run/virtgate/control.sock`. Without it, `virtgated reload` signals the pid in
    /// `--pidfile`.
    #[serde(default)]
    pub control: Option<PathBuf>,
}

/// `[tls]`: the server's certificate and how client certificates are checked.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8 unencrypted, or PKCS#1/SEC1).
    pub key: PathBuf,
    /// CA certificate(s) (PEM) that client certificates must chain to; enables certificate
    /// login. May be left out when `[kerberos]` is set (Kerberos-only gateway).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation list(s) (PEM) of that CA; revoked client certificates are refused.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

/// Service name of the Kerberos acceptor when `kerberos.service` is not set.
pub const DEFAULT_KERBEROS_SERVICE: &str = "HTTP";

/// `[kerberos]`: HTTP Negotiate (RFC 4559) login over TLS, for clients without a certificate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kerberos {
    /// The keytab holding the service key; when unset: `$KRB5_KTNAME`,
    /// `/etc/virtgate/krb5.keytab`, `/etc/krb5.keytab` (the first that works).
    #[serde(default)]
    pub keytab: Option<PathBuf>,
    /// Service name of the acceptor `SERVICE@host` (default `HTTP`).
    #[serde(default)]
    pub service: Option<String>,
    /// Host name of the acceptor `SERVICE@host`, as clients spell the gateway's name
    /// (default: the system host name). The keytab needs a key for `SERVICE/host@REALM`.
    #[serde(default)]
    pub host: Option<String>,
    /// Realms removed from principals to form user names (`alice@EXAMPLE.ORG` -> `alice`);
    /// principals of other realms keep their realm in the user name.
    #[serde(default)]
    pub strip_realm: Vec<String>,
}

/// Which hypervisor implementation serves the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// QEMU processes reached through their QMP, VNC, SPICE and serial unix sockets.
    Qemu,
    /// libvirtd: every domain it defines, through one libvirt connection (`uri`).
    Libvirt,
}

/// `[backend]`: the hypervisor.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `qemu` or `libvirt`.
    pub kind: BackendKind,
    /// libvirt connection URI (libvirt only; default `qemu:///system`), e.g.
    /// `qemu:///system?socket=/run/libvirt/libvirt-sock` or `qemu:///session`.
    #[serde(default)]
    pub uri: Option<String>,
    /// libvirtd's read-write RPC socket, passed through by `/v1/libvirt` (libvirt only;
    /// default `/run/libvirt/libvirt-sock`).
    #[serde(default)]
    pub libvirt_socket: Option<PathBuf>,
    /// libvirtd's read-only RPC socket, passed through by `/v1/libvirt?ro` (libvirt only;
    /// default `/run/libvirt/libvirt-sock-ro`).
    #[serde(default)]
    pub libvirt_socket_ro: Option<PathBuf>,
    /// Seconds to wait for the QMP socket of a QEMU the gateway starts itself (default 30).
    #[serde(default = "default_start_timeout")]
    pub start_timeout_s: u64,
    /// Folder of the gateway's runtime files (qemu only; default `/run/virtgate`): for each
    /// domain with `command`, `domains/NAME.pid` (the pid of its QEMU) and `domains/NAME.log`
    /// (QEMU's stdout and stderr). A gateway that starts while a domain's QEMU still runs
    /// (after a restart, an upgrade or a crash of the gateway) finds it there and takes it
    /// over instead of starting a second one. Must be writable by the gateway's user.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    /// Whether stopping the gateway (SIGTERM, SIGINT) also stops the QEMUs it supervises
    /// (QMP `quit`, then SIGKILL after 5 s) (qemu only). Default `false`: they keep running,
    /// the log names them, and the next gateway start takes them over. A domain's own
    /// `stop_on_exit` overrides it.
    #[serde(default)]
    pub stop_domains_on_exit: bool,
    /// The VMs of the qemu backend, one `[[backend.domain]]` table each.
    #[serde(default, rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

fn default_start_timeout() -> u64 {
    30
}

/// `backend.uri` when not set.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// `backend.libvirt_socket` when not set.
pub const DEFAULT_LIBVIRT_SOCKET: &str = "/run/libvirt/libvirt-sock";
/// `backend.libvirt_socket_ro` when not set.
pub const DEFAULT_LIBVIRT_SOCKET_RO: &str = "/run/libvirt/libvirt-sock-ro";
/// `backend.runtime_dir` when not set.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/virtgate";

impl Backend {
    /// The libvirt URI, with its default.
    pub fn libvirt_uri(&self) -> &str {
        self.uri.as_deref().unwrap_or(DEFAULT_LIBVIRT_URI)
    }

    /// libvirtd's read-write socket, with its default.
    pub fn libvirt_socket_path(&self) -> &std::path::Path {
        self.libvirt_socket
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_LIBVIRT_SOCKET))
    }

    /// The runtime folder (pidfiles, QEMU logs), with its default.
    pub fn runtime_dir_path(&self) -> &std::path::Path {
        self.runtime_dir
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_RUNTIME_DIR))
    }

    /// Whether the gateway stops domain `d`'s QEMU when it exits.
    pub fn stops_on_exit(&self, d: &DomainConfig) -> bool {
        d.stop_on_exit.unwrap_or(self.stop_domains_on_exit)
    }

    /// libvirtd's read-only socket, with its default.
    pub fn libvirt_socket_ro_path(&self) -> &std::path::Path {
        self.libvirt_socket_ro
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_LIBVIRT_SOCKET_RO))
    }
}

/// `[[backend.domain]]`: one QEMU virtual machine.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The name users type; unique.
    pub name: String,
    /// QEMU's QMP socket (`-qmp unix:PATH,server=on,wait=off`): state, uuid, size, quit.
    pub qmp: PathBuf,
    /// QEMU's VNC socket (`-vnc unix:PATH`), tunnelled by `virtgate vnc`.
    #[serde(default)]
    pub vnc: Option<PathBuf>,
    /// QEMU's SPICE socket (`-spice unix=on,addr=PATH,disable-ticketing=on`), tunnelled by
    /// `virtgate spice` / `virtgate display`; every SPICE channel is a connection of its own.
    #[serde(default)]
    pub spice: Option<PathBuf>,
    /// The serial console socket (`-serial unix:PATH,server=on,wait=off`).
    #[serde(default)]
    pub serial: Option<PathBuf>,
    /// When set, the gateway starts this program (no shell), supervises it and takes it over
    /// after a gateway restart (pidfile in `backend.runtime_dir`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Whether stopping the gateway stops this domain's QEMU (domains with `command` only);
    /// default: `backend.stop_domains_on_exit`.
    #[serde(default)]
    pub stop_on_exit: Option<bool>,
}

/// `[[rule]]`: who may do what on which domains.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// User names, `group:NAME`, principals (`bob@EXAMPLE.ORG`), or `*` for every
    /// authenticated identity.
    pub who: Vec<String>,
    /// Domain name globs (`web*`, `*`).
    pub domains: Vec<String>,
    /// `viewer` < `operator` < `admin`.
    pub role: Role,
}

/// `[audit]`: the audit log.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// File that receives one JSON line per authorization decision (appended).
    pub path: PathBuf,
}

/// `[limits]`: bounds and timeouts, so a slow or hostile peer cannot pin resources.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections served at once over all listeners. A client over it finishes its TLS
    /// handshake and is answered 503 naming this limit; unauthenticated connections count
    /// at most `max_pending_handshakes` of it.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls and tunnels) per connection (SETTINGS_MAX_CONCURRENT_
    /// STREAMS: a client waits for a free stream rather than failing).
    pub max_streams_per_connection: u32,
    /// Seconds a peer has to finish the TLS handshake (and a certificate-less one to log in).
    pub handshake_timeout_s: u64,
    /// TCP connections not yet authenticated (TLS handshake under way, or a certificate-less
    /// connection before its Kerberos login), over all addresses. When full, the oldest
    /// pending connection of the address holding the most is closed for a new one: a flood
    /// of idle or trickling connections cannot lock users out (default 256).
    pub max_pending_handshakes: usize,
    /// Pending (unauthenticated) connections from one IPv4 address or IPv6 /64; more from
    /// there are closed at once (default 16).
    pub max_pending_per_address: usize,
    /// Authenticated connections one user may hold at once; the next is answered 429 naming
    /// this limit (default 64).
    pub max_connections_per_user: usize,
    /// Tunnels, consoles and event streams one user may have open at once over all their
    /// connections; the next is answered 429 naming this limit (default 256). It also bounds
    /// the memory one user can pin: a tunnel whose client stops reading holds at most its
    /// relay buffer (`virtgate_proto::tuning::SPLICE_BUFFER`, 256 KiB) plus HTTP/2's send
    /// buffer, about 200 KiB measured: 256 tunnels, some 64 MiB.
    pub max_tunnels_per_user: usize,
    /// Seconds open connections get to finish after SIGTERM/SIGINT.
    pub drain_timeout_s: u64,
    /// Seconds without a frame from a client after which it is sent an HTTP/2 PING (default
    /// 5). With `keepalive_timeout_s` it bounds how long a frozen or vanished client (a
    /// laptop that sleeps or loses its network) keeps its tunnels: at most the sum, 10 s by
    /// default. Idle connections are pinged too.
    pub keepalive_interval_s: u64,
    /// Seconds a client has to answer that PING before its connection is closed and its
    /// tunnels end (default 5). Raise it for clients on slow links, where a PING can wait
    /// behind seconds of console data already queued for them.
    pub keepalive_timeout_s: u64,
    /// Close a connection that has had no open request or stream (call, tunnel, event
    /// stream) for this many seconds, with a GOAWAY. Off when unset (the default): a
    /// `virtgate vnc` or `virtgate libvirt` waiting for its first local client holds a
    /// connection without streams.
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_streams_per_connection: 256,
            handshake_timeout_s: 10,
            max_pending_handshakes: 256,
            max_pending_per_address: 16,
            max_connections_per_user: 64,
            max_tunnels_per_user: 256,
            drain_timeout_s: 10,
            keepalive_interval_s: 5,
            keepalive_timeout_s: 5,
            idle_timeout_s: None,
        }
    }
}

impl Config {
    /// One line summing up what the file configures, for `check-config`.
    pub fn summary(&self) -> String {
        let mut listeners: Vec<String> =
            self.listen.tcp.iter().map(|a| format!("tcp {a}")).collect();
        if let Some(u) = &self.listen.unix {
            listeners.push(format!("unix {}", u.display()));
        }
        let mut logins = Vec::new();
        if self.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
            logins.push("certificate".to_owned());
        }
        if let Some(k) = &self.kerberos {
            logins.push(format!(
                "kerberos ({}@{})",
                k.service.as_deref().unwrap_or("HTTP"),
                k.host.as_deref().unwrap_or("this host")
            ));
        }
        if self.listen.unix.is_some() {
            logins.push("unix".to_owned());
        }
        let backend = match self.backend.kind {
            BackendKind::Qemu => format!("{} domains", self.backend.domains.len()),
            BackendKind::Libvirt => format!("libvirt at {}", self.backend.libvirt_uri()),
        };
        format!(
            "{backend}, {} rules, listeners {}, logins {}",
            self.rules.len(),
            listeners.join(", "),
            logins.join(", ")
        )
    }
}

/// The JSON Schema of the configuration file, pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
