//! Browser sessions against a real gateway: the real `virtgate web --print` asks for a
//! one-time link, curl plays the browser (no client certificate, `--cacert`, a cookie jar):
//! the ticket becomes a cookie that sees only what the rules allow, works once, expires,
//! does not survive a gateway restart, logs out, and ends when its certificate is revoked;
//! POSTs need the gateway's own Origin and the session's CSRF token. Every refusal is
//! checked for its message and hint. (`webcli.rs`: the command's other ways: the shared
//! connection, the opener, and the pages served locally over a unix socket.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::gateway::toml_str;
use virtgate_tests::{curl, system_bin, text, GatewayBuilder, QemuBuilder};

use crate::World;

/// What a gateway that lets browsers log in with tickets adds to its configuration.
pub(crate) const WEB: &str = "[web]\nticket_login = true\n";

/// One answer: status, headers (names lowercased; repeated ones joined by `\n`), body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A problem: its kind, and its detail + hint for message checks.
    fn problem(&self) -> (String, String, String) {
        let v = self.json();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        (s("type"), s("detail"), s("hint"))
    }
}

/// curl as a browser: no client certificate, the gateway's CA, `args`, `-i`.
fn browser(ca: &Path, url: &str, args: &[&str]) -> Answer {
    let mut c = Command::new(system_bin("curl", "curl"));
    c.args(["-sS", "-i", "--http2", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url);
    let out = virtgate_tests::run(&mut c);
    let (o, e) = text(&out);
    assert!(out.status.success(), "curl {url} failed: {e}");
    parse(&o)
}

pub(crate) fn parse(raw: &str) -> Answer {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let mut headers = BTreeMap::<String, String>::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let e = headers.entry(k.trim().to_lowercase()).or_default();
            if !e.is_empty() {
                e.push('\n');
            }
            e.push_str(v.trim());
        }
    }
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A browser: a cookie jar in a folder of its own.
pub(crate) struct Browser {
    ca: PathBuf,
    jar: PathBuf,
}

impl Browser {
    pub(crate) fn new(w: &World, name: &str) -> Browser {
        Browser {
            ca: w.pki.ca_pem.clone(),
            jar: w.dir.path().join(format!("{name}.cookies")),
        }
    }

    /// A request with the jar (read and updated).
    pub(crate) fn go(&self, url: &str, args: &[&str]) -> Answer {
        let jar = self.jar.to_str().expect("utf-8");
        let mut all = vec!["-b", jar, "-c", jar];
        all.extend_from_slice(args);
        browser(&self.ca, url, &all)
    }

    /// The session cookie's value in the jar.
    fn cookie(&self) -> String {
        let jar = std::fs::read_to_string(&self.jar).unwrap_or_default();
        jar.lines()
            .filter(|l| !l.starts_with("# ") && !l.trim().is_empty())
            .find_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 7 && f[5] == "virtgate_session").then(|| f[6].to_owned())
            })
            .unwrap_or_else(|| panic!("no session cookie in the jar:\n{jar}"))
    }

    /// Log in with `link` (expects success): the answer of the login.
    pub(crate) fn login(&self, link: &str) -> Answer {
        let a = self.go(link, &[]);
        assert_eq!(a.status, 303, "{a:?}");
        a
    }
}

/// `virtgate web ARGS --print` as alice: the link it printed.
fn link(w: &World, args: &[&str]) -> String {
    let c = w.client("cli", 0, &w.alice);
    let mut all = vec!["web"];
    all.extend_from_slice(args);
    all.push("--print");
    let out = c.ok(&all);
    out.trim().to_owned()
}

/// The gateway's own origin for listener 0.
fn origin(w: &World) -> String {
    w.gateway.https(0)
}

pub(crate) fn url(w: &World, path: &str) -> String {
    format!("{}{path}", w.gateway.https(0))
}

/// `GET /v1/web/session` with the browser's cookie: the CSRF token.
fn csrf(w: &World, b: &Browser) -> String {
    let a = b.go(&url(w, "/v1/web/session"), &[]);
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["user"], "alice", "{v}");
    assert_eq!(v["session"], true, "{v}");
    v["csrf"].as_str().expect("a token").to_owned()
}

pub(crate) fn names(v: &Value) -> Vec<String> {
    v["domains"]
        .as_array()
        .unwrap_or_else(|| panic!("no domains in {v}"))
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_session_unknown(a: &Answer) {
    assert_eq!(a.status, 401, "{a:?}");
    let (kind, detail, hint) = a.problem();
    assert_eq!(kind, "urn:virtgate:session-unknown", "{a:?}");
    assert!(
        detail.contains("not one of this gateway's live sessions"),
        "{detail}"
    );
    assert!(hint.contains("run `virtgate web` again"), "{hint}");
}

#[test]
fn a_ticket_becomes_a_cookie_that_sees_only_what_the_rules_allow_once() {
    let w = World::start_with(&["db1"], |g| g.extra(WEB));
    let l = link(&w, &["web1"]);
    let prefix = format!("{}/ui/login?ticket=", w.gateway.https(0));
    assert!(l.starts_with(&prefix), "{l}");
    assert!(l.ends_with("&next=%2Fui%2Fvnc%2Fweb1"), "{l}");
    let b = Browser::new(&w, "b");

    // without a cookie a certificate-less connection gets nothing
    let a = b.go(&url(&w, "/v1/domains"), &[]);
    assert_eq!(a.status, 401, "{a:?}");
    let (kind, detail, hint) = a.problem();
    assert_eq!(kind, "urn:virtgate:authentication-required");
    assert!(
        detail.contains("no client certificate and no browser session"),
        "{detail}"
    );
    assert!(hint.contains("virtgate web"), "{hint}");

    let a = b.login(&l);
    assert_eq!(a.header("location"), "/ui/vnc/web1", "{a:?}");
    let set = a.header("set-cookie");
    for attr in [
        "virtgate_session=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(b.cookie().len() >= 43);

    // the cookie is alice: her domains, not db1
    let a = b.go(&url(&w, "/v1/domains"), &[]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(names(&a.json()), ["web1"], "{}", a.body);
    let who = b.go(&url(&w, "/v1/whoami"), &[]).json();
    assert_eq!(
        (&who["user"], &who["method"]),
        (&"alice".into(), &"certificate".into()),
        "{who}"
    );
    let a = b.go(&url(&w, "/v1/domains/db1"), &[]);
    assert_eq!(a.status, 404, "{a:?}");

    // the same link again: refused, with the way out
    let again = Browser::new(&w, "again");
    let a = again.go(&l, &[]);
    assert_eq!(a.status, 403, "{a:?}");
    let (kind, detail, hint) = a.problem();
    assert_eq!(kind, "urn:virtgate:ticket-invalid");
    assert!(
        detail.contains("unknown, was used already, or expired"),
        "{detail}"
    );
    assert!(hint.contains("run `virtgate web` again"), "{hint}");
    assert!(a.header("set-cookie").is_empty(), "{a:?}");
    assert!(a
        .header("content-security-policy")
        .contains("default-src 'self'"));

    // a made-up cookie
    let a = browser(
        &w.pki.ca_pem,
        &url(&w, "/v1/domains"),
        &["-H", "Cookie: virtgate_session=made-up"],
    );
    assert_session_unknown(&a);

    // a browser session cannot mint more tickets
    let token = csrf(&w, &b);
    let a = b.go(
        &url(&w, "/v1/web/ticket"),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Origin: {}", origin(&w)),
            "-H",
            &format!("X-Virtgate-CSRF: {token}"),
        ],
    );
    assert_eq!(a.status, 403, "{a:?}");
    let (_, detail, hint) = a.problem();
    assert!(detail.contains("cannot ask for login tickets"), "{detail}");
    assert!(hint.contains("certificate, Kerberos or SSH"), "{hint}");

    // a login goes only to the gateway's pages
    let l = link(&w, &[]);
    assert!(l.ends_with("&next=%2Fui%2F"), "{l}");
    let evil = l.replace("next=%2Fui%2F", "next=https%3A%2F%2Fevil.example%2F");
    let a = Browser::new(&w, "evil").login(&evil);
    assert_eq!(a.header("location"), "/ui/", "{a:?}");
    let l = link(&w, &["web1", "--serial"]);
    assert!(l.ends_with("&next=%2Fui%2Fserial%2Fweb1"), "{l}");

    // audited
    let log = w.gateway.log();
    assert!(log.contains("browser login ticket issued"), "{log}");
    assert!(log.contains("browser session started"), "{log}");
}

#[test]
fn posts_need_the_gateway_origin_and_the_session_token() {
    // web2: a QEMU the gateway supervises, so that it can be destroyed and started again
    let aux = virtgate_tests::tempdir();
    let web2 = QemuBuilder::new("web2").supervised_toml(aux.path());
    let w = World::start(|g| g.extra(WEB).domain(web2));
    let b = Browser::new(&w, "b");
    b.login(&link(&w, &["web2"]));
    let token = csrf(&w, &b);
    let own = format!("Origin: {}", origin(&w));
    let destroy = url(&w, "/v1/domains/web2/destroy");
    let start = url(&w, "/v1/domains/web2/start");
    let state = |w: &World| -> String {
        let c = w.client("cli", 0, &w.alice);
        let v: Value = serde_json::from_str(&c.ok(&["info", "web2", "--json"])).unwrap();
        v["state"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(state(&w), "running");

    let refusals: [(&str, Vec<&str>, &str, &str); 4] = [
        (
            "no token",
            vec!["-H", &own],
            "carries no x-virtgate-csrf header",
            "GET /v1/web/session",
        ),
        (
            "forged token",
            vec!["-H", &own, "-H", "X-Virtgate-CSRF: AAAAforgedAAAA"],
            "is not this session's token",
            "reload the page",
        ),
        (
            "another site",
            vec![
                "-H",
                "Origin: https://evil.example",
                "-H",
                "X-Virtgate-CSRF: PLACEHOLDER",
            ],
            "comes from the page of https://evil.example",
            "other sites may not act in your name",
        ),
        (
            "no origin",
            vec!["-H", "X-Virtgate-CSRF: PLACEHOLDER"],
            "carries no Origin header",
            "scripts and the CLI send no cookie",
        ),
    ];
    for (what, args, detail_has, hint_has) in refusals {
        let header = format!("X-Virtgate-CSRF: {token}");
        let mut args: Vec<&str> = args
            .into_iter()
            .map(|a| {
                if a == "X-Virtgate-CSRF: PLACEHOLDER" {
                    header.as_str()
                } else {
                    a
                }
            })
            .collect();
        args.extend(["-X", "POST"]);
        let a = b.go(&destroy, &args);
        assert_eq!(a.status, 403, "{what}: {a:?}");
        let (kind, detail, hint) = a.problem();
        assert_eq!(kind, "urn:virtgate:csrf", "{what}");
        assert!(detail.contains(detail_has), "{what}: {detail}");
        assert!(hint.contains(hint_has), "{what}: {hint}");
        assert_eq!(state(&w), "running", "{what} changed the domain");
    }

    // a certificate in a browser: another site's Origin is refused too
    let a = curl(
        &w.alice,
        &w.pki.ca_pem,
        &destroy,
        &["-i", "-X", "POST", "-H", "Origin: https://evil.example"],
    );
    let a = parse(&text(&a).0);
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.problem().0, "urn:virtgate:csrf");
    assert_eq!(state(&w), "running");

    // a certificate's token is another one, and it is no session
    let out = curl(&w.alice, &w.pki.ca_pem, &url(&w, "/v1/web/session"), &[]);
    let v: Value = serde_json::from_str(&text(&out).0).expect("JSON");
    assert_eq!(
        (&v["user"], &v["session"]),
        (&"alice".into(), &false.into()),
        "{v}"
    );
    assert_ne!(v["csrf"].as_str(), Some(token.as_str()));

    // the page's own request works
    let a = b.go(
        &destroy,
        &[
            "-X",
            "POST",
            "-H",
            &own,
            "-H",
            &format!("X-Virtgate-CSRF: {token}"),
        ],
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["outcome"], "destroyed", "{}", a.body);
    assert_eq!(state(&w), "shut_off");

    // start: a forged or missing token leaves it off; the page's token starts it
    for (what, args) in [
        (
            "forged",
            vec!["-H", &own, "-H", "X-Virtgate-CSRF: AAAAforgedAAAA"],
        ),
        ("missing", vec!["-H", &own]),
    ] {
        let mut args = args;
        args.extend(["-X", "POST"]);
        let a = b.go(&start, &args);
        assert_eq!(a.status, 403, "{what}: {a:?}");
        assert_eq!(a.problem().0, "urn:virtgate:csrf", "{what}");
        assert_eq!(state(&w), "shut_off", "a {what} token started the domain");
    }
    let header = format!("X-Virtgate-CSRF: {token}");
    let a = b.go(&start, &["-X", "POST", "-H", &own, "-H", &header]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["outcome"], "started", "{}", a.body);
    assert_eq!(state(&w), "running");
}

#[test]
fn logout_ends_the_session() {
    let w = World::start(|g| g.extra(WEB));
    let b = Browser::new(&w, "b");
    b.login(&link(&w, &[]));
    let cookie = b.cookie();
    let token = csrf(&w, &b);
    let own = format!("Origin: {}", origin(&w));
    let logout = url(&w, "/ui/logout");

    // without the token (a form from elsewhere would have none): refused, still logged in
    let a = b.go(&logout, &["-X", "POST", "-H", &own, "--data", "csrf=nope"]);
    assert_eq!(a.status, 403, "{a:?}");
    let (kind, detail, hint) = a.problem();
    assert_eq!(kind, "urn:virtgate:csrf");
    assert!(
        detail.contains("logout carries no valid CSRF token"),
        "{detail}"
    );
    assert!(hint.contains("page's button"), "{hint}");
    assert_eq!(b.go(&url(&w, "/v1/whoami"), &[]).status, 200);

    // the page's form
    let a = b.go(
        &logout,
        &["-X", "POST", "-H", &own, "--data", &format!("csrf={token}")],
    );
    assert_eq!(a.status, 303, "{a:?}");
    assert_eq!(a.header("location"), "/ui/");
    assert!(a.header("set-cookie").contains("Max-Age=0"), "{a:?}");
    let a = browser(
        &w.pki.ca_pem,
        &url(&w, "/v1/whoami"),
        &["-H", &format!("Cookie: virtgate_session={cookie}")],
    );
    assert_session_unknown(&a);
}

#[test]
fn expired_tickets_and_cookies_of_another_gateway_run_are_refused() {
    let w = World::start(|g| g.extra("[web]\nticket_login = true\nticket_lifetime_s = 1\n"));
    let l = link(&w, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let a = Browser::new(&w, "late").go(&l, &[]);
    assert_eq!(a.status, 403, "{a:?}");
    let (kind, _, hint) = a.problem();
    assert_eq!(kind, "urn:virtgate:ticket-invalid");
    assert!(hint.contains("run `virtgate web` again"), "{hint}");

    // a session of this run, then a new run of the gateway on the same configuration
    let mut w = w;
    let l = link(&w, &[]);
    let b = Browser::new(&w, "b");
    b.login(&l);
    let cookie = b.cookie();
    assert_eq!(b.go(&url(&w, "/v1/whoami"), &[]).status, 200);
    w.gateway.signal("TERM");
    assert!(
        w.gateway.wait_exit(Duration::from_secs(20)).is_some(),
        "the gateway did not stop"
    );
    let again = GatewayBuilder::new(&w.pki)
        .domain(w.qemu.domain_toml())
        .rule(&["alice"], &["web*"], "operator")
        .extra(WEB)
        .start(&w.dir.path().join("gw2"));
    let a = browser(
        &w.pki.ca_pem,
        &format!("{}/v1/whoami", again.https(0)),
        &["-H", &format!("Cookie: virtgate_session={cookie}")],
    );
    assert_session_unknown(&a);
}

#[test]
fn a_revoked_users_session_ends_at_reload() {
    let aux = virtgate_tests::tempdir();
    let control = aux.path().join("control.sock");
    let audit = aux.path().join("audit.jsonl");
    let w = World::start(|g| g.extra(WEB).control(&control).audit(&audit));
    let b = Browser::new(&w, "b");
    b.login(&link(&w, &[]));
    assert_eq!(b.go(&url(&w, "/v1/whoami"), &[]).status, 200);

    // revoke alice with the real CA tool, and give the gateway its CRL at the reload
    let crl = w.pki.revoke("alice");
    let config = std::fs::read_to_string(&w.gateway.config).expect("config");
    let config = config.replacen(
        "[tls]\n",
        &format!("[tls]\ncrl = {}\n", toml_str(&crl.display().to_string())),
        1,
    );
    std::fs::write(&w.gateway.config, config).expect("config");
    let out = w.gateway.reload();
    let (o, e) = text(&out);
    assert!(out.status.success(), "reload failed: {o}{e}");

    let a = b.go(&url(&w, "/v1/whoami"), &[]);
    assert_session_unknown(&a);
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "alice" && l["action"] == "web_ticket"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["user"] == "alice"
            && l["action"] == "web_session"
            && l["decision"] == "deny"
            && l["outcome"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("revoked")),
        "{lines:#?}"
    );
}

#[test]
fn virtgate_web_explains_what_it_cannot_do() {
    // no [web]: the gateway refuses certificate-less TLS, so no ticket
    let w = World::start(|g| g);
    let c = w.client("cli", 0, &w.alice);
    let e = c.fails(&["web", "--print"]);
    assert!(
        e.contains("accepts no TLS connection without a client certificate"),
        "{e}"
    );
    assert!(e.contains("ticket_login = true"), "{e}");
}
