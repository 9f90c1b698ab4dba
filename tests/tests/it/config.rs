//! `virtgated check-config`, `schema` and start-up failures: the admin's errors name the
//! file, line and column, or the address and path involved, with a hint.

use std::process::Command;

use virtgate_tests::fixture::process::run;
use virtgate_tests::{bin, text, GatewayBuilder, Pki};

fn virtgated(args: &[&str]) -> (Option<i32>, String) {
    let out = run(Command::new(bin("virtgated")).args(args));
    let (o, e) = text(&out);
    (out.status.code(), format!("{o}{e}"))
}

#[test]
fn check_config_accepts_a_good_file_and_names_unknown_keys_by_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let good = GatewayBuilder::new(&pki).rule(&["alice"], &["*"], "viewer");
    let f = good.write_config(&dir.path().join("good"));
    let (code, out) = virtgated(&["--config", f.to_str().unwrap(), "check-config"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok"), "{out}");

    let text = good
        .config_text()
        .replace("[tls]\n", "[tls]\nciphers = \"all\"\n");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("ciphers")).unwrap() + 1;
    let (code, out) = virtgated(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("bad.toml:{line}:1")),
        "line:col of the key: {out}"
    );
    assert!(out.contains("ciphers"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    assert!(
        out.contains("client_ca"),
        "the hint lists the valid keys: {out}"
    );

    // `run` refuses the same file the same way.
    let (code, out) = virtgated(&["--config", bad.to_str().unwrap(), "--allow-root", "run"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("bad.toml:{line}:1")), "{out}");
}

#[test]
fn schema_describes_the_config_contract() {
    let (code, out) = virtgated(&["schema"]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("schema is JSON");
    let s = v.to_string();
    for key in [
        "listen",
        "tls",
        "client_ca",
        "backend",
        "rule",
        "audit",
        "qmp",
        "vnc",
    ] {
        assert!(s.contains(&format!("\"{key}\"")), "schema lacks {key}");
    }
}

#[test]
fn missing_config_and_missing_server_key_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere.toml");
    let (code, out) = virtgated(&["--config", nowhere.to_str().unwrap(), "check-config"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(nowhere.to_str().unwrap()) && out.contains("hint:"),
        "{out}"
    );

    let pki = Pki::new(dir.path(), "ca");
    let gone = dir.path().join("gone.key");
    let f = GatewayBuilder::new(&pki)
        .server_cert(&pki.server_cert, &gone, &pki.ca_pem)
        .write_config(&dir.path().join("gw"));
    let (code, out) = virtgated(&["--config", f.to_str().unwrap(), "--allow-root", "run"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(gone.to_str().unwrap()),
        "names the missing key: {out}"
    );
    assert!(out.contains("hint:"), "{out}");
}

#[test]
fn second_gateway_on_a_busy_port_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let first = GatewayBuilder::new(&pki).start(&dir.path().join("one"));
    let busy = first.addrs[0].to_string();
    let f = GatewayBuilder::new(&pki)
        .listen(&[&busy])
        .write_config(&dir.path().join("two"));
    let (code, out) = virtgated(&["--config", f.to_str().unwrap(), "--allow-root", "run"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&busy), "names {busy}: {out}");
    assert!(out.to_lowercase().contains("in use"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// A CRL of `pki`'s CA whose nextUpdate is long past, made with openssl's own `ca -gencrl`.
fn stale_crl(pki: &Pki, dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\n",
            dir.display()
        ),
    )
    .unwrap();
    let crl = dir.join("stale-crl.pem");
    let out = run(
        Command::new(virtgate_tests::system_bin("openssl", "openssl"))
            .args(["ca", "-batch", "-gencrl", "-config"])
            .arg(&cnf)
            .arg("-keyfile")
            .arg(pki.dir.join("ca.key"))
            .arg("-cert")
            .arg(&pki.ca_pem)
            .args([
                "-crl_lastupdate",
                "20240101000000Z",
                "-crl_nextupdate",
                "20240201000000Z",
                "-out",
            ])
            .arg(&crl),
    );
    let (o, e) = text(&out);
    assert!(out.status.success(), "openssl ca -gencrl: {o}{e}");
    crl
}

#[test]
fn check_config_refuses_what_would_fail_at_start_and_notes_what_is_odd() {
    let dir = virtgate_tests::tempdir();
    let d = dir.path();
    let pki = Pki::new(d, "ca");
    let check = |b: GatewayBuilder, name: &str| -> (Option<i32>, String) {
        let f = b.write_config(&d.join(name));
        virtgated(&["--config", f.to_str().unwrap(), "check-config"])
    };
    let (code, out) = check(
        GatewayBuilder::new(&pki).audit(&d.join("no-such-dir/audit.jsonl")),
        "audit",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("audit.path") && out.contains("no-such-dir") && out.contains("hint:"),
        "{out}"
    );
    let (code, out) = check(
        GatewayBuilder::new(&pki).unix(&d.join("no-run/virtgate.sock")),
        "unix",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("listen.unix") && out.contains("no-run"),
        "{out}"
    );
    let (cert, key) = pki.expired_server(d);
    let (code, out) = check(
        GatewayBuilder::new(&pki).server_cert(&cert, &key, &pki.ca_pem),
        "expired",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("expired") && out.contains("hint: issue a new one"),
        "{out}"
    );
    let (code, out) = check(
        GatewayBuilder::new(&pki).rule(&["group:wheel-vg-none"], &["*"], "admin"),
        "group",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("wheel-vg-none") && out.contains("groupadd"),
        "{out}"
    );
    // not errors, but said: a stale CRL, a rule user with no local account
    let crl = stale_crl(&pki, d);
    let (code, out) = check(
        GatewayBuilder::new(&pki)
            .crl(&crl)
            .rule(&["nobody-vg-x"], &["*"], "viewer"),
        "notes",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("note: tls.crl") && out.contains("past its nextUpdate"),
        "{out}"
    );
    assert!(
        out.contains("nobody-vg-x") && out.contains("no account"),
        "{out}"
    );
}
