//! The CA: revocation and CRLs checked by `openssl verify -crl_check`, CSRs, refusing to
//! overwrite, passphrase handling, an encrypted CA key, expired and foreign certificates.

use super::*;

#[test]
fn revoke_and_crl_are_honoured_by_openssl() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    pki(
        &ca,
        &["issue-client", "alice", "--out", "a1", "--no-passphrase"],
    )
    .ok("alice 1");
    pki(
        &ca,
        &["issue-client", "alice", "--out", "a2", "--no-passphrase"],
    )
    .ok("alice 2");
    pki(
        &ca,
        &["issue-client", "bob", "--out", "b", "--no-passphrase"],
    )
    .ok("bob");

    let r = pki(&ca, &["revoke", "alice", "--reason", "keyCompromise"]).ok("revoke");
    assert!(
        r.stdout.contains("revoked 2 certificates of alice"),
        "{}",
        r.stdout
    );
    let crl = openssl(t, &["crl", "-in", "ca/crl.pem", "-noout", "-text"]).ok("openssl crl");
    assert!(crl.stdout.contains("Key Compromise"), "{}", crl.stdout);
    assert_eq!(mode(&ca.join("crl.pem")), 0o644);

    for revoked in ["a1/alice.pem", "a2/alice.pem"] {
        let r = openssl(
            t,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca/ca.pem",
                "-CRLfile",
                "ca/crl.pem",
                revoked,
            ],
        );
        assert_ne!(r.code, Some(0), "{revoked} passed the CRL check");
        assert!(
            r.stdout.contains("revoked") || r.stderr.contains("revoked"),
            "{}{}",
            r.stdout,
            r.stderr
        );
    }
    openssl(
        t,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca/ca.pem",
            "-CRLfile",
            "ca/crl.pem",
            "b/bob.pem",
        ],
    )
    .ok("bob verify");

    // the crl command publishes a new number
    let before = openssl(t, &["crl", "-in", "ca/crl.pem", "-noout", "-crlnumber"])
        .ok("n1")
        .stdout;
    pki(&ca, &["crl", "--out", "copy.pem"]).ok("crl");
    let after = openssl(t, &["crl", "-in", "ca/crl.pem", "-noout", "-crlnumber"])
        .ok("n2")
        .stdout;
    assert_ne!(before, after);
    assert_eq!(
        std::fs::read(t.join("copy.pem")).unwrap(),
        std::fs::read(ca.join("crl.pem")).unwrap()
    );
    // `--out DIR/crl.pem` must not empty the file
    pki(&ca, &["crl", "--out", ca.join("crl.pem").to_str().unwrap()]).ok("crl same file");
    openssl(t, &["crl", "-in", "ca/crl.pem", "-noout"]).ok("crl still valid");

    let list = pki(&ca, &["list"]).ok("list").stdout;
    let alice_lines: Vec<_> = list.lines().filter(|l| l.contains(" alice ")).collect();
    assert_eq!(alice_lines.len(), 2, "{list}");
    assert!(alice_lines.iter().all(|l| l.ends_with("revoked")), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains(" bob ") && l.ends_with("valid")),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&pki(&ca, &["list", "--json"]).ok("list --json").stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let again = pki(&ca, &["revoke", "alice"]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("already revoked"), "{}", again.stderr);
    let unknown = pki(&ca, &["revoke", "carol"]);
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown
            .stderr
            .contains("hint: users with certificates: alice, bob"),
        "{}",
        unknown.stderr
    );

    // revoke by serial
    let serial = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cn"] == "bob")
        .unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let r = pki(&ca, &["revoke", &serial]).ok("revoke serial");
    assert!(
        r.stdout.contains("revoked 1 certificate of bob"),
        "{}",
        r.stdout
    );
}

#[test]
fn sign_csr_from_openssl_verifies() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    make_key(
        t,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dave.key",
            "-subj",
            "/CN=dave",
            "-out",
            "dave.csr",
        ],
    );
    let r = pki(
        &ca,
        &[
            "sign-csr",
            t.join("dave.csr").to_str().unwrap(),
            "--expect",
            "dave",
            "--out",
            t.join("dave.pem").to_str().unwrap(),
        ],
    )
    .ok("sign-csr");
    assert!(r.stdout.contains("dave"), "{}", r.stdout);
    openssl(t, &["verify", "-CAfile", "ca/ca.pem", "dave.pem"]).ok("verify");
    let x = openssl(
        t,
        &[
            "x509",
            "-in",
            "dave.pem",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
    )
    .ok("x509");
    assert!(
        x.stdout.contains("CN = dave") && x.stdout.contains("Client Authentication"),
        "{}",
        x.stdout
    );
    // the certificate belongs to the requester's key
    let m1 = openssl(t, &["x509", "-in", "dave.pem", "-noout", "-pubkey"])
        .ok("pubkey")
        .stdout;
    let m2 = openssl(t, &["pkey", "-in", "dave.key", "-pubout"])
        .ok("pubout")
        .stdout;
    assert_eq!(m1, m2);

    let again = pki(
        &ca,
        &[
            "sign-csr",
            t.join("dave.csr").to_str().unwrap(),
            "--expect",
            "dave",
            "--out",
            t.join("dave.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(again.code, Some(1));
    assert!(
        again.stderr.contains("hint: pass --force"),
        "{}",
        again.stderr
    );

    let bad = pki(
        &ca,
        &[
            "sign-csr",
            t.join("dave.key").to_str().unwrap(),
            "--out",
            t.join("x.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("cannot sign the request"),
        "{}",
        bad.stderr
    );
}

#[test]
fn init_twice_and_overwrites_are_refused() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    let key_before = std::fs::read(ca.join("ca.key")).unwrap();
    let r = pki(&ca, &["init"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("CA already exists in"), "{}", r.stderr);
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), key_before);

    pki(
        &ca,
        &[
            "issue-client",
            "alice",
            "--out",
            "out",
            "--passphrase-file",
            "pw",
        ],
    )
    .ok("first");
    let first = std::fs::read(t.join("out/alice.key")).unwrap();
    let r = pki(
        &ca,
        &[
            "issue-client",
            "alice",
            "--out",
            "out",
            "--passphrase-file",
            "pw",
        ],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("hint: pass --force"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(t.join("out/alice.key")).unwrap(), first);
    pki(
        &ca,
        &[
            "issue-client",
            "alice",
            "--out",
            "out",
            "--passphrase-file",
            "pw",
            "--force",
        ],
    )
    .ok("force");
    assert_ne!(std::fs::read(t.join("out/alice.key")).unwrap(), first);
    assert_eq!(mode(&t.join("out/alice.key")), 0o600);

    let r = pki(&tmp.path().join("nothing"), &["list"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("holds no CA") && r.stderr.contains("init"),
        "{}",
        r.stderr
    );

    let usage = pki(&ca, &["frobnicate"]);
    assert_eq!(usage.code, Some(2));
}

#[test]
fn passphrase_problems_have_hints() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    std::fs::write(t.join("empty"), "\n").unwrap();
    let r = pki(
        &ca,
        &[
            "issue-client",
            "alice",
            "--out",
            "out",
            "--passphrase-file",
            "empty",
        ],
    );
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("empty passphrase") && r.stderr.contains("--no-passphrase"),
        "{}",
        r.stderr
    );

    // no source and no terminal: a clear error, not a hang
    let out = Command::new(system_bin("setsid", "util-linux"))
        .arg("-w")
        .arg(bin("virtgate-pki"))
        .env_remove("VIRTGATE_KEY_PASSPHRASE")
        .env_remove("VIRTGATE_CA_PASSPHRASE")
        .args([
            "--dir",
            ca.to_str().unwrap(),
            "issue-client",
            "alice",
            "--out",
        ])
        .arg(t.join("out"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let r = Ran::from(out);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no terminal")
            && r.stderr.contains("hint:")
            && r.stderr.contains("--passphrase-file"),
        "{}",
        r.stderr
    );
    assert!(!t.join("out/alice.key").exists());

    // the passphrase from the environment
    let out = Command::new(bin("virtgate-pki"))
        .env("VIRTGATE_KEY_PASSPHRASE", "from env")
        .args([
            "--dir",
            ca.to_str().unwrap(),
            "issue-client",
            "alice",
            "--out",
        ])
        .arg(t.join("out"))
        .output()
        .unwrap();
    Ran::from(out).ok("env passphrase");
    load_private_key(&t.join("out/alice.key"), &mut pass("from env")).unwrap();
}

#[test]
fn encrypted_ca_key_needs_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("capw"), "ca secret\n").unwrap();
    std::fs::write(t.join("wrong"), "nope\n").unwrap();
    let ca = t.join("ca");
    pki(&ca, &["init", "--passphrase-file", "capw"]).ok("init");
    openssl(
        t,
        &["pkey", "-in", "ca/ca.key", "-passin", "file:capw", "-noout"],
    )
    .ok("openssl reads ca.key");

    let r = pki(
        &ca,
        &[
            "--ca-passphrase-file",
            "wrong",
            "issue-client",
            "zed",
            "--out",
            "o",
            "--no-passphrase",
        ],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("wrong passphrase for"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("nope"),
        "passphrase leaked: {}",
        r.stderr
    );
    pki(
        &ca,
        &[
            "--ca-passphrase-file",
            "capw",
            "issue-client",
            "zed",
            "--out",
            "o",
            "--no-passphrase",
        ],
    )
    .ok("right passphrase");
    // list needs no key
    assert!(pki(&ca, &["list"]).ok("list").stdout.contains(" zed "));
}

#[test]
fn expired_and_foreign_certificates_fail_openssl_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut ca = Ca::init(&t.join("ca"), &InitOptions::default()).unwrap();
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue_client(
            "carol",
            &ClientOptions {
                validity: Validity::Between {
                    not_before: now - Duration::days(10),
                    not_after: now - Duration::days(1),
                },
            },
        )
        .unwrap();
    ca.write_client_files(
        &expired,
        &t.join("carol"),
        None,
        virtgate_pki::Existing::Refuse,
    )
    .unwrap();
    let r = openssl(t, &["verify", "-CAfile", "ca/ca.pem", "carol/carol.pem"]);
    assert_ne!(r.code, Some(0));
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("expired"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    let mut other = Ca::init(&t.join("other"), &InitOptions::default()).unwrap();
    let foreign = other
        .issue_client("mallory", &ClientOptions::default())
        .unwrap();
    other
        .write_client_files(
            &foreign,
            &t.join("mallory"),
            Some("pw"),
            virtgate_pki::Existing::Refuse,
        )
        .unwrap();
    let r = openssl(
        t,
        &["verify", "-CAfile", "ca/ca.pem", "mallory/mallory.pem"],
    );
    assert_ne!(r.code, Some(0), "a foreign certificate verified");
    openssl(
        t,
        &["verify", "-CAfile", "other/ca.pem", "mallory/mallory.pem"],
    )
    .ok("own CA");

    // the library sees both in `list`
    let list = pki(&t.join("ca"), &["list"]).ok("list").stdout;
    assert!(
        list.lines()
            .any(|l| l.contains(" carol ") && l.ends_with("expired")),
        "{list}"
    );

    // reopening the CA works and keeps the index
    let reopened = Ca::open(&t.join("ca"), &mut never).unwrap();
    assert_eq!(reopened.entries().len(), 1);
}
