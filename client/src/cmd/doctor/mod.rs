//! `virtgate doctor`: every step from the profile to the gateway's answer, checked in order,
//! each printed with ✓ (worked), ! (worked, but look), ✗ (failed, with a hint) or – (not
//! tried, because a step it needs failed). It keeps going wherever later steps still make
//! sense: with no network the local files and the Kerberos ticket are still checked.
//!
//! ```text
//! local.rs      config file → profile → CA file → certificate → key   (auth = cert)
//!               kerberos.rs: ticket in the cache → service ticket     (auth = kerberos)
//!               ssh.rs: agent keys and key files                      (virtgate+ssh://)
//! network.rs    DNS (A, AAAA) → TCP to every address
//! handshake.rs  TLS with the transport's config, the gateway's certificate (what it
//!               presented even when it does not verify)
//!               ssh.rs: host key ↔ known_hosts → login → channel      (virtgate+ssh://)
//! gateway.rs    accepted (first request) → clock skew (Date) → whoami → domains
//! report.rs     the steps as lines for people, or one JSON array for scripts
//! ```
//!
//! `doctor` always connects directly, never over the shared connection of `virtgate up`:
//! it is there to see every step. Files are read and the key unlocked by the transports'
//! own preparation, so what `doctor` judges is what every other command would use.

mod certinfo;
mod gateway;
mod handshake;
mod kerberos;
mod local;
mod network;
mod report;
mod ssh;

use clap::Args;

use self::gateway::Login;
use self::network::Server;
use self::report::{Report, Status};
use crate::cli::{GlobalArgs, Settings};
use crate::error::{Error, KerberosContext};
use crate::profile::{AuthKind, Env};
use crate::transport::kerberos::KerberosTransport;
use crate::transport::tls::TlsTransport;
use crate::transport::Transport;
use crate::url::{GatewayUrl, Host};

/// Arguments of `virtgate doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Print the checks as one JSON array of {step, status, detail, hint}
    #[arg(long)]
    pub json: bool,
}

/// Run `virtgate doctor`; `Ok(false)` when a check failed (exit status 1).
pub fn run(global: &GlobalArgs, args: DoctorArgs, env: &Env) -> Result<bool, Error> {
    let mut report = Report::default();
    check(&mut report, global, env)?;
    let text = if args.json {
        report.json()?
    } else {
        report.human()
    };
    super::print(&text)?;
    Ok(report.passed())
}

/// The step `shared`: whether `virtgate up` keeps a connection that the profile's commands
/// use (doctor itself always connects directly).
fn shared(report: &mut Report, settings: &Settings, config: &std::path::Path) {
    use crate::shared::{Found, Place};
    const STEP: &str = "shared";
    let Some(profile) = settings.profile.as_deref() else {
        report.skip(STEP, "a bare --url has no shared connection");
        return;
    };
    let place = Place::of_process(profile);
    match place.inspect() {
        Found::Nothing => match place.ended() {
            Some(why) => report.add_hint(
                STEP,
                Status::Warn,
                format!("the last `virtgate up` of profile `{profile}` stopped for good: {why}"),
                "fix that, then `virtgate up` again; meanwhile commands connect themselves",
            ),
            None => report.ok(
                STEP,
                format!("no `virtgate up` for profile `{profile}`: commands connect themselves"),
            ),
        },
        Found::Running(owner) if Place::serves(&owner, settings, config) => report.ok(
            STEP,
            format!(
                "`virtgate up` (pid {}) shares one connection on {}; the checks below connect \
                 directly",
                owner.pid,
                place.socket.display()
            ),
        ),
        Found::Running(owner) => report.add_hint(
            STEP,
            Status::Warn,
            format!(
                "`virtgate up` (pid {}) runs for a profile `{profile}` of {} ({}): not this one, \
                 so commands connect themselves",
                owner.pid,
                owner.config.display(),
                owner.url
            ),
            format!("`virtgate down -p {profile}` with that config ends it"),
        ),
        Found::Stale => report.add_hint(
            STEP,
            Status::Warn,
            format!(
                "{} was left by a `virtgate up` that is gone (killed?)",
                place.socket.display()
            ),
            "the next command removes it and connects itself; `virtgate up` starts a new one",
        ),
        Found::NotOurs(problem) => report.fail(
            STEP,
            &Error::SharedSocket {
                path: place.socket.clone(),
                problem,
            },
        ),
    }
}

/// The steps after the profile, for a TLS URL: what was prepared on this machine.
struct TlsPlan {
    /// Host and port from the URL.
    host: Host,
    /// TCP port.
    port: u16,
    /// The first certificate of the CA file (for hints about the right CA).
    ca: Option<certinfo::CertInfo>,
    /// The TLS configuration the handshake step uses: the login's, else one without a
    /// client certificate (the key failed); `None` without a usable CA file.
    handshake: Option<TlsTransport>,
    /// How the connection logs in, when that could be prepared.
    login: Option<TlsLogin>,
}

/// A prepared login over TLS.
enum TlsLogin {
    /// A client certificate (its subject), already in `TlsPlan::handshake`.
    Certificate(Option<String>),
    /// Kerberos: the transport, and whether the ticket step passed.
    Kerberos(Box<KerberosTransport>, bool),
}

/// Every step, into `report`. `Err` only when the runtime cannot start.
fn check(report: &mut Report, global: &GlobalArgs, env: &Env) -> Result<(), Error> {
    let Some(profiles) = local::config(report, global, env) else {
        return Ok(());
    };
    let Some(settings) = local::profile(report, global, &profiles, env) else {
        return Ok(());
    };
    shared(report, &settings, &profiles.path);
    let tls = match &settings.url {
        GatewayUrl::Tls { host, port } => Some(prepare_tls(report, &settings, host, *port)),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        match tls {
            Some(plan) => remote_tls(report, &settings, plan).await,
            None => remote_other(report, &settings).await,
        }
    });
    runtime.shutdown_background();
    Ok(())
}

/// The local steps of a TLS URL: CA file, then certificate and key, or the Kerberos ticket.
fn prepare_tls(report: &mut Report, settings: &Settings, host: &Host, port: u16) -> TlsPlan {
    let ca_certs = local::ca(report, settings);
    let ca = ca_certs
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| certinfo::CertInfo::parse(c));
    let mut plan = TlsPlan {
        host: host.clone(),
        port,
        ca,
        handshake: None,
        login: None,
    };
    if settings.auth == AuthKind::Kerberos {
        let prepared = KerberosTransport::prepare(settings);
        let context = match &prepared {
            Ok(k) => k.context().clone(),
            Err(_) => kerberos_context(settings, host),
        };
        let ticket = kerberos::ticket(report, &context);
        if let Ok(k) = prepared {
            plan.handshake = TlsTransport::prepare(settings).ok();
            plan.login = Some(TlsLogin::Kerberos(Box::new(k), ticket));
        }
        return plan;
    }
    let (cert_ok, subject) = local::cert(report, settings, ca_certs.as_deref());
    let prepared = Transport::prepare(settings);
    local::key(report, settings, &prepared, ca_certs.is_some() && cert_ok);
    match prepared {
        Ok(Transport::Tls(t)) => {
            plan.handshake = Some(t);
            plan.login = Some(TlsLogin::Certificate(subject));
        }
        _ => {
            // no usable key: still look at the gateway, without a client certificate
            let server_only = Settings {
                auth: AuthKind::Kerberos,
                ..settings.clone()
            };
            plan.handshake = TlsTransport::prepare(&server_only).ok();
        }
    }
    plan
}

/// What the Kerberos hints need when the transport could not be prepared (no CA file).
fn kerberos_context(settings: &Settings, host: &Host) -> KerberosContext {
    let (host, host_is_ip) = match host {
        Host::Dns(name) => (name.trim_end_matches('.').to_owned(), false),
        Host::Ip(ip) => (ip.to_string(), true),
    };
    KerberosContext {
        service: settings.service.clone(),
        host,
        host_is_ip,
        user: settings.local_user.clone(),
        realm: crate::error::default_realm(),
    }
}

/// The steps that need the network, for a TLS URL.
async fn remote_tls(report: &mut Report, settings: &Settings, plan: TlsPlan) {
    let mut negotiation = None;
    if let Some(TlsLogin::Kerberos(k, ticket)) = &plan.login {
        if *ticket {
            negotiation = kerberos::service(report, k.context()).await;
        } else {
            report.skip("kerberos service", "not tried: no usable ticket");
        }
    }
    const AFTER_TLS: [&str; 4] = ["accepted", "clock", "whoami", "domains"];
    let addrs = network::resolve(report, &plan.host, plan.port).await;
    if addrs.is_empty() {
        skip(report, &["tcp", "tls"], "name resolution failed");
        return skip(report, &AFTER_TLS, "name resolution failed");
    }
    let Some((tcp, addr)) = network::connect(report, addrs, Server::Gateway).await else {
        skip(report, &["tls"], "no address took a TCP connection");
        return skip(report, &AFTER_TLS, "no address took a TCP connection");
    };
    let Some(tls) = &plan.handshake else {
        unverified(report, &plan, addr).await;
        return skip(report, &AFTER_TLS, "the TLS handshake failed");
    };
    let Some(stream) = handshake::run(report, tls, tcp, addr, plan.ca.as_ref()).await else {
        return skip(report, &AFTER_TLS, "the TLS handshake failed");
    };
    let mut connected = tls.connected(stream);
    let login = match plan.login {
        Some(TlsLogin::Certificate(subject)) => Login::Certificate(subject),
        Some(TlsLogin::Kerberos(..)) => match negotiation {
            Some(n) => {
                connected.negotiation = Some(n);
                Login::Kerberos
            }
            None => return skip(report, &AFTER_TLS, "no Kerberos service ticket"),
        },
        None => return skip(report, &AFTER_TLS, "no usable key or login (see above)"),
    };
    gateway::run(report, connected, settings.keepalive, login).await;
}

/// The TLS step without a usable CA file: what the gateway presents, unverified (✗).
async fn unverified(report: &mut Report, plan: &TlsPlan, addr: std::net::SocketAddr) {
    let name = match &plan.host {
        Host::Dns(d) => rustls::pki_types::ServerName::try_from(d.clone()).ok(),
        Host::Ip(ip) => Some(rustls::pki_types::ServerName::IpAddress((*ip).into())),
    };
    let seen = match name {
        Some(n) => handshake::presented(&n, addr).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let detail = match seen.first().and_then(|c| certinfo::CertInfo::parse(c)) {
        Some(info) => format!(
            "not verified (no usable CA file); {addr} presented a certificate for {}, issued by {}",
            info.names_text(),
            info.issuer
        ),
        None => format!("not verified (no usable CA file); {addr} presented no certificate"),
    };
    report.add_hint(
        "tls",
        Status::Fail,
        detail,
        "fix `ca` (see above): the ca.pem of the CA that issued the gateway's certificate",
    );
}

/// The network steps of SSH and unix socket URLs.
async fn remote_other(report: &mut Report, settings: &Settings) {
    match &settings.url {
        GatewayUrl::Ssh { host, port, .. } => {
            ssh::keys(report, settings).await;
            // doctor looks, it never adds a host key to known_hosts
            let look = Settings {
                accept_new_host_key: false,
                ..settings.clone()
            };
            let transport = match crate::transport::ssh::SshTransport::prepare(&look) {
                Ok(t) => t,
                Err(e) => return report.fail("ssh setup", &e),
            };
            const AFTER_SSH: [&str; 4] = ["accepted", "clock", "whoami", "domains"];
            const SSH: [&str; 3] = ["ssh host key", "ssh login", "gateway socket"];
            let addrs = network::resolve(report, host, *port).await;
            if addrs.is_empty() {
                skip(report, &["tcp"], "name resolution failed");
                skip(report, &SSH, "name resolution failed");
                return skip(report, &AFTER_SSH, "name resolution failed");
            }
            if network::connect(report, addrs, Server::Sshd)
                .await
                .is_none()
            {
                skip(report, &SSH, "no address took a TCP connection");
                return skip(report, &AFTER_SSH, "no address took a TCP connection");
            }
            let Some(connected) = ssh::connect(report, &transport).await else {
                return skip(report, &AFTER_SSH, "the SSH connection failed");
            };
            gateway::run(report, connected, settings.keepalive, Login::Ssh).await;
        }
        GatewayUrl::Unix { path } => {
            let connected = match Transport::prepare(settings) {
                Ok(t) => t.connect().await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(c) => {
                    report.ok("socket", format!("{} connected", path.display()));
                    gateway::run(report, c, settings.keepalive, Login::Unix).await;
                }
                Err(e) => {
                    report.fail("socket", &e);
                    skip(
                        report,
                        &["accepted", "clock", "whoami", "domains"],
                        "no connection",
                    );
                }
            }
        }
        // TLS URLs are handled by remote_tls
        _ => {}
    }
}

/// Mark `steps` as not tried, and why.
fn skip(report: &mut Report, steps: &[&'static str], why: &str) {
    for step in steps {
        report.skip(step, format!("not tried: {why}"));
    }
}
