//! Browser sessions: one-time tickets, session cookies and CSRF, without weakening the
//! gateway's authentication.
//!
//! A user who already has a strong identity (certificate, Kerberos, unix peer through SSH)
//! asks for a ticket (`POST /v1/web/ticket`, what `virtgate web` does): 32 random bytes,
//! single use, short-lived ([`config::Web::ticket_lifetime_s`]), bound to the whole
//! [`Identity`] and, for certificate logins, to the certificate chain. The browser trades it
//! (`GET /ui/login?ticket=T&next=/ui/...`) for a `virtgate_session` cookie (Secure,
//! HttpOnly, SameSite=Strict) that carries that identity for
//! [`config::Web::session_lifetime_s`]. Tickets and sessions live in memory only: a gateway
//! restart ends them all. A reload re-checks the certificate behind each one (like
//! [`Registry::reevaluate`](crate::sessions::Registry::reevaluate) does for connections) and
//! ends those the new CRL or CA refuses; `POST /ui/logout` ends one.
//!
//! A cookie counts only on a connection without an identity of its own
//! ([`ConnAuth::Pending`]): a certificate (or a Kerberos login) on the connection wins. The
//! connection is never bound to the cookie's identity; each request is looked up again.
//!
//! CSRF is [`csrf`](super::csrf), re-exported here ([`check_unsafe`], [`session_info`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::ReqBody;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use ring::rand::{SecureRandom as _, SystemRandom};
use rustls::pki_types::{CertificateDer, UnixTime};
use virtgate_proto::{Problem, WebTicket};

use crate::api::error::{self, ApiError};
use crate::api::{Body, ConnAuth, ConnCtx, State};
use crate::authn::Identity;
use crate::config;
use crate::live::Live;

/// The session cookie's name.
pub const COOKIE: &str = "virtgate_session";

/// Where a login goes when `next` is missing or not a page of the gateway.
const DEFAULT_NEXT: &str = "/ui/";

/// Hint of every refusal that a fresh link cures.
const AGAIN: &str = "run `virtgate web` again for a fresh login link (tickets work once, for a minute; sessions end at logout, after 8 h, and when the gateway restarts)";

/// `[web]` as the store applies it.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// How long a ticket may wait for its login.
    ticket_lifetime: Duration,
    /// How long a session lasts after its login.
    session_lifetime: Duration,
    /// Whether a browser may connect without a client certificate (`ticket_login` or
    /// `[kerberos]`); without it a ticket is useless and none is issued.
    certless: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let web = config::Web::default();
        Settings {
            ticket_lifetime: Duration::from_secs(web.ticket_lifetime_s),
            session_lifetime: Duration::from_secs(web.session_lifetime_s),
            certless: false,
        }
    }
}

/// A ticket or a session: who it stands for, until when.
#[derive(Debug, Clone)]
struct Entry {
    /// The identity the ticket was asked for with (the whole of it: user, method, groups).
    identity: Arc<Identity>,
    /// The client certificate chain behind it (certificate logins), re-verified on reload.
    certs: Option<Vec<CertificateDer<'static>>>,
    /// When it stops being valid.
    expires: Instant,
}

/// Every live ticket and session, in memory only.
#[derive(Default)]
pub struct Store {
    /// Lifetimes and whether certificate-less TLS is open (set at start and on reload).
    settings: Mutex<Settings>,
    /// By ticket.
    tickets: Mutex<HashMap<String, Entry>>,
    /// By session id (the cookie's value).
    sessions: Mutex<HashMap<String, Entry>>,
    /// The per-process CSRF key.
    pub csrf: super::csrf::Key,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("tickets", &lock(&self.tickets).len())
            .field("sessions", &lock(&self.sessions).len())
            .finish_non_exhaustive()
    }
}

/// A poisoned lock still holds consistent data here (plain inserts and removes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The session a request's identity came from (a request extension set by [`identity`]).
#[derive(Debug, Clone)]
pub struct Via(pub String);

pub use super::csrf::{check_unsafe, session_info};

/// Live tickets (and, apart, sessions) at most: memory stays bounded whoever asks.
const MAX_LIVE: usize = 10_000;

fn too_many(what: &str) -> ApiError {
    tracing::warn!(what, limit = MAX_LIVE, "too many live browser logins");
    Problem::new(503, "too-many-sessions", "too many browser logins")
        .detail(format!("the gateway holds {MAX_LIVE} live {what} already"))
        .hint("try again when some have expired (tickets last a minute); the gateway log names the limit")
        .into()
}

/// 32 random bytes, base64url.
fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| internal("the system's random generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub(super) fn internal(detail: &str) -> ApiError {
    tracing::error!(detail, "browser session failure");
    Problem::new(500, "internal", "internal error")
        .detail(detail)
        .hint("see the gateway log")
        .into()
}

impl Store {
    /// Apply `[web]` (at start and on every reload); `kerberos`: `[kerberos]` is set.
    pub fn configure(&self, web: &config::Web, kerberos: bool) {
        *lock(&self.settings) = Settings {
            ticket_lifetime: Duration::from_secs(web.ticket_lifetime_s),
            session_lifetime: Duration::from_secs(web.session_lifetime_s),
            certless: web.ticket_login || kerberos,
        };
    }

    fn settings(&self) -> Settings {
        *lock(&self.settings)
    }

    /// A new ticket for `identity`, and its lifetime in seconds.
    fn issue(
        &self,
        identity: Arc<Identity>,
        certs: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<(String, u64), ApiError> {
        let lifetime = self.settings().ticket_lifetime;
        let ticket = random_token()?;
        let now = Instant::now();
        let mut tickets = lock(&self.tickets);
        tickets.retain(|_, e| e.expires > now);
        if tickets.len() >= MAX_LIVE {
            return Err(too_many("login tickets"));
        }
        tickets.insert(
            ticket.clone(),
            Entry {
                identity,
                certs,
                expires: now + lifetime,
            },
        );
        Ok((ticket, lifetime.as_secs()))
    }

    /// Trade a ticket (used up whatever happens) for a new session id.
    fn login(&self, ticket: &str) -> Result<Option<(String, Arc<Identity>)>, ApiError> {
        let Some(entry) = lock(&self.tickets).remove(ticket) else {
            return Ok(None);
        };
        let now = Instant::now();
        if entry.expires <= now {
            return Ok(None);
        }
        let sid = random_token()?;
        let identity = entry.identity.clone();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, e| e.expires > now);
        if sessions.len() >= MAX_LIVE {
            return Err(too_many("browser sessions"));
        }
        sessions.insert(
            sid.clone(),
            Entry {
                expires: now + self.settings().session_lifetime,
                ..entry
            },
        );
        Ok(Some((sid, identity)))
    }

    /// The identity of a live session.
    fn session(&self, sid: &str) -> Option<Arc<Identity>> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(sid) {
            Some(e) if e.expires > Instant::now() => Some(e.identity.clone()),
            Some(_) => {
                sessions.remove(sid);
                None
            }
            None => None,
        }
    }

    /// End a session; whether it was live.
    fn end(&self, sid: &str) -> Option<Arc<Identity>> {
        lock(&self.sessions).remove(sid).map(|e| e.identity)
    }

    /// After a reload: end the tickets and sessions whose certificate the new verifier
    /// refuses (revoked, expired, another CA); each is audited. Returns how many ended.
    pub fn reevaluate(&self, live: &Live) -> usize {
        let Some(verifier) = &live.verifier else {
            return 0;
        };
        let now = UnixTime::now();
        let mut ended = 0;
        for (what, map) in [
            ("web_session", &self.sessions),
            ("web_ticket", &self.tickets),
        ] {
            lock(map).retain(|_, e| {
                let Some((leaf, chain)) = e.certs.as_deref().and_then(<[_]>::split_first) else {
                    return true;
                };
                match verifier.verify_client_cert(leaf, chain, now) {
                    Ok(_) => true,
                    Err(err) => {
                        let reason =
                            format!("ended on reload: certificate no longer accepted ({err})");
                        tracing::info!(user = %e.identity.user, %reason, "ending a browser {what}");
                        live.audit.closed(&e.identity, what, None, &reason);
                        ended += 1;
                        false
                    }
                }
            });
        }
        ended
    }
}

/// The `virtgate_session` cookie of a request, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then_some(v)
        })
}

/// The identity for a request: the connection's own (certificate, unix peer, Kerberos
/// login) when it has one; else a valid session cookie's (marked with [`Via`], the
/// connection stays unbound); else the Negotiate login of [`ConnAuth::identity`].
pub async fn identity(
    state: &State,
    auth: &ConnAuth,
    req: &mut Request<ReqBody>,
) -> Result<(Arc<Identity>, Option<HeaderValue>), ApiError> {
    if let Some(id) = auth.bound() {
        return Ok((id, None));
    }
    if let Some(sid) = cookie(req.headers()).map(str::to_owned) {
        match state.registry.web.session(&sid) {
            Some(id) => {
                auth.note_session();
                req.extensions_mut().insert(Via(sid));
                return Ok((id, None));
            }
            None if crate::api::negotiate::negotiate_token(req.headers()).is_none() => {
                return Err(session_unknown());
            }
            None => {}
        }
    }
    auth.identity(state, req.headers()).await
}

/// A certificate-less connection with neither a session nor a Kerberos login.
pub fn login_required() -> ApiError {
    Problem::new(401, "authentication-required", "authentication required")
        .detail("this connection has no client certificate and no browser session")
        .hint("run `virtgate web` for a one-time login link (or import your certificate into the browser: `virtgate-pki export-p12`)")
        .into()
}

/// A cookie the gateway does not know (expired, logged out, from another gateway run).
fn session_unknown() -> ApiError {
    Problem::new(401, "session-unknown", "browser session unknown")
        .detail("the session cookie is not one of this gateway's live sessions: it expired, was logged out or revoked, or comes from before a gateway restart")
        .hint(AGAIN)
        .into()
}

fn post_only(req: &Request<ReqBody>, hint: &str) -> Result<(), ApiError> {
    if req.method() == Method::POST {
        Ok(())
    } else {
        Err(error::method_not_allowed(
            req.method(),
            req.uri().path(),
            &[Method::POST],
            hint,
        ))
    }
}

/// `POST /v1/web/ticket`: a one-time login ticket for this identity (not for a cookie
/// session: a browser cannot mint itself more sessions).
pub async fn ticket(
    state: &State,
    id: &Identity,
    conn: &ConnCtx,
    req: &Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    post_only(req, "use POST (`virtgate web`)")?;
    if req.extensions().get::<Via>().is_some() {
        return Err(Problem::new(403, "forbidden", "not allowed")
            .detail("a browser session cannot ask for login tickets")
            .hint("run `virtgate web` with your certificate, Kerberos or SSH login")
            .into());
    }
    let store = &state.registry.web;
    if !store.settings().certless {
        return Err(Problem::new(409, "web-login-disabled", "browser login disabled")
            .detail("this gateway accepts no TLS connection without a client certificate, so a browser could not use a login link")
            .hint("the administrator sets `ticket_login = true` under [web] in gateway.toml (or configures [kerberos]) and runs `virtgated reload`; or import your certificate into the browser (`virtgate-pki export-p12`)")
            .into());
    }
    let (ticket, expires_in_s) =
        store.issue(Arc::new(id.clone()), state.registry.certs(conn.id))?;
    state.live.get().audit.web(id, "web_ticket", "issued");
    tracing::info!(user = %id.user, "browser login ticket issued");
    Ok(super::csrf::json(&WebTicket {
        login_path: format!("/ui/login?ticket={ticket}"),
        ticket,
        expires_in_s,
    }))
}

/// One `key=value` of a query (or form body), percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Where a login may go: a page of the gateway (`/ui/...`), nothing else.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && n.is_ascii()
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => DEFAULT_NEXT,
    }
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = Response::new(error::full(""));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /ui/login?ticket=T&next=/ui/...`: trade a ticket for a session cookie, 303 to
/// `next`. Needs no identity (the ticket is it).
pub fn login(state: &State, req: &Request<ReqBody>) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET {
        return Err(error::method_not_allowed(
            req.method(),
            req.uri().path(),
            &[Method::GET],
            "open the link `virtgate web` printed",
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let Some(ticket) = param(query, "ticket").filter(|t| !t.is_empty()) else {
        return Err(Problem::new(400, "bad-request", "bad request")
            .detail("the login link carries no ticket")
            .hint(AGAIN)
            .into());
    };
    let store = &state.registry.web;
    let Some((sid, id)) = store.login(&ticket)? else {
        tracing::info!("browser login refused: unknown, used or expired ticket");
        return Err(Problem::new(403, "ticket-invalid", "login link not valid")
            .detail("the login link's ticket is unknown, was used already, or expired")
            .hint(AGAIN)
            .into());
    };
    state
        .live
        .get()
        .audit
        .web(&id, "web_login", "session started");
    tracing::info!(user = %id.user, "browser session started");
    let max_age = store.settings().session_lifetime.as_secs();
    let cookie =
        format!("{COOKIE}={sid}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    let next = param(query, "next");
    Ok(redirect(safe_next(next.as_deref()), Some(cookie)))
}

/// Largest logout form body read.
const MAX_FORM: usize = 4096;

/// `POST /ui/logout`: end the session (CSRF token in `X-Virtgate-CSRF` or the form field
/// `csrf`), clear the cookie, 303 to `/ui/`.
pub async fn logout(
    state: &State,
    id: &Identity,
    req: &mut Request<ReqBody>,
) -> Result<Response<Body>, ApiError> {
    use http_body_util::{BodyExt as _, Limited};
    post_only(req, "log out with the page's button")?;
    let Some(Via(sid)) = req.extensions().get::<Via>().cloned() else {
        return Err(bad_logout("this request carries no browser session"));
    };
    let token = match req
        .headers()
        .get(super::csrf::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(t) => Some(t.to_owned()),
        None => {
            let body = Limited::new(std::mem::take(req.body_mut()), MAX_FORM)
                .collect()
                .await
                .map_err(|e| bad_logout(&format!("cannot read the form: {e}")))?
                .to_bytes();
            param(&String::from_utf8_lossy(&body), "csrf")
        }
    };
    let store = &state.registry.web;
    let ok = match token {
        Some(t) => store.csrf.ok(&sid, &t)?,
        None => false,
    };
    if !ok {
        return Err(super::csrf::refused(
            "the logout carries no valid CSRF token".into(),
            "log out with the page's button (it sends the token of GET /v1/web/session)",
        ));
    }
    store.end(&sid);
    state
        .live
        .get()
        .audit
        .web(id, "web_logout", "session ended");
    tracing::info!(user = %id.user, "browser session ended by logout");
    let clear = format!("{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok(redirect(DEFAULT_NEXT, Some(clear)))
}

fn bad_logout(detail: &str) -> ApiError {
    error::bad_request(
        detail.to_owned(),
        "only a browser session logs out; the CLI's logins end with its connection",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtgate_proto::AuthMethod;

    fn alice() -> Arc<Identity> {
        Arc::new(Identity {
            user: "alice".into(),
            method: AuthMethod::Unix,
            principal: None,
            groups: vec!["ops".into()],
            peer: None,
        })
    }

    #[test]
    fn tickets_work_once_and_carry_the_identity() {
        let s = Store::default();
        let (t, life) = s.issue(alice(), None).unwrap();
        assert_eq!(life, 60);
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        let (sid, id) = s.login(&t).unwrap().unwrap();
        assert_eq!(id.groups, ["ops"]);
        assert_eq!(s.session(&sid).unwrap().user, "alice");
        assert!(s.login(&t).unwrap().is_none(), "a ticket works once");
        assert!(s.login("nope").unwrap().is_none());
        assert!(s.end(&sid).is_some());
        assert!(s.session(&sid).is_none());
    }

    #[test]
    fn live_tickets_are_bounded() {
        let s = Store::default();
        for _ in 0..MAX_LIVE {
            s.issue(alice(), None).unwrap();
        }
        let e = s.issue(alice(), None).unwrap_err();
        assert_eq!(e.problem.status, 503);
        assert!(e
            .problem
            .detail
            .unwrap()
            .contains("10000 live login tickets"));
    }

    #[test]
    fn expired_tickets_are_refused() {
        let s = Store::default();
        let web = config::Web {
            ticket_lifetime_s: 0,
            ..config::Web::default()
        };
        s.configure(&web, false);
        let (t, _) = s.issue(alice(), None).unwrap();
        assert!(s.login(&t).unwrap().is_none());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=b; virtgate_session=xyz; c=d"),
        );
        assert_eq!(cookie(&h), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("virtgate_session="),
        );
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn logins_go_only_to_gateway_pages() {
        assert_eq!(safe_next(Some("/ui/vnc/web1")), "/ui/vnc/web1");
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example/ui/"),
            Some("/ui//evil.example"),
            Some("/v1/domains"),
            Some("/ui\\x"),
            Some("/ui/\r\nSet-Cookie: x"),
            Some("/ui/vnc/wéb"),
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad:?}");
        }
        assert_eq!(
            param("ticket=a%2Bb&next=%2Fui%2Fvnc%2Fw", "next").as_deref(),
            Some("/ui/vnc/w")
        );
    }
}
