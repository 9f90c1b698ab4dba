//! Enrollment as a user and an admin do it, with the real binaries: `virtgate enroll` on
//! the laptop (the key is born there), `virtgate-pki sign-csr --expect` on the CA host,
//! `virtgate profile add` back on the laptop, then a real gateway that knows the user by
//! the new certificate. Plus every mistake on the way (each with its message and hint),
//! and `virtgate-pki export-p12` read by OpenSSL and imported into an NSS database (the
//! store Firefox and Chromium use).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use virtgate_tests::{bin, run, system_bin, text, ClientUser};

use crate::World;

/// A laptop user with an empty home: no config file yet.
fn laptop(dir: &Path) -> ClientUser {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    ClientUser {
        config: home.join(".config/virtgate/config.toml"),
        home,
        env: Vec::new(),
    }
}

/// The laptop's config folder (where enroll puts the key).
fn config_dir(c: &ClientUser) -> PathBuf {
    c.config.parent().unwrap().to_owned()
}

/// `virtgate-pki --dir DIR ARGS` without passphrase variables, not checked.
fn pki(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("virtgate-pki"))
        .env_remove("VIRTGATE_KEY_PASSPHRASE")
        .env_remove("VIRTGATE_CA_PASSPHRASE")
        .env_remove("VIRTGATE_P12_PASSPHRASE")
        .arg("--dir")
        .arg(dir)
        .args(args))
}

/// Asserts exit status 1 with an `error:` and a `hint:`; returns stderr.
fn failed(out: &Output, what: &str) -> String {
    let (o, e) = text(out);
    assert_eq!(out.status.code(), Some(1), "{what} should fail:\n{o}\n{e}");
    assert!(
        e.contains("error: ") && e.contains("\nhint: "),
        "{what}: {e}"
    );
    assert!(!e.contains("panicked"), "{what}: {e}");
    e
}

/// Asserts success; returns stdout.
fn ok(out: &Output, what: &str) -> String {
    let (o, e) = text(out);
    assert!(out.status.success(), "{what} failed:\n{o}\n{e}");
    o
}

/// `virtgate enroll USER --passphrase-file PW` on `c`; returns stdout.
fn enroll(c: &ClientUser, user: &str, pw: &Path) -> String {
    c.ok(&["enroll", user, "--passphrase-file", pw.to_str().unwrap()])
}

/// The admin signs `csr` for `user` into `out`; returns stdout.
fn sign(ca: &Path, csr: &Path, user: &str, out: &Path) -> String {
    let o = pki(
        ca,
        &[
            "sign-csr",
            csr.to_str().unwrap(),
            "--expect",
            user,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&o, "sign-csr")
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_key_born_on_the_laptop_reaches_the_gateway() {
    let w = World::start(|g| g.rule(&["bob"], &["web*"], "viewer"));
    let t = w.dir.path();
    let bob = laptop(&t.join("laptop"));
    let pw = t.join("bob-passphrase");
    std::fs::write(&pw, "bob's secret\n").unwrap();
    // the user's own config, with a comment and another profile, stays as it is
    std::fs::create_dir_all(config_dir(&bob)).unwrap();
    let mine = "# my gateways\n[profile.old]\nurl = \"virtgate+unix:///nowhere.sock\"  # retired\n";
    std::fs::write(&bob.config, mine).unwrap();

    // 1. the laptop: key and request
    let said = enroll(&bob, "bob", &pw);
    let key = config_dir(&bob).join("bob.key");
    let csr = config_dir(&bob).join("bob.csr");
    assert_eq!(mode(&key), 0o600);
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(said.contains(&format!("wrote {}", key.display())), "{said}");
    assert!(
        said.contains("virtgate-pki sign-csr bob.csr --expect bob --out bob.pem"),
        "{said}"
    );
    assert!(
        said.contains(
            "virtgate profile add NAME --url virtgate://HOST --ca ca.pem --cert bob.pem --key"
        ),
        "{said}"
    );
    // OpenSSL reads the key with the passphrase: the format of issue-client's keys
    let o = run(Command::new(system_bin("openssl", "openssl"))
        .args(["pkey", "-noout", "-passin"])
        .arg(format!("file:{}", pw.display()))
        .arg("-in")
        .arg(&key));
    ok(&o, "openssl pkey");

    // 2. the CA host: only the request travels there
    let admin = t.join("admin");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::copy(&csr, admin.join("bob.csr")).unwrap();
    let signed = sign(
        &w.pki.dir,
        &admin.join("bob.csr"),
        "bob",
        &admin.join("bob.pem"),
    );
    assert!(
        signed.contains("signed a client certificate for bob"),
        "{signed}"
    );
    // the admin sees the fingerprint the user saw
    let fp = said
        .lines()
        .find(|l| l.trim().len() == 95 && l.contains(':'))
        .unwrap_or_else(|| panic!("no fingerprint in {said}"))
        .trim();
    assert!(signed.contains(fp), "{signed}\n{fp}");

    // 3. back on the laptop: what the admin sent lands in ~/Downloads
    let downloads = t.join("laptop/home/Downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::copy(admin.join("bob.pem"), downloads.join("bob.pem")).unwrap();
    std::fs::copy(&w.pki.ca_pem, downloads.join("ca.pem")).unwrap();
    let added = bob.ok(&[
        "profile",
        "add",
        "gw",
        "--url",
        &w.gateway.url(0),
        "--ca",
        downloads.join("ca.pem").to_str().unwrap(),
        "--cert",
        downloads.join("bob.pem").to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--passphrase-command",
        &format!("cat {}", pw.display()),
        "--default",
    ]);
    assert!(added.contains("added profile gw to"), "{added}");
    assert!(added.contains("(checked against bob.csr)"), "{added}");
    // the profile does not depend on ~/Downloads
    std::fs::remove_dir_all(&downloads).unwrap();
    let config = std::fs::read_to_string(&bob.config).unwrap();
    assert!(config.starts_with("default = \"gw\"\n# my gateways\n[profile.old]\nurl = \"virtgate+unix:///nowhere.sock\"  # retired\n"), "{config}");
    assert!(config.contains("\n[profile.gw]\n"), "{config}");
    assert!(
        config.contains("ca = \"gw/ca.pem\"\ncert = \"gw/bob.pem\"\nkey = \"bob.key\"\n"),
        "{config}"
    );

    let who: Value = serde_json::from_str(&bob.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(who["user"], "bob", "{who}");
    assert_eq!(who["method"], "certificate", "{who}");
    let list = bob.ok(&["list"]);
    assert!(list.contains("web1"), "{list}");
    let profiles = bob.ok(&["profile", "list"]);
    assert!(
        profiles.contains("* gw") && profiles.contains("  old"),
        "{profiles}"
    );

    // the key never left the laptop: no bob.key anywhere else, not even its bytes
    for f in walk(t) {
        if f.starts_with(t.join("laptop")) {
            continue;
        }
        assert_ne!(f.file_name().unwrap(), "bob.key", "{}", f.display());
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes
                .windows(64)
                .any(|w| key_text.as_bytes()[40..104] == *w),
            "{} holds bob's key",
            f.display()
        );
    }
    assert!(!w.pki.dir.join("clients/bob").exists());
}

#[test]
fn enroll_never_overwrites_a_key() {
    let dir = virtgate_tests::tempdir();
    let bob = laptop(dir.path());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    enroll(&bob, "bob", &pw);
    let key = config_dir(&bob).join("bob.key");
    let csr = config_dir(&bob).join("bob.csr");
    let before = (std::fs::read(&key).unwrap(), std::fs::read(&csr).unwrap());

    let e = failed(
        &bob.run(&["enroll", "bob", "--passphrase-file", pw.to_str().unwrap()]),
        "enroll over a key",
    );
    assert!(
        e.contains(&format!(
            "error: {} already exists: enroll never overwrites a key",
            key.display()
        )),
        "{e}"
    );
    assert!(e.contains("hint: it may be the only copy of a key"), "{e}");
    assert_eq!(
        (std::fs::read(&key).unwrap(), std::fs::read(&csr).unwrap()),
        before
    );

    // a request left over without its key is not overwritten either, and no key is made
    std::fs::remove_file(&key).unwrap();
    let e = failed(
        &bob.run(&["enroll", "bob", "--no-passphrase"]),
        "enroll over a request",
    );
    assert!(e.contains("bob.csr already exists"), "{e}");
    assert!(
        e.contains("hint: it is left from an earlier enrollment"),
        "{e}"
    );
    assert!(!key.exists());
    assert_eq!(std::fs::read(&csr).unwrap(), before.1);

    // a name the CA would refuse is refused before anything is written
    let e = failed(
        &bob.run(&["enroll", "bob smith", "--no-passphrase"]),
        "bad user",
    );
    assert!(e.contains("`bob smith` cannot be a user name"), "{e}");
    assert_eq!(walk(&config_dir(&bob)).len(), 1);
}

/// A CA in `dir/ca` and bob's enrolled laptop in `dir/laptop`: (ca, laptop, key, csr, pw).
fn ca_and_bob(dir: &Path) -> (PathBuf, ClientUser, PathBuf, PathBuf, PathBuf) {
    let ca = dir.join("ca");
    ok(&pki(&ca, &["init", "--name", "test CA"]), "init");
    let bob = laptop(&dir.join("laptop"));
    let pw = dir.join("pw");
    std::fs::write(&pw, "bob pw\n").unwrap();
    enroll(&bob, "bob", &pw);
    let key = config_dir(&bob).join("bob.key");
    let csr = config_dir(&bob).join("bob.csr");
    (ca, bob, key, csr, pw)
}

#[test]
fn sign_csr_signs_only_the_name_expected() {
    let dir = virtgate_tests::tempdir();
    let t = dir.path();
    let (ca, _bob, _key, csr, _pw) = ca_and_bob(t);
    let out = t.join("bob.pem");
    let index = std::fs::read(ca.join("index.json")).unwrap();
    let sign_args = |extra: &[&str]| {
        let mut a = vec![
            "sign-csr",
            csr.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };

    // the admin expected alice: refused, both names said, nothing signed or recorded
    let a = sign_args(&["--expect", "alice"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let e = failed(&pki(&ca, &a), "sign-csr --expect alice");
    assert!(
        e.contains(
            "asks for a certificate for `bob`, not `alice` (--expect alice): nothing signed"
        ),
        "{e}"
    );
    assert!(e.contains("hint: ask the user who sent it"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read(ca.join("index.json")).unwrap(), index);

    // no --expect and no terminal (a script): refused, with a hint to pass --expect
    let a = sign_args(&[]);
    let o = run(Command::new(system_bin("setsid", "util-linux"))
        .arg("-w")
        .arg(bin("virtgate-pki"))
        .arg("--dir")
        .arg(&ca)
        .args(&a));
    let e = failed(&o, "sign-csr without --expect or terminal");
    assert!(
        e.contains("asks for a certificate for `bob` (public key "),
        "{e}"
    );
    assert!(
        e.contains("there is no terminal to confirm it on: nothing signed"),
        "{e}"
    );
    assert!(e.contains("hint: pass --expect USER"), "{e}");
    assert!(!out.exists());

    // on a terminal (script(1) gives it one) the admin is shown the name and answers
    let on_terminal = |answer: &str| {
        let cmd = format!(
            "{} --dir {} {}",
            bin("virtgate-pki").display(),
            ca.display(),
            a.join(" ")
        );
        run(Command::new("sh").arg("-c").arg(format!(
            "printf '{answer}\\n' | {} -qec '{cmd}' /dev/null",
            system_bin("script", "bsdutils").display()
        )))
    };
    let o = on_terminal("n");
    let (shown, _) = text(&o);
    assert!(shown.contains("user (CN)   bob"), "{shown}");
    assert!(
        shown.contains("Sign a client certificate for `bob`, valid 365 days? [y/N]"),
        "{shown}"
    );
    assert!(
        shown.contains("error: sign-csr")
            && shown.contains("not confirmed: nothing signed for `bob`"),
        "{shown}"
    );
    assert!(!out.exists());
    let o = on_terminal("y");
    let (shown, _) = text(&o);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("signed a client certificate for bob"),
        "{shown}"
    );
    assert!(out.exists());
}

#[test]
fn profile_add_refuses_what_would_fail_later() {
    let dir = virtgate_tests::tempdir();
    let t = dir.path();
    let (ca, bob, key, csr, pw) = ca_and_bob(t);
    let cert = t.join("bob.pem");
    sign(&ca, &csr, "bob", &cert);
    // carol's certificate (another key), and a CA that signed neither
    let carol = laptop(&t.join("carol"));
    enroll(&carol, "carol", &pw);
    let carol_cert = t.join("carol.pem");
    sign(
        &ca,
        &config_dir(&carol).join("carol.csr"),
        "carol",
        &carol_cert,
    );
    let other = t.join("other");
    ok(&pki(&other, &["init", "--name", "other CA"]), "init other");

    let add = |name: &str, url: &str, ca: &Path, cert: &Path, key: &Path| {
        bob.run(&[
            "profile",
            "add",
            name,
            "--url",
            url,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let nothing_written = || {
        assert!(
            !bob.config.exists(),
            "{}",
            std::fs::read_to_string(&bob.config).unwrap()
        );
        assert!(!config_dir(&bob).join("hv1").exists());
    };
    let url = "virtgate://hv1.example.org";
    let ca_pem = ca.join("ca.pem");

    let e = failed(
        &add("hv1", url, &ca_pem, &carol_cert, &key),
        "someone else's certificate",
    );
    assert!(
        e.contains(&format!(
            "the certificate {} does not belong to the key {} (compared with its request {}): their public keys differ",
            carol_cert.display(),
            key.display(),
            csr.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("hint: pass the certificate the admin signed for this key's request"),
        "{e}"
    );
    nothing_written();

    // without the request next to it, the passphrase unlocks the key for the comparison
    std::fs::rename(&csr, t.join("kept.csr")).unwrap();
    let o = bob.run(&[
        "profile",
        "add",
        "hv1",
        "--url",
        url,
        "--ca",
        ca_pem.to_str().unwrap(),
        "--cert",
        carol_cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    let e = failed(&o, "someone else's certificate, key unlocked");
    assert!(e.contains("their public keys differ"), "{e}");
    std::fs::rename(t.join("kept.csr"), &csr).unwrap();
    nothing_written();

    let e = failed(
        &add("hv1", url, &other.join("ca.pem"), &cert, &key),
        "another CA",
    );
    assert!(
        e.contains(&format!(
            "the certificate {} does not check against the CA {}: it was not signed by this CA",
            cert.display(),
            other.join("ca.pem").display()
        )),
        "{e}"
    );
    assert!(
        e.contains("hint: pass --ca with the ca.pem the admin sent"),
        "{e}"
    );
    nothing_written();

    let e = failed(
        &add("hv1", "https://hv1.example.org", &ca_pem, &cert, &key),
        "bad URL",
    );
    assert!(
        e.contains("error: bad gateway URL `https://hv1.example.org`"),
        "{e}"
    );
    nothing_written();

    let e = failed(&add("hv 1", url, &ca_pem, &cert, &key), "bad name");
    assert!(e.contains("`hv 1` cannot be a profile name"), "{e}");
    nothing_written();

    // the good one, then the same name again
    let said = ok(&add("hv1", url, &ca_pem, &cert, &key), "profile add");
    assert!(
        said.contains("added profile hv1") && said.contains("(the default)"),
        "{said}"
    );
    assert_eq!(mode(&bob.config), 0o600);
    assert_eq!(mode(&config_dir(&bob)), 0o700);
    let config = std::fs::read(&bob.config).unwrap();
    let e = failed(
        &add("hv1", "virtgate://elsewhere", &ca_pem, &cert, &key),
        "taken name",
    );
    assert!(
        e.contains(&format!(
            "error: profile `hv1` already exists in {}",
            bob.config.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("hint: pick another name, pass --force to replace it"),
        "{e}"
    );
    assert_eq!(std::fs::read(&bob.config).unwrap(), config);
    // --force replaces it
    ok(
        &bob.run(&[
            "profile",
            "add",
            "hv1",
            "--url",
            "virtgate://elsewhere",
            "--ca",
            ca_pem.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--force",
        ]),
        "profile add --force",
    );
    let shown = bob.ok(&["profile", "show", "hv1"]);
    assert!(
        shown.contains("virtgate://elsewhere") && shown.contains("(encrypted)"),
        "{shown}"
    );
    // remove takes the copies along, never the key
    let said = bob.ok(&["profile", "remove", "hv1"]);
    assert!(said.contains("kept the key"), "{said}");
    assert!(!config_dir(&bob).join("hv1").exists() && key.exists());
    let e = failed(&bob.run(&["profile", "show", "hv1"]), "removed profile");
    assert!(e.contains("no profile `hv1`"), "{e}");
}

#[test]
fn export_p12_opens_in_openssl_and_nss() {
    let dir = virtgate_tests::tempdir();
    let t = dir.path();
    let (ca, _bob, key, csr, pw) = ca_and_bob(t);
    let cert = t.join("bob.pem");
    sign(&ca, &csr, "bob", &cert);
    let p12pw = t.join("p12pw");
    std::fs::write(&p12pw, "browser pw\n").unwrap();
    let p12 = t.join("bob.p12");
    let ca_pem = ca.join("ca.pem");
    let export = |extra: &[&str]| {
        let mut a = vec![
            "export-p12",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--ca",
            ca_pem.to_str().unwrap(),
            "--out",
            p12.to_str().unwrap(),
            "--passphrase-file",
            pw.to_str().unwrap(),
            "--p12-passphrase-file",
            p12pw.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        // export-p12 needs no CA folder
        run(Command::new(bin("virtgate-pki"))
            .env_remove("VIRTGATE_PKI_DIR")
            .args(&a))
    };
    let said = ok(&export(&[]), "export-p12");
    assert!(
        said.contains(&format!("wrote {} (0600)", p12.display())),
        "{said}"
    );
    assert_eq!(mode(&p12), 0o600);

    // OpenSSL: the right password opens it, and it is PBES2 AES-256 with a SHA-256 MAC
    let openssl = |pass: &str| {
        run(Command::new(system_bin("openssl", "openssl"))
            .args(["pkcs12", "-info", "-noout", "-in"])
            .arg(&p12)
            .arg("-passin")
            .arg(pass))
    };
    let o = openssl(&format!("file:{}", p12pw.display()));
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    let info = format!("{so}{se}");
    assert!(info.contains("MAC: sha256"), "{info}");
    assert!(
        info.contains("Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC"),
        "{info}"
    );
    assert!(
        info.contains("PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC"),
        "{info}"
    );
    let o = openssl("pass:wrong");
    assert!(!o.status.success());
    assert!(text(&o).1.contains("Mac verify error"), "{:?}", text(&o));

    // NSS (Firefox, Chromium): import into a fresh database; the certificate and key are in
    let nss = t.join("nssdb");
    std::fs::create_dir_all(&nss).unwrap();
    let db = format!("sql:{}", nss.display());
    let certutil = system_bin("certutil", "libnss3-tools");
    ok(
        &run(Command::new(&certutil).args(["-N", "-d", &db, "--empty-password"])),
        "certutil -N",
    );
    let o = run(Command::new(system_bin("pk12util", "libnss3-tools"))
        .args(["-i"])
        .arg(&p12)
        .args(["-d", &db, "-w"])
        .arg(&p12pw));
    let imported = ok(&o, "pk12util -i");
    assert!(imported.contains("PKCS12 IMPORT SUCCESSFUL"), "{imported}");
    let listed = ok(
        &run(Command::new(&certutil).args(["-L", "-d", &db])),
        "certutil -L",
    );
    assert!(
        listed.contains("CN=bob") && listed.contains("u,u,u"),
        "{listed}"
    );
    assert!(listed.contains("CN=test CA"), "{listed}");
    let keys = ok(
        &run(Command::new(&certutil).args(["-K", "-d", &db])),
        "certutil -K",
    );
    assert!(keys.contains("CN=bob"), "{keys}");

    // never over an existing file
    let before = std::fs::read(&p12).unwrap();
    let e = failed(&export(&[]), "export-p12 over a file");
    assert!(
        e.contains(&format!(
            "{} already exists: refusing to overwrite it",
            p12.display()
        )),
        "{e}"
    );
    assert!(e.contains("hint: pass --force"), "{e}");
    assert_eq!(std::fs::read(&p12).unwrap(), before);
}
