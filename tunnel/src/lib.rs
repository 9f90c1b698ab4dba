//! Byte tunnels on HTTP/2 streams, driven on `h2` directly at both ends of a virtgate
//! connection: the client (`virtgate`, an `h2::client` connection) and the gateway
//! (`virtgated`, an `h2::server` connection) hold the same [`Tunnel`] per extended CONNECT
//! stream.
//!
//! # Layout
//!
//! - [`flow`]: the policy, shared by the tunnels of one connection ([`Flow`]): each tunnel
//!   meters what it moves; while a small (interactive) exchange is going on, bulk tunnels
//!   keep less of their window in flight, so a keystroke's echo is not queued behind
//!   someone else's bulk data.
//! - [`stream`]: [`Tunnel`], h2's two halves of a stream as a byte stream. Received data goes
//!   to the local socket as it came (`Bytes`) and its window goes back only once written
//!   (or as far as the policy lets it); sent data goes to h2 without a copy, as far as the
//!   window and the policy let it. `splice` carries a local socket both ways; `AsyncRead` +
//!   `AsyncWrite` serve whatever needs a byte stream (a WebSocket codec, the libvirt relay).
//! - [`body`]: [`RecvBody`], the body of a request or answer (not a tunnel) as an
//!   `http_body::Body`, its window returned as it is read.
//!
//! Nothing here opens or accepts streams: the client's session and the gateway's API do,
//! and hand the halves over.

pub mod body;
pub mod flow;
pub mod stream;

pub use body::RecvBody;
pub use flow::Flow;
pub use stream::Tunnel;
