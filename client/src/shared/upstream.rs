//! The shared connection's one connection to the gateway, kept up: [`Upstream::connect`]
//! makes the first (any failure is the user's to see at once), [`Upstream::run`] waits for
//! it to end and makes the next, with a growing pause, for as long as the failures are the
//! network's (gateway restarting, cable out, laptop asleep). A refusal of who we are (a
//! revoked or expired certificate, a Kerberos or SSH login refused, a changed host key) is
//! final: `run` returns it and `up` stops for good.
//!
//! Every new connection is checked with `GET /v1/whoami` before it is handed out: in TLS 1.3
//! the gateway's verdict on our certificate only shows on the first request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use virtgate_proto::api::WhoAmI;
use virtgate_proto::{ApiPath, Problem};

use crate::error::{report, Error, KerberosFailure, SshFailure, TlsFailure};
use crate::session::{Keepalive, Session};
use crate::transport::Transport;

/// The first pause before reconnecting; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// The longest pause between two reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(15);

/// Where the connection is.
#[derive(Clone)]
enum State {
    /// Connected: requests go here.
    Up(Session),
    /// Lost; reconnecting. Why it was lost (or why the last attempt failed).
    Down(String),
    /// Stopped for good, with the reason.
    Stopped(String),
}

/// The gateway connection of a shared `up`.
pub struct Upstream {
    /// How each connection is made (files read and key unlocked once, by `up`).
    transport: Transport,
    /// The profile's keepalive, for each connection.
    keepalive: Keepalive,
    /// The gateway, for messages.
    server: String,
    /// The current state; local requests wait on it.
    state: watch::Sender<State>,
}

impl Upstream {
    /// Make the first connection and check that the gateway accepts us.
    pub async fn connect(
        transport: Transport,
        keepalive: Keepalive,
        server: String,
    ) -> Result<(Arc<Upstream>, WhoAmI), Error> {
        let (session, me) = attempt(&transport, keepalive).await?;
        let (state, _) = watch::channel(State::Up(session));
        let upstream = Upstream {
            transport,
            keepalive,
            server,
            state,
        };
        Ok((Arc::new(upstream), me))
    }

    /// Keep the connection up; returns only when reconnecting is pointless (the error).
    pub async fn run(self: Arc<Self>) -> Error {
        loop {
            let current = self.state.borrow().clone();
            let lost = match current {
                State::Up(session) => session.closed().await,
                State::Down(_) | State::Stopped(_) => Error::ConnectionLost {
                    server: self.server.clone(),
                    reason: "not connected".into(),
                },
            };
            tracing::warn!(gateway = %self.server, reason = %one_line(&lost), "connection lost; reconnecting");
            self.state.send_replace(State::Down(one_line(&lost)));
            match self.reconnect().await {
                Ok(me) => tracing::warn!(gateway = %self.server, user = %me.user, "reconnected"),
                Err(fatal) => {
                    self.state.send_replace(State::Stopped(one_line(&fatal)));
                    return fatal;
                }
            }
        }
    }

    /// Try until connected (`Ok`, state `Up`) or refused for good (`Err`).
    async fn reconnect(&self) -> Result<WhoAmI, Error> {
        let mut pause = FIRST_PAUSE;
        loop {
            tokio::time::sleep(pause).await;
            match attempt(&self.transport, self.keepalive).await {
                Ok((session, me)) => {
                    self.state.send_replace(State::Up(session));
                    return Ok(me);
                }
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(gateway = %self.server, error = %one_line(&e), retry_in = ?pause, "still cannot reach the gateway");
                    self.state.send_replace(State::Down(one_line(&e)));
                }
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The connection for a local request, waiting up to `wait` while reconnecting; else a
    /// problem for the local client that says why.
    pub async fn session(&self, wait: Duration) -> Result<Session, Problem> {
        let mut rx = self.state.subscribe();
        let ready = rx.wait_for(|s| !matches!(s, State::Down(_)));
        let state = match tokio::time::timeout(wait, ready).await {
            Ok(Ok(s)) => s.clone(),
            _ => self.state.borrow().clone(),
        };
        match state {
            State::Up(session) => Ok(session),
            State::Down(why) => Err(Problem::new(
                503,
                "shared-connection-down",
                format!("the shared connection to {} is down", self.server),
            )
            .detail(why)
            .hint(
                "`virtgate up` keeps reconnecting on its own (its log is next to its socket); \
                 --no-shared connects directly",
            )),
            State::Stopped(why) => Err(Problem::new(
                503,
                "shared-connection-stopped",
                format!("the shared connection to {} has stopped", self.server),
            )
            .detail(why)
            .hint("run `virtgate up` again once the cause is fixed, or use --no-shared")),
        }
    }
}

/// One connection, checked with `whoami`.
async fn attempt(transport: &Transport, keepalive: Keepalive) -> Result<(Session, WhoAmI), Error> {
    let session = Session::connect(transport, keepalive).await?;
    let me = session.get_json::<WhoAmI>(&ApiPath::WhoAmI).await?;
    Ok((session, me))
}

/// An error on one line (the report's `error:` part), for logs and problems.
fn one_line(e: &Error) -> String {
    let r = report(e);
    let first = r.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// Whether an error says the gateway (or sshd, or the KDC) will not have us, so that
/// trying again without a change on someone's side is pointless.
pub fn is_final(e: &Error) -> bool {
    match e {
        Error::Tls { failure, .. } => !matches!(failure, TlsFailure::Cut(_) | TlsFailure::Other(_)),
        Error::Kerberos { failure, .. } => !matches!(
            failure,
            KerberosFailure::KdcUnreachable { .. } | KerberosFailure::Other(_)
        ),
        Error::Ssh(f) => !matches!(**f, SshFailure::Connect { .. }),
        Error::Problem { problem } => matches!(problem.status, 401 | 403),
        Error::KeyFile(_) | Error::Setting { .. } | Error::File { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TlsContext;

    fn tls(failure: TlsFailure) -> Error {
        Error::Tls {
            failure,
            context: Box::new(TlsContext::default()),
        }
    }

    #[test]
    fn refusals_are_final_network_trouble_is_not() {
        assert!(is_final(&tls(TlsFailure::ClientCertRevoked)));
        assert!(is_final(&tls(TlsFailure::UnknownCa)));
        assert!(!is_final(&tls(TlsFailure::Other("reset".into()))));
        assert!(!is_final(&tls(TlsFailure::Cut("closed".into()))));
        assert!(!is_final(&Error::Connect { attempts: vec![] }));
        assert!(!is_final(&Error::ConnectionLost {
            server: "gw".into(),
            reason: "closed".into()
        }));
        let forbidden = Problem::new(403, "forbidden", "no");
        assert!(is_final(&Error::Problem { problem: forbidden }));
        let busy = Problem::new(503, "busy", "later");
        assert!(!is_final(&Error::Problem { problem: busy }));
    }
}
