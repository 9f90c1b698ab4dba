//! OpenSSL interop and virtgate-pki CLI tests (written by the PKI work).
//!
//! Every test drives the real `virtgate-pki` binary and the real `openssl` in a temp
//! folder of its own; key loading goes through `virtgate_pki::load_private_key`, the
//! function the client and the gateway use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;
use virtgate_pki::time::{Duration, OffsetDateTime};
use virtgate_pki::zeroize::Zeroizing;
use virtgate_pki::{
    load_certs, load_private_key, signing_key, Ca, ClientOptions, InitOptions, KeyFileError,
    Validity,
};
use virtgate_tests::{bin, system_bin};

/// A finished command's status and output as text.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(self, what: &str) -> Ran {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// `virtgate-pki --dir DIR ARGS` with no passphrase variables inherited, run in `cwd`.
fn pki_in(cwd: &Path, dir: &Path, args: &[&str]) -> Ran {
    let out = Command::new(bin("virtgate-pki"))
        .current_dir(cwd)
        .env_remove("VIRTGATE_PKI_DIR")
        .env_remove("VIRTGATE_CA_PASSPHRASE")
        .env_remove("VIRTGATE_KEY_PASSPHRASE")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run virtgate-pki");
    Ran::from(out)
}

/// `virtgate-pki --dir DIR ARGS`.
fn pki(dir: &Path, args: &[&str]) -> Ran {
    pki_in(dir.parent().unwrap_or(Path::new("/")), dir, args)
}

/// `openssl ARGS` in `cwd`.
fn openssl(cwd: &Path, args: &[&str]) -> Ran {
    let out = Command::new(system_bin("openssl", "openssl"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run openssl");
    Ran::from(out)
}

/// A temp folder with a CA in `ca/` and the passphrase `pw123` in `pw`.
fn setup() -> (TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("vg-pki-")
        .tempdir_in("/tmp")
        .unwrap();
    let ca = tmp.path().join("ca");
    pki(&ca, &["init", "--name", "Test CA"]).ok("init");
    std::fs::write(tmp.path().join("pw"), "pw123\n").unwrap();
    std::fs::write(tmp.path().join("wrongpw"), "nope\n").unwrap();
    (tmp, ca)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn pass(s: &str) -> impl FnMut() -> Result<Zeroizing<String>, KeyFileError> + '_ {
    move || Ok(Zeroizing::new(s.to_string()))
}

fn never() -> Result<Zeroizing<String>, KeyFileError> {
    panic!("passphrase asked for an unencrypted key")
}

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
fn make_key(t: &Path, args: &[&str]) {
    openssl(t, args).ok(&format!("openssl {args:?}"));
}

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
