//! The gateway's unix socket on this machine (`virtgate+unix:///run/virtgate/virtgate.sock`):
//! HTTP/2 with prior knowledge straight over the socket. There is nothing to authenticate on
//! our side: the gateway reads our uid from the socket (SO_PEERCRED) and maps it to our user
//! name, so `whoami` shows the local user with method `unix`.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::{Connected, CONNECT_TIMEOUT};
use crate::error::{Error, TlsContext};

/// A prepared unix socket transport: just the path.
#[derive(Debug, Clone)]
pub struct UnixTransport {
    /// The gateway's socket.
    path: PathBuf,
    /// `virtgate up`'s shared connection to this gateway (URL) instead of a gateway's own
    /// socket: messages name the gateway behind it.
    shared: Option<String>,
}

impl UnixTransport {
    /// The transport for the socket at `path`.
    pub fn new(path: &Path) -> UnixTransport {
        UnixTransport {
            path: path.to_owned(),
            shared: None,
        }
    }

    /// The transport for the socket of a `virtgate up` connected to `gateway`.
    pub fn shared(path: &Path, gateway: &str) -> UnixTransport {
        UnixTransport {
            path: path.to_owned(),
            shared: Some(gateway.to_owned()),
        }
    }

    /// Connect to the socket (within [`CONNECT_TIMEOUT`]: a gateway whose accept backlog is
    /// full would otherwise hang us).
    pub async fn connect(&self) -> Result<Connected, Error> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.path)).await {
                Ok(Ok(s)) => s,
                Ok(Err(error)) if self.shared.is_some() => {
                    return Err(Error::SharedSocket {
                        path: self.path.clone(),
                        problem: format!("cannot connect: {}", crate::error::io_reason(&error)),
                    })
                }
                Ok(Err(error)) => {
                    return Err(Error::UnixSocket {
                        path: self.path.clone(),
                        error,
                    })
                }
                Err(_) => {
                    return Err(Error::UnixSocket {
                        path: self.path.clone(),
                        error: std::io::ErrorKind::TimedOut.into(),
                    })
                }
            };
        tracing::debug!(path = %self.path.display(), "connected to the gateway's unix socket");
        Ok(Connected {
            stream_window: virtgate_proto::tuning::STREAM_WINDOW,
            stream: Box::new(stream),
            authority: "localhost".into(),
            context: TlsContext {
                server: match &self.shared {
                    Some(gateway) => format!("{gateway} (shared by virtgate up)"),
                    None => format!("unix:{}", self.path.display()),
                },
                ..Default::default()
            },
            negotiation: None,
        })
    }
}

/// What to do about a unix socket that cannot be connected to.
pub fn hint(path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let p = path.display();
    match e.kind() {
        ErrorKind::NotFound => format!(
            "no socket at {p}: is virtgated running on this machine with listen.unix = \"{p}\"?"
        ),
        ErrorKind::ConnectionRefused => format!(
            "{p} exists but nothing accepts on it: virtgated has stopped (it removes a stale \
             socket when it starts again)"
        ),
        ErrorKind::PermissionDenied => format!(
            "you may not reach {p}: the gateway makes the socket 0666, so a folder above it \
             is closed to you (check with `namei -l {p}`)"
        ),
        ErrorKind::TimedOut => "the gateway is too busy to accept; try again".into(),
        _ => format!("check that {p} is the socket of a running virtgated (listen.unix)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[tokio::test]
    async fn missing_socket_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtgate.sock");
        let Err(e) = UnixTransport::new(&path).connect().await else {
            panic!("connected to nothing")
        };
        let r = report(&e);
        assert!(
            r.starts_with(&format!(
                "error: cannot connect to the gateway socket {}: No such file or directory",
                path.display()
            )),
            "{r}"
        );
        assert!(r.contains("is virtgated running on this machine"), "{r}");
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtgate.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let Err(e) = UnixTransport::new(&path).connect().await else {
            panic!("connected to a closed socket")
        };
        let r = report(&e);
        assert!(r.contains("Connection refused"), "{r}");
        assert!(r.contains("virtgated has stopped"), "{r}");
    }

    #[tokio::test]
    async fn a_listening_socket_connects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtgate.sock");
        let _l = tokio::net::UnixListener::bind(&path).unwrap();
        let c = UnixTransport::new(&path).connect().await.unwrap();
        assert_eq!(c.authority, "localhost");
        assert_eq!(c.context.server, format!("unix:{}", path.display()));
    }
}
