//! Every bad input a user can make in the walking skeleton: each gives `error: …` with a
//! `hint: …` and exit 1, nothing panics, and the gateway keeps serving the next client.

use virtgate_tests::{curl, text, ClientUser, GatewayBuilder, Pki};

use crate::World;

/// The gateway still serves alice after whatever the test did.
fn still_serving(w: &World) {
    let c = w.client("after", 0, &w.alice);
    assert!(
        c.ok(&["whoami"]).contains("alice"),
        "gateway stopped serving"
    );
}

fn has_hint(stderr: &str) {
    assert!(stderr.contains("hint: "), "no hint in: {stderr}");
}

#[test]
fn no_client_certificate() {
    let w = World::start(|g| g);
    let profile = format!(
        "url = {:?}\nca = {:?}\n",
        w.gateway.url(0),
        w.pki.ca_pem.display().to_string()
    );
    let c = ClientUser::with_profile(&w.dir.path().join("nocert"), &profile);
    let e = c.fails(&["list"]);
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    has_hint(&e);
    assert!(
        e.contains("--cert") || e.contains("cert ="),
        "hint should say how to set one: {e}"
    );

    // curl without a certificate is refused as well.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&w.pki.ca_pem)
        .arg(format!("{}/v1/whoami", w.gateway.https(0)))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl without certificate must fail");
    still_serving(&w);
}

#[test]
fn certificate_from_another_ca() {
    let w = World::start(|g| g);
    let other = Pki::new(w.dir.path(), "other");
    let mallory = other.client("alice", None);
    // Trusts the right server CA but presents a certificate of another CA.
    let profile = format!(
        "url = {:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        w.gateway.url(0),
        w.pki.ca_pem.display().to_string(),
        mallory.cert.display().to_string(),
        mallory.key.display().to_string()
    );
    let c = ClientUser::with_profile(&w.dir.path().join("m"), &profile);
    let e = c.fails(&["list"]);
    assert!(
        e.to_lowercase().contains("ca") || e.contains("issuer"),
        "{e}"
    );
    has_hint(&e);
    assert!(w.gateway.log().to_lowercase().contains("unknown") || !w.gateway.log().is_empty());
    still_serving(&w);
}

#[test]
fn revoked_certificate() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let alice = pki.client("alice", None);
    let bob = pki.client("bob", None);
    let crl = pki.revoke("bob");
    let gw = GatewayBuilder::new(&pki)
        .crl(&crl)
        .rule(&["alice", "bob"], &["*"], "viewer")
        .start(&dir.path().join("gw"));
    let b = ClientUser::new(&dir.path().join("b"), &gw.url(0), &bob);
    let e = b.fails(&["whoami"]);
    assert!(e.to_lowercase().contains("revoked"), "{e}");
    has_hint(&e);
    let a = ClientUser::new(&dir.path().join("a"), &gw.url(1), &alice);
    assert!(a.ok(&["whoami"]).contains("alice"));
}

#[test]
fn expired_certificate() {
    let w = World::start(|g| g);
    let carol = w.pki.expired_client("carol");
    let c = w.client("carol", 0, &carol);
    let e = c.fails(&["whoami"]);
    assert!(e.to_lowercase().contains("expired"), "{e}");
    has_hint(&e);
    still_serving(&w);
}

#[test]
fn server_name_not_in_server_certificate() {
    let dir = virtgate_tests::tempdir();
    let pki = Pki::new(dir.path(), "ca");
    let alice = pki.client("alice", None);
    let narrow = dir.path().join("narrow");
    virtgate_tests::fixture::pki::pki_cmd(
        &pki.dir,
        &[
            "issue-server",
            "--dns",
            "gw.example.org",
            "--ip",
            "127.0.0.1",
            "--out",
            narrow.to_str().unwrap(),
        ],
    );
    let gw = GatewayBuilder::new(&pki)
        .server_cert(
            &narrow.join("server.pem"),
            &narrow.join("server.key"),
            &pki.ca_pem,
        )
        .rule(&["alice"], &["*"], "viewer")
        .start(&dir.path().join("gw"));
    // Listener 1 is [::1], which the certificate does not cover.
    let c = ClientUser::new(&dir.path().join("c"), &gw.url(1), &alice);
    let e = c.fails(&["whoami"]);
    assert!(
        e.contains("gw.example.org") && e.contains("127.0.0.1"),
        "names covered: {e}"
    );
    assert!(e.contains("::1"), "the name used: {e}");
    has_hint(&e);
    let ok = ClientUser::new(&dir.path().join("ok"), &gw.url(0), &alice);
    assert!(ok.ok(&["whoami"]).contains("alice"));
}

#[test]
fn wrong_key_passphrase() {
    let w = World::start(|g| g);
    let c = w.client("c", 0, &w.alice);
    let out = c.run_env(&["whoami"], &[("VIRTGATE_KEY_PASSPHRASE", "not it")]);
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("passphrase"), "{e}");
    assert!(
        e.contains(&w.alice.key.display().to_string()),
        "names the key file: {e}"
    );
    assert!(!e.contains("not it"), "never print the passphrase: {e}");
    has_hint(&e);
    // --passphrase-file beats the environment.
    let pw = w.alice.passphrase_file.as_ref().unwrap().to_str().unwrap();
    let out = c.run_env(
        &["--passphrase-file", pw, "whoami"],
        &[("VIRTGATE_KEY_PASSPHRASE", "not it")],
    );
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn key_file_that_is_not_a_key() {
    let w = World::start(|g| g);
    let c = w.client("c", 0, &w.alice);
    let cert = w.alice.cert.to_str().unwrap();
    let e = c.fails(&["--key", cert, "whoami"]);
    assert!(e.contains(cert), "names the file: {e}");
    assert!(
        e.to_lowercase().contains("not a private key") || e.contains("CERTIFICATE"),
        "{e}"
    );
    has_hint(&e);
}

#[test]
fn missing_files_are_named() {
    let w = World::start(|g| g);
    let c = w.client("c", 0, &w.alice);
    for flag in ["--ca", "--cert", "--key"] {
        let missing = w.dir.path().join(format!("nope{flag}.pem"));
        let e = c.fails(&[flag, missing.to_str().unwrap(), "whoami"]);
        assert!(e.contains(missing.to_str().unwrap()), "{flag}: {e}");
        has_hint(&e);
    }
    // No profile at all.
    let bare = ClientUser::with_profile(&w.dir.path().join("bare"), "");
    std::fs::remove_file(&bare.config).unwrap();
    let e = bare.fails(&["list"]);
    has_hint(&e);
}

#[test]
fn unknown_domain_and_domain_not_granted_look_the_same() {
    // A second domain, db1, that no rule grants alice.
    let w2 = World::start_with(&["db1"], |g| g);
    let c = w2.client("c", 0, &w2.alice);
    let list = c.ok(&["list"]);
    assert!(list.contains("web1") && !list.contains("db1"), "{list}");
    let e_unknown = c.fails(&["info", "nosuch"]);
    let e_denied = c.fails(&["info", "db1"]);
    has_hint(&e_unknown);
    assert!(e_unknown.contains("nosuch") && e_denied.contains("db1"));
    assert_eq!(
        e_unknown.replace("nosuch", "X"),
        e_denied.replace("db1", "X"),
        "a domain not granted must look exactly like one that does not exist"
    );
    let out = c.run(&["vnc", "db1", "--no-viewer"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !text(&out).0.contains("vnc://"),
        "no URL for a domain one may not use"
    );
    // curl sees problem+json with a hint.
    let out = curl(
        &w2.alice,
        &w2.pki.ca_pem,
        &format!("{}/v1/domains/db1", w2.gateway.https(0)),
        &["-w", "\n%{http_code} %{content_type}"],
    );
    let (o, _) = text(&out);
    assert!(o.contains("404 application/problem+json"), "{o}");
    assert!(o.contains("\"hint\""), "{o}");
}
