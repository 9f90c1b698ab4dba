//! The browser console's pages and assets, read with curl and a client certificate from a
//! real gateway: `/` redirects, every page is HTML with the Content-Security-Policy and no
//! inline script, everything a page (and every module it imports, noVNC's whole graph
//! included) asks for is served from `/ui/assets/` with the right type, ETag/304, unknown
//! files and `..` are 404, console pages of hidden domains look like missing ones, and a
//! client without a certificate is refused like the API. In Chromium (the consoles
//! themselves are in `browser.rs`): the keyboard shortcuts the pages document.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use virtgate_tests::{curl, text, ClientCert};

use crate::World;

/// The Content-Security-Policy of the contract (docs/DESIGN.md, "Browser console").
const CSP: &str = "default-src 'self'; connect-src 'self' wss: ; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One answer: status, headers (names lowercased), body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// `curl -i` for `path` on listener 0 with `cert`, plus `extra` arguments.
fn get(w: &World, cert: &ClientCert, path: &str, extra: &[&str]) -> Answer {
    let mut args = vec!["-i", "--path-as-is"];
    args.extend_from_slice(extra);
    let out = curl(
        cert,
        &w.pki.ca_pem,
        &format!("{}{path}", w.gateway.https(0)),
        &args,
    );
    let (o, e) = text(&out);
    assert!(out.status.success(), "curl {path}: {e}");
    let (head, body) = o.split_once("\r\n\r\n").unwrap_or((&o, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {path}: {o}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The security headers every `/ui` answer carries.
fn assert_secured(a: &Answer, what: &str) {
    assert_eq!(a.header("content-security-policy"), CSP, "{what}");
    assert_eq!(a.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(a.header("referrer-policy"), "no-referrer", "{what}");
}

/// The values of `attr="…"` in `html`.
fn attributes(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.split(needle.as_str())
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The module specifiers a script imports (`import … from 'X'`, `import 'X'`).
fn imports(js: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["from ", "import "] {
        for rest in js.split(marker).skip(1) {
            let rest = rest.trim_start();
            let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            if let Some(spec) = rest[1..].split(q).next() {
                if spec.starts_with('/') || spec.starts_with("./") || spec.starts_with("../") {
                    found.push(spec.to_owned());
                }
            }
        }
    }
    found
}

/// `spec` resolved against the script at `base` (both absolute paths).
fn resolve(base: &str, spec: &str) -> String {
    if spec.starts_with('/') {
        return spec.to_owned();
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for seg in spec.split('/') {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The Content-Type a file must be served with.
fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("js" | "mjs") => "text/javascript",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        other => panic!("unexpected asset type {other:?} at {path}"),
    }
}

/// Fetch every `/ui/assets/` file `html` points to and every module they import, transitively;
/// each must be 200 with its type. Returns the paths fetched.
fn check_assets(w: &World, html: &str, page: &str) -> BTreeSet<String> {
    let mut queue: VecDeque<String> = VecDeque::new();
    for attr in ["src", "href"] {
        for url in attributes(html, attr) {
            if url.starts_with("/ui/assets/") {
                queue.push_back(url);
            } else {
                // links between pages are fine; nothing may come from elsewhere
                assert!(
                    url.starts_with("/ui/") && !url.contains("//"),
                    "{page}: {attr}={url} leaves the gateway"
                );
            }
        }
    }
    assert!(!queue.is_empty(), "{page} loads nothing from /ui/assets/");
    let mut seen = BTreeSet::new();
    while let Some(url) = queue.pop_front() {
        if !seen.insert(url.clone()) {
            continue;
        }
        let a = get(w, &w.alice, &url, &[]);
        assert_eq!(a.status, 200, "{page} → {url}: {}", a.body);
        let ty = a.header("content-type");
        assert!(ty.starts_with(expected_type(&url)), "{url}: {ty}");
        assert_secured(&a, &url);
        if url.ends_with(".js") || url.ends_with(".mjs") {
            for spec in imports(&a.body) {
                queue.push_back(resolve(&url, &spec));
            }
        }
    }
    seen
}

/// No `<script>` without a `src` (the CSP forbids inline scripts; the pages have none).
fn assert_no_inline_script(html: &str, page: &str) {
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap_or_default();
        assert!(
            open.contains("src=\"/ui/assets/"),
            "{page}: inline <script{open}>"
        );
    }
}

#[test]
fn pages_and_their_assets_are_served_with_a_strict_policy() {
    let w = World::start_with(&["db1"], |g| g.rule(&["bob"], &["web*"], "viewer"));

    // `/` sends a browser to the domain list, over HTTP/2 and HTTP/1.1
    for proto in ["--http2", "--http1.1"] {
        let a = get(&w, &w.alice, "/", &[proto]);
        assert_eq!(a.status, 303, "{proto}");
        assert_eq!(a.header("location"), "/ui/", "{proto}");
        assert_secured(&a, "/");
    }

    // every page: HTML, lang, the policy, no inline script, everything it loads is ours
    let mut fetched = BTreeSet::new();
    for (page, marker) in [
        ("/ui/", "id=\"domains\""),
        ("/ui/vnc/web1", "data-domain=\"web1\""),
        ("/ui/serial/web1", "data-domain=\"web1\""),
    ] {
        let a = get(&w, &w.alice, page, &[]);
        assert_eq!(a.status, 200, "{page}: {}", a.body);
        assert!(a.header("content-type").starts_with("text/html"), "{page}");
        assert_secured(&a, page);
        assert!(a.body.starts_with("<!doctype html>"), "{page}");
        assert!(a.body.contains("<html lang=\"en\">"), "{page}");
        assert!(a.body.contains(marker), "{page}: {}", a.body);
        assert!(!a.body.contains("{{"), "{page}: template left: {}", a.body);
        assert_no_inline_script(&a.body, page);
        fetched.extend(check_assets(&w, &a.body, page));
    }
    // the consoles' libraries were among them: noVNC's RFB with its imports, xterm.js
    for must in [
        "/ui/assets/novnc/core/rfb.js",
        "/ui/assets/novnc/core/websock.js",
        "/ui/assets/novnc/vendor/pako/lib/zlib/inflate.js",
        "/ui/assets/xterm/lib/xterm.mjs",
        "/ui/assets/xterm/css/xterm.css",
    ] {
        assert!(
            fetched.contains(must),
            "{must} not loaded; loaded: {fetched:?}"
        );
    }
    let licence = get(&w, &w.alice, "/ui/assets/novnc/LICENSE.txt", &[]);
    assert_eq!(licence.status, 200);
    assert!(licence.body.contains("MPL"), "{}", licence.body);

    // ETag: the same file again with its tag is 304 and no body; another tag gets it all
    let a = get(&w, &w.alice, "/ui/assets/novnc/core/rfb.js", &[]);
    let etag = a.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 4, "{etag}");
    assert_eq!(a.header("cache-control"), "no-cache");
    let inm = format!("If-None-Match: {etag}");
    let again = get(&w, &w.alice, "/ui/assets/novnc/core/rfb.js", &["-H", &inm]);
    assert_eq!(again.status, 304, "{}", again.body);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    let other = get(
        &w,
        &w.alice,
        "/ui/assets/novnc/core/rfb.js",
        &["-H", "If-None-Match: \"0-0\""],
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.body.len(), a.body.len());

    // nothing outside the embedded table: unknown names, `..` in any spelling
    for path in [
        "/ui/assets/nothing.js",
        "/ui/assets/../Cargo.toml",
        "/ui/assets/../../gateway/Cargo.toml",
        "/ui/assets/%2e%2e/Cargo.toml",
        "/ui/assets/vendor/novnc/core/rfb.js",
        "/ui/assets/",
        "/ui/nothing",
    ] {
        let a = get(&w, &w.alice, path, &[]);
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(a.header("content-type").contains("problem+json"), "{path}");
        assert_secured(&a, path);
    }

    // the name in the page is escaped (the rules allow `web*`: any name without `/`); a name
    // that is not UTF-8 is a bad request
    let odd = get(&w, &w.alice, "/ui/serial/web%22%3E%3Cscript%3Ex", &[]);
    assert_eq!(odd.status, 200, "{}", odd.body);
    assert!(
        odd.body
            .contains("data-domain=\"web&quot;&gt;&lt;script&gt;x\""),
        "{}",
        odd.body
    );
    assert_no_inline_script(&odd.body, "odd name");
    let bad = get(&w, &w.alice, "/ui/vnc/web%FF", &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);

    // a console page of a domain alice may not see reads like one that does not exist
    let hidden = get(&w, &w.alice, "/ui/vnc/db1", &[]);
    let missing = get(&w, &w.alice, "/ui/vnc/nosuch", &[]);
    assert_eq!((hidden.status, missing.status), (404, 404));
    assert!(hidden.body.contains("domain-not-found"), "{}", hidden.body);
    assert_eq!(
        hidden.body.replace("db1", "X"),
        missing.body.replace("nosuch", "X")
    );
    // a viewer sees the list but is told a console needs operator
    let bob = w.pki.client("bob", None);
    assert_eq!(get(&w, &bob, "/ui/", &[]).status, 200);
    let viewer = get(&w, &bob, "/ui/serial/web1", &[]);
    assert_eq!(viewer.status, 403, "{}", viewer.body);
    assert!(viewer.body.contains("operator"), "{}", viewer.body);

    // pages are read, not posted to
    let post = get(&w, &w.alice, "/ui/", &["-X", "POST"]);
    assert_eq!(post.status, 405, "{}", post.body);
    assert!(post.header("allow").contains("GET"));
}

/// `curl` without a client certificate: (exit code, `%{http_code}`).
fn bare(w: &World, path: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&w.pki.ca_pem)
        .args(extra)
        .arg(format!("{}{path}", w.gateway.https(0)))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e} (run scripts/setup.sh)"));
    (out.status.code(), text(&out).0)
}

#[test]
fn pages_are_refused_without_a_certificate_like_the_api() {
    // certificates required: the TLS handshake itself fails, for pages as for the API
    let w = World::start(|g| g);
    let code = ["-o", "/dev/null", "-w", "%{http_code}"];
    let api = bare(&w, "/v1/whoami", &code);
    assert_ne!(
        api.0,
        Some(0),
        "the API must refuse a client without certificate"
    );
    for path in ["/", "/ui/", "/ui/assets/novnc/core/rfb.js", "/ui/vnc/web1"] {
        assert_eq!(
            bare(&w, path, &code),
            api,
            "{path} must be refused like /v1/whoami"
        );
    }
    drop(w);

    // certificate-less TLS allowed (browser tickets) without [kerberos]: 401 like the API,
    // no Negotiate offered, the hint names `virtgate web`; the page's refusal still carries
    // the policy
    let w = World::start(|g| g.extra("[web]\nticket_login = true\n"));
    for path in [
        "/v1/whoami",
        "/",
        "/ui/",
        "/ui/assets/novnc/core/rfb.js",
        "/ui/serial/web1",
    ] {
        let (status, out) = bare(&w, path, &["-i"]);
        assert_eq!(status, Some(0), "{path}: {out}");
        let head = out.to_lowercase();
        assert!(head.starts_with("http/2 401"), "{path}: {out}");
        assert!(!head.contains("www-authenticate"), "{path}: {out}");
        assert!(out.contains("virtgate web"), "{path}: {out}");
        assert!(!out.contains("<html"), "{path} must not show a page: {out}");
        if path != "/v1/whoami" {
            assert!(
                head.contains(&format!("content-security-policy: {}", CSP.to_lowercase())),
                "{path}: {out}"
            );
        }
    }
}

/// The page's state a shortcut changes: status, scale, paste box, focus, full screen.
const VNC_STATE: &str = "return JSON.stringify({status: document.getElementById('status').textContent, scale: document.getElementById('scale').checked, paste: document.querySelector('details').open, focus: document.activeElement && (document.activeElement.id || document.activeElement.tagName), fullscreen: !!document.fullscreenElement})";

/// Ctrl+Alt+Shift+`key` pressed on `css` (WebDriver's sticky modifiers, then released).
fn shortcut(b: &virtgate_tests::Chromium, css: &str, key: char) -> serde_json::Value {
    b.send_keys(css, &format!("\u{E009}\u{E00A}\u{E008}{key}\u{E000}"));
    let v = b.js(VNC_STATE);
    serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default()
}

#[test]
fn the_documented_shortcuts_work_in_chromium() {
    let w = World::start(|g| g);
    let b = virtgate_tests::ChromiumBuilder::new(&w.dir.path().join("chromium"))
        .trust(&w.pki.ca_pem)
        .client_cert(&w.alice, &w.gateway.https(0))
        .start();
    let deadline = std::time::Duration::from_secs(30);
    let connected = "return document.getElementById('status').textContent === 'Connected'";

    // VNC: the keys go to the page, not to the guest, and do what the page says
    b.goto(&format!("{}/ui/vnc/web1", w.gateway.https(0)));
    b.wait_js("the VNC console to connect", connected, deadline);
    let canvas = "#screen canvas";
    let s = shortcut(&b, canvas, 's');
    assert_eq!(s["scale"], false, "Ctrl+Alt+Shift+S: 1:1 {s}");
    let s = shortcut(&b, canvas, 's');
    assert_eq!(s["scale"], true, "Ctrl+Alt+Shift+S: scaled again {s}");
    let s = shortcut(&b, canvas, 'v');
    assert_eq!(
        (&s["paste"], &s["focus"]),
        (&true.into(), &"paste-text".into()),
        "{s}"
    );
    b.send_keys("#paste-text", "root\n");
    b.click("#paste");
    let s: serde_json::Value =
        serde_json::from_str(b.js(VNC_STATE).as_str().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(
        (&s["status"], &s["focus"]),
        (&"Connected".into(), &"CANVAS".into()),
        "typed: {s}"
    );
    let s = shortcut(&b, canvas, 'q');
    assert_eq!(s["focus"], "cad", "Ctrl+Alt+Shift+Q leaves the screen: {s}");
    b.click("#cad");
    shortcut(&b, canvas, 'f');
    // the browser enters full screen asynchronously
    b.wait_js(
        "Ctrl+Alt+Shift+F: full screen",
        "return !!document.fullscreenElement",
        deadline,
    );
    b.wait_js("still connected", connected, deadline);

    // serial: Ctrl+Alt+Shift+Q leaves the terminal for the "Domains" link
    b.goto(&format!("{}/ui/serial/web1", w.gateway.https(0)));
    b.wait_js("the serial console to connect", connected, deadline);
    b.send_keys(
        ".xterm-helper-textarea",
        "\u{E009}\u{E00A}\u{E008}q\u{E000}",
    );
    let focus = b.js("return document.activeElement.getAttribute('href')");
    assert_eq!(focus, "/ui/", "Ctrl+Alt+Shift+Q in the terminal");
}
