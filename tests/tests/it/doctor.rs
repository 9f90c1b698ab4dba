//! `virtgate doctor` against a real gateway: a good profile passes every step and shows who
//! we are and what we see; a wrong CA file, an expired certificate, a wrong passphrase and no
//! network at all each fail the step that is wrong, with a hint, while the steps that can
//! still run pass, and the run ends with exit status 1 (and no `error:` line).

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::process::run_deadline;
use virtgate_tests::{bin, system_bin, text, ClientUser, Pki};

use crate::World;

/// Run `virtgate doctor ARGS` as `user`; returns the output.
fn doctor(user: &ClientUser, args: &[&str]) -> Output {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    user.run(&all)
}

/// The lines of a human report, by step name: (mark, step, rest of the line).
fn lines(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (mark, rest) = l.split_once(' ')?;
            if !["✓", "✗", "!", "–"].contains(&mark) {
                return None;
            }
            let rest = rest.trim_start();
            let (step, detail) = match rest.split_once("  ") {
                Some((s, d)) => (s.trim().to_owned(), d.trim().to_owned()),
                None => (rest.to_owned(), String::new()),
            };
            Some((mark.to_owned(), step, detail))
        })
        .collect()
}

/// The mark of the first line of `step`.
fn mark<'a>(lines: &'a [(String, String, String)], step: &str) -> &'a str {
    lines
        .iter()
        .find(|(_, s, _)| s == step)
        .map(|(m, _, _)| m.as_str())
        .unwrap_or_else(|| panic!("no step `{step}` in {lines:?}"))
}

/// The config file private, as a careful user keeps it.
fn private(user: &ClientUser) {
    std::fs::set_permissions(&user.config, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_good_profile_passes_every_step() {
    let w = World::start(|g| g);
    let alice = w.client("alice", 0, &w.alice);
    private(&alice);
    let out = doctor(&alice, &[]);
    let (o, e) = text(&out);
    println!("--- doctor with a good profile ---\n{o}---");
    assert_eq!(out.status.code(), Some(0), "doctor failed:\n{o}\n{e}");
    assert!(!e.contains("error:"), "{e}");
    let l = lines(&o);
    for (m, step, detail) in &l {
        assert_eq!(m, "✓", "step {step} is not ✓: {detail}\n{o}");
    }
    for step in [
        "config", "profile", "ca", "cert", "key", "dns", "tcp", "tls", "accepted", "clock",
        "whoami", "domains",
    ] {
        assert_eq!(mark(&l, step), "✓", "{o}");
    }
    assert!(o.contains("✓ whoami") && o.contains("alice (method"), "{o}");
    assert!(o.contains("1 visible: web1 (operator)"), "{o}");
    assert!(
        o.contains("the gateway accepted the certificate CN=alice"),
        "{o}"
    );
    assert!(o.ends_with("all checks passed\n"), "{o}");

    // the same as JSON, for scripts
    let out = doctor(&alice, &["--json"]);
    let (o, e) = text(&out);
    println!("--- doctor --json ---\n{o}---");
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    let v: Value = serde_json::from_str(&o).expect("doctor --json prints JSON");
    let steps = v.as_array().expect("an array of steps");
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    for want in ["config", "key", "tls", "accepted", "whoami", "domains"] {
        assert!(names.contains(&want), "{want} missing in {names:?}");
    }
    for s in steps {
        assert_eq!(s["status"], "ok", "{s}");
        assert!(s["detail"].is_string() && s["hint"].is_null(), "{s}");
    }
    let domains = steps.iter().find(|s| s["step"] == "domains").unwrap();
    assert!(
        domains["detail"].as_str().unwrap().contains("web1"),
        "{domains}"
    );

    // a config file others can read is a warning, not a failure
    std::fs::set_permissions(&alice.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = doctor(&alice, &[]);
    let (o, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert!(o.starts_with("! config"), "{o}");
    assert!(
        o.contains("readable by others (mode 0644)") && o.contains("hint: chmod 600"),
        "{o}"
    );
}

#[test]
fn a_wrong_ca_file_fails_tls_and_names_the_file() {
    let w = World::start(|g| g);
    let other = Pki::new(w.dir.path(), "other");
    let mut cert = w.alice.clone();
    cert.ca = other.ca_pem.clone();
    let alice = w.client("alice", 0, &cert);
    private(&alice);
    let out = doctor(&alice, &[]);
    let (o, e) = text(&out);
    println!("--- doctor with a wrong CA file ---\n{o}---");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    assert!(
        !e.contains("error:"),
        "doctor reports failures in its steps: {e}"
    );
    let l = lines(&o);
    for step in ["config", "profile", "ca", "key", "dns", "tcp"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    // the certificate is fine, but that CA file does not verify it either
    assert_eq!(mark(&l, "cert"), "!", "{o}");
    assert_eq!(mark(&l, "tls"), "✗", "{o}");
    let ca = other.ca_pem.display().to_string();
    assert!(o.contains("not issued by our CA (unknown issuer)"), "{o}");
    assert!(o.contains(&format!("hint: is {ca}")), "{o}");
    // what the gateway presented, and the CA it really comes from
    assert!(
        o.contains("presented a certificate for localhost, 127.0.0.1, ::1"),
        "{o}"
    );
    assert!(o.contains("issued by CN=ca test CA"), "{o}");
    assert!(
        o.contains(&format!("{ca} holds the CA CN=other test CA")),
        "{o}"
    );
    for step in ["accepted", "whoami", "domains"] {
        assert_eq!(mark(&l, step), "–", "{o}");
    }
    assert!(o.ends_with("1 check(s) failed\n"), "{o}");
}

#[test]
fn an_expired_certificate_is_named_locally_and_by_the_gateway() {
    let w = World::start(|g| g);
    let old = w.pki.expired_client("alice-old");
    let user = w.client("old", 0, &old);
    private(&user);
    let out = doctor(&user, &[]);
    let (o, e) = text(&out);
    println!("--- doctor with an expired certificate ---\n{o}---");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    let l = lines(&o);
    assert_eq!(mark(&l, "cert"), "✗", "{o}");
    assert!(o.contains("expired on") && o.contains("1 day ago"), "{o}");
    assert!(o.contains("virtgate-pki issue-client"), "{o}");
    for step in ["key", "dns", "tcp", "tls"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert_eq!(mark(&l, "accepted"), "✗", "{o}");
    assert!(
        o.contains("the gateway rejected our client certificate: it has expired"),
        "{o}"
    );
}

#[test]
fn a_wrong_passphrase_fails_the_key_but_still_looks_at_the_gateway() {
    let w = World::start(|g| g);
    let alice = w.client("alice", 0, &w.alice);
    private(&alice);
    let wrong = w.dir.path().join("wrong-pass");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = doctor(&alice, &["--passphrase-file", wrong.to_str().unwrap()]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    let l = lines(&o);
    assert_eq!(mark(&l, "key"), "✗", "{o}");
    assert!(
        o.contains(&format!("wrong passphrase for {}", w.alice.key.display())),
        "{o}"
    );
    // the gateway is still reached and its certificate verified, without ours
    for step in ["cert", "dns", "tcp", "tls"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert_eq!(mark(&l, "accepted"), "–", "{o}");
}

#[test]
fn no_network_fails_fast_and_still_checks_the_local_files() {
    let w = World::start(|g| g);
    let port = w.gateway.addrs[0].port();
    let mut cert = w.alice.clone();
    cert.ca = w.pki.ca_pem.clone();
    let alice = ClientUser::new(
        &w.dir.path().join("offline"),
        &format!("virtgate://localhost:{port}"),
        &cert,
    );
    private(&alice);
    // a network namespace of its own: no interface is up, not even loopback
    let mut cmd = Command::new(system_bin("unshare", "util-linux"));
    cmd.arg("-n").arg(bin("virtgate")).arg("doctor");
    for (k, v) in alice.cmd().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // well within one connect timeout (10 s): nothing may wait for a network that is not there
    let out = run_deadline(&mut cmd, Duration::from_secs(8));
    let (o, e) = text(&out);
    println!("--- doctor with no network ---\n{o}---");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    let l = lines(&o);
    for step in ["config", "profile", "ca", "cert", "key", "dns A"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert_eq!(mark(&l, "tcp"), "✗", "{o}");
    assert!(o.contains(&format!("127.0.0.1:{port} (IPv4)")), "{o}");
    assert!(o.contains("unreachable"), "{o}");
    assert!(
        o.contains("hint: this machine has no route to 127.0.0.1"),
        "{o}"
    );
    for step in ["tls", "accepted", "whoami", "domains"] {
        assert_eq!(mark(&l, step), "–", "{o}");
    }
}

#[test]
fn ssh_an_unknown_host_key_is_shown_and_never_stored() {
    use virtgate_tests::fixture::sshd::{keygen, open_path_to, SshdBuilder, SSH_USER};
    use virtgate_tests::{GatewayBuilder, QemuBuilder};
    let dir = virtgate_tests::tempdir();
    open_path_to(dir.path());
    let pki = Pki::new(dir.path(), "ca");
    let qemu = QemuBuilder::new("web1").start(dir.path());
    let gwdir = dir.path().join("gw");
    std::fs::create_dir_all(&gwdir).unwrap();
    open_path_to(&gwdir);
    let sock = gwdir.join("virtgate.sock");
    let _gateway = GatewayBuilder::new(&pki)
        .unix(&sock)
        .domain(qemu.domain_toml())
        .rule(&[SSH_USER], &["web*"], "operator")
        .start(&gwdir);
    let sshd = SshdBuilder::default()
        .streamlocal(true)
        .start(&dir.path().join("sshd"));
    let key = dir.path().join("id_ed25519");
    keygen(&key, "ed25519", "");
    sshd.authorize(&key.with_extension("pub"));
    let url = format!(
        "virtgate+ssh://{SSH_USER}@127.0.0.1:{}{}",
        sshd.port,
        sock.display()
    );
    let user = ClientUser::with_profile(&dir.path().join("c"), &format!("url = {url:?}\n"))
        .with_env("SSH_AUTH_SOCK", "/nonexistent/agent.sock");
    private(&user);
    let ssh = user.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::copy(&key, ssh.join("id_ed25519")).unwrap();

    // unknown: the fingerprint is shown, and doctor stores nothing, whatever the flag says
    let out = doctor(&user, &["--accept-new-host-key"]);
    let (o, e) = text(&out);
    println!("--- doctor with an unknown SSH host key ---\n{o}---");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    let l = lines(&o);
    for step in ["config", "profile", "dns", "tcp"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert!(
        o.contains(&format!("{}", ssh.join("id_ed25519").display())),
        "{o}"
    );
    assert_eq!(mark(&l, "ssh host key"), "✗", "{o}");
    assert!(
        o.contains(&format!(
            "the SSH host key of [127.0.0.1]:{} is not known: ssh-ed25519 SHA256:",
            sshd.port
        )),
        "{o}"
    );
    assert!(o.contains("doctor itself never stores a host key"), "{o}");
    for step in ["ssh login", "gateway socket", "accepted", "whoami"] {
        assert_eq!(mark(&l, step), "–", "{o}");
    }
    assert!(
        !ssh.join("known_hosts").exists(),
        "doctor wrote known_hosts"
    );

    // known: every step through sshd to the gateway passes
    std::fs::write(ssh.join("known_hosts"), sshd.known_hosts_line("127.0.0.1")).unwrap();
    let out = doctor(&user, &[]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    let l = lines(&o);
    for step in [
        "ssh host key",
        "ssh login",
        "gateway socket",
        "accepted",
        "whoami",
    ] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert!(o.contains(&format!("{SSH_USER} (method unix")), "{o}");
    assert!(o.contains("1 visible: web1"), "{o}");
}

#[test]
fn kerberos_without_a_ticket_and_with_one() {
    use virtgate_tests::fixture::kdc::{Kdc, REALM};
    use virtgate_tests::{GatewayBuilder, QemuBuilder};
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let kdc = Kdc::start(&dir.path().join("kdc"));
    kdc.add_user("alice", "alice-pw");
    let keytab = kdc.add_service("HTTP/localhost");
    let qemu = QemuBuilder::new("web1").start(dir.path());
    let gateway = GatewayBuilder::new(&pki)
        .domain(qemu.domain_toml())
        .rule(&["alice"], &["web*"], "operator")
        .extra(&format!(
            "[kerberos]\nservice = \"HTTP\"\nhost = \"localhost\"\nstrip_realm = [\"{REALM}\"]\n\
             keytab = {:?}\n",
            keytab.display().to_string()
        ))
        .env("KRB5_CONFIG", &kdc.krb5_conf)
        .env("KRB5RCACHEDIR", dir.path())
        .start(&dir.path().join("gw"));
    let cc = dir.path().join("cc-alice");
    let profile = format!(
        "url = \"virtgate://localhost:{}\"\nca = {:?}\nauth = \"kerberos\"\n",
        gateway.addrs[0].port(),
        pki.ca_pem.display().to_string()
    );
    let user = ClientUser::with_profile(&dir.path().join("c"), &profile)
        .with_env("KRB5_CONFIG", &kdc.krb5_conf)
        .with_env("KRB5CCNAME", format!("FILE:{}", cc.display()));
    private(&user);

    // no ticket yet: that step fails with `kinit`, the gateway is still looked at
    let out = doctor(&user, &[]);
    let (o, e) = text(&out);
    println!("--- doctor with Kerberos and no ticket ---\n{o}---");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    let l = lines(&o);
    assert_eq!(mark(&l, "kerberos ticket"), "✗", "{o}");
    assert!(
        o.contains("no Kerberos ticket") && o.contains("hint: run kinit"),
        "{o}"
    );
    assert_eq!(mark(&l, "kerberos service"), "–", "{o}");
    for step in ["ca", "dns A", "tls"] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert_eq!(mark(&l, "accepted"), "–", "{o}");

    // after kinit: the ticket, the service ticket and the login
    kdc.kinit("alice", "alice-pw", &cc, None);
    let out = doctor(&user, &[]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    let l = lines(&o);
    for step in [
        "kerberos ticket",
        "kerberos service",
        "accepted",
        "whoami",
        "domains",
    ] {
        assert_eq!(mark(&l, step), "✓", "{step}:\n{o}");
    }
    assert!(o.contains(&format!("alice@{REALM} in cache FILE:")), "{o}");
    assert!(
        o.contains(&format!(
            "the KDC issued a ticket for HTTP/localhost@{REALM}"
        )),
        "{o}"
    );
    assert!(
        o.contains(&format!("accepted the Kerberos login as alice@{REALM}")),
        "{o}"
    );
}
