//! Request paths of the API, built by the client and parsed by the gateway from one
//! definition, so the two sides cannot drift apart.
//!
//! Domain names are percent-encoded in paths (libvirt allows almost any character in a name).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a byte tunnel (extended CONNECT) connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKind {
    /// The domain's VNC server.
    Vnc,
    /// The domain's serial console.
    Serial,
    /// The domain's SPICE server (each SPICE channel is a tunnel of its own).
    Spice,
    /// libvirtd's RPC socket; `read_only` picks the read-only socket.
    Libvirt { read_only: bool },
    /// A file descriptor passed through a libvirt tunnel of the same connection (see
    /// `virtgate-rpc`): `id: Some(n)` claims descriptor `n` that libvirtd handed out
    /// (`virDomainOpenGraphicsFD`); `id: None` makes a new descriptor for the client to
    /// hand to libvirtd (`virDomainOpenGraphics`), whose id comes back in the
    /// [`DESCRIPTOR_HEADER`](crate::DESCRIPTOR_HEADER) response header. `read_only` is the
    /// libvirt tunnel's: the same authorization applies.
    LibvirtFd { read_only: bool, id: Option<u64> },
}

impl TunnelKind {
    /// Short name for logs, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Vnc => "vnc",
            TunnelKind::Serial => "serial",
            TunnelKind::Spice => "spice",
            TunnelKind::Libvirt { read_only: false } => "libvirt",
            TunnelKind::Libvirt { read_only: true } => "libvirt_ro",
            TunnelKind::LibvirtFd {
                read_only: false, ..
            } => "libvirt_fd",
            TunnelKind::LibvirtFd {
                read_only: true, ..
            } => "libvirt_fd_ro",
        }
    }
}

/// A parsed API path. [`ApiPath::to_path`] and [`ApiPath::parse`] are inverses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiPath {
    /// `/v1/whoami`
    WhoAmI,
    /// `/v1/domains`
    Domains,
    /// `/v1/domains/{name}`
    Domain(String),
    /// `/v1/domains/{name}/{action}`: lifecycle (`start`, `shutdown`, ...) and `screenshot`.
    DomainAction(String, String),
    /// `/v1/domains/{name}/vnc`, `/serial`, `/spice`, `/v1/libvirt[?ro]`,
    /// `/v1/libvirt/fds[/{id}][?ro]`.
    Tunnel {
        /// The domain, absent for libvirt.
        domain: Option<String>,
        kind: TunnelKind,
    },
    /// `/v1/events`
    Events,
    /// `/v1/metrics`: counters in the Prometheus text format.
    Metrics,
    /// `/v1/web/ticket`: a one-time browser login ticket (`virtgate web`).
    WebTicket,
    /// `/v1/web/session`: the current browser identity and its CSRF token.
    WebSession,
}

/// Why a path is not part of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// Not under `/v1`, or no such call.
    Unknown(String),
    /// A domain name that is not valid UTF-8 after percent-decoding, or empty.
    BadName(String),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Unknown(p) => write!(f, "no API call at {p}"),
            PathError::BadName(p) => write!(f, "bad domain name in {p}"),
        }
    }
}

impl std::error::Error for PathError {}

fn encode(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

fn decode(segment: &str, whole: &str) -> Result<String, PathError> {
    let name = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| PathError::BadName(whole.to_owned()))?;
    if name.is_empty() {
        return Err(PathError::BadName(whole.to_owned()));
    }
    Ok(name.into_owned())
}

impl ApiPath {
    /// The path (and query, for `?ro`) to put in a request.
    pub fn to_path(&self) -> String {
        match self {
            ApiPath::WhoAmI => "/v1/whoami".into(),
            ApiPath::Domains => "/v1/domains".into(),
            ApiPath::Domain(n) => format!("/v1/domains/{}", encode(n)),
            ApiPath::DomainAction(n, a) => format!("/v1/domains/{}/{}", encode(n), encode(a)),
            ApiPath::Tunnel {
                domain: Some(n),
                kind,
            } => format!("/v1/domains/{}/{}", encode(n), kind.as_str()),
            ApiPath::Tunnel {
                domain: None,
                kind: TunnelKind::Libvirt { read_only: true },
            } => "/v1/libvirt?ro".into(),
            ApiPath::Tunnel {
                domain: None,
                kind: TunnelKind::LibvirtFd { read_only, id },
            } => {
                let id = id.map(|n| format!("/{n}")).unwrap_or_default();
                let ro = if *read_only { "?ro" } else { "" };
                format!("/v1/libvirt/fds{id}{ro}")
            }
            ApiPath::Tunnel { domain: None, .. } => "/v1/libvirt".into(),
            ApiPath::Events => "/v1/events".into(),
            ApiPath::Metrics => "/v1/metrics".into(),
            ApiPath::WebTicket => "/v1/web/ticket".into(),
            ApiPath::WebSession => "/v1/web/session".into(),
        }
    }

    /// Parse a request path and query. `connect` tells whether the request is an extended
    /// CONNECT: `/v1/domains/web1/vnc` is a tunnel then, an unknown action otherwise.
    pub fn parse(path: &str, query: Option<&str>, connect: bool) -> Result<ApiPath, PathError> {
        let unknown = || PathError::Unknown(path.to_owned());
        let rest = path.strip_prefix("/v1/").ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let read_only = query
            .map(|q| {
                q.split('&')
                    .any(|kv| kv == "ro" || kv == "ro=1" || kv == "ro=true")
            })
            .unwrap_or(false);
        match parts.as_slice() {
            ["whoami"] => Ok(ApiPath::WhoAmI),
            ["domains"] => Ok(ApiPath::Domains),
            ["events"] => Ok(ApiPath::Events),
            ["metrics"] => Ok(ApiPath::Metrics),
            ["web", "ticket"] => Ok(ApiPath::WebTicket),
            ["web", "session"] => Ok(ApiPath::WebSession),
            ["libvirt"] if connect => Ok(ApiPath::Tunnel {
                domain: None,
                kind: TunnelKind::Libvirt { read_only },
            }),
            ["libvirt", "fds"] if connect => Ok(ApiPath::Tunnel {
                domain: None,
                kind: TunnelKind::LibvirtFd {
                    read_only,
                    id: None,
                },
            }),
            ["libvirt", "fds", id] if connect => Ok(ApiPath::Tunnel {
                domain: None,
                kind: TunnelKind::LibvirtFd {
                    read_only,
                    id: Some(id.parse().map_err(|_| unknown())?),
                },
            }),
            ["domains", name] => Ok(ApiPath::Domain(decode(name, path)?)),
            ["domains", name, "vnc"] if connect => Ok(ApiPath::Tunnel {
                domain: Some(decode(name, path)?),
                kind: TunnelKind::Vnc,
            }),
            ["domains", name, "serial"] if connect => Ok(ApiPath::Tunnel {
                domain: Some(decode(name, path)?),
                kind: TunnelKind::Serial,
            }),
            ["domains", name, "spice"] if connect => Ok(ApiPath::Tunnel {
                domain: Some(decode(name, path)?),
                kind: TunnelKind::Spice,
            }),
            ["domains", name, action] if !connect => Ok(ApiPath::DomainAction(
                decode(name, path)?,
                decode(action, path)?,
            )),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_round_trip() {
        for name in ["web1", "a b/c", "ünï", "x%y?z"] {
            let p = ApiPath::Tunnel {
                domain: Some(name.into()),
                kind: TunnelKind::Vnc,
            };
            let s = p.to_path();
            assert!(!s[1..].contains("//"));
            assert_eq!(ApiPath::parse(&s, None, true).unwrap(), p);
            let d = ApiPath::Domain(name.into());
            assert_eq!(ApiPath::parse(&d.to_path(), None, false).unwrap(), d);
        }
    }

    #[test]
    fn libvirt_read_only_comes_from_the_query() {
        let p = ApiPath::Tunnel {
            domain: None,
            kind: TunnelKind::Libvirt { read_only: true },
        };
        assert_eq!(p.to_path(), "/v1/libvirt?ro");
        assert_eq!(ApiPath::parse("/v1/libvirt", Some("ro"), true).unwrap(), p);
    }

    #[test]
    fn descriptor_paths_round_trip() {
        for read_only in [false, true] {
            for id in [None, Some(0), Some(u64::MAX)] {
                let p = ApiPath::Tunnel {
                    domain: None,
                    kind: TunnelKind::LibvirtFd { read_only, id },
                };
                let s = p.to_path();
                let (path, query) = match s.split_once('?') {
                    Some((a, b)) => (a, Some(b)),
                    None => (s.as_str(), None),
                };
                assert_eq!(ApiPath::parse(path, query, true).unwrap(), p, "{s}");
            }
        }
        assert!(ApiPath::parse("/v1/libvirt/fds/x", None, true).is_err());
        assert!(ApiPath::parse("/v1/libvirt/fds", None, false).is_err());
        let spice = ApiPath::Tunnel {
            domain: Some("w".into()),
            kind: TunnelKind::Spice,
        };
        assert_eq!(ApiPath::parse(&spice.to_path(), None, true).unwrap(), spice);
    }

    #[test]
    fn web_paths_round_trip() {
        for p in [ApiPath::WebTicket, ApiPath::WebSession] {
            assert_eq!(ApiPath::parse(&p.to_path(), None, false).unwrap(), p);
        }
        assert_eq!(ApiPath::WebTicket.to_path(), "/v1/web/ticket");
        assert_eq!(ApiPath::WebSession.to_path(), "/v1/web/session");
        assert!(ApiPath::parse("/v1/web", None, false).is_err());
        assert!(ApiPath::parse("/v1/web/nope", None, false).is_err());
    }

    #[test]
    fn tunnels_need_connect_and_unknown_paths_are_errors() {
        assert!(matches!(
            ApiPath::parse("/v1/domains/a/vnc", None, false),
            Ok(ApiPath::DomainAction(_, _))
        ));
        assert!(ApiPath::parse("/v2/domains", None, false).is_err());
        assert!(ApiPath::parse("/v1/nope", None, false).is_err());
        assert!(ApiPath::parse("/v1/domains/", None, false).is_ok());
        assert!(ApiPath::parse("/v1/domains//vnc", None, true).is_err());
    }
}
