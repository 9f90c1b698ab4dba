//! The virtgate wire protocol, shared by the gateway (`virtgated`) and the client (`virtgate`).
//!
//! Everything here is data: the JSON bodies of the API ([`api`]), the request paths and tunnel
//! kinds ([`path`]) and the error body ([`problem`]). No I/O happens in this crate, so both
//! sides can depend on it without dragging the other side's dependencies along.
//!
//! The transport is HTTP/2 (ALPN `h2` over TLS, prior knowledge on the unix socket). API calls
//! are ordinary requests under [`API_PREFIX`]; byte tunnels (VNC, serial, libvirt RPC) are
//! extended CONNECT requests (RFC 8441) whose `:protocol` pseudo-header is [`TUNNEL_PROTOCOL`].

#![forbid(unsafe_code)]

pub mod api;
pub mod lifecycle;
pub mod path;
pub mod problem;
pub mod tuning;

pub use api::{
    AuthMethod, ConsoleKind, Domain, DomainList, DomainState, WebSession, WebTicket, WhoAmI,
};
pub use lifecycle::{
    Action, ActionResult, Event, EventKind, Outcome, ShutdownRequest, EVENTS_CONTENT_TYPE,
};
pub use path::{ApiPath, PathError, TunnelKind};
pub use problem::{Problem, PROBLEM_CONTENT_TYPE};

/// Version of the wire protocol; bumped on incompatible changes. Sent by the gateway in the
/// `virtgate-protocol` response header so that a client can name a mismatch.
pub const PROTOCOL_VERSION: u32 = 1;

/// Response header that carries [`PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "virtgate-protocol";

/// Every API path starts with this.
pub const API_PREFIX: &str = "/v1";

/// Response header of a `/v1/libvirt/fds` tunnel: the id of the new descriptor, which the
/// client then names in its libvirt tunnel in place of the descriptor (see `virtgate-rpc`).
pub const DESCRIPTOR_HEADER: &str = "virtgate-descriptor";

/// The `:protocol` of extended CONNECT requests that open a byte tunnel.
pub const TUNNEL_PROTOCOL: &str = "virtgate-stream";

/// TCP port of `virtgate://host` URLs that name none.
pub const DEFAULT_PORT: u16 = 16520;

/// Where the gateway's unix socket lives unless configured otherwise (SSH transport target).
pub const DEFAULT_UNIX_SOCKET: &str = "/run/virtgate/virtgate.sock";
