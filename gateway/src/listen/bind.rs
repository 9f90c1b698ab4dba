//! Creating the listening sockets.
//!
//! TCP sockets are made with socket2 rather than tokio's `TcpSocket` because `[::]` must
//! accept IPv4 too: that needs `IPV6_V6ONLY = false` set before `bind`, which tokio does not
//! expose (and Linux' default, `net.ipv6.bindv6only`, is a host setting we should not rely
//! on). The unix socket replaces a stale socket file left by a crashed gateway, but never a
//! live one, and is made 0666: anyone may connect, the policy decides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// Why a listener could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A `listen.tcp` entry is not `IP:PORT` (validation normally catches this).
    #[error("listen {addr}: not an IP:PORT address")]
    BadAddress {
        /// The configured text.
        addr: String,
    },
    /// Creating, binding or listening on a TCP socket failed.
    #[error("listen {addr}: {}", describe(source))]
    Tcp {
        /// The configured address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Creating the unix socket failed.
    #[error("listen unix:{}: {}", path.display(), describe(source))]
    Unix {
        /// `listen.unix`.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process is serving on the unix socket path.
    #[error("listen unix:{}: another process is listening there", path.display())]
    UnixInUse {
        /// `listen.unix`.
        path: PathBuf,
    },
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

impl ListenError {
    /// What the admin can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ListenError::BadAddress { .. } => "write e.g. \"[::]:16520\" or \"127.0.0.1:16520\"".into(),
            ListenError::Tcp { addr, source } => match source.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "another program (another virtgated?) uses port {}: stop it (`ss -ltnp 'sport = :{}'` shows it) or pick another port in listen.tcp",
                    addr.port(),
                    addr.port()
                ),
                std::io::ErrorKind::AddrNotAvailable => {
                    format!("{} is not an address of this host; use [::] for all addresses", addr.ip())
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need root or CAP_NET_BIND_SERVICE; use 16520".into()
                }
                _ => "check listen.tcp in the config".into(),
            },
            ListenError::Unix { path, source } => match source.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "create the folder {} (the deploy files do) or change listen.unix",
                    path.parent().unwrap_or(Path::new("/")).display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "the gateway's user cannot create {}: check the folder's owner and mode",
                    path.display()
                ),
                _ => "check listen.unix in the config".into(),
            },
            ListenError::UnixInUse { .. } => "another virtgated runs already: stop it, or change listen.unix".into(),
        })
    }
}

/// Bind one TCP address; IPv6 sockets are dual-stack. Returns the actual local address
/// (port 0 resolved) with the listener.
pub fn tcp(text: &str) -> Result<(SocketAddr, TcpListener), ListenError> {
    let addr: SocketAddr = text.parse().map_err(|_| ListenError::BadAddress {
        addr: text.to_owned(),
    })?;
    let err = |source| ListenError::Tcp { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).map_err(err)?;
    }
    // Restarting while old connections sit in TIME_WAIT must not fail with "in use"; a live
    // listener on the port still does.
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)?;
    let listener = TcpListener::from_std(socket.into()).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((local, listener))
}

/// Bind the unix socket at `path`, replacing a stale socket file but not a live one.
pub async fn unix(path: &Path) -> Result<UnixListener, ListenError> {
    let err = |source| ListenError::Unix {
        path: path.to_owned(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::UnixInUse {
                path: path.to_owned(),
            });
        }
        tracing::info!(path = %path.display(), "removing a stale socket file");
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dual_stack_accepts_v4_and_v6() {
        let (addr, l) = tcp("[::]:0").unwrap();
        let port = addr.port();
        assert_ne!(port, 0);
        for target in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let c = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (_s, peer) = l.accept().await.unwrap();
            assert_eq!(peer.port(), c.local_addr().unwrap().port(), "{target}");
        }
    }

    #[tokio::test]
    async fn busy_port_names_the_address() {
        let (addr, _l) = tcp("127.0.0.1:0").unwrap();
        let addr = addr.to_string();
        let e = tcp(&addr).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("listen {addr}: address already in use")
        );
        assert!(e.hint().unwrap().contains("another virtgated"));
    }

    #[tokio::test]
    async fn unix_socket_replaces_stale_but_not_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let live = unix(&path).await.unwrap();
        assert!(matches!(
            unix(&path).await,
            Err(ListenError::UnixInUse { .. })
        ));
        drop(live);
        let _again = unix(&path).await.unwrap();
        let e = unix(Path::new("/nonexistent/dir/gw.sock"))
            .await
            .unwrap_err();
        assert!(e.hint().unwrap().contains("/nonexistent/dir"));
    }
}
