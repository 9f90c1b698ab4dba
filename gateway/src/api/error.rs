//! Every failed call answers `application/problem+json` ([`Problem`]) with a stable kind.
//!
//! Kinds (`urn:virtgate:KIND`): `not-found` (no such API path), `method-not-allowed`,
//! `bad-request`, `domain-not-found` (unknown OR not granted: same body, so names do not
//! leak), `console-not-found`, `forbidden` (role too low; names the role needed),
//! `backend-unavailable` (503: QEMU/libvirtd not reachable), `backend-error` (502),
//! `not-implemented` (501: a call this gateway or backend does not offer yet),
//! `authentication-required` (401: a certificate-less connection without a Kerberos login;
//! `WWW-Authenticate: Negotiate`), `kerberos-failed` (401: a Negotiate token was refused),
//! `domain-not-running` (409: reboot, screenshot, ... of a domain that is off),
//! `not-managed` (409: start of a QEMU domain the gateway does not supervise),
//! `shutdown-timeout` (504: the guest did not power off in time and `force` was not set),
//! `libvirt-not-available` (404: `/v1/libvirt` on a gateway without a libvirt backend),
//! `limit-reached` (429: a per-user limit of `[limits]`, named; 503: the gateway's
//! `limits.max_connections`).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use virtgate_proto::{Problem, PROBLEM_CONTENT_TYPE};

use super::Body;
use crate::authz::{Action, Role};
use crate::backend::BackendError;

/// A full body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The HTTP response carrying `p`.
pub fn response(p: &Problem) -> Response<Body> {
    let body = serde_json::to_vec(p).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    r
}

/// A problem plus headers it needs (e.g. `Allow` on 405, `WWW-Authenticate` on 401).
#[derive(Debug)]
pub struct ApiError {
    /// The body (boxed: errors travel through `Result`s on every request path).
    pub problem: Box<Problem>,
    /// Methods to list in `Allow` (405 only).
    pub allow: Vec<Method>,
    /// `WWW-Authenticate` (401 only): `Negotiate`, or `Negotiate <token>` mid-exchange.
    pub www_authenticate: Option<HeaderValue>,
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError {
            problem: Box::new(problem),
            allow: vec![],
            www_authenticate: None,
        }
    }
}

impl ApiError {
    /// The HTTP response for this error.
    pub fn into_response(self) -> Response<Body> {
        let mut r = response(&self.problem);
        if !self.allow.is_empty() {
            let list: Vec<&str> = self.allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
        }
        if let Some(v) = self.www_authenticate {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// No API call at this path.
pub fn not_found(path: &str) -> ApiError {
    Problem::new(404, "not-found", "no such API call")
        .detail(format!("nothing at {path}"))
        .hint("the API is under /v1: whoami, domains, domains/NAME[/start|shutdown|reboot|destroy|screenshot], events, metrics; is the client older or newer than the gateway?")
        .into()
}

/// Right path, wrong method.
pub fn method_not_allowed(method: &Method, path: &str, allow: &[Method], hint: &str) -> ApiError {
    ApiError {
        problem: Box::new(
            Problem::new(405, "method-not-allowed", "method not allowed")
                .detail(format!("{method} is not allowed on {path}"))
                .hint(hint),
        ),
        allow: allow.to_vec(),
        www_authenticate: None,
    }
}

/// The connection has no certificate and no Kerberos login yet (answers with a bare
/// `WWW-Authenticate: Negotiate`, which makes curl and browsers send a token).
pub fn authentication_required() -> ApiError {
    let mut e: ApiError = Problem::new(401, "authentication-required", "authentication required")
        .detail("this connection has no client certificate and no Kerberos login")
        .hint("run kinit, then use auth = \"kerberos\" (or a client certificate)")
        .into();
    e.www_authenticate = Some(HeaderValue::from_static("Negotiate"));
    e
}

/// A Negotiate token was refused; `detail` and `hint` say why in words.
pub fn kerberos_failed(detail: impl Into<String>, hint: impl Into<String>) -> ApiError {
    let mut e: ApiError = Problem::new(401, "kerberos-failed", "Kerberos login failed")
        .detail(detail)
        .hint(hint)
        .into();
    e.www_authenticate = Some(HeaderValue::from_static("Negotiate"));
    e
}

/// A malformed request.
pub fn bad_request(detail: impl Into<String>, hint: &str) -> ApiError {
    Problem::new(400, "bad-request", "bad request")
        .detail(detail)
        .hint(hint)
        .into()
}

/// A per-user quota of `[limits]` is full (429), named with what to do.
pub fn quota_exceeded(e: &crate::quota::Exceeded) -> ApiError {
    let hint = match e.kind {
        crate::quota::Kind::Connections => format!(
            "close other virtgate sessions of {} (`virtgate up` shares one connection between commands); the administrator can raise {} in gateway.toml",
            e.user,
            e.kind.key()
        ),
        crate::quota::Kind::Tunnels => format!(
            "close consoles, viewers or `virtgate events` you no longer use; the administrator can raise {} in gateway.toml",
            e.kind.key()
        ),
    };
    Problem::new(429, "limit-reached", "limit reached")
        .detail(e.to_string())
        .hint(hint)
        .into()
}

/// Every connection the gateway serves at once is taken (`limits.max_connections`).
pub fn over_capacity(limit: usize) -> ApiError {
    Problem::new(503, "limit-reached", "the gateway is at its connection limit")
        .detail(format!(
            "the gateway serves {limit} connections at once (limits.max_connections = {limit}) and all are in use"
        ))
        .hint("try again in a moment; the administrator can raise limits.max_connections in gateway.toml")
        .into()
}

/// Unknown domain, or one no rule grants to this identity: the same answer for both.
pub fn domain_not_found(name: &str) -> ApiError {
    Problem::new(404, "domain-not-found", "no such domain")
        .detail(format!(
            "domain `{name}` does not exist or you have no access to it"
        ))
        .hint("run `virtgate list` to see the domains you may use")
        .into()
}

/// The identity sees the domain but its role is too low for the action.
pub fn forbidden(
    name: Option<&str>,
    action: Action,
    held: Option<Role>,
    required: Role,
) -> ApiError {
    let on = name
        .map(|n| format!(" on domain `{n}`"))
        .unwrap_or_else(|| " on all domains (a rule with domains = [\"*\"])".into());
    let held = held
        .map(|r| format!("your role is {r}"))
        .unwrap_or_else(|| "you hold no role".into());
    Problem::new(403, "forbidden", "not allowed")
        .detail(format!(
            "{} needs role {required}{on}; {held}",
            action.as_str()
        ))
        .hint(format!(
            "ask the gateway's admin for the {required} role (a [[rule]] in gateway.toml)"
        ))
        .into()
}

/// The event stream needs some role on some domain; this identity holds none.
pub fn no_role_anywhere(what: &str) -> ApiError {
    Problem::new(403, "forbidden", "not allowed")
        .detail(format!(
            "{what} needs role viewer on at least one domain; you hold no role"
        ))
        .hint("ask the gateway's admin for the viewer role (a [[rule]] in gateway.toml)")
        .into()
}

/// A shutdown whose guest did not power off within the timeout (no `force`).
pub fn shutdown_timeout(name: &str, secs: u64) -> ApiError {
    Problem::new(504, "shutdown-timeout", "shutdown timed out")
        .detail(format!("domain `{name}` did not power off within {secs} s"))
        .hint("retry with --force, or check that the guest handles ACPI")
        .into()
}

/// `/v1/libvirt` on a gateway whose backend has no libvirtd.
pub fn no_libvirt(backend: &str) -> ApiError {
    Problem::new(404, "libvirt-not-available", "no libvirt here")
        .detail(format!(
            "this gateway has no libvirt backend (its backend is {backend})"
        ))
        .hint("libvirt RPC (virsh, virt-manager) needs a gateway with backend.kind = \"libvirt\"")
        .into()
}

/// A call the gateway does not offer yet.
pub fn not_implemented(what: &str) -> ApiError {
    Problem::new(501, "not-implemented", "not implemented")
        .detail(format!("{what} is not implemented by this gateway yet"))
        .hint("update the gateway (see `virtgate whoami` for its version)")
        .into()
}

/// A backend failure as the client should see it.
pub fn backend(e: &BackendError) -> ApiError {
    let hint = e.hint().unwrap_or_default();
    match e {
        BackendError::NotFound(name) => domain_not_found(name),
        BackendError::NoConsole { .. } | BackendError::ConsoleNotOffered { .. } => {
            Problem::new(404, "console-not-found", "no such console")
                .detail(e.to_string())
                .hint(hint)
                .into()
        }
        BackendError::Console { domain, kind, .. } => {
            Problem::new(503, "backend-unavailable", "console unavailable")
                // The socket path is the admin's business; the log has it.
                .detail(format!(
                    "the {kind} console of domain `{domain}` cannot be reached"
                ))
                .hint(hint)
                .into()
        }
        BackendError::NotSupported { .. } => {
            Problem::new(501, "not-implemented", "not implemented")
                .detail(e.to_string())
                .hint(hint)
                .into()
        }
        BackendError::Unavailable { .. } => {
            Problem::new(503, "backend-unavailable", "hypervisor unavailable")
                .detail(e.to_string())
                .hint(hint)
                .into()
        }
        BackendError::NotRunning { .. } => {
            Problem::new(409, "domain-not-running", "domain not running")
                .detail(e.to_string())
                .hint(hint)
                .into()
        }
        BackendError::Unmanaged { .. } => {
            Problem::new(409, "not-managed", "not managed by the gateway")
                .detail(e.to_string())
                .hint(hint)
                .into()
        }
        _ => Problem::new(502, "backend-error", "hypervisor error")
            .detail(e.to_string())
            .hint("see the gateway log")
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_ungranted_domains_look_the_same() {
        let a = domain_not_found("web1").problem;
        let b = backend(&BackendError::NotFound("web1".into())).problem;
        assert_eq!(a, b);
        assert_eq!(a.kind, "urn:virtgate:domain-not-found");
        assert!(a.hint.unwrap().contains("virtgate list"));
    }

    #[test]
    fn forbidden_names_the_role_needed() {
        let p = forbidden(
            Some("web1"),
            Action::Vnc,
            Some(Role::Viewer),
            Role::Operator,
        )
        .problem;
        assert_eq!(p.status, 403);
        assert!(p
            .detail
            .unwrap()
            .contains("needs role operator on domain `web1`; your role is viewer"));
    }

    #[test]
    fn responses_are_problem_json_with_allow() {
        let r = method_not_allowed(&Method::POST, "/v1/domains", &[Method::GET], "use GET")
            .into_response();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        assert_eq!(r.headers()[header::ALLOW], "GET");
        let console = backend(&BackendError::Console {
            domain: "d".into(),
            kind: "vnc",
            path: "/x".into(),
            reason: "refused".into(),
        });
        assert_eq!(console.problem.status, 503);
        assert_eq!(console.problem.kind_name(), "backend-unavailable");
        let r = authentication_required().into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Negotiate");
        let r = kerberos_failed("replayed", "retry").into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Negotiate");
    }

    #[test]
    fn lifecycle_problems_have_their_status_and_hint() {
        let p = shutdown_timeout("web1", 5).problem;
        assert_eq!((p.status, p.kind_name()), (504, "shutdown-timeout"));
        assert_eq!(
            p.detail.as_deref(),
            Some("domain `web1` did not power off within 5 s")
        );
        assert!(p.hint.unwrap().contains("--force"));
        let cases = [
            (
                BackendError::NotRunning { domain: "d".into() },
                409,
                "domain-not-running",
            ),
            (
                BackendError::Unmanaged {
                    domain: "d".into(),
                    what: "start",
                },
                409,
                "not-managed",
            ),
            (
                BackendError::Unavailable {
                    domain: "d".into(),
                    reason: "gone".into(),
                },
                503,
                "backend-unavailable",
            ),
            (
                BackendError::Failed {
                    domain: "d".into(),
                    what: "reboot".into(),
                    reason: "no".into(),
                },
                502,
                "backend-error",
            ),
        ];
        for (e, status, kind) in cases {
            let p = backend(&e).problem;
            assert_eq!((p.status, p.kind_name()), (status, kind), "{e}");
        }
        let p = backend(&BackendError::Unmanaged {
            domain: "d".into(),
            what: "start",
        })
        .problem;
        assert!(p.hint.unwrap().contains("outside the gateway"));
        let p = no_libvirt("qemu").problem;
        assert_eq!(p.status, 404);
        assert!(p.detail.unwrap().contains("no libvirt backend"));
    }
}
