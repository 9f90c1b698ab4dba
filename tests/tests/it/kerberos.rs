//! Kerberos single sign-on against a real MIT KDC: `kinit`, then the client and curl reach
//! the gateway with no certificate and no password prompt; every way it can go wrong says
//! what to do.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::kdc::{Kdc, REALM};
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{
    poll, run, system_bin, text, ClientUser, Gateway, GatewayBuilder, Pki, Qemu, QemuBuilder,
};

/// A KDC with alice, bob and HTTP/localhost; a gateway with `[kerberos]` that grants alice
/// (by user name) and carol (by full principal) operator on `web*`.
struct KWorld {
    pki: Pki,
    kdc: Kdc,
    keytab: PathBuf,
    _qemu: Qemu,
    gateway: Gateway,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

fn kerberos_section(keytab: Option<&std::path::Path>) -> String {
    let mut s = format!(
        "[kerberos]\nservice = \"HTTP\"\nhost = \"localhost\"\nstrip_realm = [\"{REALM}\"]\n"
    );
    if let Some(k) = keytab {
        s.push_str(&format!("keytab = {:?}\n", k.display().to_string()));
    }
    s
}

impl KWorld {
    fn start() -> KWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let kdc = Kdc::start(&dir.path().join("kdc"));
        for u in ["alice", "bob", "carol"] {
            kdc.add_user(u, &format!("{u}-pw"));
        }
        let keytab = kdc.add_service("HTTP/localhost");
        let qemu = QemuBuilder::new("web1").start(dir.path());
        let gateway = GatewayBuilder::new(&pki)
            .domain(qemu.domain_toml())
            .rule(&["alice", &format!("carol@{REALM}")], &["web*"], "operator")
            .extra(&kerberos_section(Some(&keytab)))
            .env("KRB5_CONFIG", &kdc.krb5_conf)
            .env("KRB5RCACHEDIR", dir.path())
            .start(&dir.path().join("gw"));
        KWorld {
            dir,
            pki,
            kdc,
            keytab,
            _qemu: qemu,
            gateway,
        }
    }

    /// A ticket cache for `user` (after kinit) and a client with a kerberos profile.
    fn user(&self, user: &str, listener: usize, lifetime: Option<&str>) -> (ClientUser, PathBuf) {
        let cc = self.dir.path().join(format!("cc-{user}"));
        self.kdc.kinit(user, &format!("{user}-pw"), &cc, lifetime);
        (self.client(user, listener, &cc), cc)
    }

    /// A client with `auth = "kerberos"`, no certificate, and `cc` as its ticket cache.
    fn client(&self, name: &str, listener: usize, cc: &std::path::Path) -> ClientUser {
        let port = self.gateway.addrs[listener].port();
        // The service principal is HTTP/localhost, so the URL names the host, not an address.
        let profile = format!(
            "url = \"virtgate://localhost:{port}\"\nca = {:?}\nauth = \"kerberos\"\n",
            self.pki.ca_pem.display().to_string()
        );
        ClientUser::with_profile(&self.dir.path().join(format!("home-{name}")), &profile)
            .with_env("KRB5_CONFIG", &self.kdc.krb5_conf)
            .with_env("KRB5CCNAME", format!("FILE:{}", cc.display()))
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.gateway.addrs[0].port())
    }

    /// curl with `--negotiate -u :` and alice's ticket cache.
    fn curl_negotiate(
        &self,
        cc: &std::path::Path,
        extra: &[&str],
        path: &str,
    ) -> std::process::Output {
        run(Command::new(system_bin("curl", "curl"))
            .args([
                "-sS",
                "--max-time",
                "20",
                "--negotiate",
                "-u",
                ":",
                "--cacert",
            ])
            .arg(&self.pki.ca_pem)
            .args(extra)
            .arg(self.url(path))
            .env("KRB5_CONFIG", &self.kdc.krb5_conf)
            .env("KRB5CCNAME", format!("FILE:{}", cc.display())))
    }
}

#[test]
fn kinit_then_whoami_list_and_vnc_without_a_certificate() {
    let w = KWorld::start();
    let (alice, _) = w.user("alice", 0, None);
    let who: Value = serde_json::from_str(&alice.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["method"], "kerberos", "{who}");
    assert_eq!(who["principal"], format!("alice@{REALM}"), "{who}");
    let human = alice.ok(&["whoami"]);
    assert!(
        human.contains("kerberos") && human.contains(&format!("alice@{REALM}")),
        "{human}"
    );

    let list = alice.ok(&["list"]);
    assert!(list.contains("web1") && list.contains("running"), "{list}");

    // VNC: the first request binds the connection, the tunnels ride on it.
    let fwd = alice.vnc("web1", &[]);
    let shot = w.dir.path().join("k.jpg");
    assert_eq!(snapshot_until(&fwd.vnc_target(), &shot, SEABIOS), SEABIOS);

    // Certificate login still works on the same listener.
    let cert = w.pki.client("dave", None);
    let c = ClientUser::new(&w.dir.path().join("dave"), &w.gateway.url(0), &cert);
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["method"], "certificate");
}

#[test]
fn curl_negotiate_gets_whoami() {
    let w = KWorld::start();
    let (_, cc) = w.user("alice", 0, None);
    for proto in ["--http2", "--http1.1"] {
        let out = w.curl_negotiate(&cc, &[proto], "/v1/whoami");
        let (o, e) = text(&out);
        assert!(out.status.success(), "{proto}: {e}");
        let v: Value = serde_json::from_str(&o).unwrap_or_else(|_| panic!("{proto}: {o}"));
        assert_eq!(v["user"], "alice");
        assert_eq!(v["method"], "kerberos");
    }
    // Without a token curl sees 401 + WWW-Authenticate: Negotiate and problem+json.
    let out = run(Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&w.pki.ca_pem)
        .arg(w.url("/v1/whoami")));
    let (o, _) = text(&out);
    let lower = o.to_lowercase();
    assert!(o.starts_with("HTTP/2 401"), "{o}");
    assert!(lower.contains("www-authenticate: negotiate"), "{o}");
    assert!(o.contains("\"hint\""), "{o}");
}

#[test]
fn no_ticket_says_run_kinit() {
    let w = KWorld::start();
    let c = w.client("nobody", 0, &w.dir.path().join("cc-empty"));
    let e = c.fails(&["whoami"]);
    assert!(e.contains("kinit"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn expired_ticket_says_so() {
    let w = KWorld::start();
    let (alice, cc) = w.user("alice", 0, Some("2s"));
    poll("the ticket to expire", Duration::from_secs(20), || {
        (!w.kdc.has_valid_ticket(&cc)).then_some(())
    });
    let e = alice.fails(&["whoami"]);
    assert!(e.to_lowercase().contains("expired"), "{e}");
    assert!(e.contains("kinit"), "{e}");
}

#[test]
fn service_principal_unknown_to_the_kdc() {
    let w = KWorld::start();
    let cc = w.dir.path().join("cc-alice");
    w.kdc.kinit("alice", "alice-pw", &cc, None);
    // 127.0.0.1 is in the server certificate, but the KDC has no HTTP/127.0.0.1.
    let profile = format!(
        "url = \"virtgate://127.0.0.1:{}\"\nca = {:?}\nauth = \"kerberos\"\n",
        w.gateway.addrs[0].port(),
        w.pki.ca_pem.display().to_string()
    );
    let c = ClientUser::with_profile(&w.dir.path().join("ip"), &profile)
        .with_env("KRB5_CONFIG", &w.kdc.krb5_conf)
        .with_env("KRB5CCNAME", format!("FILE:{}", cc.display()));
    let e = c.fails(&["whoami"]);
    assert!(e.contains("HTTP/127.0.0.1"), "names the principal: {e}");
    assert!(e.contains("admin"), "{e}");
}

#[test]
fn gateway_keytab_for_another_service_is_refused() {
    let w = KWorld::start();
    // A second gateway whose keytab holds only HTTP/other.example: alice's ticket for
    // HTTP/localhost cannot be accepted there.
    let other = w.kdc.add_service("HTTP/other.example");
    let gw2 = GatewayBuilder::new(&w.pki)
        .rule(&["alice"], &["*"], "viewer")
        .extra(&format!(
            "[kerberos]\nhost = \"other.example\"\nkeytab = {:?}\n",
            other.display().to_string()
        ))
        .env("KRB5_CONFIG", &w.kdc.krb5_conf)
        .env("KRB5RCACHEDIR", w.dir.path())
        .start(&w.dir.path().join("gw2"));
    let cc = w.dir.path().join("cc-a2");
    w.kdc.kinit("alice", "alice-pw", &cc, None);
    let profile = format!(
        "url = \"virtgate://localhost:{}\"\nca = {:?}\nauth = \"kerberos\"\n",
        gw2.addrs[0].port(),
        w.pki.ca_pem.display().to_string()
    );
    let c = ClientUser::with_profile(&w.dir.path().join("a2"), &profile)
        .with_env("KRB5_CONFIG", &w.kdc.krb5_conf)
        .with_env("KRB5CCNAME", format!("FILE:{}", cc.display()));
    let e = c.fails(&["whoami"]);
    assert!(e.contains("hint:"), "{e}");
    assert!(!e.contains("panicked"));
    let _ = &w.keytab;
}

#[test]
fn replayed_token_is_refused() {
    let w = KWorld::start();
    let (_, cc) = w.user("alice", 0, None);
    // curl -v shows the token it sends; use it once, then send it again.
    let out = w.curl_negotiate(&cc, &["--http1.1", "-v"], "/v1/whoami");
    let (o, e) = text(&out);
    assert!(out.status.success() && o.contains("kerberos"), "{o}{e}");
    let token = e
        .lines()
        .find_map(|l| {
            let l = l.trim_start_matches("> ").trim();
            l.strip_prefix("Authorization: Negotiate ")
        })
        .unwrap_or_else(|| panic!("no token in curl -v output: {e}"))
        .trim()
        .to_owned();
    let replay = run(Command::new("curl")
        .args(["-sS", "--http1.1", "-w", "\n%{http_code}", "--cacert"])
        .arg(&w.pki.ca_pem)
        .arg("-H")
        .arg(format!("Authorization: Negotiate {token}"))
        .arg(w.url("/v1/whoami")));
    let (o, _) = text(&replay);
    assert!(o.ends_with("401"), "a replayed token must be refused: {o}");
    assert!(o.to_lowercase().contains("replay"), "says why: {o}");
    assert!(
        w.gateway.log().to_lowercase().contains("replay"),
        "and logs it"
    );
}

#[test]
fn principal_not_granted_sees_no_domains_and_rules_may_name_principals() {
    let w = KWorld::start();
    let (bob, _) = w.user("bob", 0, None);
    let list: Value = serde_json::from_str(&bob.ok(&["list", "--json"])).unwrap();
    assert_eq!(list["domains"].as_array().map(Vec::len), Some(0), "{list}");
    let e = bob.fails(&["info", "web1"]);
    assert!(e.contains("web1"), "{e}");

    // carol is granted by her full principal.
    let (carol, _) = w.user("carol", 0, None);
    let list = carol.ok(&["list"]);
    assert!(list.contains("web1"), "{list}");
}

#[test]
fn unreadable_or_missing_keytab_fails_startup_listing_every_path() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let kdc = Kdc::start(&dir.path().join("kdc"));
    let keytab = kdc.add_service("HTTP/localhost");
    // The gateway runs as `nobody` (root reads any file), with its files readable to it
    // and a keytab that is not.
    let gwdir = dir.path().join("gw");
    std::fs::create_dir_all(&gwdir).unwrap();
    let own = |p: &std::path::Path, mode: u32| {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    for d in [dir.path(), gwdir.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let files: Vec<PathBuf> = ["server.pem", "server.key", "ca.pem", "http.keytab"]
        .iter()
        .map(|n| gwdir.join(n))
        .collect();
    std::fs::copy(&pki.server_cert, &files[0]).unwrap();
    std::fs::copy(&pki.server_key, &files[1]).unwrap();
    std::fs::copy(&pki.ca_pem, &files[2]).unwrap();
    std::fs::copy(&keytab, &files[3]).unwrap();
    own(&files[0], 0o644);
    own(&files[1], 0o600);
    own(&files[2], 0o644);
    own(&files[3], 0o000);
    std::fs::set_permissions(
        &kdc.krb5_conf,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        &kdc.dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = GatewayBuilder::new(&pki)
        .server_cert(&files[0], &files[1], &files[2])
        .rule(&["alice"], &["*"], "viewer")
        .extra(&kerberos_section(None))
        .write_config(&gwdir);
    own(&config, 0o644);
    let out = run(Command::new(system_bin("setpriv", "util-linux"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(virtgate_tests::bin("virtgated"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("KRB5_CONFIG", &kdc.krb5_conf)
        .env("KRB5_KTNAME", format!("FILE:{}", files[3].display())));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    let keytab_path = files[3].display().to_string();
    assert!(
        e.contains(&keytab_path),
        "names the keytab from KRB5_KTNAME: {e}"
    );
    for p in ["/etc/virtgate/krb5.keytab", "/etc/krb5.keytab"] {
        assert!(e.contains(p), "lists {p}: {e}");
    }
    let lower = e.to_lowercase();
    assert!(
        lower.contains("unreadable") || lower.contains("permission denied"),
        "{e}"
    );
    assert!(
        lower.contains("missing")
            || lower.contains("no such file")
            || lower.contains("does not exist"),
        "{e}"
    );
    assert!(e.contains("hint:") && e.contains("ktadd"), "{e}");

    // A configured keytab without the service key: "no key for HTTP/localhost".
    let wrong = kdc.add_service("HTTP/elsewhere");
    let config = GatewayBuilder::new(&pki)
        .rule(&["alice"], &["*"], "viewer")
        .extra(&kerberos_section(Some(&wrong)))
        .write_config(&dir.path().join("gw3"));
    let out = run(Command::new(virtgate_tests::bin("virtgated"))
        .arg("--allow-root")
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("KRB5_CONFIG", &kdc.krb5_conf));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(e.contains("HTTP/localhost"), "{e}");
    assert!(e.contains(&wrong.display().to_string()), "{e}");
}

#[test]
fn virtgate_web_after_kinit_gives_the_browser_a_kerberos_session() {
    let w = KWorld::start();
    let (alice, _) = w.user("alice", 0, None);
    let link = alice.ok(&["web", "--print"]).trim().to_owned();
    let port = w.gateway.addrs[0].port();
    assert!(
        link.starts_with(&format!("https://localhost:{port}/ui/login?ticket=")),
        "{link}"
    );
    // the browser: no certificate, no Kerberos; the cookie jar only
    let jar = w.dir.path().join("jar");
    let browser = |url: &str| {
        let out = run(Command::new(system_bin("curl", "curl"))
            .args(["-sS", "--max-time", "20", "-b"])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("--cacert")
            .arg(&w.pki.ca_pem)
            .args(["-w", "\n%{http_code}"])
            .arg(url));
        let (o, e) = text(&out);
        assert!(out.status.success(), "curl {url}: {e}");
        let (body, code) = o.rsplit_once('\n').unwrap_or_default();
        (code.to_owned(), body.to_owned())
    };
    // without the cookie: Negotiate offered, as before
    let (code, body) = browser(&w.url("/v1/whoami"));
    assert_eq!(code, "401", "{body}");
    assert_eq!(browser(&link).0, "303");
    let (code, body) = browser(&w.url("/v1/whoami"));
    assert_eq!(code, "200", "{body}");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&who["user"], &who["method"]),
        (&"alice".into(), &"kerberos".into()),
        "{who}"
    );
    let (code, body) = browser(&w.url("/v1/domains"));
    assert!(code == "200" && body.contains("web1"), "{code} {body}");
}
