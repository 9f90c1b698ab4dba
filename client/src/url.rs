//! Gateway URLs: which transport to use and where the gateway is.
//!
//! ```text
//! virtgate://host[:port]                     TLS, port 16520 unless given
//! virtgate://[::1]:16521                     IPv6 literals in brackets
//! virtgate+ssh://user@host[:port][/socket]   SSH to the host's sshd, then its unix socket
//! virtgate+unix:///run/virtgate/virtgate.sock the gateway's unix socket on this machine
//! ```
//!
//! Parsing is strict and every rejection says what a good URL looks like, because a URL is
//! the first thing a new user types.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use virtgate_proto::{DEFAULT_PORT, DEFAULT_UNIX_SOCKET};

/// TCP port of `virtgate+ssh://` URLs that name none (sshd's).
pub const DEFAULT_SSH_PORT: u16 = 22;

/// A host as written in a URL: a DNS name or an IP address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, checked against the certificate's DNS SANs.
    Dns(String),
    /// An IPv4 or IPv6 literal, checked against the certificate's IP SANs.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    /// The host as it appears in a URL authority: IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
        }
    }
}

/// Where a gateway is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayUrl {
    /// `virtgate://host[:port]`: TLS straight to the gateway.
    Tls {
        /// Name or address to connect to and to check the server certificate against.
        host: Host,
        /// TCP port of the gateway.
        port: u16,
    },
    /// `virtgate+ssh://user@host[:port][/socket]`: through the host's sshd.
    Ssh {
        /// Login name on the host; the local user name when absent.
        user: Option<String>,
        /// The SSH server.
        host: Host,
        /// sshd's port.
        port: u16,
        /// The gateway's unix socket on that host.
        socket: String,
    },
    /// `virtgate+unix:///path`: the gateway's socket on this machine.
    Unix {
        /// Path of the socket.
        path: PathBuf,
    },
}

/// Why a string is not a gateway URL; [`UrlError::hint`] says what would be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad gateway URL `{url}`: {reason}")]
pub struct UrlError {
    /// The URL as given, to echo it back.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl UrlError {
    fn new(url: &str, reason: impl Into<String>) -> Self {
        UrlError {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    /// What a valid URL looks like, with the user's host when one can be guessed.
    pub fn hint(&self) -> String {
        let forms = "use virtgate://HOST[:PORT] (TLS, port 16520 by default; IPv6 as [::1]), \
                     virtgate+ssh://USER@HOST[:PORT][/SOCKET] or virtgate+unix:///PATH";
        if !self.url.contains("://") && !self.url.is_empty() {
            format!("did you mean virtgate://{}? {forms}", self.url)
        } else {
            forms.to_owned()
        }
    }
}

impl GatewayUrl {
    /// Parse a gateway URL (see the module documentation for the accepted forms).
    pub fn parse(s: &str) -> Result<GatewayUrl, UrlError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::new(s, "it has no scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "virtgate" => {
                let (authority, path) = split_path(rest);
                if !(path.is_empty() || path == "/") {
                    return Err(UrlError::new(s, format!("unexpected path `{path}`")));
                }
                if authority.contains('@') {
                    return Err(UrlError::new(
                        s,
                        "a user name belongs in virtgate+ssh:// URLs only",
                    ));
                }
                let (host, port) = parse_authority(s, authority, DEFAULT_PORT)?;
                Ok(GatewayUrl::Tls { host, port })
            }
            "virtgate+ssh" => {
                let (authority, path) = split_path(rest);
                let (user, hostport) = match authority.rsplit_once('@') {
                    Some(("", _)) => return Err(UrlError::new(s, "empty user name before `@`")),
                    Some((u, h)) => (Some(u.to_owned()), h),
                    None => (None, authority),
                };
                let (host, port) = parse_authority(s, hostport, DEFAULT_SSH_PORT)?;
                let socket = match path {
                    "" | "/" => DEFAULT_UNIX_SOCKET.to_owned(),
                    p => p.to_owned(),
                };
                Ok(GatewayUrl::Ssh {
                    user,
                    host,
                    port,
                    socket,
                })
            }
            "virtgate+unix" => {
                let (authority, path) = split_path(rest);
                if !authority.is_empty() {
                    return Err(UrlError::new(
                        s,
                        "a unix socket URL has no host: write virtgate+unix:///PATH (three slashes)",
                    ));
                }
                if path.len() < 2 {
                    return Err(UrlError::new(s, "no socket path"));
                }
                Ok(GatewayUrl::Unix {
                    path: PathBuf::from(path),
                })
            }
            other => Err(UrlError::new(s, format!("unknown scheme `{other}`"))),
        }
    }

    /// `host:port` as used in the HTTP/2 `:authority` (IPv6 in brackets); `localhost` for
    /// unix sockets.
    pub fn authority(&self) -> String {
        match self {
            GatewayUrl::Tls { host, port } => format!("{host}:{port}"),
            GatewayUrl::Ssh { .. } | GatewayUrl::Unix { .. } => "localhost".to_owned(),
        }
    }

    /// The name of the transport, for messages.
    pub fn transport_name(&self) -> &'static str {
        match self {
            GatewayUrl::Tls { .. } => "TLS",
            GatewayUrl::Ssh { .. } => "SSH",
            GatewayUrl::Unix { .. } => "unix socket",
        }
    }
}

impl fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayUrl::Tls { host, port } => write!(f, "virtgate://{host}:{port}"),
            GatewayUrl::Ssh {
                user,
                host,
                port,
                socket,
            } => {
                f.write_str("virtgate+ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                write!(f, "{host}:{port}{socket}")
            }
            GatewayUrl::Unix { path } => write!(f, "virtgate+unix://{}", path.display()),
        }
    }
}

/// Split `authority/path` at the first `/`; the path keeps its slash.
fn split_path(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn parse_authority(url: &str, authority: &str, default_port: u16) -> Result<(Host, u16), UrlError> {
    if authority.contains(['?', '#']) {
        return Err(UrlError::new(url, "queries and fragments are not used"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::new(url, "`[` without a closing `]`"))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| UrlError::new(url, format!("`{inside}` is not an IPv6 address")))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                UrlError::new(url, format!("unexpected `{p}` after the IPv6 address"))
            })?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if name.contains(':') {
            return Err(UrlError::new(
                url,
                "IPv6 addresses must be in brackets, e.g. virtgate://[::1]:16520",
            ));
        }
        (parse_host(url, name)?, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(UrlError::new(url, format!("`{p}` is not a port number"))),
        },
    };
    Ok((host, port))
}

fn parse_host(url: &str, name: &str) -> Result<Host, UrlError> {
    if name.is_empty() {
        return Err(UrlError::new(url, "no host"));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !valid || name.starts_with(['.', '-']) {
        return Err(UrlError::new(url, format!("`{name}` is not a host name")));
    }
    Ok(Host::Dns(name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(s: &str) -> (Host, u16) {
        match GatewayUrl::parse(s) {
            Ok(GatewayUrl::Tls { host, port }) => (host, port),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn tls_urls_default_port_and_literals() {
        assert_eq!(
            tls("virtgate://hv1.example.org"),
            (Host::Dns("hv1.example.org".into()), 16520)
        );
        assert_eq!(tls("virtgate://HV1:7000/"), (Host::Dns("hv1".into()), 7000));
        assert_eq!(
            tls("virtgate://127.0.0.1:1"),
            (Host::Ip("127.0.0.1".parse().unwrap()), 1)
        );
        assert_eq!(
            tls("virtgate://[::1]:16521"),
            (Host::Ip("::1".parse().unwrap()), 16521)
        );
        assert_eq!(
            tls("virtgate://[fe80::1]"),
            (Host::Ip("fe80::1".parse().unwrap()), 16520)
        );
    }

    #[test]
    fn authority_and_display_bracket_ipv6() {
        let u = GatewayUrl::parse("virtgate://[::1]:5").unwrap();
        assert_eq!(u.authority(), "[::1]:5");
        assert_eq!(u.to_string(), "virtgate://[::1]:5");
        let u = GatewayUrl::parse("virtgate://10.0.0.1").unwrap();
        assert_eq!(u.authority(), "10.0.0.1:16520");
    }

    #[test]
    fn ssh_and_unix_urls() {
        assert_eq!(
            GatewayUrl::parse("virtgate+ssh://alice@hv1").unwrap(),
            GatewayUrl::Ssh {
                user: Some("alice".into()),
                host: Host::Dns("hv1".into()),
                port: 22,
                socket: DEFAULT_UNIX_SOCKET.into()
            }
        );
        assert_eq!(
            GatewayUrl::parse("virtgate+ssh://bob@[::1]:2222/tmp/g.sock").unwrap(),
            GatewayUrl::Ssh {
                user: Some("bob".into()),
                host: Host::Ip("::1".parse().unwrap()),
                port: 2222,
                socket: "/tmp/g.sock".into()
            }
        );
        assert_eq!(
            GatewayUrl::parse("virtgate+unix:///run/virtgate/virtgate.sock").unwrap(),
            GatewayUrl::Unix {
                path: "/run/virtgate/virtgate.sock".into()
            }
        );
    }

    #[test]
    fn bad_urls_say_why_and_hint() {
        for (s, why) in [
            ("https://hv1", "unknown scheme `https`"),
            ("hv1.example.org", "no scheme"),
            ("virtgate://::1", "brackets"),
            ("virtgate://[::1", "closing"),
            ("virtgate://hv1:0", "not a port"),
            ("virtgate://hv1:99999", "not a port"),
            ("virtgate://hv1/x", "unexpected path"),
            ("virtgate://a@hv1", "virtgate+ssh"),
            ("virtgate://", "no host"),
            ("virtgate+unix://host/x", "three slashes"),
            ("virtgate://h v", "not a host name"),
        ] {
            let e = GatewayUrl::parse(s).unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
            assert!(e.hint().contains("virtgate://HOST"), "{s}");
        }
        let e = GatewayUrl::parse("hv1.example.org").unwrap_err();
        assert!(e
            .hint()
            .starts_with("did you mean virtgate://hv1.example.org?"));
    }
}
