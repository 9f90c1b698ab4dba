//! The libvirt backend: every domain libvirtd defines, reached through one libvirt
//! connection (`backend.uri`, default `qemu:///system`) with the `virt` crate.
//!
//! - [`conn`]: the connection, its keepalive, and reconnecting with backoff; every libvirt
//!   call runs on tokio's blocking pool with a timeout, and calls made while libvirtd is
//!   away fail at once with [`BackendError::Unavailable`].
//! - [`xml`]: consoles and the VNC / SPICE address from a domain's live XML.
//! - [`graphics`]: connecting to a VNC or SPICE display, and the errors for displays the
//!   domain XML lacks or the gateway cannot use.
//! - [`console`]: the serial console (`virDomainOpenConsole`, with `FORCE` so a stale
//!   session cannot lock users out) as a byte stream, on a connection of its own.
//! - [`image`]: screenshots (`virDomainScreenshot`, PPM from QEMU) as PNG.
//!
//! VNC and SPICE are direct connections from the gateway to the display the live XML names
//! (unix socket or local TCP port; a new connection for every tunnel, which is what SPICE's
//! one-connection-per-channel needs), so the gateway's user needs access to it (the
//! `libvirt-qemu` group or root, see deploy/). Displays it cannot use (listen type `none`,
//! TLS-only SPICE) are not listed, and opening them says why. `/v1/libvirt` passes libvirtd's own sockets through
//! (`backend.libvirt_socket`, `backend.libvirt_socket_ro`).

mod conn;
mod console;
mod graphics;
mod image;
mod xml;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use virt::domain::DomainState as VState;
use virt::domain::{DomainShutoffReason, DomainStateReason};
use virt::error::{Error as VirtError, ErrorNumber};
use virt::stream::Stream;
use virtgate_proto::{ConsoleKind, Domain, DomainState};

use self::conn::Conn;
use self::xml::Display;
use super::{BackendError, BoxedStream, Hypervisor, Lifecycle};
use crate::config;

/// Largest screenshot accepted from libvirt (8K RGB PPM is 100 MB; be generous but bounded).
const MAX_SCREENSHOT: usize = 128 * 1024 * 1024;

/// Domains of one libvirtd.
#[derive(Debug)]
pub struct LibvirtBackend {
    /// The supervised connection.
    conn: Conn,
    /// libvirtd's read-write socket, for `/v1/libvirt`.
    socket: PathBuf,
    /// libvirtd's read-only socket, for `/v1/libvirt?ro`.
    socket_ro: PathBuf,
}

impl LibvirtBackend {
    /// Connect to libvirtd (or keep trying in the background if it is not there yet).
    pub async fn start(config: &config::Backend) -> LibvirtBackend {
        LibvirtBackend {
            conn: Conn::start(config.libvirt_uri()).await,
            socket: config.libvirt_socket_path().to_owned(),
            socket_ro: config.libvirt_socket_ro_path().to_owned(),
        }
    }

    /// Run `f` on domain `name` (looked up by name) on the blocking pool; libvirt errors
    /// become [`BackendError`]s worded for `what`.
    async fn with_domain<T, F>(
        &self,
        name: &str,
        what: &'static str,
        f: F,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&virt::connect::Connect, &virt::domain::Domain) -> Result<T, VirtError>
            + Send
            + 'static,
    {
        let n = name.to_owned();
        self.conn
            .call(name, move |c| {
                let d = c.lookup_domain_by_name(&n)?;
                f(c, &d)
            })
            .await?
            .map_err(|e| libvirt_error(name, what, &e))
    }

    /// The domain's live XML, or `NotRunning` when it is not running.
    async fn live_xml(&self, name: &str, what: &'static str) -> Result<String, BackendError> {
        let (state, xml) = self
            .with_domain(name, what, |_, d| Ok((d.info()?.state, d.xml_desc(0)?)))
            .await?;
        if !is_active(state) {
            return Err(BackendError::NotRunning {
                domain: name.to_owned(),
            });
        }
        Ok(xml)
    }

    /// A new connection to the domain's VNC or SPICE display, wherever its live XML says it
    /// listens. SPICE opens one connection per channel, so this runs once per channel.
    async fn open_graphics(
        &self,
        name: &str,
        kind: ConsoleKind,
    ) -> Result<BoxedStream, BackendError> {
        let what = match kind {
            ConsoleKind::Spice => "spice console",
            _ => "vnc console",
        };
        let xml = self.live_xml(name, what).await?;
        let target = match xml::graphics(&xml, kind) {
            Ok(Display::At(t)) => t,
            Ok(Display::Absent) => return Err(graphics::not_offered(name, kind, None)),
            Ok(Display::Unoffered(why)) => {
                return Err(graphics::not_offered(name, kind, Some(why)))
            }
            Err(e) => {
                return Err(BackendError::Failed {
                    domain: name.to_owned(),
                    what: what.into(),
                    reason: e.0,
                })
            }
        };
        graphics::connect(name, kind, &target).await
    }

    async fn open_serial(&self, name: &str) -> Result<BoxedStream, BackendError> {
        let xml = self.live_xml(name, "serial console").await?;
        let has_serial = xml::consoles(&xml)
            .map(|c| c.contains(&ConsoleKind::Serial))
            .unwrap_or(false);
        if !has_serial {
            return Err(graphics::not_offered(name, ConsoleKind::Serial, None));
        }
        // The console gets a libvirt connection of its own: a blocking stream on the shared
        // connection would hold up every other call made on it while it waits for data.
        let uri = self.conn.uri().to_owned();
        let stream = self
            .with_domain(name, "serial console", move |_, d| {
                let own = virt::connect::Connect::open(Some(&uri))?;
                let d = own.lookup_domain_by_name(&d.name()?)?;
                let s = Stream::new(&own, 0)?;
                // FORCE: a stale session (a client that vanished) must not lock users out.
                d.open_console(None, &s, virt::sys::VIR_DOMAIN_CONSOLE_FORCE)?;
                Ok(s)
            })
            .await?;
        console::bridge(stream, name)
            .map(|s| Box::new(s) as BoxedStream)
            .map_err(|e| BackendError::Failed {
                domain: name.to_owned(),
                what: "serial console".into(),
                reason: format!("cannot start the console threads: {e}"),
            })
    }
}

/// Whether libvirtd at `uri` answers (for `virtgated check-config`): the number of
/// domains it defines, or why not. Blocks for at most `timeout`.
pub fn probe(uri: &str, timeout: Duration) -> Result<usize, String> {
    virt::error::clear_error_callback();
    let (tx, rx) = std::sync::mpsc::channel();
    let uri = uri.to_owned();
    std::thread::Builder::new()
        .name("libvirt-probe".into())
        .spawn(move || {
            let r = virt::connect::Connect::open(Some(&uri))
                .and_then(|c| c.list_all_domains(0).map(|d| d.len()))
                .map_err(|e| e.message().to_owned());
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv_timeout(timeout)
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

/// States in which a domain has a QEMU process (and so a display and serial port).
fn is_active(s: virt::domain::DomainStateEnum) -> bool {
    s.is_any(vec![
        VState::Running,
        VState::Blocked,
        VState::Paused,
        VState::Shutdown,
        VState::PMSuspended,
    ])
}

/// libvirt's state (and, for shut-off domains, whether the reason is a crash) in API terms.
fn map_state(state: virt::domain::DomainStateEnum, crashed: bool) -> DomainState {
    match state {
        virt::enumutil::Enum::Known(s) => match s {
            VState::Running | VState::Blocked => DomainState::Running,
            VState::Paused | VState::PMSuspended => DomainState::Paused,
            VState::Shutdown => DomainState::ShuttingDown,
            VState::Shutoff if crashed => DomainState::Crashed,
            VState::Shutoff => DomainState::ShutOff,
            VState::Crashed => DomainState::Crashed,
            VState::NoState => DomainState::Other,
        },
        virt::enumutil::Enum::Unknown(_) => DomainState::Other,
    }
}

/// A libvirt error on domain `name` during `what`, in the gateway's terms.
fn libvirt_error(name: &str, what: &str, e: &VirtError) -> BackendError {
    let code = e.code();
    if code.is(ErrorNumber::NoDomain) {
        return BackendError::NotFound(name.to_owned());
    }
    if code.is(ErrorNumber::OperationInvalid) && e.message().contains("not running") {
        return BackendError::NotRunning {
            domain: name.to_owned(),
        };
    }
    BackendError::Failed {
        domain: name.to_owned(),
        what: what.to_owned(),
        reason: e.message().to_owned(),
    }
}

/// Everything the API shows of one domain (blocking: several libvirt calls).
fn describe(d: &virt::domain::Domain) -> Result<Domain, VirtError> {
    let name = d.name()?;
    let info = d.info()?;
    let crashed = info.state.is(VState::Shutoff)
        && d.state().is_ok_and(|(_, r)| {
            matches!(r, virt::enumutil::Enum::Known(DomainStateReason::Shutoff(s)) if s.is(DomainShutoffReason::Crashed))
        });
    let xml = d.xml_desc(0)?;
    let consoles = match xml::consoles(&xml) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(domain = %name, error = %e, "cannot read the domain XML");
            Vec::new()
        }
    };
    Ok(Domain {
        uuid: d.uuid_string().ok(),
        state: map_state(info.state, crashed),
        state_reason: None,
        vcpus: Some(info.nr_virt_cpu),
        memory_mib: Some(info.memory / 1024),
        consoles,
        role: None,
        name,
    })
}

/// Every domain, sorted by name. A domain that vanishes meanwhile is left out; one that
/// cannot be described is listed as `unavailable` with the reason. Connection errors fail
/// the whole listing (so the connection is dropped and re-opened).
fn list_all(c: &virt::connect::Connect) -> Result<Vec<Domain>, VirtError> {
    let mut out = Vec::new();
    for d in c.list_all_domains(0)? {
        match describe(&d) {
            Ok(dom) => out.push(dom),
            Err(e) if conn::is_connection_error(&e) => return Err(e),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => {}
            Err(e) => {
                let Ok(name) = d.name() else { continue };
                out.push(Domain {
                    name,
                    uuid: d.uuid_string().ok(),
                    state: DomainState::Unavailable,
                    state_reason: Some(e.message().to_owned()),
                    vcpus: None,
                    memory_mib: None,
                    consoles: Vec::new(),
                    role: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a screenshot attempt gave.
enum Shot {
    /// The domain is not running.
    NotRunning,
    /// More than [`MAX_SCREENSHOT`] bytes.
    TooBig,
    /// libvirt's MIME type and the bytes.
    Image(String, Vec<u8>),
}

/// Take a screenshot of screen 0.
fn screenshot_blocking(
    c: &virt::connect::Connect,
    d: &virt::domain::Domain,
) -> Result<Shot, VirtError> {
    if !is_active(d.info()?.state) {
        return Ok(Shot::NotRunning);
    }
    let s = Stream::new(c, 0)?;
    let mime = d.screenshot(&s, 0, 0)?;
    let mut data = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.recv(&mut buf)?;
        if n <= 0 {
            break;
        }
        data.extend_from_slice(&buf[..n as usize]);
        if data.len() > MAX_SCREENSHOT {
            let _ = s.abort();
            return Ok(Shot::TooBig);
        }
    }
    s.finish()?;
    Ok(Shot::Image(mime, data))
}

impl Hypervisor for LibvirtBackend {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Domain>, BackendError>> {
        Box::pin(async move {
            self.conn
                .call("", list_all)
                .await?
                .map_err(|e| BackendError::Failed {
                    domain: String::new(),
                    what: "listing".into(),
                    reason: e.message().to_owned(),
                })
        })
    }

    fn domain<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Domain, BackendError>> {
        Box::pin(async move { self.with_domain(name, "info", |_, d| describe(d)).await })
    }

    fn open_console<'a>(
        &'a self,
        name: &'a str,
        kind: ConsoleKind,
    ) -> BoxFuture<'a, Result<BoxedStream, BackendError>> {
        Box::pin(async move {
            match kind {
                ConsoleKind::Vnc | ConsoleKind::Spice => self.open_graphics(name, kind).await,
                ConsoleKind::Serial => self.open_serial(name).await,
                _ => Err(graphics::not_offered(name, kind, None)),
            }
        })
    }

    fn lifecycle<'a>(
        &'a self,
        name: &'a str,
        op: Lifecycle,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let what = match op {
                Lifecycle::Start => "start",
                Lifecycle::Shutdown => "shutdown",
                Lifecycle::Reboot => "reboot",
                Lifecycle::Destroy => "destroy",
            };
            self.with_domain(name, what, move |_, d| match op {
                // Starting a running domain is not an error: it is where the user wants it.
                Lifecycle::Start if d.is_active()? => Ok(()),
                Lifecycle::Start => d.create(),
                Lifecycle::Shutdown => d.shutdown(),
                Lifecycle::Reboot => d.reboot(0),
                Lifecycle::Destroy => d.destroy(),
            })
            .await
        })
    }

    fn screenshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, BackendError>> {
        Box::pin(async move {
            let failed = |reason: String| BackendError::Failed {
                domain: name.to_owned(),
                what: "screenshot".into(),
                reason,
            };
            let (mime, data) = match self
                .with_domain(name, "screenshot", screenshot_blocking)
                .await?
            {
                Shot::Image(mime, data) => (mime, data),
                Shot::NotRunning => {
                    return Err(BackendError::NotRunning {
                        domain: name.to_owned(),
                    })
                }
                Shot::TooBig => {
                    return Err(failed(format!(
                        "the screenshot is larger than {} MiB",
                        MAX_SCREENSHOT >> 20
                    )))
                }
            };
            let converted = tokio::task::spawn_blocking(move || image::to_png(&mime, data)).await;
            match converted {
                Ok(Ok(png)) => Ok(png),
                Ok(Err(e)) => Err(failed(e.0)),
                Err(e) => Err(failed(e.to_string())),
            }
        })
    }

    fn libvirt_socket(&self, read_only: bool) -> Option<PathBuf> {
        Some(if read_only {
            self.socket_ro.clone()
        } else {
            self.socket.clone()
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.conn.shutdown() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend on libvirt's built-in test driver (no daemon; one running domain `test`).
    /// libvirt's `test:///default` driver is ONE shared state per process: tests that change
    /// it (destroy/start) must not overlap with tests that read it.
    static TEST_DRIVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn test_backend() -> LibvirtBackend {
        let c: config::Backend =
            toml::from_str("kind = \"libvirt\"\nuri = \"test:///default\"").expect("backend table");
        LibvirtBackend::start(&c).await
    }

    #[test]
    fn states_map_to_api_states() {
        use virt::enumutil::Enum::{Known, Unknown};
        assert_eq!(
            map_state(Known(VState::Running), false),
            DomainState::Running
        );
        assert_eq!(
            map_state(Known(VState::Blocked), false),
            DomainState::Running
        );
        assert_eq!(map_state(Known(VState::Paused), false), DomainState::Paused);
        assert_eq!(
            map_state(Known(VState::PMSuspended), false),
            DomainState::Paused
        );
        assert_eq!(
            map_state(Known(VState::Shutdown), false),
            DomainState::ShuttingDown
        );
        assert_eq!(
            map_state(Known(VState::Shutoff), false),
            DomainState::ShutOff
        );
        assert_eq!(
            map_state(Known(VState::Shutoff), true),
            DomainState::Crashed
        );
        assert_eq!(
            map_state(Known(VState::Crashed), false),
            DomainState::Crashed
        );
        assert_eq!(map_state(Known(VState::NoState), false), DomainState::Other);
        assert_eq!(map_state(Unknown(42), false), DomainState::Other);
        assert!(is_active(Known(VState::Paused)));
        assert!(!is_active(Known(VState::Shutoff)));
    }

    #[tokio::test]
    async fn lists_describes_and_powers_domains_of_the_test_driver() {
        let _one_at_a_time = TEST_DRIVER.lock().await;
        let b = test_backend().await;
        let list = b.list().await.unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        let d = &list[0];
        assert_eq!((d.name.as_str(), d.state), ("test", DomainState::Running));
        assert!(
            d.uuid.is_some() && d.vcpus.is_some() && d.memory_mib.is_some(),
            "{d:?}"
        );
        assert!(matches!(
            b.domain("nope").await,
            Err(BackendError::NotFound(_))
        ));

        b.lifecycle("test", Lifecycle::Start).await.unwrap(); // already running: fine
        b.lifecycle("test", Lifecycle::Destroy).await.unwrap();
        assert_eq!(b.domain("test").await.unwrap().state, DomainState::ShutOff);
        let e = b.screenshot("test").await.unwrap_err();
        assert!(matches!(e, BackendError::NotRunning { .. }), "{e}");
        let e = b.lifecycle("test", Lifecycle::Destroy).await.unwrap_err();
        assert!(matches!(e, BackendError::NotRunning { .. }), "{e}");
        b.lifecycle("test", Lifecycle::Start).await.unwrap();
        assert_eq!(b.domain("test").await.unwrap().state, DomainState::Running);
        let e = b.lifecycle("nope", Lifecycle::Start).await.unwrap_err();
        assert!(matches!(e, BackendError::NotFound(_)), "{e}");
        b.shutdown().await;
    }

    #[tokio::test]
    async fn a_domain_without_spice_says_how_to_add_it() {
        let _one_at_a_time = TEST_DRIVER.lock().await;
        let b = test_backend().await;
        let d = b.domain("test").await.unwrap();
        assert!(!d.consoles.contains(&ConsoleKind::Spice), "{d:?}");
        let e = b
            .open_console("test", ConsoleKind::Spice)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, BackendError::ConsoleNotOffered { .. }), "{e}");
        assert!(
            e.hint().unwrap().contains("<graphics type='spice'>"),
            "{e}: {:?}",
            e.hint()
        );
        b.shutdown().await;
    }

    #[tokio::test]
    async fn screenshots_are_png() {
        let _one_at_a_time = TEST_DRIVER.lock().await;
        let b = test_backend().await;
        let png = b.screenshot("test").await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} bytes", png.len());
        b.shutdown().await;
    }

    #[tokio::test]
    async fn sockets_default_and_follow_the_config() {
        let b = test_backend().await;
        assert_eq!(
            b.libvirt_socket(false).unwrap(),
            PathBuf::from("/run/libvirt/libvirt-sock")
        );
        assert_eq!(
            b.libvirt_socket(true).unwrap(),
            PathBuf::from("/run/libvirt/libvirt-sock-ro")
        );
        b.shutdown().await;
        let c: config::Backend = toml::from_str(
            "kind = \"libvirt\"\nuri = \"test:///default\"\nlibvirt_socket = \"/x/rw\"\nlibvirt_socket_ro = \"/x/ro\"",
        )
        .unwrap();
        let b = LibvirtBackend::start(&c).await;
        assert_eq!(b.libvirt_socket(false).unwrap(), PathBuf::from("/x/rw"));
        assert_eq!(b.libvirt_socket(true).unwrap(), PathBuf::from("/x/ro"));
        b.shutdown().await;
    }
}
