//! `GET /v1/domains`, `GET /v1/domains/{name}` and `/v1/domains/{name}/{action}`.
//!
//! Listing asks the backend for every domain and keeps those the identity holds a role on,
//! stamping each with that role. Lifecycle actions on a domain go to [`super::lifecycle`];
//! `screenshot` answers `image/png`; unknown actions are 404.

use crate::api::ReqBody;
use http::{header, HeaderValue, Method, Request, Response};
use serde::Serialize;
use virtgate_proto::DomainList;

use super::error::{self, ApiError};
use super::{authorize, Body, State};
use crate::authn::Identity;
use crate::authz::{Action, Decision};

/// A 200 with a JSON body.
pub fn json<T: Serialize>(value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(error::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The domains this identity may see, each with its role.
pub async fn list(state: &State, id: &Identity) -> Result<Response<Body>, ApiError> {
    let all = state.backend.list().await.map_err(|e| error::backend(&e))?;
    let live = state.live.get();
    let domains: Vec<_> = all
        .into_iter()
        .filter_map(|mut d| {
            let role = live.policy.role_on(id, &d.name)?;
            d.role = Some(role.as_str().to_owned());
            Some(d)
        })
        .collect();
    live.audit.decision(
        id,
        Action::List,
        None,
        &Decision {
            allowed: true,
            role: None,
            required: Action::List.required_role(),
        },
    );
    Ok(json(&DomainList { domains }))
}

/// One domain.
pub async fn info(state: &State, id: &Identity, name: &str) -> Result<Response<Body>, ApiError> {
    let role = authorize(state, id, Some(name), Action::Info)?;
    let mut d = state
        .backend
        .domain(name)
        .await
        .map_err(|e| error::backend(&e))?;
    d.role = Some(role.as_str().to_owned());
    Ok(json(&d))
}

/// `/v1/domains/{name}/{action}` without CONNECT: lifecycle ([`super::lifecycle`]),
/// [`screenshot`]; `vnc`/`serial` need CONNECT.
pub async fn action(
    state: &State,
    id: &Identity,
    req: &mut Request<ReqBody>,
    name: &str,
    action: &str,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if action == "vnc" || action == "serial" {
        return Err(error::method_not_allowed(
            &method,
            &path,
            &[Method::CONNECT],
            &format!("{action} is a tunnel: HTTP/2 extended CONNECT with :protocol virtgate-stream (`virtgate {}`)", if action == "vnc" { "vnc NAME" } else { "console NAME" }),
        ));
    }
    if let Some(op) = virtgate_proto::Action::from_segment(action) {
        return super::lifecycle::handle(state, id, req, name, op).await;
    }
    if action == "screenshot" {
        return screenshot(state, id, &method, &path, name).await;
    }
    Err(error::not_found(&path))
}

/// `GET /v1/domains/{name}/screenshot` (viewer): the backend's PNG (QEMU: QMP `screendump`;
/// libvirt: its own), kept out of caches.
pub async fn screenshot(
    state: &State,
    id: &Identity,
    method: &Method,
    path: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(error::method_not_allowed(
            method,
            path,
            &[Method::GET, Method::HEAD],
            "use GET (`virtgate screenshot NAME -o FILE.png`)",
        ));
    }
    authorize(state, id, Some(name), Action::Screenshot)?;
    let png = state
        .backend
        .screenshot(name)
        .await
        .map_err(|e| error::backend(&e))?;
    tracing::debug!(domain = %name, bytes = png.len(), "screenshot");
    let mut r = Response::new(error::full(png));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
