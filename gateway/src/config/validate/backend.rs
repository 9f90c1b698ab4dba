//! Checks of `[backend]`: the QEMU domains (names, sockets, supervision keys) and the
//! libvirt settings, which serde alone cannot express.

use std::collections::HashMap;

use super::super::{Backend, BackendKind, Config};
use super::Problems;

pub(super) fn backend(config: &Config, p: &mut Problems) {
    let b = &config.backend;
    match b.kind {
        BackendKind::Libvirt => libvirt(b, p),
        BackendKind::Qemu => {
            for (key, set) in [
                ("backend.uri", b.uri.is_some()),
                ("backend.libvirt_socket", b.libvirt_socket.is_some()),
                ("backend.libvirt_socket_ro", b.libvirt_socket_ro.is_some()),
            ] {
                if set {
                    p.add(
                        key,
                        "only used by kind = \"libvirt\"",
                        "remove it, or set kind = \"libvirt\"",
                    );
                }
            }
            if b.domains.is_empty() {
                p.add(
                    "backend.domain",
                    "kind = \"qemu\" but no [[backend.domain]] is configured",
                    "add a [[backend.domain]] table with name, qmp and vnc",
                );
            }
        }
    }
    if b.start_timeout_s == 0 {
        p.add(
            "backend.start_timeout_s",
            "must be at least 1",
            "the default is 30",
        );
    }
    supervision(b, p);
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, d) in b.domains.iter().enumerate() {
        let key = |k: &str| format!("backend.domain[{i}].{k}");
        if d.name.trim().is_empty() {
            p.add(
                key("name"),
                "empty domain name",
                "give every domain a name users can type",
            );
        } else if d.name.contains('/') || d.name.chars().any(char::is_control) {
            p.add(
                key("name"),
                format!(
                    "`{}` contains `/` or a control character",
                    d.name.escape_debug()
                ),
                "use letters, digits, `-`, `_`, `.`",
            );
        } else if let Some(j) = names.insert(d.name.as_str(), i) {
            p.add(
                key("name"),
                format!(
                    "duplicate domain name `{}` (also backend.domain[{j}])",
                    d.name
                ),
                "domain names must be unique",
            );
        }
        p.absolute(key("qmp"), &d.qmp);
        if let Some(v) = &d.vnc {
            p.absolute(key("vnc"), v);
        }
        if let Some(v) = &d.spice {
            p.absolute(key("spice"), v);
        }
        if let Some(s) = &d.serial {
            p.absolute(key("serial"), s);
        }
        if let Some(cmd) = &d.command {
            if cmd.first().is_none_or(|c| c.trim().is_empty()) {
                p.add(
                    key("command"),
                    "empty command",
                    "give the program and its arguments: [\"qemu-system-x86_64\", \"-qmp\", ...]",
                );
            }
        }
    }
}

/// `runtime_dir` (absolute; qemu only), `stop_domains_on_exit` (qemu only), a domain's
/// `stop_on_exit` (only with `command`).
fn supervision(b: &Backend, p: &mut Problems) {
    if let Some(dir) = &b.runtime_dir {
        p.absolute("backend.runtime_dir".into(), dir);
    }
    let libvirt = b.kind == BackendKind::Libvirt;
    for (key, set) in [
        ("backend.runtime_dir", b.runtime_dir.is_some()),
        ("backend.stop_domains_on_exit", b.stop_domains_on_exit),
    ] {
        if libvirt && set {
            let hint = "remove it: libvirtd keeps its domains running whatever the gateway does";
            p.add(
                key,
                "only used by kind = \"qemu\" (QEMUs the gateway starts)",
                hint,
            );
        }
    }
    for (i, d) in b.domains.iter().enumerate() {
        if d.stop_on_exit.is_some() && d.command.is_none() {
            let key = format!("backend.domain[{i}].stop_on_exit");
            p.add(
                key,
                "only used with `command` (a QEMU the gateway starts)",
                "remove it, or add `command`",
            );
        }
    }
}

/// `kind = "libvirt"`: no `[[backend.domain]]`, a URI that looks like one, absolute sockets.
fn libvirt(b: &Backend, p: &mut Problems) {
    if !b.domains.is_empty() {
        p.add(
            "backend.domain",
            "[[backend.domain]] tables are for kind = \"qemu\"",
            "remove them: libvirt lists its own domains (`virsh list --all`)",
        );
    }
    if let Some(uri) = &b.uri {
        if let Some(why) = libvirt_uri_problem(uri) {
            p.add(
                "backend.uri",
                format!("`{}` {why}", uri.escape_debug()),
                "write a libvirt URI such as \"qemu:///system\" or \"qemu:///system?socket=/run/libvirt/libvirt-sock\"",
            );
        }
    }
    if let Some(s) = &b.libvirt_socket {
        p.absolute("backend.libvirt_socket".into(), s);
    }
    if let Some(s) = &b.libvirt_socket_ro {
        p.absolute("backend.libvirt_socket_ro".into(), s);
    }
}

/// Why `uri` is not a libvirt URI (`driver[+transport]://[user@][host][:port]/path[?query]`).
pub(super) fn libvirt_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Some("is not a URI (no `://`)");
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Some("has no valid driver name before `://`");
    }
    if !rest.contains('/') {
        return Some("has no path (e.g. `/system`) after the host part");
    }
    None
}
