//! What the libvirt backend reads from a domain's XML (`virDomainGetXMLDesc`).
//!
//! Only the live XML of a running domain has the resolved VNC port (`autoport` gives
//! `port='-1'` in the inactive XML) and the pty path of a serial port, so the callers pass
//! the live XML. Parsing is done with `roxmltree` on the `<devices>` element; nothing here
//! does I/O, which keeps the rules testable on literal XML.

use std::path::PathBuf;

use virtgate_proto::ConsoleKind;

/// Where a domain's VNC server can be reached from the gateway host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncTarget {
    /// `<graphics type='vnc' socket='PATH'>` or `<listen type='socket' socket='PATH'>`.
    Unix(PathBuf),
    /// `<graphics type='vnc' port='N' listen='ADDR'>` (or a `<listen address=...>` child);
    /// wildcard addresses are replaced by the loopback address of the same family.
    Tcp {
        /// IP address or host name to connect to.
        host: String,
        /// The TCP port QEMU listens on.
        port: u16,
    },
}

impl std::fmt::Display for VncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VncTarget::Unix(p) => write!(f, "unix socket {}", p.display()),
            VncTarget::Tcp { host, port } if host.contains(':') => write!(f, "tcp [{host}]:{port}"),
            VncTarget::Tcp { host, port } => write!(f, "tcp {host}:{port}"),
        }
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

fn is_vnc(n: &roxmltree::Node<'_, '_>) -> bool {
    n.has_tag_name("graphics") && n.attribute("type") == Some("vnc")
}

/// A `<serial>` or `<console>` whose host side libvirt can open as a console stream.
fn is_char_console(n: &roxmltree::Node<'_, '_>) -> bool {
    (n.has_tag_name("serial") || n.has_tag_name("console"))
        && matches!(n.attribute("type"), Some("pty") | Some("unix"))
}

/// The consoles the gateway can tunnel for this domain: `vnc` for a VNC display, `serial`
/// for a `<serial>`/`<console>` of type `pty` or `unix`.
pub fn consoles(xml: &str) -> Result<Vec<ConsoleKind>, XmlError> {
    let doc = parse(xml)?;
    let mut out = Vec::new();
    if devices(&doc).any(|n| is_vnc(&n)) {
        out.push(ConsoleKind::Vnc);
    }
    if devices(&doc).any(|n| is_char_console(&n)) {
        out.push(ConsoleKind::Serial);
    }
    Ok(out)
}

/// Where to reach the first VNC display; `Ok(None)` when the domain has none, `Err` when it
/// has one that cannot be reached (no port yet, `listen type='none'`, a bad attribute).
pub fn vnc_target(xml: &str) -> Result<Option<VncTarget>, XmlError> {
    let doc = parse(xml)?;
    let Some(g) = devices(&doc).find(is_vnc) else {
        return Ok(None);
    };
    if let Some(path) = g.attribute("socket").filter(|s| !s.is_empty()) {
        return Ok(Some(VncTarget::Unix(path.into())));
    }
    let listens: Vec<_> = g.children().filter(|n| n.has_tag_name("listen")).collect();
    if let Some(path) = listens
        .iter()
        .filter(|l| l.attribute("type") == Some("socket"))
        .find_map(|l| l.attribute("socket"))
    {
        return Ok(Some(VncTarget::Unix(path.into())));
    }
    if listens.iter().any(|l| l.attribute("type") == Some("none")) {
        return Err(XmlError(
            "its VNC display has listen type `none` (reachable only through libvirt's own fd passing)".into(),
        ));
    }
    let port = match g.attribute("port") {
        None => return Err(XmlError("its VNC display has no port yet".into())),
        Some(p) => match p.parse::<i32>() {
            Ok(n) if n > 0 && n <= i32::from(u16::MAX) => n as u16,
            Ok(_) => {
                return Err(XmlError(format!(
                    "its VNC display has no port yet (port='{p}'; is the domain running?)"
                )))
            }
            Err(_) => return Err(XmlError(format!("its VNC port `{p}` is not a number"))),
        },
    };
    let address = g
        .attribute("listen")
        .or_else(|| listens.iter().find_map(|l| l.attribute("address")))
        .filter(|a| !a.is_empty())
        .unwrap_or("127.0.0.1");
    Ok(Some(VncTarget::Tcp {
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

    #[test]
    fn vnc_on_a_unix_socket() {
        let x = domain("<graphics type='vnc' socket='/run/vm/vnc.sock'/>");
        assert_eq!(
            vnc_target(&x).unwrap(),
            Some(VncTarget::Unix("/run/vm/vnc.sock".into()))
        );
        let x = domain(
            "<graphics type='vnc'><listen type='socket' socket='/var/lib/libvirt/qemu/d.vnc'/></graphics>",
        );
        assert_eq!(
            vnc_target(&x).unwrap(),
            Some(VncTarget::Unix("/var/lib/libvirt/qemu/d.vnc".into()))
        );
    }

    #[test]
    fn vnc_on_tcp_with_listen_forms() {
        let x = domain("<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>");
        assert_eq!(
            vnc_target(&x).unwrap(),
            Some(VncTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 5901
            })
        );
        let x = domain("<graphics type='vnc' port='5902'><listen type='address' address='0.0.0.0'/></graphics>");
        let t = vnc_target(&x).unwrap().unwrap();
        assert_eq!(
            t,
            VncTarget::Tcp {
                host: "127.0.0.1".into(),
                port: 5902
            }
        );
        let x = domain("<graphics type='vnc' port='5903' listen='::'/>");
        let t = vnc_target(&x).unwrap().unwrap();
        assert_eq!(t.to_string(), "tcp [::1]:5903");
        let x = domain("<graphics type='vnc' port='5904'/>");
        assert_eq!(
            vnc_target(&x).unwrap().unwrap().to_string(),
            "tcp 127.0.0.1:5904"
        );
    }

    #[test]
    fn unresolved_or_unreachable_vnc_is_an_error() {
        let x = domain("<graphics type='vnc' port='-1' autoport='yes'/>");
        assert!(vnc_target(&x).unwrap_err().0.contains("no port yet"));
        let x = domain("<graphics type='vnc'><listen type='none'/></graphics>");
        assert!(vnc_target(&x).unwrap_err().0.contains("none"));
        let x = domain("<graphics type='vnc' port='x'/>");
        assert!(vnc_target(&x).is_err());
    }

    #[test]
    fn spice_only_has_no_vnc() {
        let x = domain("<graphics type='spice' port='5900'/>");
        assert_eq!(vnc_target(&x).unwrap(), None);
        assert!(consoles(&x).unwrap().is_empty());
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
        assert_eq!(vnc_target(x).unwrap(), None);
        assert!(consoles("<domain>").unwrap_err().0.contains("cannot parse"));
    }
}
