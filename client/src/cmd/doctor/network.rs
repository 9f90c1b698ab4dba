//! Name resolution and TCP: the host's IPv4 (A) and IPv6 (AAAA) addresses listed
//! separately, then a TCP connection to every one of them (at the same time, each within
//! [`transport::CONNECT_TIMEOUT`]), so that a broken IPv6 route or a firewall on one family shows up
//! even when the other works. Both use the transport's own functions.

use std::net::SocketAddr;

use futures_util::future::join_all;
use tokio::net::TcpStream;

use super::report::{Report, Status};
use crate::error::{Attempt, Error, SshFailure};
use crate::transport;
use crate::url::Host;

/// What the TCP connection is for: it names the server in messages and picks the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The gateway itself (`virtgate://`).
    Gateway,
    /// The host's sshd (`virtgate+ssh://`).
    Sshd,
}

/// Resolve `host`: one step for its A records and one for its AAAA records. Returns every
/// address (none when resolution failed).
pub async fn resolve(report: &mut Report, host: &Host, port: u16) -> Vec<SocketAddr> {
    if let Host::Ip(ip) = host {
        report.ok("dns", format!("{ip} is an address: nothing to look up"));
        return vec![SocketAddr::new(*ip, port)];
    }
    let addrs = match transport::resolve(host, port).await {
        Ok(a) => a,
        Err(e) => {
            report.fail("dns", &e);
            return Vec::new();
        }
    };
    let mut unique: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    for (step, v4, record) in [("dns A", true, "A"), ("dns AAAA", false, "AAAA")] {
        let found: Vec<String> = unique
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .map(|a| a.ip().to_string())
            .collect();
        if found.is_empty() {
            report.ok(step, format!("{host}: no {record} record"));
        } else {
            report.ok(step, format!("{host} → {}", found.join(", ")));
        }
    }
    unique
}

/// Connect to every address at once; one step per address. Returns the first connection
/// (in the order the resolver gave) that worked.
pub async fn connect(
    report: &mut Report,
    addrs: Vec<SocketAddr>,
    server: Server,
) -> Option<(TcpStream, SocketAddr)> {
    let tries = addrs
        .iter()
        .map(|a| transport::connect_tcp(vec![*a]))
        .collect::<Vec<_>>();
    let mut first = None;
    for (addr, result) in addrs.iter().zip(join_all(tries).await) {
        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        match result {
            Ok((stream, at)) => {
                report.ok("tcp", format!("{addr} ({family}) connected"));
                first.get_or_insert((stream, at));
            }
            Err(attempts) if unreachable(&attempts) => {
                let e = failure(server, *addr, attempts);
                report.add_hint(
                    "tcp",
                    Status::Fail,
                    crate::error::chain_text(&e),
                    format!(
                        "this machine has no route to {}: check its network (cable, Wi-Fi, \
                         VPN){}",
                        addr.ip(),
                        if addr.is_ipv6() {
                            " and whether it has IPv6 at all"
                        } else {
                            ""
                        }
                    ),
                );
            }
            Err(attempts) => report.fail("tcp", &failure(server, *addr, attempts)),
        }
    }
    first
}

/// Whether the connection failed for want of a route (no network, no IPv6), not at the
/// server's end.
fn unreachable(attempts: &[Attempt]) -> bool {
    attempts.iter().all(|a| {
        matches!(
            a.error.kind(),
            std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
        )
    })
}

/// The error of a failed connection, as the transport would report it.
fn failure(server: Server, addr: SocketAddr, attempts: Vec<Attempt>) -> Error {
    match server {
        Server::Gateway => Error::Connect { attempts },
        Server::Sshd => SshFailure::Connect {
            server: addr.to_string(),
            attempts,
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_address_gets_its_own_step() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = open.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut r = Report::default();
        let got = connect(&mut r, vec![closed, addr], Server::Gateway).await;
        assert_eq!(got.map(|(_, a)| a), Some(addr));
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.checks[0].status, Status::Fail);
        assert!(
            r.checks[0]
                .detail
                .contains(&format!("{closed} (IPv4): connection refused")),
            "{:?}",
            r.checks[0]
        );
        assert_eq!(r.checks[1].status, Status::Ok);
        assert!(r.checks[1].detail.contains("(IPv4) connected"));
    }

    #[tokio::test]
    async fn localhost_lists_its_families_apart() {
        let mut r = Report::default();
        let a = resolve(&mut r, &Host::Dns("localhost".into()), 9).await;
        assert!(a.iter().any(|a| a.ip().is_loopback()), "{a:?}");
        assert_eq!(r.checks[0].step, "dns A");
        assert!(r.checks[0].detail.contains("127.0.0.1"), "{:?}", r.checks);
        assert_eq!(r.checks[1].step, "dns AAAA");
    }
}
