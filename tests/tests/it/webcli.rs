//! `virtgate web`, the command, beyond the link: it asks over the shared connection of
//! `virtgate up`, opens the link with `$BROWSER` (or says to open it), and over a unix
//! socket (like SSH, a connection the browser cannot use) serves the gateway's pages on
//! 127.0.0.1 itself: one-time link, local cookie, Origin and CSRF rules, WebSockets.

use std::process::Command;
use std::time::Duration;

use virtgate_tests::fixture::gateway::toml_str;
use virtgate_tests::{metric, system_bin, text, ClientUser};

use crate::websession::{names, parse, url, Answer, Browser, WEB};
use crate::World;

#[test]
fn virtgate_web_asks_over_the_shared_connection_of_virtgate_up() {
    let w = World::start(|g| g.extra(WEB));
    let pass = w.alice.passphrase_file.clone().expect("encrypted key");
    let profile = format!(
        "url = {}\nca = {}\ncert = {}\nkey = {}\npassphrase_command = {}\n",
        toml_str(&w.gateway.url(0)),
        toml_str(&w.alice.ca.display().to_string()),
        toml_str(&w.alice.cert.display().to_string()),
        toml_str(&w.alice.key.display().to_string()),
        toml_str(&format!("cat {}", pass.display())),
    );
    let c = ClientUser::with_profile(&w.dir.path().join("laptop"), &profile);
    let (_up, _) = c.up();
    let accepted = || {
        metric(
            &w.alice,
            &w.pki.ca_pem,
            &w.gateway.https(0),
            "virtgate_connections_accepted_total",
        )
    };
    let before = accepted();
    let l = c.ok(&["web", "web1", "--print"]).trim().to_owned();
    // one more connection: the metric query itself; `web` used the shared one
    assert_eq!(accepted(), before + 1.0, "virtgate web opened a connection");
    assert!(
        l.starts_with(&format!("{}/ui/login?ticket=", w.gateway.https(0))),
        "{l}"
    );
    let b = Browser::new(&w, "b");
    assert_eq!(b.login(&l).header("location"), "/ui/vnc/web1");
    assert_eq!(b.go(&url(&w, "/v1/whoami"), &[]).json()["user"], "alice");
}

#[test]
fn virtgate_web_opens_the_link_with_browser_or_says_to_open_it() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::start(|g| g.extra(WEB));
    let c = w.client("cli", 0, &w.alice);
    // a "browser" that writes down what it was asked to open
    let opened = w.dir.path().join("opened.txt");
    let script = w.dir.path().join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = c.run_env(
        &["web", "web1", "--serial"],
        &[("BROWSER", script.to_str().expect("utf-8"))],
    );
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    let link = o.trim();
    assert!(link.ends_with("&next=%2Fui%2Fserial%2Fweb1"), "{o}");
    assert!(
        e.contains("opened with") && e.contains("works once, within 60 s"),
        "{e}"
    );
    let got = virtgate_tests::poll("the browser script", Duration::from_secs(10), || {
        std::fs::read_to_string(&opened).ok()
    });
    assert_eq!(got.trim(), link);
    assert_eq!(
        Browser::new(&w, "b").login(link).header("location"),
        "/ui/serial/web1"
    );

    // no browser to start: the link is printed with what to do, and that is no failure
    let out = c.run_env(&["web"], &[("BROWSER", "/nonexistent/browser")]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(o.trim().contains("/ui/login?ticket="), "{o}");
    assert!(
        e.contains("cannot start /nonexistent/browser") && e.contains("open the link above"),
        "{e}"
    );
}

/// The local user's name (a unix-socket connection is this user).
fn me() -> String {
    let out = virtgate_tests::run(Command::new("id").arg("-un"));
    text(&out).0.trim().to_owned()
}

#[test]
fn over_a_unix_socket_virtgate_web_serves_the_pages_locally() {
    let aux = virtgate_tests::tempdir();
    let sock = aux.path().join("gw.sock");
    let me = me();
    let w = World::start(|g| g.unix(&sock).rule(&[&me], &["web*"], "operator"));
    let c = ClientUser::new(
        &w.dir.path().join("unix"),
        &format!("virtgate+unix://{}", sock.display()),
        &w.alice,
    );
    let mut cmd = c.cmd();
    cmd.args(["web", "web1", "--print"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("virtgate web");
    let stdout = child.stdout.take().expect("stdout");
    let _serving = virtgate_tests::ChildGuard::new(child, "virtgate web");
    let lines = virtgate_tests::LineReader::new(stdout);
    let link = lines
        .next_line(Duration::from_secs(20))
        .expect("virtgate web printed no link");
    let base = link.split("/ui/login").next().expect("a base").to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");
    assert!(link.ends_with("&next=%2Fui%2Fvnc%2Fweb1"), "{link}");

    let jar = w.dir.path().join("local.cookies");
    let jar_s = jar.to_str().expect("utf-8").to_owned();
    let get = |path: &str, args: &[&str]| -> Answer {
        let mut c = Command::new(system_bin("curl", "curl"));
        c.args(["-sS", "-i", "--max-time", "20", "-b", &jar_s, "-c", &jar_s])
            .args(args)
            .arg(format!("{base}{path}"));
        let out = virtgate_tests::run(&mut c);
        let (o, e) = text(&out);
        assert!(out.status.success(), "curl {path}: {e}");
        parse(&o)
    };
    // nothing without the link's cookie (another local user, another site)
    let a = get("/v1/domains", &[]);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(
        a.body.contains("open the link `virtgate web` printed"),
        "{a:?}"
    );

    let a = get(link.strip_prefix(&base).expect("path"), &[]);
    assert_eq!(a.status, 303, "{a:?}");
    assert_eq!(a.header("location"), "/ui/vnc/web1");
    let set = a.header("set-cookie");
    assert!(
        set.contains("virtgate_local=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    // the link works once
    let mut c = Command::new(system_bin("curl", "curl"));
    let again = parse(&text(&virtgate_tests::run(c.args(["-sS", "-i", &link]))).0);
    assert_eq!(again.status, 403, "{again:?}");
    assert!(
        again
            .body
            .contains("used already; run `virtgate web` again"),
        "{again:?}"
    );

    let who = get("/v1/whoami", &[]).json();
    assert_eq!(
        (&who["user"], &who["method"]),
        (&me.as_str().into(), &"unix".into()),
        "{who}"
    );
    assert_eq!(names(&get("/v1/domains", &[]).json()), ["web1"]);
    let page = get("/ui/vnc/web1", &[]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page
        .header("content-security-policy")
        .contains("default-src 'self'"));
    let session = get("/v1/web/session", &[]).json();
    let token = session["csrf"].as_str().expect("token").to_owned();

    // POSTs: another site, no Origin, no token are refused; the domain stays
    let destroy = "/v1/domains/web1/destroy";
    let own = format!("Origin: {base}");
    let csrf_header = format!("X-Virtgate-CSRF: {token}");
    for (what, args, says) in [
        (
            "another site",
            vec!["-H", "Origin: https://evil.example", "-H", &csrf_header],
            "another site's page",
        ),
        (
            "no Origin",
            vec!["-H", &csrf_header],
            "without an Origin header",
        ),
        (
            "no token",
            vec!["-H", &own],
            "carries no x-virtgate-csrf header",
        ),
    ] {
        let mut args = args;
        args.extend(["-X", "POST"]);
        let a = get(destroy, &args);
        assert_eq!(a.status, 403, "{what}: {a:?}");
        assert!(a.body.contains(says), "{what}: {a:?}");
    }

    // the VNC console's WebSocket through the local port: the guest's RFB banner
    let cookie = std::fs::read_to_string(&jar)
        .expect("jar")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 7 && f[5] == "virtgate_local").then(|| f[6].to_owned())
        })
        .expect("the local cookie");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let banner = rt.block_on(async {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let host = base.trim_start_matches("http://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connect");
        let mut req = format!("ws://{host}/v1/domains/web1/vnc")
            .into_client_request()
            .expect("request");
        for (k, v) in [
            ("cookie", format!("virtgate_local={cookie}")),
            ("origin", base.clone()),
            ("sec-websocket-protocol", "binary".to_owned()),
        ] {
            req.headers_mut()
                .insert(k, http::HeaderValue::from_str(&v).expect("header"));
        }
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("WebSocket");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "binary");
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_binary() => return m.into_data().to_vec(),
                Some(Ok(_)) => {}
                other => panic!("no RFB banner: {other:?}"),
            }
        }
    });
    assert!(
        banner.starts_with(b"RFB 003."),
        "{:?}",
        String::from_utf8_lossy(&banner)
    );

    // the page's own POST works
    let a = get(destroy, &["-X", "POST", "-H", &own, "-H", &csrf_header]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["outcome"], "destroyed", "{}", a.body);
}
