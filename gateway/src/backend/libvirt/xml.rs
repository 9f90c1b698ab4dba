//! What the libvirt backend reads from a domain's XML (`virDomainGetXMLDesc`).
//!
//! Only the live XML of a running domain has the resolved display port (`autoport` gives
//! `port='-1'` in the inactive XML) and the pty path of a serial port, so the callers pass
//! the live XML. Parsing is done with `roxmltree` on the `<devices>` element; nothing here
//! does I/O, which keeps the rules testable on literal XML.
//!
//! VNC and SPICE displays (`<graphics type='vnc'|'spice'>`) follow the same rules, so one
//! function, [`graphics`], answers for both: a unix socket (`<listen type='socket'>`, or
//! VNC's `socket=` attribute) wins over TCP (`port` with `listen=` or a `<listen
//! type='address'>`). A display is not offered when only libvirt's own descriptor passing
//! reaches it (`<listen type='none'>`) or, for SPICE, when it speaks TLS only (a `tlsPort`
//! without a plain `port`, `defaultMode='secure'`, or a channel with `mode='secure'`):
//! [`Unoffered`] says why, for the error's hint.

use std::path::PathBuf;

use virtgate_proto::ConsoleKind;

/// Where a domain's graphical display (VNC or SPICE) can be reached from the gateway host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphicsTarget {
    /// `<graphics type='vnc' socket='PATH'>` or `<listen type='socket' socket='PATH'>`.
    Unix(PathBuf),
    /// `<graphics port='N' listen='ADDR'>` (or a `<listen address=...>` child);
    /// wildcard addresses are replaced by the loopback address of the same family.
    Tcp {
        /// IP address or host name to connect to.
        host: String,
        /// The TCP port QEMU listens on.
        port: u16,
    },
}

impl std::fmt::Display for GraphicsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphicsTarget::Unix(p) => write!(f, "unix socket {}", p.display()),
            GraphicsTarget::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp [{host}]:{port}")
            }
            GraphicsTarget::Tcp { host, port } => write!(f, "tcp {host}:{port}"),
        }
    }
}

/// Why a display the domain XML has is not offered as a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unoffered {
    /// `<listen type='none'>`: only libvirt's own descriptor passing reaches it.
    ListenNone,
    /// SPICE that accepts TLS connections only; the gateway speaks plain SPICE to QEMU
    /// (the tunnel itself is encrypted).
    TlsOnly,
}

impl Unoffered {
    /// Why, as the end of a sentence about domain's `kind` display.
    pub fn reason(self, kind: ConsoleKind) -> String {
        match self {
            Unoffered::ListenNone => format!(
                "its {} display has listen type `none` (reachable only through libvirt's own descriptor passing)",
                label(kind)
            ),
            Unoffered::TlsOnly => format!(
                "its {} display accepts TLS connections only (a tlsPort without a plain port, \
                 defaultMode='secure' or a channel with mode='secure'); TLS-only SPICE is not supported",
                label(kind)
            ),
        }
    }

    /// What the admin can change in the domain XML.
    pub fn hint(self, kind: ConsoleKind, domain: &str) -> String {
        let k = kind.as_str();
        match self {
            Unoffered::ListenNone => format!(
                "the admin can make it listen on a unix socket: `virsh edit {domain}`, put \
                 <listen type='socket'/> into its <graphics type='{k}'>, then restart the domain"
            ),
            Unoffered::TlsOnly => format!(
                "the admin can give it a plain port or a unix socket (the gateway's tunnel is \
                 already encrypted): `virsh edit {domain}`, use <graphics type='{k}' \
                 autoport='yes' defaultMode='any'> or <listen type='socket'/> and no \
                 mode='secure' channels, then restart the domain"
            ),
        }
    }
}

/// What a domain's live XML says about its display of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Display {
    /// No `<graphics type='KIND'>` at all.
    Absent,
    /// There is one, but the gateway cannot use it.
    Unoffered(Unoffered),
    /// Where to connect.
    At(GraphicsTarget),
}

/// `VNC` or `SPICE`, for messages.
pub fn label(kind: ConsoleKind) -> &'static str {
    match kind {
        ConsoleKind::Vnc => "VNC",
        ConsoleKind::Spice => "SPICE",
        _ => "graphical",
    }
}

/// The XML could not be parsed, or says nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    roxmltree::Document::parse(xml)
        .map_err(|e| XmlError(format!("cannot parse the domain XML: {e}")))
}

/// The children of `<domain><devices>` (empty when there is no `<devices>`).
fn devices<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(roxmltree::Node::is_element))
}

/// A `<graphics type='KIND'>` (`vnc` or `spice`; nothing else is a graphics console).
fn is_graphics(n: &roxmltree::Node<'_, '_>, kind: ConsoleKind) -> bool {
    matches!(kind, ConsoleKind::Vnc | ConsoleKind::Spice)
        && n.has_tag_name("graphics")
        && n.attribute("type") == Some(kind.as_str())
}

/// A `<serial>` or `<console>` whose host side libvirt can open as a console stream.
fn is_char_console(n: &roxmltree::Node<'_, '_>) -> bool {
    (n.has_tag_name("serial") || n.has_tag_name("console"))
        && matches!(n.attribute("type"), Some("pty") | Some("unix"))
}

/// The `<listen>` children of a `<graphics>`.
fn listens<'a, 'i>(g: &roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
    g.children().filter(|n| n.has_tag_name("listen")).collect()
}

/// The unix socket a display listens on, if it does.
fn socket_path(g: &roxmltree::Node<'_, '_>) -> Option<PathBuf> {
    if let Some(path) = g.attribute("socket").filter(|s| !s.is_empty()) {
        return Some(path.into());
    }
    listens(g)
        .iter()
        .filter(|l| l.attribute("type") == Some("socket"))
        .find_map(|l| l.attribute("socket").filter(|s| !s.is_empty()))
        .map(PathBuf::from)
}

/// A port attribute that names a real port (`-1`, `0`, absent: none).
fn real_port(g: &roxmltree::Node<'_, '_>, attribute: &str) -> Option<u16> {
    g.attribute(attribute)
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|n| *n > 0 && *n <= i32::from(u16::MAX))
        .map(|n| n as u16)
}

/// Why the gateway cannot use this display, judged from the XML alone (live or not).
fn unoffered(g: &roxmltree::Node<'_, '_>) -> Option<Unoffered> {
    if socket_path(g).is_some() {
        return None;
    }
    if listens(g)
        .iter()
        .any(|l| l.attribute("type") == Some("none"))
    {
        return Some(Unoffered::ListenNone);
    }
    if g.attribute("type") == Some("spice") {
        let secure_default = g.attribute("defaultMode") == Some("secure");
        let secure_channel = g
            .children()
            .filter(|c| c.has_tag_name("channel"))
            .any(|c| c.attribute("mode") == Some("secure"));
        let tls_port_only = real_port(g, "tlsPort").is_some() && real_port(g, "port").is_none();
        if secure_default || secure_channel || tls_port_only {
            return Some(Unoffered::TlsOnly);
        }
    }
    None
}

/// The consoles the gateway can tunnel for this domain: `vnc` and `spice` for displays of
/// those types it can reach, `serial` for a `<serial>`/`<console>` of type `pty` or `unix`.
pub fn consoles(xml: &str) -> Result<Vec<ConsoleKind>, XmlError> {
    let doc = parse(xml)?;
    let mut out = Vec::new();
    for kind in [ConsoleKind::Vnc, ConsoleKind::Spice] {
        if devices(&doc).any(|n| is_graphics(&n, kind) && unoffered(&n).is_none()) {
            out.push(kind);
        }
    }
    if devices(&doc).any(|n| is_char_console(&n)) {
        out.push(ConsoleKind::Serial);
    }
    Ok(out)
}

/// Where to reach the domain's display of `kind` (the first one the gateway can use);
/// `Err` when it has one that should be reachable but is not (no port yet, a bad attribute).
pub fn graphics(xml: &str, kind: ConsoleKind) -> Result<Display, XmlError> {
    let doc = parse(xml)?;
    let all: Vec<_> = devices(&doc).filter(|n| is_graphics(n, kind)).collect();
    let Some(g) = all
        .iter()
        .find(|g| unoffered(g).is_none())
        .or_else(|| all.first())
    else {
        return Ok(Display::Absent);
    };
    if let Some(why) = unoffered(g) {
        return Ok(Display::Unoffered(why));
    }
    if let Some(path) = socket_path(g) {
        return Ok(Display::At(GraphicsTarget::Unix(path)));
    }
    let name = label(kind);
    let port = match g.attribute("port") {
        None => return Err(XmlError(format!("its {name} display has no port yet"))),
        Some(p) => match p.parse::<i32>() {
            Ok(n) if n > 0 && n <= i32::from(u16::MAX) => n as u16,
            Ok(_) => {
                return Err(XmlError(format!(
                    "its {name} display has no port yet (port='{p}'; is the domain running?)"
                )))
            }
            Err(_) => return Err(XmlError(format!("its {name} port `{p}` is not a number"))),
        },
    };
    let address = g
        .attribute("listen")
        .or_else(|| listens(g).iter().find_map(|l| l.attribute("address")))
        .filter(|a| !a.is_empty())
        .unwrap_or("127.0.0.1");
    Ok(Display::At(GraphicsTarget::Tcp {
        host: connectable(address),
        port,
    }))
}

/// A listen address as something to connect to: wildcards become loopback.
fn connectable(address: &str) -> String {
    let a = address.trim_start_matches('[').trim_end_matches(']');
    match a {
        "0.0.0.0" => "127.0.0.1".into(),
        "::" | "::0" | "0:0:0:0:0:0:0:0" => "::1".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(devices: &str) -> String {
        format!("<domain type='qemu'><name>d</name><devices>{devices}</devices></domain>")
    }

    fn at(xml: &str, kind: ConsoleKind) -> GraphicsTarget {
        match graphics(xml, kind).unwrap() {
            Display::At(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vnc_on_a_unix_socket() {
        let x = domain("<graphics type='vnc' socket='/run/vm/vnc.sock'/>");
        assert_eq!(
            at(&x, ConsoleKind::Vnc),
            GraphicsTarget::Unix("/run/vm/vnc.sock".into())
        );
        let x = domain(
            "<graphics type='vnc'><listen type='socket' socket='/var/lib/libvirt/qemu/d.vnc'/></graphics>",
        );
        assert_eq!(
            at(&x, ConsoleKind::Vnc),
            GraphicsTarget::Unix("/var/lib/libvirt/qemu/d.vnc".into())
        );
    }

    #[test]
    fn vnc_on_tcp_with_listen_forms() {
        let x = domain("<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>");
        assert_eq!(
            at(&x, ConsoleKind::Vnc),
            GraphicsTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 5901
            }
        );
        let x = domain("<graphics type='vnc' port='5902'><listen type='address' address='0.0.0.0'/></graphics>");
        assert_eq!(
            at(&x, ConsoleKind::Vnc),
            GraphicsTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 5902
            }
        );
        let x = domain("<graphics type='vnc' port='5903' listen='::'/>");
        assert_eq!(at(&x, ConsoleKind::Vnc).to_string(), "tcp [::1]:5903");
        let x = domain("<graphics type='vnc' port='5904'/>");
        assert_eq!(at(&x, ConsoleKind::Vnc).to_string(), "tcp 127.0.0.1:5904");
    }

    #[test]
    fn unresolved_or_unreachable_vnc_is_an_error_or_not_offered() {
        let x = domain("<graphics type='vnc' port='-1' autoport='yes'/>");
        let e = graphics(&x, ConsoleKind::Vnc).unwrap_err();
        assert!(e.0.contains("VNC display has no port yet"), "{e}");
        let x = domain("<graphics type='vnc'><listen type='none'/></graphics>");
        assert_eq!(
            graphics(&x, ConsoleKind::Vnc).unwrap(),
            Display::Unoffered(Unoffered::ListenNone)
        );
        assert!(consoles(&x).unwrap().is_empty());
        let x = domain("<graphics type='vnc' port='x'/>");
        assert!(graphics(&x, ConsoleKind::Vnc).is_err());
    }

    #[test]
    fn spice_on_a_unix_socket() {
        let x = domain(
            "<graphics type='spice'><listen type='socket' socket='/var/lib/libvirt/qemu/domain-1-d/spice.sock'/><image compression='off'/></graphics>",
        );
        assert_eq!(
            at(&x, ConsoleKind::Spice),
            GraphicsTarget::Unix("/var/lib/libvirt/qemu/domain-1-d/spice.sock".into())
        );
        assert_eq!(consoles(&x).unwrap(), [ConsoleKind::Spice]);
        assert_eq!(graphics(&x, ConsoleKind::Vnc).unwrap(), Display::Absent);
    }

    #[test]
    fn spice_on_tcp_with_autoport() {
        // The inactive XML: offered (the port comes when it starts), but no port to reach yet.
        let inactive =
            domain("<graphics type='spice' autoport='yes'><listen type='address'/></graphics>");
        assert_eq!(consoles(&inactive).unwrap(), [ConsoleKind::Spice]);
        assert!(graphics(&inactive, ConsoleKind::Spice)
            .unwrap_err()
            .0
            .contains("SPICE display has no port yet"));
        // The live XML has the port libvirt picked.
        let live = domain("<graphics type='spice' port='5900' autoport='yes' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics>");
        assert_eq!(
            at(&live, ConsoleKind::Spice),
            GraphicsTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 5900
            }
        );
        // A plain port next to a TLS port is fine: the gateway uses the plain one.
        let both = domain(
            "<graphics type='spice' port='5901' tlsPort='5902' autoport='yes' listen='::1'/>",
        );
        assert_eq!(at(&both, ConsoleKind::Spice).to_string(), "tcp [::1]:5901");
    }

    #[test]
    fn tls_only_spice_is_not_offered() {
        for g in [
            "<graphics type='spice' tlsPort='5902' listen='127.0.0.1'/>",
            "<graphics type='spice' port='-1' tlsPort='5902' autoport='yes'/>",
            "<graphics type='spice' autoport='yes' defaultMode='secure'/>",
            "<graphics type='spice' port='5901' tlsPort='5902'><channel name='main' mode='secure'/></graphics>",
        ] {
            let x = domain(g);
            assert_eq!(
                graphics(&x, ConsoleKind::Spice).unwrap(),
                Display::Unoffered(Unoffered::TlsOnly),
                "{g}"
            );
            assert!(consoles(&x).unwrap().is_empty(), "{g}");
        }
        let why = Unoffered::TlsOnly.reason(ConsoleKind::Spice);
        assert!(why.contains("TLS-only SPICE is not supported"), "{why}");
        let hint = Unoffered::TlsOnly.hint(ConsoleKind::Spice, "web1");
        assert!(
            hint.contains("virsh edit web1") && hint.contains("<graphics type='spice'"),
            "{hint}"
        );
    }

    #[test]
    fn spice_with_listen_none_is_not_offered() {
        let x = domain("<graphics type='spice' autoport='yes'><listen type='none'/></graphics>");
        assert_eq!(
            graphics(&x, ConsoleKind::Spice).unwrap(),
            Display::Unoffered(Unoffered::ListenNone)
        );
        assert!(consoles(&x).unwrap().is_empty());
        let hint = Unoffered::ListenNone.hint(ConsoleKind::Spice, "d");
        assert!(hint.contains("<listen type='socket'/>"), "{hint}");
        assert!(!hint.contains("spice = "), "{hint}");
    }

    #[test]
    fn vnc_and_spice_side_by_side() {
        let x = domain(
            "<graphics type='spice' port='5900' autoport='yes' listen='127.0.0.1'/>\
             <graphics type='vnc' socket='/run/vm/vnc.sock'/>\
             <serial type='pty'/>",
        );
        assert_eq!(
            consoles(&x).unwrap(),
            [ConsoleKind::Vnc, ConsoleKind::Spice, ConsoleKind::Serial]
        );
        assert_eq!(
            at(&x, ConsoleKind::Vnc),
            GraphicsTarget::Unix("/run/vm/vnc.sock".into())
        );
        assert_eq!(at(&x, ConsoleKind::Spice).to_string(), "tcp 127.0.0.1:5900");
        // Serial is no graphics console.
        assert_eq!(graphics(&x, ConsoleKind::Serial).unwrap(), Display::Absent);
        // A second SPICE display that can be used wins over a TLS-only first one.
        let x = domain(
            "<graphics type='spice' tlsPort='5902'/><graphics type='spice'><listen type='socket' socket='/s'/></graphics>",
        );
        assert_eq!(
            at(&x, ConsoleKind::Spice),
            GraphicsTarget::Unix("/s".into())
        );
    }

    #[test]
    fn consoles_from_devices() {
        let x = domain(
            "<graphics type='vnc' socket='/s'/><serial type='pty'><source path='/dev/pts/3'/><target port='0'/></serial><console type='pty' tty='/dev/pts/3'/>",
        );
        assert_eq!(
            consoles(&x).unwrap(),
            [ConsoleKind::Vnc, ConsoleKind::Serial]
        );
        let x = domain("<serial type='unix'><source mode='bind' path='/run/s.sock'/></serial>");
        assert_eq!(consoles(&x).unwrap(), [ConsoleKind::Serial]);
        let x = domain("<serial type='file'><source path='/tmp/log'/></serial>");
        assert!(consoles(&x).unwrap().is_empty());
        let x = domain("<console type='pty'/>");
        assert_eq!(consoles(&x).unwrap(), [ConsoleKind::Serial]);
    }

    #[test]
    fn devices_outside_devices_do_not_count_and_bad_xml_is_an_error() {
        let x = "<domain><metadata><graphics type='vnc' socket='/x'/></metadata></domain>";
        assert_eq!(graphics(x, ConsoleKind::Vnc).unwrap(), Display::Absent);
        assert!(consoles("<domain>").unwrap_err().0.contains("cannot parse"));
    }
}
