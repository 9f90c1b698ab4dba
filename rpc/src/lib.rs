//! virtgate-rpc: what both ends of a virtgate libvirt tunnel need to carry libvirt's RPC
//! INCLUDING the file descriptors libvirt passes over its unix socket (a graphical
//! console's socket from `virDomainOpenGraphicsFD`, or the socket a client hands to
//! `virDomainOpenGraphics`). A plain byte copy drops them, and the libvirt client then
//! closes its whole connection.
//!
//! # Layout
//!
//! ```text
//! frame.rs   libvirt message framing (pure): headers, which messages carry descriptors,
//!            where their slots are; buffers those messages whole
//! reply.rs   libvirt error replies (XDR remote_error) for messages a relay refuses
//! fdio.rs    recvmsg/sendmsg with SCM_RIGHTS on tokio unix sockets (rustix, no unsafe)
//! relay.rs   socket (real descriptors) ⇄ tunnel (8-byte ids), two directions at once;
//!            the Descriptors trait turns descriptors into ids and back
//! ```
//!
//! Data flow, `virDomainOpenGraphicsFD` through virtgate:
//!
//! ```text
//! virt-viewer ─call─▶ virtgate (client relay) ─tunnel─▶ virtgated (gateway relay) ─▶ libvirtd
//! libvirtd ─reply + fd─▶ gateway relay: fd into the connection's table, id N into the tunnel
//! client relay reads id N ─▶ opens stream /v1/libvirt/fds/N ─▶ socketpair: one end spliced
//!   to the stream, the other sent to virt-viewer with the reply (0x00 + SCM_RIGHTS)
//! ```

#![forbid(unsafe_code)]

pub mod fdio;
pub mod frame;
pub mod relay;
pub mod reply;

pub use frame::{Framer, Header, Whole};
pub use relay::{relay, Carried, Descriptors, RelayError};
pub use reply::Refusal;
