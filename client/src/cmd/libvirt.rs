//! `virtgate libvirt [--socket PATH] [--ro]`: a local unix socket for virsh and
//! virt-manager whose every connection is one tunnel stream (extended CONNECT `/v1/libvirt`,
//! or `/v1/libvirt?ro` with `--ro`) on the session's single HTTP/2 connection (the listener
//! is [`super::relay`]). libvirt's RPC passes through unchanged except for the file
//! descriptors of graphical consoles, which become streams of their own ([`fds`]).
//!
//! Contract: the FIRST line on stdout is `qemu:///system?socket=PATH`, printed (and
//! flushed) only after one tunnel was opened and closed again, so a user without the role
//! gets `error:` / `hint:` and status 1 instead of a URI that fails later. How to use it
//! (virsh, virt-manager) goes to stderr. Ctrl-C, SIGTERM or SIGHUP remove the socket and end
//! with status 0; losing the gateway removes it and ends with status 1.
//!
//! The default socket is `$XDG_RUNTIME_DIR/virtgate/libvirt-PROFILE[-ro].sock`, or
//! `/tmp/virtgate-UID/…` without `XDG_RUNTIME_DIR`; its folder is created mode 0700 (and a
//! folder under /tmp that is not ours or is open to others is refused). The socket is mode
//! 0600. A stale socket file (nothing listening) is replaced; a live one, or a file that is
//! not a socket, is left alone and reported.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use virtgate_proto::{ApiPath, TunnelKind};

pub mod fds;

use super::print;
use super::relay::{self, Local, Stop};
use crate::error::Error;
use crate::session::Session;
use crate::sockets::{bind, file_name, private_folder, RemoveOnDrop, RuntimeFolder};

/// How long closing the access-check tunnel may take.
const CHECK_CLOSE: Duration = Duration::from_secs(2);

/// Where the socket goes unless `--socket` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultSocket {
    /// The folder (created 0700 when missing).
    pub folder: PathBuf,
    /// Whether the folder is in a shared place (/tmp) and must be checked to be ours.
    pub shared: bool,
    /// The socket file inside it.
    pub socket: PathBuf,
}

/// The default socket for a profile (`None`: a bare `--url`), from `$XDG_RUNTIME_DIR`
/// and the uid.
pub fn default_socket(
    runtime_dir: Option<&OsStr>,
    uid: u32,
    profile: Option<&str>,
    read_only: bool,
) -> DefaultSocket {
    let folder = RuntimeFolder::new(runtime_dir, uid);
    let name = file_name(profile.unwrap_or("default"));
    let ro = if read_only { "-ro" } else { "" };
    let socket = folder.path.join(format!("libvirt-{name}{ro}.sock"));
    DefaultSocket {
        folder: folder.path,
        shared: folder.shared,
        socket,
    }
}

/// The libvirt URI of a local socket. Not `qemu+unix://`: virt-manager treats any URI with
/// a transport (`+unix` included) and no host as a remote host whose displays listen
/// "only locally", and refuses to open the console; with no transport it asks libvirt for
/// the display's descriptor (`virDomainOpenGraphicsFD`), which virtgate carries. libvirt's
/// client library sends `qemu:///system?socket=PATH` to that socket alike.
pub fn uri(socket: &Path) -> String {
    format!("qemu:///system?socket={}", socket.display())
}

/// `virtgate libvirt`
pub async fn run(
    session: &Session,
    socket: Option<PathBuf>,
    read_only: bool,
    profile: Option<&str>,
) -> Result<(), Error> {
    let mut stop = Stop::install()?;
    let path = match socket {
        Some(p) => p,
        None => {
            let uid = rustix::process::getuid().as_raw();
            let d = default_socket(
                std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
                uid,
                profile,
                read_only,
            );
            private_folder(&d.folder, d.shared, uid)?;
            d.socket
        }
    };
    let tunnel = ApiPath::Tunnel {
        domain: None,
        kind: TunnelKind::Libvirt { read_only },
    };
    // the role check: one tunnel opened and closed before anything is promised
    let mut probe = tokio::select! {
        p = session.open_tunnel(&tunnel) => p?,
        () = stop.wait() => return Ok(()),
    };
    let _ = tokio::time::timeout(CHECK_CLOSE, probe.shutdown()).await;
    drop(probe);

    let listener = bind(&path)?;
    let _remove = RemoveOnDrop(path.clone());
    let uri = uri(&path);
    print(&format!("{uri}\n"))?;
    let (r, what, consoles) = if read_only {
        (
            " -r",
            "libvirtd's read-only socket",
            "(read-only: no graphical consoles; libvirt refuses them)".to_owned(),
        )
    } else {
        (
            "",
            "libvirtd",
            format!(
                "virt-viewer --attach -c '{uri}' DOMAIN   (consoles travel through virtgate too)"
            ),
        )
    };
    eprintln!(
        "forwarding {} to {what} on {}; Ctrl-C to stop\n\
         use it with:\n  virsh{r} -c '{uri}' list --all\n  virt-manager -c '{uri}'\n  {consoles}",
        path.display(),
        session.server()
    );
    relay::serve(
        session,
        Local::Unix(listener),
        tunnel,
        stop,
        std::future::pending(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_socket_paths() {
        let d = default_socket(Some(OsStr::new("/run/user/1000")), 1000, Some("hv1"), false);
        assert_eq!(
            d.socket,
            Path::new("/run/user/1000/virtgate/libvirt-hv1.sock")
        );
        assert!(!d.shared);
        let d = default_socket(None, 1000, None, true);
        assert_eq!(d.folder, Path::new("/tmp/virtgate-1000"));
        assert_eq!(
            d.socket,
            Path::new("/tmp/virtgate-1000/libvirt-default-ro.sock")
        );
        assert!(d.shared);
        let d = default_socket(Some(OsStr::new("")), 7, Some("a/b"), false);
        assert_eq!(d.socket, Path::new("/tmp/virtgate-7/libvirt-a_b.sock"));
    }

    #[test]
    fn uri_names_the_socket() {
        assert_eq!(
            uri(Path::new("/run/user/1000/virtgate/libvirt-hv1.sock")),
            "qemu:///system?socket=/run/user/1000/virtgate/libvirt-hv1.sock"
        );
    }
}
