//! The SSH transport against a real OpenSSH sshd, as a non-root user whose login shell is
//! zsh: the client opens a `direct-streamlocal` channel to the gateway's unix socket and
//! speaks HTTP/2 over it; no command ever runs on the host. Also the local unix transport.

use std::path::{Path, PathBuf};

use serde_json::Value;
use virtgate_tests::fixture::sshd::{keygen, open_path_to, Agent, Sshd, SshdBuilder, SSH_USER};
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{ClientUser, Gateway, GatewayBuilder, Pki, Qemu, QemuBuilder};

/// A gateway with a unix socket, a QEMU domain `web1` granted to the ssh user, an sshd.
struct SWorld {
    _pki: Pki,
    _qemu: Qemu,
    gateway: Gateway,
    sshd: Sshd,
    sock: PathBuf,
    /// An authorized, unencrypted client key.
    key: PathBuf,
    /// Dropped last: the processes above stop before their files go.
    dir: tempfile::TempDir,
}

/// How the client's ~/.ssh is set up.
#[derive(Clone, Copy, PartialEq)]
enum Keys {
    /// `id_ed25519` = the authorized plain key.
    File,
    /// No key files at all (the agent must do it).
    None,
}

impl SWorld {
    fn start(streamlocal: bool) -> SWorld {
        let dir = virtgate_tests::tempdir();
        open_path_to(dir.path());
        let pki = Pki::new(dir.path(), "ca");
        let guest = virtgate_tests::guest_kernel(dir.path(), Default::default());
        let qemu = QemuBuilder::new("web1").kernel(&guest).start(dir.path());
        let gwdir = dir.path().join("gw");
        std::fs::create_dir_all(&gwdir).unwrap();
        open_path_to(&gwdir);
        let sock = gwdir.join("virtgate.sock");
        let gateway = GatewayBuilder::new(&pki)
            .unix(&sock)
            .domain(qemu.domain_toml())
            .rule(&[SSH_USER], &["web*"], "operator")
            .start(&gwdir);
        let sshd = SshdBuilder::default()
            .streamlocal(streamlocal)
            .start(&dir.path().join("sshd"));
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let key = keys.join("id_ed25519");
        keygen(&key, "ed25519", "");
        sshd.authorize(&key.with_extension("pub"));
        SWorld {
            dir,
            _pki: pki,
            _qemu: qemu,
            gateway,
            sshd,
            sock,
            key,
        }
    }

    fn url(&self, host: &str, sock: &Path) -> String {
        let h = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!(
            "virtgate+ssh://{SSH_USER}@{h}:{}{}",
            self.sshd.port,
            sock.display()
        )
    }

    /// A client whose profile points at `url`, with known_hosts for 127.0.0.1 and ::1
    /// when `known` is set.
    fn client(&self, name: &str, url: &str, keys: Keys, known: bool) -> ClientUser {
        let c = ClientUser::with_profile(&self.dir.path().join(name), &format!("url = {url:?}\n"));
        let ssh = c.home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        if keys == Keys::File {
            std::fs::copy(&self.key, ssh.join("id_ed25519")).unwrap();
        }
        if known {
            let lines =
                self.sshd.known_hosts_line("127.0.0.1") + &self.sshd.known_hosts_line("::1");
            std::fs::write(ssh.join("known_hosts"), lines).unwrap();
        }
        c.with_env("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
    }
}

#[test]
fn whoami_list_and_vnc_over_ssh_as_a_zsh_user() {
    let w = SWorld::start(true);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{SSH_USER}:")))
        .unwrap();
    assert!(
        entry.ends_with("/zsh"),
        "the test user logs in with zsh: {entry}"
    );

    let c = w.client("c", &w.url("127.0.0.1", &w.sock), Keys::File, true);
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], SSH_USER, "{who}");
    assert_eq!(who["method"], "unix", "{who}");

    let list = c.ok(&["list"]);
    assert!(list.contains("web1") && list.contains("running"), "{list}");

    let fwd = c.vnc("web1", &[]);
    let a = w.dir.path().join("a.jpg");
    let b = w.dir.path().join("b.jpg");
    let t = fwd.vnc_target();
    let t2 = t.clone();
    let other = std::thread::spawn(move || snapshot_until(&t2, &b, SEABIOS));
    assert_eq!(snapshot_until(&t, &a, SEABIOS), SEABIOS);
    assert_eq!(other.join().unwrap(), SEABIOS);

    // No shell, no command: sshd started no session for us, only forwards.
    let log = w.sshd.log();
    assert!(log.contains("Accepted publickey for vgtest"), "{log}");
    assert!(
        !log.contains("Starting session"),
        "a session (shell/command) was started:\n{log}"
    );
    assert!(w.gateway.log().contains("method=unix") || w.gateway.log().contains("unix"));
}

#[test]
fn over_ipv6() {
    let w = SWorld::start(true);
    let c = w.client("c6", &w.url("::1", &w.sock), Keys::File, true);
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], SSH_USER, "{who}");
}

#[test]
fn agent_authentication() {
    let w = SWorld::start(true);
    let agent = Agent::start(w.dir.path(), &[&w.key]);
    let c = w
        .client("ag", &w.url("127.0.0.1", &w.sock), Keys::None, true)
        .with_env("SSH_AUTH_SOCK", &agent.socket);
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], SSH_USER);
}

#[test]
fn encrypted_key_file_and_wrong_passphrase() {
    let w = SWorld::start(true);
    let enc = w.dir.path().join("keys/id_enc");
    keygen(&enc, "ed25519", "ssh key secret");
    w.sshd.authorize(&enc.with_extension("pub"));
    let c = w.client("enc", &w.url("127.0.0.1", &w.sock), Keys::None, true);
    std::fs::copy(&enc, c.home.join(".ssh/id_ed25519")).unwrap();

    let out = c.run_env(
        &["whoami", "--json"],
        &[("VIRTGATE_KEY_PASSPHRASE", "ssh key secret")],
    );
    let (o, e) = virtgate_tests::text(&out);
    assert!(out.status.success(), "{e}");
    assert!(o.contains(SSH_USER));

    let out = c.run_env(&["whoami"], &[("VIRTGATE_KEY_PASSPHRASE", "wrong")]);
    let (_, e) = virtgate_tests::text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("wrong passphrase"), "{e}");
    assert!(e.contains("id_ed25519"), "names the key: {e}");
    assert!(!e.contains("cryptographic error"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn unknown_host_key_then_accept_new() {
    let w = SWorld::start(true);
    let c = w.client("uk", &w.url("127.0.0.1", &w.sock), Keys::File, false);
    let e = c.fails(&["whoami"]);
    let fp = {
        let out = virtgate_tests::run(
            std::process::Command::new("ssh-keygen")
                .arg("-lf")
                .arg(&w.sshd.host_pub),
        );
        virtgate_tests::text(&out)
            .0
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert!(e.contains(&fp), "shows the fingerprint {fp}: {e}");
    assert!(e.contains("--accept-new-host-key"), "{e}");
    assert!(
        !c.home.join(".ssh/known_hosts").exists()
            || !std::fs::read_to_string(c.home.join(".ssh/known_hosts"))
                .unwrap()
                .contains("ssh-ed25519")
    );

    assert!(c
        .ok(&["--accept-new-host-key", "whoami"])
        .contains(SSH_USER));
    let kh = std::fs::read_to_string(c.home.join(".ssh/known_hosts")).unwrap();
    assert!(kh.contains(&format!("[127.0.0.1]:{}", w.sshd.port)), "{kh}");
    // Known now: no flag needed, and OpenSSH's own ssh-keygen finds the entry.
    assert!(c.ok(&["whoami"]).contains(SSH_USER));
    let out = virtgate_tests::run(
        std::process::Command::new("ssh-keygen")
            .arg("-F")
            .arg(format!("[127.0.0.1]:{}", w.sshd.port))
            .arg("-f")
            .arg(c.home.join(".ssh/known_hosts")),
    );
    assert!(out.status.success(), "ssh-keygen -F finds the stored key");
}

#[test]
fn changed_host_key_is_refused() {
    let w = SWorld::start(true);
    let c = w.client("ch", &w.url("127.0.0.1", &w.sock), Keys::File, false);
    let other = w.dir.path().join("keys/other_host");
    keygen(&other, "ed25519", "");
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let line = format!(
        "# an old entry\n[127.0.0.1]:{} {} {}\n",
        w.sshd.port,
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    let kh = c.home.join(".ssh/known_hosts");
    std::fs::write(&kh, &line).unwrap();
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains(&kh.display().to_string()) && e.contains(":2"),
        "names file:line: {e}"
    );
    assert!(
        e.to_lowercase().contains("changed") || e.to_lowercase().contains("does not match"),
        "{e}"
    );
    // Even --accept-new-host-key does not override a changed key.
    let e = c.fails(&["--accept-new-host-key", "whoami"]);
    assert!(e.contains(&kh.display().to_string()), "{e}");
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        line,
        "known_hosts untouched"
    );
}

#[test]
fn forwarding_disabled_in_sshd() {
    let w = SWorld::start(false);
    let c = w.client("fw", &w.url("127.0.0.1", &w.sock), Keys::File, true);
    let e = c.fails(&["whoami"]);
    assert!(e.contains("AllowStreamLocalForwarding"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn gateway_socket_absent() {
    let w = SWorld::start(true);
    let missing = w.dir.path().join("gw/nothing-here.sock");
    let c = w.client("abs", &w.url("127.0.0.1", &missing), Keys::File, true);
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains(&missing.display().to_string()),
        "names the socket: {e}"
    );
    assert!(
        e.contains("virtgated"),
        "suggests the gateway is not running: {e}"
    );
}

#[test]
fn key_not_authorized_lists_what_was_tried() {
    let w = SWorld::start(true);
    let c = w.client("na", &w.url("127.0.0.1", &w.sock), Keys::None, true);
    let stranger = c.home.join(".ssh/id_ed25519");
    keygen(&stranger, "ed25519", "");
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains(&stranger.display().to_string()),
        "lists the key tried: {e}"
    );
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn local_unix_socket_root_is_not_special() {
    let w = SWorld::start(true);
    let c = ClientUser::with_profile(
        &w.dir.path().join("local"),
        &format!("url = \"virtgate+unix://{}\"\n", w.sock.display()),
    );
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], "root", "{who}");
    assert_eq!(who["method"], "unix");
    // No rule names root: it sees nothing.
    let list: Value = serde_json::from_str(&c.ok(&["list", "--json"])).unwrap();
    assert_eq!(list["domains"].as_array().map(Vec::len), Some(0), "{list}");
}

#[test]
fn serial_console_over_ssh() {
    use std::time::Duration;
    let w = SWorld::start(true);
    let c = w.client("con", &w.url("127.0.0.1", &w.sock), Keys::File, true);
    let mut console = c.console("web1");
    console.send(b"through sshd\n");
    console.wait_for("through sshd", Duration::from_secs(20));
    assert!(console.leave().success(), "Ctrl-] leaves with status 0");
    assert!(!w.sshd.log().contains("Starting session"));
}

#[test]
fn sshd_not_listening_names_the_address_and_family() {
    let dir = virtgate_tests::tempdir();
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ClientUser::with_profile(
        dir.path(),
        &format!(
            "url = \"virtgate+ssh://{SSH_USER}@127.0.0.1:{port}/run/virtgate/virtgate.sock\"\n"
        ),
    );
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains(&format!("127.0.0.1:{port}")),
        "names the address: {e}"
    );
    assert!(e.contains("IPv4") && e.contains("refused"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn virtgate_web_over_ssh_serves_the_pages_on_localhost() {
    let w = SWorld::start(true);
    let url = w.url("127.0.0.1", &w.sock);
    let c = w.client("web", &url, Keys::File, true);
    let mut cmd = c.cmd();
    cmd.args(["web", "--print"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("virtgate web");
    let stdout = child.stdout.take().expect("stdout");
    let _serving = virtgate_tests::ChildGuard::new(child, "virtgate web");
    let link = virtgate_tests::LineReader::new(stdout)
        .next_line(std::time::Duration::from_secs(30))
        .expect("virtgate web printed no link");
    assert!(
        link.starts_with("http://127.0.0.1:") && link.ends_with("&next=%2Fui%2F"),
        "{link}"
    );
    let base = link.split("/ui/login").next().expect("base").to_owned();
    let jar = w.dir.path().join("jar");
    let curl = |url: &str| -> (String, String) {
        let out = virtgate_tests::run(
            std::process::Command::new(virtgate_tests::system_bin("curl", "curl"))
                .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-b"])
                .arg(&jar)
                .arg("-c")
                .arg(&jar)
                .arg(url),
        );
        let (o, e) = virtgate_tests::text(&out);
        assert!(out.status.success(), "curl {url}: {e}");
        let (body, code) = o.rsplit_once('\n').unwrap_or_default();
        (code.to_owned(), body.to_owned())
    };
    assert_eq!(curl(&format!("{base}/v1/whoami")).0, "401");
    assert_eq!(curl(&link).0, "303");
    let (code, body) = curl(&format!("{base}/v1/whoami"));
    assert_eq!(code, "200", "{body}");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&who["user"], &who["method"]),
        (&SSH_USER.into(), &"unix".into()),
        "{who}"
    );
    let (code, body) = curl(&format!("{base}/ui/"));
    assert!(code == "200" && body.contains("<html"), "{code} {body}");
    let (code, body) = curl(&format!("{base}/v1/domains"));
    assert!(code == "200" && body.contains("web1"), "{code} {body}");
}
