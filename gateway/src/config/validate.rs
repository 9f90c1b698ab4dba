//! Checks a parsed configuration for what its types cannot express.
//!
//! Every problem names the key (`backend.domain[1].name`) and carries a hint; all problems
//! are collected, not just the first, so one `check-config` run shows everything to fix.
//! No file is opened here: missing certificate files are found when TLS is set up (which
//! `check-config` also does).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

mod backend;

use super::Config;
use backend::backend;
#[cfg(test)]
use backend::libvirt_uri_problem;

/// One problem in an otherwise well-formed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key it is about, as a path (`tls.cert`, `rule[0].who`).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub(super) struct Problems(Vec<Invalid>);

impl Problems {
    pub(super) fn add(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(Invalid {
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    pub(super) fn absolute(&mut self, key: String, path: &Path) {
        if path.as_os_str().is_empty() {
            self.add(key, "empty path", "give an absolute path");
        } else if !path.is_absolute() {
            self.add(
                key,
                format!("relative path `{}`", path.display()),
                "write an absolute path: the gateway's working directory is not defined",
            );
        }
    }
}

/// Every problem in `config`; empty when it is usable.
pub fn validate(config: &Config) -> Vec<Invalid> {
    let mut p = Problems(Vec::new());
    listen(config, &mut p);
    tls(config, &mut p);
    kerberos(config, &mut p);
    backend(config, &mut p);
    rules(config, &mut p);
    if let Some(a) = &config.audit {
        p.absolute("audit.path".into(), &a.path);
    }
    limits(config, &mut p);
    p.0
}

fn listen(config: &Config, p: &mut Problems) {
    let l = &config.listen;
    if l.tcp.is_empty() && l.unix.is_none() {
        p.add(
            "listen",
            "no listener: neither listen.tcp nor listen.unix is set",
            "add tcp = [\"[::]:16520\"] to [listen]",
        );
    }
    let mut seen = HashMap::new();
    for (i, a) in l.tcp.iter().enumerate() {
        let key = format!("listen.tcp[{i}]");
        match a.parse::<SocketAddr>() {
            Ok(addr) => {
                if let Some(j) = seen.insert(addr, i) {
                    p.add(key, format!("`{a}` is listed twice (also listen.tcp[{j}])"), "remove one");
                }
            }
            Err(_) => p.add(
                key,
                format!("`{a}` is not an IP:PORT address"),
                "write e.g. \"[::]:16520\" (IPv4 and IPv6), \"127.0.0.1:16520\" or \"[::1]:16520\"; host names are not resolved",
            ),
        }
    }
    if let Some(u) = &l.unix {
        p.absolute("listen.unix".into(), u);
    }
    if let Some(c) = &l.control {
        p.absolute("listen.control".into(), c);
    }
}

fn tls(config: &Config, p: &mut Problems) {
    let kerberos = config.kerberos.is_some();
    match &config.tls {
        None if !config.listen.tcp.is_empty() => p.add(
            "tls",
            "listen.tcp is set but [tls] is missing: TCP connections are TLS only",
            "add [tls] with cert, key and client_ca (e.g. from `virtgate-pki issue-server`)",
        ),
        None => {}
        Some(t) => {
            p.absolute("tls.cert".into(), &t.cert);
            p.absolute("tls.key".into(), &t.key);
            match &t.client_ca {
                Some(ca) => p.absolute("tls.client_ca".into(), ca),
                None if kerberos => {}
                None => p.add(
                    "tls.client_ca",
                    "not set: no client could log in over TLS",
                    "set client_ca to the CA that signs client certificates (virtgate-pki's ca.pem), or add [kerberos]",
                ),
            }
            if let Some(crl) = &t.crl {
                p.absolute("tls.crl".into(), crl);
                if t.client_ca.is_none() {
                    p.add(
                        "tls.crl",
                        "a CRL without client_ca has nothing to revoke",
                        "set tls.client_ca",
                    );
                }
            }
        }
    }
}

/// A host or service name: non-empty, no `@`, `/`, spaces or control characters.
fn name_problem(s: &str) -> Option<&'static str> {
    if s.trim().is_empty() {
        Some("empty")
    } else if s.contains(['@', '/']) || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains `@`, `/`, a space or a control character")
    } else {
        None
    }
}

fn kerberos(config: &Config, p: &mut Problems) {
    let Some(k) = &config.kerberos else {
        return;
    };
    if config.tls.is_none() || config.listen.tcp.is_empty() {
        p.add(
            "kerberos",
            "Kerberos login runs over TLS, but no TCP listener with [tls] is configured",
            "add tcp = [\"[::]:16520\"] to [listen] and [tls] with cert and key",
        );
    }
    if let Some(kt) = &k.keytab {
        p.absolute("kerberos.keytab".into(), kt);
    }
    if let Some(why) = k.service.as_deref().and_then(name_problem) {
        p.add(
            "kerberos.service",
            format!("service name {why}"),
            "remove it to use HTTP (what curl and browsers ask for)",
        );
    }
    if let Some(why) = k.host.as_deref().and_then(name_problem) {
        p.add(
            "kerberos.host",
            format!("host name {why}"),
            "write the gateway's host name as clients use it, e.g. \"gw.example.org\"",
        );
    }
    for (i, r) in k.strip_realm.iter().enumerate() {
        if let Some(why) = name_problem(r) {
            p.add(
                format!("kerberos.strip_realm[{i}]"),
                format!("realm {why}"),
                "write the realm alone, e.g. \"EXAMPLE.ORG\"",
            );
        }
    }
}

fn rules(config: &Config, p: &mut Problems) {
    for (i, r) in config.rules.iter().enumerate() {
        if r.who.is_empty() || r.who.iter().any(|w| w.trim().is_empty()) {
            p.add(
                format!("rule[{i}].who"),
                "empty: this rule matches nobody",
                "name users, `group:NAME`, principals, or \"*\"",
            );
        }
        for w in &r.who {
            if w.strip_prefix("group:").is_some_and(|g| g.is_empty()) {
                p.add(
                    format!("rule[{i}].who"),
                    "`group:` without a group name",
                    "write group:NAME",
                );
            }
        }
        if r.domains.is_empty() || r.domains.iter().any(|d| d.is_empty()) {
            p.add(
                format!("rule[{i}].domains"),
                "empty: this rule matches no domain",
                "name domains or globs such as \"web*\" or \"*\"",
            );
        }
    }
}

fn limits(config: &Config, p: &mut Problems) {
    let l = &config.limits;
    for (key, value) in [
        ("limits.max_connections", l.max_connections as u64),
        (
            "limits.max_streams_per_connection",
            u64::from(l.max_streams_per_connection),
        ),
        ("limits.handshake_timeout_s", l.handshake_timeout_s),
        ("limits.keepalive_interval_s", l.keepalive_interval_s),
        ("limits.keepalive_timeout_s", l.keepalive_timeout_s),
        (
            "limits.max_pending_handshakes",
            l.max_pending_handshakes as u64,
        ),
        (
            "limits.max_pending_per_address",
            l.max_pending_per_address as u64,
        ),
        (
            "limits.max_connections_per_user",
            l.max_connections_per_user as u64,
        ),
        ("limits.max_tunnels_per_user", l.max_tunnels_per_user as u64),
    ] {
        if value == 0 {
            p.add(key, "must be at least 1", "remove it to use the default");
        }
    }
    if l.max_pending_handshakes >= l.max_connections && l.max_connections > 0 {
        p.add(
            "limits.max_pending_handshakes",
            &format!(
                "{} is not below limits.max_connections ({}): unauthenticated clients could take every connection",
                l.max_pending_handshakes, l.max_connections
            ),
            "keep it at most a quarter of max_connections (the default is 256 of 1024)",
        );
    }
    if l.max_pending_per_address > l.max_pending_handshakes {
        p.add(
            "limits.max_pending_per_address",
            &format!(
                "{} is above limits.max_pending_handshakes ({})",
                l.max_pending_per_address, l.max_pending_handshakes
            ),
            "one address can never hold more pending handshakes than all of them: lower it",
        );
    }
    if l.idle_timeout_s == Some(0) {
        p.add(
            "limits.idle_timeout_s",
            "must be at least 1",
            "remove it to keep idle connections open",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn problems(text: &str) -> Vec<Invalid> {
        validate(&parse(text, Path::new("t.toml")).unwrap())
    }

    const BASE: &str = r#"
[listen]
tcp = ["[::]:0"]
[tls]
cert = "/p/server.pem"
key = "/p/server.key"
client_ca = "/p/ca.pem"
[backend]
kind = "qemu"
[[backend.domain]]
name = "a"
qmp = "/r/a/qmp.sock"
vnc = "/r/a/vnc.sock"
"#;

    fn keys(ps: &[Invalid]) -> Vec<&str> {
        ps.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn base_is_valid() {
        assert!(problems(BASE).is_empty());
    }

    #[test]
    fn duplicate_domains_and_relative_paths() {
        let text = format!("{BASE}[[backend.domain]]\nname = \"a\"\nqmp = \"rel/qmp.sock\"\n");
        let ps = problems(&text);
        assert_eq!(
            keys(&ps),
            ["backend.domain[1].name", "backend.domain[1].qmp"],
            "{ps:?}"
        );
        assert!(ps[0].message.contains("also backend.domain[0]"));
    }

    #[test]
    fn spice_socket_is_a_path_like_the_others() {
        let ok = format!("{BASE}spice = \"/r/a/spice.sock\"\n");
        let c = parse(&ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.backend.domains[0].spice.as_deref(),
            Some(Path::new("/r/a/spice.sock"))
        );
        assert!(validate(&c).is_empty());
        let ps = problems(&format!("{BASE}spice = \"spice.sock\"\n"));
        assert_eq!(keys(&ps), ["backend.domain[0].spice"], "{ps:?}");
        let schema = crate::config::json_schema();
        assert!(
            schema.contains("\"spice\"") && schema.contains("-spice unix=on"),
            "the schema documents the key"
        );
    }

    #[test]
    fn no_listener_and_tls_missing() {
        let ps = problems(&BASE.replace("tcp = [\"[::]:0\"]", ""));
        assert_eq!(keys(&ps), ["listen"]);
        let no_tls = BASE.replace(
            "[tls]\ncert = \"/p/server.pem\"\nkey = \"/p/server.key\"\nclient_ca = \"/p/ca.pem\"\n",
            "",
        );
        assert_eq!(keys(&problems(&no_tls)), ["tls"]);
        let no_ca = BASE.replace("client_ca = \"/p/ca.pem\"\n", "");
        assert_eq!(keys(&problems(&no_ca)), ["tls.client_ca"]);
    }

    #[test]
    fn bad_addresses_unsupported_sections_and_empty_backend() {
        let ps = problems(&BASE.replace("[::]:0", "localhost:80"));
        assert_eq!(keys(&ps), ["listen.tcp[0]"]);
        assert!(ps[0].hint.contains("[::]:16520"));
        let head = BASE.split("[[backend.domain]]").next().unwrap();
        assert_eq!(keys(&problems(head)), ["backend.domain"]);
    }

    #[test]
    fn kerberos_may_replace_client_ca_and_checks_its_names() {
        let no_ca = BASE.replace("client_ca = \"/p/ca.pem\"\n", "");
        let kerberos = "[kerberos]\nservice = \"HTTP\"\nhost = \"gw.example.org\"\nstrip_realm = [\"EXAMPLE.ORG\"]\n";
        assert!(problems(&format!("{no_ca}{kerberos}")).is_empty());
        assert!(problems(&format!("{BASE}{kerberos}")).is_empty());
        let bad = "[kerberos]\nkeytab = \"rel.keytab\"\nservice = \"HTTP/x\"\nhost = \"\"\nstrip_realm = [\"a b\"]\n";
        assert_eq!(
            keys(&problems(&format!("{BASE}{bad}"))),
            [
                "kerberos.keytab",
                "kerberos.service",
                "kerberos.host",
                "kerberos.strip_realm[0]"
            ]
        );
        let unix_only = "[listen]\nunix = \"/run/v.sock\"\n[backend]\nkind = \"qemu\"\n[[backend.domain]]\nname = \"a\"\nqmp = \"/q\"\n";
        let ps = problems(&format!("{unix_only}{kerberos}"));
        assert_eq!(keys(&ps), ["kerberos"]);
        assert!(ps[0].message.contains("over TLS"));
    }

    #[test]
    fn rules_must_name_someone_and_something() {
        let ps = problems(&format!("{BASE}[[rule]]\nwho = []\ndomains = [\"*\"]\nrole = \"viewer\"\n[[rule]]\nwho = [\"group:\"]\ndomains = []\nrole = \"admin\"\n"));
        assert_eq!(keys(&ps), ["rule[0].who", "rule[1].who", "rule[1].domains"]);
    }

    const LIBVIRT: &str = r#"
[listen]
unix = "/run/v.sock"
[backend]
kind = "libvirt"
"#;

    #[test]
    fn libvirt_backend_is_valid_with_defaults_and_checks_its_keys() {
        assert!(problems(LIBVIRT).is_empty());
        let full = format!("{LIBVIRT}uri = \"qemu+unix:///system?socket=/tmp/l/libvirt-sock\"\nlibvirt_socket = \"/tmp/l/libvirt-sock\"\nlibvirt_socket_ro = \"/tmp/l/libvirt-sock-ro\"\n");
        assert!(problems(&full).is_empty(), "{:?}", problems(&full));
        let bad = format!("{LIBVIRT}uri = \"system\"\nlibvirt_socket = \"rel/sock\"\n[[backend.domain]]\nname = \"a\"\nqmp = \"/q\"\n");
        let ps = problems(&bad);
        assert_eq!(
            keys(&ps),
            ["backend.domain", "backend.uri", "backend.libvirt_socket"],
            "{ps:?}"
        );
        assert!(ps[0].hint.contains("libvirt lists its own domains"));
        for uri in [
            "qemu:///session",
            "test:///default",
            "qemu+ssh://root@h/system",
            "qemu:///embed?root=/x",
        ] {
            assert_eq!(libvirt_uri_problem(uri), None, "{uri}");
        }
        for uri in [
            "",
            "qemu",
            "://x/y",
            "qemu://host",
            "qe mu:///system",
            "1q:///system",
        ] {
            assert!(libvirt_uri_problem(uri).is_some(), "{uri}");
        }
    }

    #[test]
    fn libvirt_keys_are_refused_for_qemu() {
        let ps = problems(&BASE.replace(
            "kind = \"qemu\"",
            "kind = \"qemu\"\nuri = \"qemu:///system\"",
        ));
        assert_eq!(keys(&ps), ["backend.uri"]);
    }

    #[test]
    fn the_pending_budget_must_leave_room_for_authenticated_users() {
        let ps = problems(&format!(
            "{BASE}[limits]\nmax_connections = 100\nmax_pending_per_address = 300\n"
        ));
        assert_eq!(
            keys(&ps),
            [
                "limits.max_pending_handshakes",
                "limits.max_pending_per_address"
            ]
        );
        assert!(ps[0]
            .to_string()
            .contains("256 is not below limits.max_connections (100)"));
        let ok = "[limits]\nmax_connections = 100\nmax_pending_handshakes = 25\nmax_pending_per_address = 5\n";
        assert!(problems(&format!("{BASE}{ok}")).is_empty());
    }

    #[test]
    fn zero_limits_are_refused() {
        let ps = problems(&format!("{BASE}[limits]\nmax_connections = 0\n"));
        assert_eq!(keys(&ps), ["limits.max_connections"]);
        let ps = problems(&format!(
            "{BASE}[limits]\nkeepalive_interval_s = 0\nkeepalive_timeout_s = 0\nidle_timeout_s = 0\n"
        ));
        assert_eq!(
            keys(&ps),
            [
                "limits.keepalive_interval_s",
                "limits.keepalive_timeout_s",
                "limits.idle_timeout_s"
            ]
        );
        assert!(ps[2].hint.contains("keep idle connections open"));
    }

    #[test]
    fn keepalive_defaults_free_a_dead_client_within_15_s() {
        let l = parse(BASE, Path::new("t.toml")).unwrap().limits;
        assert!(l.keepalive_interval_s + l.keepalive_timeout_s <= 15 && l.idle_timeout_s.is_none());
        let set =
            "[limits]\nkeepalive_interval_s = 2\nkeepalive_timeout_s = 3\nidle_timeout_s = 60\n";
        let c = parse(&format!("{BASE}{set}"), Path::new("t.toml")).unwrap();
        let l = &c.limits;
        assert_eq!(
            (
                l.keepalive_interval_s,
                l.keepalive_timeout_s,
                l.idle_timeout_s
            ),
            (2, 3, Some(60))
        );
        assert!(validate(&c).is_empty());
    }
}
