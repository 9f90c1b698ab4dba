//! Least privilege (issue 13 part 4): `virtgated run` and `demo` refuse root unless
//! `--allow-root` says so (then they serve, with one warning), the service user starts it
//! without the flag; a gateway key others may read and a CA, CRL others may write are
//! refused at `check-config`, start and reload with the exact `chmod` that fixes them (and
//! running that `chmod` fixes them), the package's layout (`server.key` root:GROUP 0640)
//! passes; the client refuses a key group or others may read or write and a CA they may
//! write, and `virtgate doctor` says the same. Needs root (files are given to `nobody`).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::pki::pki_cmd;
use virtgate_tests::{
    bin, run, system_bin, text, ChildGuard, ClientUser, GatewayBuilder, LineReader, Pki,
};

/// The service user and its group in these tests (Debian's unprivileged pair).
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// A temp folder the service user may traverse; panics unless the tests run as root.
fn tmp() -> tempfile::TempDir {
    let t = virtgate_tests::tempdir();
    assert_eq!(
        std::fs::metadata(t.path()).unwrap().uid(),
        0,
        "these tests run virtgated as root and as `{USER}`: run them as root"
    );
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `virtgated ARGS` as root; (exit code, stdout, stderr).
fn virtgated(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(Command::new(bin("virtgated")).args(args));
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

/// `virtgated ARGS` as the service user, with its own group only.
fn setpriv(args: &[&str]) -> Command {
    let mut c = Command::new(system_bin("setpriv", "util-linux"));
    c.args(["--reuid", USER, "--regid", GROUP, "--clear-groups"])
        .arg(bin("virtgated"))
        .args(args)
        .env_remove("VIRTGATE_GATEWAY_CONFIG");
    c
}

/// The `hint: run chmod …` line of `stderr`: run exactly that command (up to a remark in
/// parentheses) and return it.
fn run_the_hint(stderr: &str) -> String {
    let hint = stderr
        .lines()
        .find_map(|l| l.strip_prefix("hint: run "))
        .unwrap_or_else(|| panic!("no `hint: run …` in {stderr}"));
    let command = hint.split(" (").next().unwrap_or(hint).trim().to_owned();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"chmod"), "{hint}");
    let out = run(Command::new(system_bin("chmod", "coreutils")).args(&words[1..]));
    assert!(out.status.success(), "{command}: {:?}", text(&out));
    command
}

/// The mode bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn root_is_refused_without_allow_root_and_served_with_it() {
    let dir = tmp();
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    let sock = d.join("gw.sock");
    let b = GatewayBuilder::new(&pki)
        .unix(&sock)
        .control(&d.join("control.sock"))
        .rule(&["alice"], &["*"], "viewer");
    let config = b.write_config(&d.join("gw"));
    let cfg = config.to_str().unwrap();
    let why = "refuses to run as root: a flaw in a network-facing service running as root \
               gives away the whole host";

    for args in [vec!["--config", cfg, "run"], vec!["--config", cfg]] {
        let (code, o, e) = virtgated(&args);
        assert_eq!(code, Some(1), "{args:?}: {o}{e}");
        assert_eq!(
            e,
            format!(
                "error: virtgated run {why}\nhint: run it as its own user: the package's \
                 virtgated.service has User=virtgate (by hand: `runuser -u virtgate -- \
                 virtgated run`); or pass --allow-root to run it as root anyway\n"
            ),
            "{args:?}"
        );
        assert!(!o.contains("listening on"), "{o}");
        assert!(!sock.exists(), "nothing may listen: {}", sock.display());
    }
    let demo = d.join("demo");
    let (code, o, e) = virtgated(&["demo", "--dir", demo.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{o}{e}");
    assert!(
        e.starts_with(&format!("error: virtgated demo {why}\n")),
        "{e}"
    );
    assert!(
        e.ends_with(
            "hint: run it as an ordinary user (the demo needs no privilege: `runuser -u USER -- \
             virtgated demo`); or pass --allow-root to run it as root anyway\n"
        ),
        "{e}"
    );
    assert!(!demo.exists(), "the refused demo made no files");

    // what does not serve stays allowed to root
    let (code, o, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(0), "{o}{e}");
    assert!(o.starts_with(&format!("{cfg}: ok")), "{o}");
    let (code, o, e) = virtgated(&["schema"]);
    assert_eq!(code, Some(0), "{e}");
    assert!(o.contains("\"listen\""), "the schema: {o}");

    // --allow-root: it serves, says once that it runs as root, and reloads as root
    let gw = b.start(&d.join("gw"));
    let alice = pki.client("alice", None);
    let user = ClientUser::new(&d.join("alice"), &gw.url(0), &alice);
    assert!(user.ok(&["whoami"]).contains("alice"));
    let log = gw.log();
    assert_eq!(
        log.matches(
            "running as root (--allow-root): a flaw in the gateway would give away the whole host"
        )
        .count(),
        1,
        "{log}"
    );
    let out = gw.reload();
    let (o, e) = text(&out);
    assert!(out.status.success(), "reload as root: {o}{e}");
    assert!(o.contains("reloaded"), "{o}");
}

#[test]
fn the_packaged_layout_serves_as_the_service_user_without_the_flag() {
    let dir = tmp();
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    // what `virtgate-pki issue-server --out D --group G` makes: root:G 0750, key 0640
    let files = d.join("pki");
    pki_cmd(
        &pki.dir,
        &[
            "issue-server",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            files.to_str().unwrap(),
            "--group",
            GROUP,
        ],
    );
    let key = files.join("server.key");
    assert_eq!(mode(&key), 0o640);
    let config = GatewayBuilder::new(&pki)
        .server_cert(&files.join("server.pem"), &key, &files.join("ca.pem"))
        .crl(&files.join("crl.pem"))
        .libvirt(
            "test:///default",
            &d.join("no-libvirt-sock"),
            &d.join("no-libvirt-sock-ro"),
        )
        .listen(&["127.0.0.1:0"])
        .rule(&["alice"], &["*"], "viewer")
        .write_config(&d.join("gw"));
    let cfg = config.to_str().unwrap();
    let (code, o, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(0), "check-config as root: {o}{e}");
    let out = run(&mut setpriv(&["--config", cfg, "check-config"]));
    assert!(
        out.status.success(),
        "check-config as {USER}: {:?}",
        text(&out)
    );

    // run as the service user: no flag needed, no warning, it serves
    let log = d.join("gateway.log");
    let child = setpriv(&["--config", cfg, "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start virtgated as the service user");
    let mut guard = ChildGuard::new(child, "virtgated as nobody");
    let stdout = LineReader::new(guard.child_mut().stdout.take().expect("piped stdout"));
    let addr = loop {
        match stdout.next_line(Duration::from_secs(30)) {
            Some(l) => {
                if let Some(a) = l.trim().strip_prefix("listening on ") {
                    break a.split_whitespace().next().unwrap_or(a).to_owned();
                }
            }
            None => panic!(
                "virtgated as {USER} did not listen ({:?}): {}",
                guard.try_status(),
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", guard.id())).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t65534")),
        "runs as {USER}: {status}"
    );
    let alice = pki.client("alice", None);
    let user = ClientUser::new(&d.join("alice"), &format!("virtgate://{addr}"), &alice);
    assert!(user.ok(&["whoami"]).contains("alice"));
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("running as root"),
        "no root warning for {USER}"
    );
    drop(guard);

    // the same key readable by everyone: the fix keeps the group's read (chmod 640)
    chmod(&key, 0o644);
    let want = format!(
        "error: tls.key {} is readable by other users (mode 0644)\nhint: run chmod 640 {} (the \
         gateway's user reads it through the file's group; nobody else may)\n",
        key.display(),
        key.display()
    );
    let out = run(&mut setpriv(&["--config", cfg, "check-config"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert_eq!(text(&out).1, want, "as {USER}");
    let (code, _, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(1));
    assert_eq!(e, want, "as root, for a root:{GROUP} file");
    assert_eq!(run_the_hint(&e), format!("chmod 640 {}", key.display()));
    assert_eq!(mode(&key), 0o640);
    let out = run(&mut setpriv(&["--config", cfg, "check-config"]));
    assert!(out.status.success(), "after the chmod: {:?}", text(&out));
}

#[test]
fn a_gateway_key_others_may_read_is_refused_until_the_chmod_of_the_hint() {
    let dir = tmp();
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    let crl = pki.crl();
    let sock = d.join("gw.sock");
    let b = GatewayBuilder::new(&pki)
        .unix(&sock)
        .crl(&crl)
        .rule(&["alice"], &["*"], "viewer");
    let config = b.write_config(&d.join("gw"));
    let cfg = config.to_str().unwrap();
    let key = pki.server_key.display().to_string();

    chmod(&pki.server_key, 0o644);
    let want = format!(
        "error: tls.key {key} is readable by other users (mode 0644)\nhint: run chmod 600 {key}\n"
    );
    let (code, o, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(1), "{o}{e}");
    assert_eq!(e, want);
    let (code, o, e) = virtgated(&["--allow-root", "--config", cfg, "run"]);
    assert_eq!(code, Some(1), "{o}{e}");
    assert!(e.ends_with(&want), "{e}");
    assert!(
        !o.contains("listening on") && !sock.exists(),
        "nothing listens: {o}"
    );
    assert_eq!(run_the_hint(&e), format!("chmod 600 {key}"));
    assert_eq!(mode(&pki.server_key), 0o600);

    // the CA and the CRL the gateway trusts: nobody but their owner may write them
    chmod(&pki.ca_pem, 0o666);
    let ca = pki.ca_pem.display().to_string();
    let (code, _, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(
        e,
        format!(
            "error: tls.client_ca {ca} is writable by its group and other users: whoever can \
             change it can make the gateway trust them (mode 0666)\nhint: run chmod go-w {ca}\n"
        )
    );
    assert_eq!(run_the_hint(&e), format!("chmod go-w {ca}"));
    assert_eq!(mode(&pki.ca_pem), 0o644);
    chmod(&crl, 0o664);
    let (code, _, e) = virtgated(&["--config", cfg, "check-config"]);
    assert_eq!(code, Some(1), "{e}");
    let crl_shown = crl.display().to_string();
    assert_eq!(
        e,
        format!(
            "error: tls.crl {crl_shown} is writable by its group: whoever can change it can make \
             the gateway trust them (mode 0664)\nhint: run chmod go-w {crl_shown}\n"
        )
    );
    run_the_hint(&e);

    // fixed: it starts; a key opened up later is refused by reload, and the gateway serves on
    let gw = b.start(&d.join("gw"));
    let alice = pki.client("alice", None);
    let user = ClientUser::new(&d.join("alice"), &gw.url(0), &alice);
    assert!(user.ok(&["whoami"]).contains("alice"));
    chmod(&pki.server_key, 0o604);
    let out = gw.reload();
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert_eq!(
        e,
        format!(
            "error: tls.key {key} is readable by other users (mode 0604)\nhint: run chmod 600 {key}\n"
        )
    );
    gw.signal("HUP");
    let line = virtgate_tests::poll(
        "the refused reload in the log",
        Duration::from_secs(10),
        || {
            gw.log()
                .lines()
                .find(|l| l.contains("reload refused"))
                .map(str::to_owned)
        },
    );
    assert!(
        line.contains(&format!(
            "tls.key {key} is readable by other users (mode 0604)"
        )),
        "{line}"
    );
    assert!(user.ok(&["whoami"]).contains("alice"), "still serving");
}

/// The `step` entry of `virtgate doctor --json`.
fn doctor_step(user: &ClientUser, step: &str) -> Value {
    let out = user.run(&["doctor", "--json"]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "doctor fails: {o}{e}");
    let v: Value = serde_json::from_str(&o).expect("doctor --json prints JSON");
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["step"] == step))
        .cloned()
        .unwrap_or_else(|| panic!("no step {step} in {o}"))
}

/// The text of the `error:` and `hint:` lines of a failed `virtgate` command.
fn error_and_hint(stderr: &str) -> (String, String) {
    let line = |p: &str| -> String {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no `{p}` line in {stderr}"))
            .to_owned()
    };
    (line("error: "), line("hint: "))
}

#[test]
fn the_client_refuses_a_key_others_may_read_and_a_ca_others_may_write() {
    let dir = tmp();
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    let gw = GatewayBuilder::new(&pki)
        .rule(&["alice"], &["*"], "viewer")
        .start(&d.join("gw"));
    let alice = pki.client("alice", Some("alice pw"));
    assert_eq!(mode(&alice.key), 0o600, "virtgate-pki writes keys 0600");
    let user = ClientUser::new(&d.join("alice"), &gw.url(0), &alice);
    chmod(&user.config, 0o600);
    assert!(user.ok(&["whoami"]).contains("alice"));
    let key = alice.key.display().to_string();

    chmod(&alice.key, 0o644);
    let (error, hint) = error_and_hint(&user.fails(&["whoami"]));
    assert_eq!(
        error,
        format!(
            "the key {key} is readable by its group and other users (mode 0644): whoever can \
             read it can use it or try passphrases offline"
        )
    );
    assert_eq!(
        hint,
        format!(
            "run chmod 600 {key} (a private key must be yours alone; OpenSSH refuses such keys \
             too)"
        )
    );
    let step = doctor_step(&user, "key");
    assert_eq!(step["status"], "fail", "{step}");
    assert_eq!(step["detail"], error.as_str(), "{step}");
    assert_eq!(step["hint"], hint.as_str(), "{step}");
    // readable by the group alone is refused too, as OpenSSH does
    chmod(&alice.key, 0o640);
    let (error, _) = error_and_hint(&user.fails(&["whoami"]));
    assert!(
        error.starts_with(&format!(
            "the key {key} is readable by its group (mode 0640)"
        )),
        "{error}"
    );
    chmod(&alice.key, 0o600);
    assert!(user.ok(&["whoami"]).contains("alice"));

    let ca = alice.ca.display().to_string();
    chmod(&alice.ca, 0o666);
    let (error, hint) = error_and_hint(&user.fails(&["whoami"]));
    assert_eq!(
        error,
        format!(
            "the CA file {ca} is writable by its group and other users (mode 0666): whoever \
             can change it can make virtgate trust a gateway of their own"
        )
    );
    assert_eq!(hint, format!("run chmod go-w {ca}"));
    let step = doctor_step(&user, "ca");
    assert_eq!(step["status"], "fail", "{step}");
    assert_eq!(step["detail"], error.as_str(), "{step}");
    assert_eq!(step["hint"], hint.as_str(), "{step}");
    // the key's own mode is still looked at when the CA stops the rest
    chmod(&alice.key, 0o604);
    let step = doctor_step(&user, "key");
    assert_eq!(step["status"], "fail", "{step}");
    assert_eq!(
        step["hint"],
        format!("run chmod 600 {key} (a private key must be yours alone; OpenSSH refuses such keys too)").as_str()
    );
    chmod(&alice.key, 0o600);
    let run_hint = format!("hint: {hint}");
    assert_eq!(run_the_hint(&run_hint), format!("chmod go-w {ca}"));
    assert_eq!(mode(&alice.ca), 0o644);
    assert!(user.ok(&["whoami"]).contains("alice"));
    assert!(
        user.ok(&["doctor"]).ends_with("all checks passed\n"),
        "doctor passes again"
    );
}
