//! The browser console driven by a real browser: Debian's Chromium, headless, over
//! WebDriver ([`virtgate_tests::ChromiumBuilder`]), against a real gateway and real QEMU
//! guests (the test guest: magenta screen, serial echo, ACPI power button) that the
//! gateway supervises. The browser trusts the test CA through its NSS database and presents
//! the user's certificate (imported from the PKCS#12 that `virtgate-pki export-p12`
//! writes) without a dialog.
//!
//! What a user sees is asserted: the domain list (only what the rules allow, buttons by
//! role; a viewer's console page says why not, a hidden domain looks missing), the VNC
//! console drawing the guest's screen (compared with the gateway's own screenshot) and
//! taking keys (Ctrl+Alt+Del typed into the canvas reboots the guest: its banner comes
//! again on the serial line), the serial console echoing a typed line, shut down / start
//! from the list, the one-time link of `virtgate web --print` in a browser without a
//! certificate, `virtgate web` over a unix socket serving the consoles to a browser on
//! 127.0.0.1, a browser with a Kerberos ticket and no certificate logging in with
//! Negotiate, and 200 console tabs opened and closed leaving no stream open.
//!
//! `VIRTGATE_DOCS_SCREENSHOT=1` also writes the VNC console's screenshot to
//! `docs/browser-console.png` (the README shows it).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::chromium::pids_with_arg;
use virtgate_tests::fixture::guest::BANNER;
use virtgate_tests::{
    curl, guest_kernel, guest_screen_fraction, metric, poll, text, ChildGuard, Chromium,
    ChromiumBuilder, ClientCert, ClientUser, Gateway, GatewayBuilder, GuestOptions, Pki,
    QemuBuilder,
};

/// How long a page or a console may take to show what a test waits for.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// How long a guest may take to power off or boot.
const GUEST_DEADLINE: Duration = Duration::from_secs(60);

/// A gateway supervising `web1` (the test guest, VNC + serial) and `db1` (no serial);
/// alice is operator and vic viewer on `web*`; nobody is granted `db1`. Browsers may also
/// connect without a certificate and log in with a `virtgate web` link (`ticket_login`).
/// The gateway also listens on a unix socket (`DIR/gw.sock`), where the local user (the
/// tester) is operator on `web*`.
struct BWorld {
    pki: Pki,
    alice: ClientCert,
    vic: ClientCert,
    gateway: Gateway,
    /// alice's command-line client, to look at the guest from outside the browser.
    cli: ClientUser,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

impl BWorld {
    fn start() -> BWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let alice = pki.client("alice", Some("alice secret"));
        let vic = pki.client("vic", None);
        let kernel = guest_kernel(dir.path(), GuestOptions::default());
        let gateway = GatewayBuilder::new(&pki)
            .domain(
                QemuBuilder::new("web1")
                    .kernel(&kernel)
                    .supervised_toml(dir.path()),
            )
            .domain(
                QemuBuilder::new("db1")
                    .kernel(&kernel)
                    .serial(false)
                    .supervised_toml(dir.path()),
            )
            .rule(&["alice"], &["web*"], "operator")
            .rule(&["vic"], &["web*"], "viewer")
            .rule(&[&me()], &["web*"], "operator")
            .unix(&dir.path().join("gw.sock"))
            .extra("[web]\nticket_login = true\n")
            .start(&dir.path().join("gw"));
        let cli = ClientUser::new(&dir.path().join("cli"), &gateway.url(0), &alice);
        BWorld {
            pki,
            alice,
            vic,
            gateway,
            cli,
            dir,
        }
    }

    /// A browser (its folder named `name`) presenting `cert` to the gateway.
    fn browser(&self, name: &str, cert: &ClientCert) -> Chromium {
        browser(
            &self.dir.path().join(name),
            &self.gateway,
            &self.pki.ca_pem,
            cert,
        )
    }

    /// `https://127.0.0.1:PORT` + `path`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.https(0))
    }
}

/// The local user's name (a unix-socket connection is this user).
fn me() -> String {
    let out = virtgate_tests::run(std::process::Command::new("id").arg("-un"));
    text(&out).0.trim().to_owned()
}

/// A browser in `dir` trusting the gateway's CA and presenting `cert` to it.
fn browser(dir: &Path, gw: &Gateway, ca: &Path, cert: &ClientCert) -> Chromium {
    ChromiumBuilder::new(dir)
        .trust(ca)
        .client_cert(cert, &gw.https(0))
        .start()
}

/// The text of the cell `cls` (`state`, `role`, `actions`, `consoles`) in the row of
/// domain `name` on `/ui/`, or `null` while there is no such row.
fn cell_js(name: &str, cls: &str) -> String {
    format!(
        "const tr = [...document.querySelectorAll('#domains tr')]
            .find(tr => tr.querySelector('th') && tr.querySelector('th').textContent === {name:?});
         return tr ? tr.querySelector('.{cls}').textContent : null;"
    )
}

/// Wait until the console page's status line says `Connected`.
fn wait_connected(b: &Chromium) {
    b.wait_js(
        "the console to connect",
        "const s = document.getElementById('status');
         return s && s.textContent === 'Connected';",
        PAGE_DEADLINE,
    );
}

#[test]
fn the_browser_presents_the_client_certificate_without_a_dialog() {
    let w = crate::World::start(|b| b);
    let b = browser(
        &w.dir.path().join("chromium"),
        &w.gateway,
        &w.pki.ca_pem,
        &w.alice,
    );
    b.goto(&format!("{}/v1/whoami", w.gateway.https(0)));
    let text = b.wait_text("whoami's JSON", PAGE_DEADLINE, |t| t.contains("\"user\""));
    let who: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["method"], "certificate", "{who}");

    // the trust is the CA imported into the browser's NSS database, nothing more: without
    // it the same browser set-up refuses the gateway's certificate
    let untrusting = ChromiumBuilder::new(&w.dir.path().join("untrusting"))
        .client_cert(&w.alice, &w.gateway.https(0))
        .start();
    untrusting.goto(&format!("{}/v1/whoami", w.gateway.https(0)));
    let t = untrusting.body_text();
    assert!(
        t.contains("NET::ERR_CERT_AUTHORITY_INVALID") && !t.contains("alice"),
        "{t}"
    );

    // dropping the fixture stops chromedriver and every browser process (its group)
    let group = untrusting.driver_pid();
    let crash = untrusting.crash_handler_arg();
    assert!(
        !live_in_group(group).is_empty(),
        "the browser runs in group {group}"
    );
    drop(untrusting);
    poll("the browser's processes gone", PAGE_DEADLINE, || {
        let left = pids_with_arg(&crash)
            .into_iter()
            .filter(|p| !is_zombie(*p))
            .count();
        (live_in_group(group).is_empty() && left == 0).then_some(())
    });
}

/// Has process `pid` exited and awaits its reaping?
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace().next() == Some("Z")
}

/// Processes of process group `group` that have not exited (zombies left out: orphans
/// are reaped slowly here).
fn live_in_group(group: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ')'
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == group.to_string()
        })
        .collect()
}

#[test]
fn the_list_shows_the_allowed_domains_and_the_buttons_of_the_role() {
    let w = BWorld::start();
    let b = w.browser("alice", &w.alice);
    b.goto(&w.url("/"));
    assert!(b.url().ends_with("/ui/"), "/ goes to /ui/: {}", b.url());
    b.wait_js("web1's row", &cell_js("web1", "state"), PAGE_DEADLINE);
    let names =
        b.js("return [...document.querySelectorAll('#domains th')].map(th => th.textContent)");
    assert_eq!(names, serde_json::json!(["web1"]), "db1 is nobody's");
    assert!(b
        .wait_text("who is signed in", PAGE_DEADLINE, |t| t
            .contains("Signed in as alice"))
        .contains("certificate"));
    assert_eq!(b.js(&cell_js("web1", "role")), "operator");
    for action in ["Start", "Shut down", "Reboot", "Destroy"] {
        assert!(
            b.exists(&format!("button[aria-label=\"{action} web1\"]")),
            "{action} for an operator"
        );
    }
    assert!(b.exists("a[href=\"/ui/vnc/web1\"]") && b.exists("a[href=\"/ui/serial/web1\"]"));
    // the thumbnail is the guest's screen, fetched with the certificate
    b.wait_js(
        "web1's thumbnail",
        "const i = document.querySelector('img[alt=\"Screen of web1\"]');
         return i && !i.hidden && i.complete && i.naturalWidth > 0;",
        PAGE_DEADLINE,
    );

    let v = w.browser("vic", &w.vic);
    v.goto(&w.url("/ui/"));
    v.wait_js("web1's row", &cell_js("web1", "state"), PAGE_DEADLINE);
    assert_eq!(v.js(&cell_js("web1", "role")), "viewer");
    assert_eq!(v.js(&cell_js("web1", "actions")), "none (viewer)");
    assert!(!v.exists("#domains button"), "no buttons for a viewer");
    assert!(
        !v.exists("a[href=\"/ui/vnc/web1\"]"),
        "no console for a viewer"
    );
    v.goto(&w.url("/ui/vnc/web1"));
    let t = v.wait_text("the refusal", PAGE_DEADLINE, |t| !t.trim().is_empty());
    assert!(
        t.contains("vnc needs role operator") && t.contains("your role is viewer"),
        "a viewer opening a console page is told why not: {t}"
    );
    // and a domain alice may not see looks missing to her, as in the API
    b.goto(&w.url("/ui/vnc/db1"));
    let t = b.wait_text("the refusal", PAGE_DEADLINE, |t| !t.trim().is_empty());
    assert!(t.contains("404") && !t.contains("role"), "{t}");
}

/// `virtgate console DOM` of the command-line client, read on a thread: the guest's serial
/// line seen from outside the browser.
struct SerialWatch {
    /// The console process, stopped on drop.
    _child: ChildGuard,
    /// Everything it printed so far.
    seen: Arc<Mutex<Vec<u8>>>,
}

impl SerialWatch {
    fn start(cli: &ClientUser, domain: &str) -> SerialWatch {
        let mut child = cli
            .cmd()
            .args(["console", domain])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start virtgate console");
        let mut out = child.stdout.take().expect("piped stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock()
                    .expect("serial buffer")
                    .extend_from_slice(&buf[..n]);
            }
        });
        SerialWatch {
            _child: ChildGuard::new(child, "virtgate console"),
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("serial buffer")).into_owned()
    }

    /// Type `line` and wait for the guest's echo: the console is live.
    fn mark(&mut self, line: &str) {
        let stdin = self._child.child_mut().stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("type into virtgate console");
        poll(&format!("{line:?} echoed"), GUEST_DEADLINE, || {
            self.text().contains(line).then_some(())
        });
    }

    /// Wait until `text` comes after `after` on the line.
    fn wait_after(&self, after: &str, text: &str, deadline: Duration) {
        poll(
            &format!("{text:?} after {after:?} on the serial line"),
            deadline,
            || {
                let t = self.text();
                let at = t.find(after)?;
                t[at..].contains(text).then_some(())
            },
        );
    }
}

#[test]
fn the_vnc_console_draws_the_guest_screen_and_takes_keys() {
    let w = BWorld::start();
    w.cli.wait_guest_ready("web1");
    let b = w.browser("alice", &w.alice);
    b.goto(&w.url("/ui/vnc/web1"));
    wait_connected(&b);
    let canvas = "#screen canvas";
    let in_browser = poll("the guest's screen in the canvas", PAGE_DEADLINE, || {
        let f = guest_screen_fraction(&b.element_screenshot(canvas));
        (f > 0.9).then_some(f)
    });
    let out = curl(
        &w.alice,
        &w.pki.ca_pem,
        &w.url("/v1/domains/web1/screenshot"),
        &[],
    );
    assert!(
        out.status.success(),
        "the gateway's screenshot: {:?}",
        text(&out)
    );
    let at_gateway = guest_screen_fraction(&out.stdout);
    assert!(
        (in_browser - at_gateway).abs() < 0.05,
        "the canvas shows the guest's screen: {in_browser:.3} of it is magenta, {at_gateway:.3} of the gateway's screenshot"
    );
    let page = b.screenshot();
    let share = guest_screen_fraction(&page);
    assert!(share > 0.1, "the console fills the page: {share:.3}");
    std::fs::write(w.dir.path().join("browser-console.png"), &page).expect("keep the screenshot");
    if std::env::var_os("VIRTGATE_DOCS_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/browser-console.png");
        std::fs::write(&docs, &page).unwrap_or_else(|e| panic!("write {}: {e}", docs.display()));
    }

    // Ctrl+Alt+Del typed into the canvas goes to the guest's keyboard: the BIOS reboots it,
    // and its banner comes again on the serial line.
    let mut serial = SerialWatch::start(&w.cli, "web1");
    serial.mark("before the keys");
    b.send_keys(canvas, "\u{E009}\u{E00A}\u{E017}");
    serial.wait_after("before the keys", BANNER, GUEST_DEADLINE);
    assert_eq!(
        b.js("return document.getElementById('status').textContent"),
        "Connected"
    );
}

#[test]
fn the_serial_console_echoes_a_typed_line() {
    let w = BWorld::start();
    let b = w.browser("alice", &w.alice);
    b.goto(&w.url("/ui/serial/web1"));
    wait_connected(&b);
    b.send_keys(".xterm-helper-textarea", "hello from chromium\n");
    b.wait_js(
        "the guest's echo in the terminal",
        "const r = document.querySelector('.xterm-rows');
         return r && r.innerText.includes('hello from chromium');",
        GUEST_DEADLINE,
    );
}

/// A script that is true once domain `name`'s row on `/ui/` says `state` (maybe followed
/// by its reason in brackets).
fn state_is(name: &str, state: &str) -> String {
    format!(
        "const t = (() => {{ {} }})();
         return t === {state:?} || (t !== null && t.startsWith({state:?} + ' ('));",
        cell_js(name, "state")
    )
}

#[test]
fn an_operator_shuts_the_guest_down_and_starts_it_from_the_list() {
    let w = BWorld::start();
    // A power button pressed before the guest enabled ACPI is lost, as on real hardware.
    w.cli.wait_guest_ready("web1");
    let b = w.browser("alice", &w.alice);
    b.goto(&w.url("/ui/"));
    b.wait_js("web1 running", &state_is("web1", "running"), PAGE_DEADLINE);
    b.click("button[aria-label=\"Shut down web1\"]");
    b.wait_js(
        "web1 shut off",
        &state_is("web1", "shut off"),
        GUEST_DEADLINE,
    );
    b.wait_text("the shutdown's outcome", PAGE_DEADLINE, |t| {
        t.contains("Shut down web1: done.")
    });
    assert!(w
        .cli
        .ok(&["info", "web1", "--json"])
        .contains("\"shut_off\""));
    b.wait_js(
        "Start enabled",
        "const s = document.querySelector('button[aria-label=\"Start web1\"]');
         return s && !s.disabled;",
        PAGE_DEADLINE,
    );
    b.click("button[aria-label=\"Start web1\"]");
    b.wait_js(
        "web1 running again",
        &state_is("web1", "running"),
        GUEST_DEADLINE,
    );
    b.wait_text("the start's outcome", PAGE_DEADLINE, |t| {
        t.contains("Start web1: done.")
    });
    assert!(w
        .cli
        .ok(&["info", "web1", "--json"])
        .contains("\"running\""));
}

#[test]
fn a_one_time_link_logs_in_a_browser_without_a_certificate() {
    let w = BWorld::start();
    let b = ChromiumBuilder::new(&w.dir.path().join("nocert"))
        .trust(&w.pki.ca_pem)
        .start();
    b.goto(&w.url("/ui/"));
    let refused = b.wait_text("the refusal", PAGE_DEADLINE, |t| !t.trim().is_empty());
    assert!(
        refused.contains("authentication required") && refused.contains("`virtgate web`"),
        "a browser without certificate or session is told what to do: {refused}"
    );
    assert!(!refused.contains("web1"), "{refused}");

    let link = w
        .cli
        .ok(&["web", "web1", "--serial", "--print"])
        .trim()
        .to_owned();
    b.goto(&link);
    assert!(
        b.url().ends_with("/ui/serial/web1"),
        "the link lands on the console: {}",
        b.url()
    );
    wait_connected(&b);
    b.send_keys(".xterm-helper-textarea", "typed after a link login\n");
    b.wait_js(
        "the guest's echo in the terminal",
        "const r = document.querySelector('.xterm-rows');
         return r && r.innerText.includes('typed after a link login');",
        GUEST_DEADLINE,
    );
    b.goto(&w.url("/ui/"));
    b.wait_text("the list", PAGE_DEADLINE, |t| {
        t.contains("Signed in as alice")
    });
    b.wait_js("web1's row", &cell_js("web1", "state"), PAGE_DEADLINE);

    // the link works once
    let other = ChromiumBuilder::new(&w.dir.path().join("nocert2"))
        .trust(&w.pki.ca_pem)
        .start();
    other.goto(&link);
    let again = other.wait_text("the refusal", PAGE_DEADLINE, |t| !t.trim().is_empty());
    assert!(
        again.contains("login link not valid") && again.contains("run `virtgate web` again"),
        "a used link is refused with what to do: {again}"
    );
    assert!(!again.contains("Signed in"), "{again}");
    // the first browser's session is untouched
    b.goto(&w.url("/ui/"));
    b.wait_text("the list", PAGE_DEADLINE, |t| {
        t.contains("Signed in as alice")
    });
}

/// Rounds of 10 tabs in [`two_hundred_console_tabs_opened_and_closed_leave_no_stream_behind`].
const ROUNDS: usize = 20;

#[test]
fn two_hundred_console_tabs_opened_and_closed_leave_no_stream_behind() {
    let w = BWorld::start();
    let b = w.browser("alice", &w.alice);
    let open = || {
        metric(
            &w.alice,
            &w.pki.ca_pem,
            &w.gateway.https(0),
            "virtgate_tunnels_open",
        )
    };
    // 20 rounds of 10 tabs all connected at once (9 VNC consoles, which QEMU shares, and the
    // serial console, which has one user at a time), then closed
    for round in 0..ROUNDS {
        for i in 0..10 {
            b.new_tab();
            let kind = if i == 0 { "serial" } else { "vnc" };
            b.goto(&w.url(&format!("/ui/{kind}/web1")));
            wait_connected(&b);
        }
        let n = open();
        assert!(
            n >= 10.0,
            "round {round}: 10 consoles open, the gateway counts {n}"
        );
        for _ in 0..10 {
            b.close_tab();
        }
        assert_eq!(b.tabs(), 1, "round {round}: only the first tab is left");
    }
    let mut last = f64::NAN;
    let closed = (0..300).any(|_| {
        last = open();
        std::thread::sleep(Duration::from_millis(100));
        last == 0.0
    });
    let metrics = curl(&w.alice, &w.pki.ca_pem, &w.url("/v1/metrics"), &[]);
    let tunnels: Vec<String> = text(&metrics)
        .0
        .lines()
        .filter(|l| l.starts_with("virtgate_tunnels"))
        .map(str::to_owned)
        .collect();
    assert!(
        closed,
        "streams still open after every tab closed: {last}\n{}",
        tunnels.join("\n")
    );
}

#[test]
fn virtgate_web_over_a_unix_socket_serves_the_consoles_to_the_browser() {
    let w = BWorld::start();
    let c = ClientUser::new(
        &w.dir.path().join("unix"),
        &format!("virtgate+unix://{}", w.dir.path().join("gw.sock").display()),
        &w.alice,
    );
    let mut cmd = c.cmd();
    cmd.args(["web", "web1", "--print"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start virtgate web");
    let stdout = child.stdout.take().expect("piped stdout");
    let _serving = ChildGuard::new(child, "virtgate web");
    let link = virtgate_tests::LineReader::new(stdout)
        .next_line(PAGE_DEADLINE)
        .expect("virtgate web printed no link");
    let base = link
        .split("/ui/login")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");

    // a browser with no certificate and no CA: the pages come from virtgate web itself
    let b = ChromiumBuilder::new(&w.dir.path().join("local")).start();
    b.goto(&link);
    assert_eq!(b.url(), format!("{base}/ui/vnc/web1"));
    wait_connected(&b);
    let f = poll("the guest's screen in the canvas", PAGE_DEADLINE, || {
        let f = guest_screen_fraction(&b.element_screenshot("#screen canvas"));
        (f > 0.9).then_some(f)
    });
    assert!(f > 0.9);
    b.goto(&format!("{base}/ui/serial/web1"));
    wait_connected(&b);
    b.send_keys(".xterm-helper-textarea", "typed through virtgate web\n");
    b.wait_js(
        "the guest's echo in the terminal",
        "const r = document.querySelector('.xterm-rows');
         return r && r.innerText.includes('typed through virtgate web');",
        GUEST_DEADLINE,
    );
    b.goto(&format!("{base}/ui/"));
    let me = me();
    b.wait_text("who is signed in", PAGE_DEADLINE, |t| {
        t.contains(&format!("Signed in as {me} (unix)"))
    });
}

/// What a browser needs to log in with Kerberos (SPNEGO, `Negotiate`): Negotiate is only
/// answered with the user's ticket for allowed servers (the switch, or the managed policy
/// `AuthServerAllowlist`: both checked, same result), and the service it asks a ticket for
/// must be `HTTP/localhost`: no CNAME lookup, no port in the name (Chromium's default).
/// Chromium dlopens `libgssapi_krb5.so.2` and finds the ticket cache through `KRB5CCNAME`.
const NEGOTIATE_ARGS: &[&str] = &[
    "--auth-server-allowlist=localhost",
    "--disable-auth-negotiate-cname-lookup",
];

/// Open `url`; a fresh Chromium (156) refuses the very first Negotiate challenge of its
/// life (net log: `AUTH_HANDLER_CREATE_RESULT` with `ERR_UNSUPPORTED_AUTH_SCHEME`, before it
/// loads the GSSAPI library; with the switch or the policy alike) and shows the 401; its next
/// request (the favicon) negotiates and binds the connection. So when the first load is the
/// 401, load the page once more, as a user would. Returns the page's text.
fn goto_negotiated(b: &Chromium, url: &str) -> String {
    // the page says "Signed in as …" until its whoami call answers
    let done = |t: &str| {
        (t.contains("Signed in as") && !t.contains("Signed in as …"))
            || t.contains("authentication required")
    };
    b.goto(url);
    let t = b.wait_text("the page", PAGE_DEADLINE, done);
    if !t.contains("authentication required") {
        return t;
    }
    b.goto(url);
    b.wait_text("the page, loaded again", PAGE_DEADLINE, done)
}

#[test]
fn a_browser_with_a_kerberos_ticket_logs_in_with_negotiate() {
    use virtgate_tests::fixture::kdc::{Kdc, REALM};
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let kdc = Kdc::start(&dir.path().join("kdc"));
    kdc.add_user("alice", "alice-pw");
    let keytab = kdc.add_service("HTTP/localhost");
    let web1 = QemuBuilder::new("web1").start(dir.path());
    let db1 = QemuBuilder::new("db1").start(dir.path());
    let gateway = GatewayBuilder::new(&pki)
        .domain(web1.domain_toml())
        .domain(db1.domain_toml())
        .rule(&["alice"], &["web*"], "operator")
        .extra(&format!(
            "[kerberos]\nservice = \"HTTP\"\nhost = \"localhost\"\nstrip_realm = [\"{REALM}\"]\nkeytab = {:?}\n",
            keytab.display().to_string()
        ))
        .env("KRB5_CONFIG", &kdc.krb5_conf)
        .env("KRB5RCACHEDIR", dir.path())
        .start(&dir.path().join("gw"));
    // the service principal is HTTP/localhost: the browser must name the host
    let url = format!("https://localhost:{}/ui/", gateway.addrs[0].port());
    let cc = dir.path().join("cc-alice");
    kdc.kinit("alice", "alice-pw", &cc, None);

    // no client certificate: only the CA, the switches and the ticket cache
    let kerberized = |name: &str, cc: &Path| {
        NEGOTIATE_ARGS
            .iter()
            .fold(ChromiumBuilder::new(&dir.path().join(name)), |b, a| {
                b.arg(a)
            })
            .trust(&pki.ca_pem)
            .env("KRB5_CONFIG", &kdc.krb5_conf)
            .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
            .start()
    };

    let b = kerberized("kerberos", &cc);
    let t = goto_negotiated(&b, &url);
    assert!(
        t.contains("Signed in as alice") && t.contains("kerberos"),
        "the browser logs in with its ticket: {t}\nchromedriver:\n{}",
        b.driver_log_tail()
    );
    b.wait_js("web1's row", &cell_js("web1", "state"), PAGE_DEADLINE);
    let names =
        b.js("return [...document.querySelectorAll('#domains th')].map(th => th.textContent)");
    assert_eq!(names, serde_json::json!(["web1"]), "db1 is nobody's");
    assert_eq!(b.js(&cell_js("web1", "role")), "operator");
    drop(b);

    // the same browser with an empty ticket cache is refused, however often it tries
    let n = kerberized("noticket", &dir.path().join("cc-empty"));
    let refused = goto_negotiated(&n, &url);
    assert!(
        refused.contains("authentication required")
            && refused.contains("kinit")
            && !refused.contains("Signed in"),
        "no ticket, no login: {refused}"
    );
    assert!(!refused.contains("web1"), "{refused}");
}
