//! `GET /ui/assets/{path}`: the files under `gateway/web/` (the pages' own scripts and
//! styles, and the vendored noVNC and xterm.js), embedded in the binary by `build.rs`.
//!
//! A path is only ever looked up in that table, so nothing outside it can be asked for
//! (`..`, `%2e%2e`, absolute paths: all simply not found). Every answer carries an ETag
//! (a hash of the bytes) and `Cache-Control: no-cache`: the browser keeps its copy and asks
//! again each time, and a 304 costs one round trip after a gateway upgrade changes nothing.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use virtgate_proto::Problem;

use crate::api::error::{self, ApiError};
use crate::api::Body;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served, relative to `/ui/assets/` (`app.css`, `novnc/core/rfb.js`).
    pub path: &'static str,
    /// The file.
    pub bytes: &'static [u8],
    /// Its strong ETag, quotes included.
    pub etag: &'static str,
}

/// Every file, sorted by path (written by `build.rs`).
const TABLE: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The embedded file served at `/ui/assets/{path}`, if there is one.
pub fn get(path: &str) -> Option<Asset> {
    let i = TABLE.binary_search_by(|row| row.0.cmp(path)).ok()?;
    let (path, bytes, etag) = TABLE[i];
    Some(Asset { path, bytes, etag })
}

/// Every embedded path (for tests and the docs).
pub fn paths() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|row| row.0)
}

/// The Content-Type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// Answer `GET /ui/assets/{path}`: the file, or 304 when `If-None-Match` names its ETag.
pub fn serve(path: &str, request: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let asset = get(path).ok_or_else(|| not_found(path))?;
    let etag = HeaderValue::from_static(asset.etag);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == asset.etag);
    let mut r = if fresh {
        let mut r = Response::new(error::full(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(error::full(bytes::Bytes::from_static(asset.bytes)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(asset.path)),
        );
        r
    };
    r.headers_mut().insert(header::ETAG, etag);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// No embedded file at this path.
fn not_found(path: &str) -> ApiError {
    Problem::new(404, "not-found", "no such file")
        .detail(format!("nothing at /ui/assets/{path}"))
        .hint("the pages load their files from /ui/assets/; reload the page (the gateway may have been upgraded)")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_holds_the_libraries() {
        let all: Vec<_> = paths().collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        for p in [
            "novnc/core/rfb.js",
            "novnc/LICENSE.txt",
            "xterm/lib/xterm.mjs",
            "xterm/css/xterm.css",
        ] {
            assert!(get(p).is_some(), "{p} missing from {all:?}");
        }
    }

    #[test]
    fn only_table_paths_are_found() {
        for p in [
            "",
            "../Cargo.toml",
            "/etc/passwd",
            "vendor/novnc/core/rfb.js",
            "novnc/../build.rs",
        ] {
            assert!(get(p).is_none(), "{p}");
        }
    }

    #[test]
    fn not_modified_when_the_etag_matches() {
        let a = get("novnc/core/rfb.js").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {}", a.etag)).unwrap(),
        );
        assert_eq!(
            serve(a.path, &h).unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
        let r = serve(a.path, &HeaderMap::new()).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }
}
