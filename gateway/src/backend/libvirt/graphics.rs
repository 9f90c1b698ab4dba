//! The libvirt backend's graphical consoles: a new connection to the VNC or SPICE display a
//! domain's live XML names ([`connect`]; SPICE calls it once per channel), and the error for
//! a console the domain XML lacks or the gateway cannot use ([`not_offered`]), whose hint is
//! about the domain XML (`virsh edit`), never about gateway config keys: the libvirt backend
//! has none per domain.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use virtgate_proto::ConsoleKind;

use super::xml::{GraphicsTarget, Unoffered};
use crate::backend::{BackendError, BoxedStream};

/// Bound on connecting to a VNC or SPICE server.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect to the `kind` display of domain `name` at `target`.
pub async fn connect(
    name: &str,
    kind: ConsoleKind,
    target: &GraphicsTarget,
) -> Result<BoxedStream, BackendError> {
    let err = |reason: String| BackendError::Console {
        domain: name.to_owned(),
        kind: kind.as_str(),
        path: PathBuf::from(target.to_string()),
        reason,
    };
    let connected = match target {
        GraphicsTarget::Unix(path) => {
            tokio::time::timeout(CONSOLE_TIMEOUT, UnixStream::connect(path))
                .await
                .map(|r| r.map(|s| Box::new(s) as BoxedStream))
        }
        GraphicsTarget::Tcp { host, port } => {
            tokio::time::timeout(CONSOLE_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
                .await
                .map(|r| {
                    r.map(|s| {
                        let _ = s.set_nodelay(true);
                        Box::new(s) as BoxedStream
                    })
                })
        }
    };
    match connected {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(format!(
            "no answer within {} s",
            CONSOLE_TIMEOUT.as_secs()
        ))),
    }
}

/// The domain XML offers no usable console of `kind`: why (`None`: there is none at all), and
/// what the admin can add to the domain XML (never a gateway config key: libvirt has none).
pub fn not_offered(name: &str, kind: ConsoleKind, why: Option<Unoffered>) -> BackendError {
    let k = kind.as_str();
    let (reason, hint) = match (why, kind) {
        (Some(why), _) => (why.reason(kind), why.hint(kind, name)),
        (None, ConsoleKind::Vnc | ConsoleKind::Spice) => (
            format!("its domain XML has no <graphics type='{k}'>"),
            format!(
                "the admin can add one: `virsh edit {name}`, add <graphics type='{k}'><listen \
                 type='socket'/></graphics> to <devices>, then restart the domain"
            ),
        ),
        (None, ConsoleKind::Serial) => (
            "its domain XML has no <serial> or <console> of type pty or unix".into(),
            format!(
                "the admin can add one: `virsh edit {name}`, add <serial type='pty'/> and \
                 <console type='pty'/> to <devices>, then restart the domain"
            ),
        ),
        (None, _) => (
            format!("the libvirt backend has no {k} consoles"),
            "`virtgate info DOM` lists the consoles a domain has".into(),
        ),
    };
    BackendError::ConsoleNotOffered {
        domain: name.to_owned(),
        kind: k,
        reason,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_consoles_get_domain_xml_hints_not_config_keys() {
        for kind in [ConsoleKind::Vnc, ConsoleKind::Spice, ConsoleKind::Serial] {
            let e = not_offered("web1", kind, None);
            let hint = e.hint().unwrap();
            assert!(
                hint.contains("virsh edit web1") && !hint.contains("= PATH"),
                "{hint}"
            );
            assert!(matches!(e, BackendError::ConsoleNotOffered { .. }), "{e}");
        }
        let e = not_offered("web1", ConsoleKind::Spice, Some(Unoffered::TlsOnly));
        assert!(
            e.to_string().contains("TLS-only SPICE is not supported"),
            "{e}"
        );
        let e = not_offered("web1", ConsoleKind::Vnc, Some(Unoffered::ListenNone));
        assert!(e.to_string().contains("listen type `none`"), "{e}");
        assert!(e.hint().unwrap().contains("<listen type='socket'/>"));
    }

    #[tokio::test]
    async fn every_connect_is_a_new_connection_and_failures_name_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("spice.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let target = GraphicsTarget::Unix(sock.clone());
        for _ in 0..2 {
            let (c, a) = tokio::join!(connect("d", ConsoleKind::Spice, &target), listener.accept());
            assert!(c.is_ok() && a.is_ok());
        }
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let target = GraphicsTarget::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let (c, a) = tokio::join!(connect("d", ConsoleKind::Spice, &target), tcp.accept());
        assert!(c.is_ok() && a.is_ok());
        drop(tcp);
        let e = connect("d", ConsoleKind::Spice, &target)
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().contains(&format!("tcp 127.0.0.1:{port}")),
            "{e}"
        );
        assert!(matches!(e, BackendError::Console { kind: "spice", .. }));
    }
}
