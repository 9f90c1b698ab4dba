//! The three pages: the domain list (`/ui/`), a VNC console (`/ui/vnc/{domain}`) and a serial
//! console (`/ui/serial/{domain}`).
//!
//! They are static HTML files under `gateway/web/` (embedded like every asset); a console
//! page gets its domain name written, HTML-escaped, into a `data-domain` attribute (no
//! inline script, which the Content-Security-Policy forbids anyway), where its module reads
//! it. Everything else (the list, roles, actions, the console bytes) the scripts fetch from
//! the JSON API and the consoles' WebSockets, which authorize each call themselves.
//!
//! A console page for a domain the identity may not see is `domain-not-found`, like the API
//! (names do not leak); one whose role is too low for a console is `forbidden`.

use http::{header, HeaderValue, Response};
use virtgate_proto::ApiPath;

use super::assets;
use crate::api::error::{self, ApiError};
use crate::api::{Body, State};
use crate::authn::Identity;
use crate::authz::Action;

/// Which console page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// noVNC, `vnc.html`.
    Vnc,
    /// xterm.js, `serial.html`.
    Serial,
}

impl Console {
    /// The page's file under `gateway/web/`.
    fn file(self) -> &'static str {
        match self {
            Console::Vnc => "vnc.html",
            Console::Serial => "serial.html",
        }
    }

    /// What the console's WebSocket will be authorized as.
    fn action(self) -> Action {
        match self {
            Console::Vnc => Action::Vnc,
            Console::Serial => Action::Serial,
        }
    }
}

/// `GET /ui/`: the domain list (filled in by `list.js`).
pub fn list() -> Response<Body> {
    html(page("list.html"))
}

/// `GET /ui/{vnc,serial}/{segment}`: the console page for the percent-encoded domain name
/// `segment`.
pub fn console(
    state: &State,
    id: &Identity,
    segment: &str,
    kind: Console,
) -> Result<Response<Body>, ApiError> {
    // the API's own decoding of a name segment (percent-encoded UTF-8, not empty, no `/`)
    let name = match ApiPath::parse(&format!("/v1/domains/{segment}"), None, false) {
        Ok(ApiPath::Domain(name)) => name,
        _ => {
            return Err(error::bad_request(
                format!("`{segment}` is not a domain name"),
                "open consoles from the list at /ui/; names are percent-encoded UTF-8",
            ))
        }
    };
    // a look at the rules only: the WebSocket decides (and audits) when it opens
    let live = state.live.get();
    let held = live.policy.role_on(id, &name);
    let action = kind.action();
    match held {
        None => return Err(error::domain_not_found(&name)),
        Some(role) if role < action.required_role() => {
            return Err(error::forbidden(
                Some(&name),
                action,
                Some(role),
                action.required_role(),
            ))
        }
        Some(_) => {}
    }
    Ok(html(
        page(kind.file()).replace("{{domain}}", &escape(&name)),
    ))
}

/// An embedded page's text (the pages are ours and UTF-8; a missing one is a build mistake
/// the asset tests catch, answered as an empty page rather than a panic).
fn page(file: &str) -> String {
    assets::get(file)
        .map(|a| String::from_utf8_lossy(a.bytes).into_owned())
        .unwrap_or_default()
}

/// A 200 `text/html` answer; pages are never cached (they carry the domain's name).
fn html(body: String) -> Response<Body> {
    let mut r = Response::new(error::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `s` safe inside HTML text and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_page_is_embedded_and_has_no_inline_script() {
        for file in ["list.html", "vnc.html", "serial.html"] {
            let text = page(file);
            assert!(text.contains("<html lang=\"en\">"), "{file}");
            for tag in text.split("<script").skip(1) {
                let open = tag.split('>').next().unwrap_or_default();
                assert!(
                    open.contains("src=\"/ui/assets/"),
                    "{file}: inline script {open}"
                );
            }
        }
    }
}
