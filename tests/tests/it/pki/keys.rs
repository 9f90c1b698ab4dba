//! Key files both ways: ours read by OpenSSL, OpenSSL's (every encryption it offers) read
//! by us, and bad key files named with a hint.

use super::*;

#[test]
fn issue_client_key_is_encrypted_pkcs8_that_openssl_reads() {
    let (tmp, ca) = setup();
    let t = tmp.path();
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
    )
    .ok("issue-client");
    assert!(r.stdout.contains("alice"), "{}", r.stdout);

    let key = t.join("out/alice.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&t.join("out/alice.pem")), 0o644);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert_eq!(
        std::fs::read(t.join("out/ca.pem")).unwrap(),
        std::fs::read(ca.join("ca.pem")).unwrap()
    );

    openssl(
        t,
        &[
            "pkey",
            "-in",
            "out/alice.key",
            "-passin",
            "file:pw",
            "-noout",
        ],
    )
    .ok("openssl pkey");
    let bad = openssl(
        t,
        &[
            "pkey",
            "-in",
            "out/alice.key",
            "-passin",
            "file:wrongpw",
            "-noout",
        ],
    );
    assert_ne!(bad.code, Some(0), "openssl accepted a wrong passphrase");
    openssl(t, &["verify", "-CAfile", "ca/ca.pem", "out/alice.pem"]).ok("openssl verify");
    let subject = openssl(
        t,
        &[
            "x509",
            "-in",
            "out/alice.pem",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
    )
    .ok("x509");
    assert!(subject.stdout.contains("CN = alice"), "{}", subject.stdout);
    assert!(
        subject.stdout.contains("TLS Web Client Authentication"),
        "{}",
        subject.stdout
    );

    // our own reader, as the client uses it
    let k = load_private_key(&key, &mut pass("pw123")).unwrap();
    signing_key(&k).unwrap();
    let err = load_private_key(&key, &mut pass("nope")).unwrap_err();
    assert!(matches!(err, KeyFileError::WrongPassphrase { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("wrong passphrase for {}", key.display())
    );
    assert_eq!(load_certs(&t.join("out/alice.pem")).unwrap().len(), 1);
}

#[test]
fn issue_server_has_dns_and_ip_sans() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    pki(
        &ca,
        &[
            "issue-server",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--ip",
            "::1",
            "--out",
            "srv",
        ],
    )
    .ok("issue-server");
    let r = openssl(
        t,
        &[
            "x509",
            "-in",
            "srv/server.pem",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-subject",
        ],
    )
    .ok("x509");
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "TLS Web Server Authentication",
        "CN = localhost",
    ] {
        assert!(r.stdout.contains(want), "{want} missing in:\n{}", r.stdout);
    }
    openssl(t, &["verify", "-CAfile", "ca/ca.pem", "srv/server.pem"]).ok("verify");
    let key = t.join("srv/server.key");
    assert_eq!(mode(&key), 0o600);
    // the daemon starts unattended: plain PKCS#8
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    signing_key(&load_private_key(&key, &mut never).unwrap()).unwrap();
    assert!(t.join("srv/ca.pem").is_file());

    let r = pki(&ca, &["issue-server", "--out", "srv2"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("hint: pass --dns"), "{}", r.stderr);
}

/// Makes `name` with openssl in `t` (the passphrase file is `pw`).

#[test]
fn keys_made_by_openssl_load() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("pw"), "pw123\n").unwrap();
    make_key(
        t,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.key",
        ],
    );
    make_key(
        t,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    make_key(
        t,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes-256-cbc",
            "-pass",
            "file:pw",
            "-out",
            "ec_genpkey_enc.key",
        ],
    );
    make_key(
        t,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-aes-256-cbc",
            "-pass",
            "file:pw",
            "-out",
            "rsa_genpkey_enc.key",
        ],
    );
    make_key(
        t,
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-aes-256-cbc",
            "-pass",
            "file:pw",
            "-out",
            "ed25519_enc.key",
        ],
    );
    make_key(
        t,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "ec.key",
            "-passout",
            "file:pw",
            "-out",
            "p8_aes.key",
        ],
    );
    make_key(
        t,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-v2prf",
            "hmacWithSHA1",
            "-in",
            "ec.key",
            "-passout",
            "file:pw",
            "-out",
            "p8_sha1.key",
        ],
    );
    make_key(
        t,
        &[
            "pkcs8",
            "-topk8",
            "-scrypt",
            "-in",
            "ec.key",
            "-passout",
            "file:pw",
            "-out",
            "p8_scrypt.key",
        ],
    );
    make_key(
        t,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-128-cbc",
            "-in",
            "rsa.key",
            "-passout",
            "file:pw",
            "-out",
            "p8_rsa_aes128.key",
        ],
    );
    make_key(
        t,
        &["pkey", "-in", "ec.key", "-traditional", "-out", "sec1.key"],
    );
    make_key(
        t,
        &[
            "pkey",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "pkcs1.key",
        ],
    );

    let heads = [
        ("sec1.key", "-----BEGIN EC PRIVATE KEY-----"),
        ("pkcs1.key", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec.key", "-----BEGIN PRIVATE KEY-----"),
        ("p8_sha1.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----"),
    ];
    for (f, head) in heads {
        let text = std::fs::read_to_string(t.join(f)).unwrap();
        assert!(
            text.starts_with(head),
            "{f} starts with {}",
            text.lines().next().unwrap_or("")
        );
    }

    for plain in ["ec.key", "rsa.key", "sec1.key", "pkcs1.key"] {
        let key =
            load_private_key(&t.join(plain), &mut never).unwrap_or_else(|e| panic!("{plain}: {e}"));
        signing_key(&key).unwrap_or_else(|e| panic!("{plain}: {e}"));
        assert!(!virtgate_pki::is_encrypted(&t.join(plain)).unwrap());
    }
    for enc in [
        "ec_genpkey_enc.key",
        "rsa_genpkey_enc.key",
        "ed25519_enc.key",
        "p8_aes.key",
        "p8_sha1.key",
        "p8_scrypt.key",
        "p8_rsa_aes128.key",
    ] {
        let path = t.join(enc);
        assert!(virtgate_pki::is_encrypted(&path).unwrap(), "{enc}");
        let mut asked = 0;
        let key = load_private_key(&path, &mut || {
            asked += 1;
            Ok(Zeroizing::new("pw123".to_string()))
        })
        .unwrap_or_else(|e| panic!("{enc}: {e}"));
        assert_eq!(asked, 1, "{enc}");
        let signer = signing_key(&key).unwrap_or_else(|e| panic!("{enc}: {e}"));
        let _ = format!("{:?}", signer.algorithm());

        let err = load_private_key(&path, &mut pass("wrong")).unwrap_err();
        assert!(
            matches!(err, KeyFileError::WrongPassphrase { .. }),
            "{enc}: {err}"
        );
        assert!(err.hint().is_some());
    }
}

#[test]
fn bad_key_files_say_what_is_wrong() {
    let (tmp, ca) = setup();
    let t = tmp.path();
    pki(
        &ca,
        &["issue-client", "bob", "--out", "out", "--no-passphrase"],
    )
    .ok("issue-client");

    let cert = t.join("out/bob.pem");
    let err = load_private_key(&cert, &mut never).unwrap_err();
    assert!(matches!(err, KeyFileError::NotAKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("{} holds a CERTIFICATE, not a private key", cert.display())
    );
    assert_eq!(err.hint().as_deref(), Some("point --key at the .key file"));

    let missing = t.join("out/nobody.key");
    let err = load_private_key(&missing, &mut never).unwrap_err();
    assert!(matches!(err, KeyFileError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.hint().is_some());

    let garbage = t.join("garbage.key");
    std::fs::write(&garbage, "not a key at all\n").unwrap();
    let err = load_private_key(&garbage, &mut never).unwrap_err();
    assert!(
        err.to_string().starts_with("no PEM private key found in"),
        "{err}"
    );

    let err = load_certs(&t.join("out/bob.key")).unwrap_err();
    assert!(
        err.to_string()
            .contains("holds a PRIVATE KEY, not a certificate"),
        "{err}"
    );

    // an unencrypted client key is still 0600
    assert_eq!(mode(&t.join("out/bob.key")), 0o600);
}
