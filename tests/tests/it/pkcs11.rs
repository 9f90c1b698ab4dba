//! Hardware keys: a SoftHSM2 token of the test's own, a key made ON the token (by
//! `virtgate enroll --key pkcs11:…`, or by OpenSC's `pkcs11-tool` as an admin would), a
//! certificate from `virtgate-pki sign-csr`, and a profile whose `key` is the token's URI:
//! `whoami` and `list` against a real gateway. Then every way a user gets it wrong: a
//! wrong PIN (one attempt, the token stays usable), a missing token, a module that is not
//! one or does not exist, a key that is not there, a URI that is not one, a PIN in the URI,
//! a certificate of another key.

use std::path::{Path, PathBuf};

use serde_json::Value;
use virtgate_tests::fixture::gateway::toml_str;
use virtgate_tests::fixture::pki::pki_cmd;
use virtgate_tests::fixture::softhsm::{SoftHsm, SoftHsmBuilder};
use virtgate_tests::{text, ClientUser, Pki};

use crate::World;

const PIN: &str = "246810";

/// A file holding `pin` (for `--passphrase-file` and `passphrase_command = "cat FILE"`).
fn pin_file(dir: &Path, name: &str, pin: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, format!("{pin}\n")).unwrap();
    f
}

/// What a token profile says.
struct TokenProfile<'a> {
    url: &'a str,
    ca: &'a Path,
    cert: &'a Path,
    /// `key = "pkcs11:…"`.
    uri: &'a str,
    /// `pkcs11_module`, unless `None`.
    module: Option<&'a Path>,
    /// `passphrase_command`: where the PIN comes from.
    pin_command: &'a str,
}

/// A client (in `dir`) whose profile `t` is `p`, with the token's `SOFTHSM2_CONF`.
fn token_client(dir: &Path, hsm: &SoftHsm, p: TokenProfile<'_>) -> ClientUser {
    let mut profile = format!(
        "url = {}\nca = {}\ncert = {}\nkey = {}\npassphrase_command = {}\n",
        toml_str(p.url),
        toml_str(&p.ca.display().to_string()),
        toml_str(&p.cert.display().to_string()),
        toml_str(p.uri),
        toml_str(p.pin_command),
    );
    if let Some(m) = p.module {
        profile.push_str(&format!(
            "pkcs11_module = {}\n",
            toml_str(&m.display().to_string())
        ));
    }
    ClientUser::with_profile(dir, &profile).with_env("SOFTHSM2_CONF", &hsm.conf)
}

/// `cat FILE`, a `passphrase_command`.
fn cat(file: &Path) -> String {
    format!("cat {}", file.display())
}

/// `virtgate-pki sign-csr CSR --expect USER --out USER.pem` in the world's CA.
fn sign(pki: &Pki, csr: &Path, user: &str, out: &Path) {
    let said = pki_cmd(
        &pki.dir,
        &[
            "sign-csr",
            csr.to_str().unwrap(),
            "--expect",
            user,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(said.contains(user), "{said}");
}

/// The Access line pkcs11-tool prints for the private key `label`.
fn access_of(hsm: &SoftHsm, label: &str) -> String {
    let listed = hsm.tool_ok(&["--list-objects", "--type", "privkey", "--label", label]);
    listed
        .lines()
        .find(|l| l.trim_start().starts_with("Access:"))
        .unwrap_or_else(|| panic!("no Access line for {label}:\n{listed}"))
        .to_owned()
}

fn whoami_and_list(c: &ClientUser) {
    let who: Value = serde_json::from_str(&c.ok(&["whoami", "--json"])).unwrap();
    assert_eq!(
        (&who["user"], &who["method"]),
        (&Value::from("alice"), &Value::from("certificate")),
        "{who}"
    );
    let table = c.ok(&["list"]);
    assert!(
        table.contains("web1") && table.contains("running"),
        "{table}"
    );
}

#[test]
fn a_key_enrolled_on_the_token_logs_in_and_never_leaves_it() {
    let w = World::start(|g| g);
    let dir = w.dir.path();
    let hsm = SoftHsmBuilder::new("alice-key", PIN).init(dir);
    let pin = pin_file(dir, "pin", PIN);
    let uri = hsm.uri("virtgate");
    let enroll_dir = dir.join("enroll");
    // enroll: no key with that label yet, so one is made on the token
    let laptop = ClientUser::with_profile(&dir.join("laptop"), "url = \"virtgate://x\"\n")
        .with_env("SOFTHSM2_CONF", &hsm.conf);
    let out = laptop.ok(&[
        "enroll",
        "alice",
        "--key",
        &uri,
        "--pkcs11-module",
        hsm.module.to_str().unwrap(),
        "--passphrase-file",
        pin.to_str().unwrap(),
        "--dir",
        enroll_dir.to_str().unwrap(),
    ]);
    assert!(
        out.contains("made object \"virtgate\"") && out.contains("on token \"alice-key\""),
        "{out}"
    );
    assert!(out.contains("--pkcs11-module"), "{out}");
    // the private key is on the token and cannot be read out of it
    let access = access_of(&hsm, "virtgate");
    assert!(
        access.contains("sensitive") && access.contains("never extractable"),
        "{access}"
    );
    assert!(
        !enroll_dir.join("alice.key").exists(),
        "no key file is written"
    );
    let csr = enroll_dir.join("alice.csr");
    let cert = dir.join("alice-token.pem");
    sign(&w.pki, &csr, "alice", &cert);

    let c = token_client(
        &dir.join("c"),
        &hsm,
        TokenProfile {
            url: &w.gateway.url(0),
            ca: &w.pki.ca_pem,
            cert: &cert,
            uri: &uri,
            module: Some(&hsm.module),
            pin_command: &cat(&pin),
        },
    );
    whoami_and_list(&c);

    // `virtgate up`: the PIN is read once, and every command shares that login
    let count = dir.join("pin-reads");
    let counted = format!("echo read >> {}; cat {}", count.display(), pin.display());
    let shared = token_client(
        &dir.join("shared"),
        &hsm,
        TokenProfile {
            url: &w.gateway.url(0),
            ca: &w.pki.ca_pem,
            cert: &cert,
            uri: &uri,
            module: Some(&hsm.module),
            pin_command: &counted,
        },
    );
    let (up, said) = shared.up();
    assert!(said.contains("as alice"), "{said}");
    for _ in 0..3 {
        assert!(shared.ok(&["list"]).contains("web1"));
    }
    let reads = std::fs::read_to_string(&count).unwrap();
    assert_eq!(reads.lines().count(), 1, "the PIN is asked once: {reads}");
    shared.ok(&["down"]);
    drop(up);

    // enrolling again with the same label uses that key: nothing new on the token
    let again = laptop.ok(&[
        "enroll",
        "alice",
        "--key",
        &uri,
        "--pkcs11-module",
        hsm.module.to_str().unwrap(),
        "--passphrase-file",
        pin.to_str().unwrap(),
        "--dir",
        dir.join("enroll2").to_str().unwrap(),
    ]);
    assert!(again.contains("found object \"virtgate\""), "{again}");
    let keys = hsm.tool_ok(&["--list-objects", "--type", "privkey"]);
    assert_eq!(keys.matches("Private Key Object").count(), 1, "{keys}");
}

#[test]
fn keys_made_with_pkcs11_tool_rsa_and_p384_sign_too() {
    let w = World::start(|g| g);
    let dir = w.dir.path();
    let hsm = SoftHsmBuilder::new("admin made", PIN).init(dir);
    let pin = pin_file(dir, "pin", PIN);
    // RSA signs TLS 1.3 with RSA-PSS; P-384 with ECDSA-SHA384. The module comes from the
    // URI's module-path here; the label has a space (percent-encoded)
    for (key_type, label, id) in [("rsa:2048", "rsa", "0a"), ("EC:secp384r1", "p384", "0b")] {
        hsm.tool_ok(&[
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ]);
        let uri = format!(
            "pkcs11:token=admin%20made;object={label}?module-path={}",
            hsm.module.display()
        );
        let enrolled = dir.join(label);
        let laptop = ClientUser::with_profile(&dir.join(format!("l-{label}")), "url = \"x\"\n")
            .with_env("SOFTHSM2_CONF", &hsm.conf);
        let out = laptop.ok(&[
            "enroll",
            "alice",
            "--key",
            &uri,
            "--passphrase-file",
            pin.to_str().unwrap(),
            "--dir",
            enrolled.to_str().unwrap(),
        ]);
        assert!(out.contains(&format!("found object \"{label}\"")), "{out}");
        let cert = dir.join(format!("{label}.pem"));
        sign(&w.pki, &enrolled.join("alice.csr"), "alice", &cert);
        let c = token_client(
            &dir.join(format!("c-{label}")),
            &hsm,
            TokenProfile {
                url: &w.gateway.url(1),
                ca: &w.pki.ca_pem,
                cert: &cert,
                uri: &uri,
                module: None,
                pin_command: &cat(&pin),
            },
        );
        whoami_and_list(&c);
    }
}

/// One failing `whoami` with a token profile: its stderr.
struct BadInputs {
    _dir: tempfile::TempDir,
    root: PathBuf,
    hsm: SoftHsm,
    pki: Pki,
    /// A certificate made for the token's key `k1`.
    cert: PathBuf,
    pin: PathBuf,
    n: std::cell::Cell<usize>,
}

impl BadInputs {
    fn new() -> BadInputs {
        let dir = virtgate_tests::tempdir();
        let root = dir.path().to_owned();
        let hsm = SoftHsmBuilder::new("alice", PIN).init(&root);
        hsm.keypairgen("k1", "01");
        let pki = Pki::new(&root, "ca");
        let pin = pin_file(&root, "pin", PIN);
        // a request signed by the token, then its certificate: enroll as a user would
        let laptop = ClientUser::with_profile(&root.join("laptop"), "url = \"x\"\n")
            .with_env("SOFTHSM2_CONF", &hsm.conf);
        laptop.ok(&[
            "enroll",
            "alice",
            "--key",
            &hsm.uri("k1"),
            "--pkcs11-module",
            hsm.module.to_str().unwrap(),
            "--passphrase-file",
            pin.to_str().unwrap(),
            "--dir",
            root.join("enroll").to_str().unwrap(),
        ]);
        let cert = root.join("alice.pem");
        sign(&pki, &root.join("enroll/alice.csr"), "alice", &cert);
        BadInputs {
            _dir: dir,
            root,
            hsm,
            pki,
            cert,
            pin,
            n: std::cell::Cell::new(0),
        }
    }

    /// `virtgate whoami` with `key = uri`, `module` and the PIN in `pin`; it must fail
    /// before any network (the URL is a closed port). Returns stderr.
    fn fails(&self, uri: &str, module: Option<&Path>, pin: &Path, cert: &Path) -> String {
        self.n.set(self.n.get() + 1);
        let c = token_client(
            &self.root.join(format!("c{}", self.n.get())),
            &self.hsm,
            TokenProfile {
                url: "virtgate://127.0.0.1:9",
                ca: &self.pki.ca_pem,
                cert,
                uri,
                module,
                pin_command: &cat(pin),
            },
        );
        let e = c.fails(&["whoami"]);
        assert!(e.contains("\nhint: "), "no hint in: {e}");
        assert!(
            !e.contains("cannot connect"),
            "it should fail before connecting: {e}"
        );
        e
    }

    fn module(&self) -> Option<&Path> {
        Some(&self.hsm.module)
    }
}

#[test]
fn bad_token_inputs_say_what_is_wrong() {
    let b = BadInputs::new();
    let uri = b.hsm.uri("k1");
    let (pin, cert) = (b.pin.clone(), b.cert.clone());

    // a wrong PIN: said in words, tried once; the token still takes the right one
    let wrong = pin_file(&b.root, "wrong", "000000");
    let e = b.fails(&uri, b.module(), &wrong, &cert);
    assert!(
        e.contains("error: wrong PIN for token \"alice\" (CKR_PIN_INCORRECT)"),
        "{e}"
    );
    assert!(e.contains("hint: no second attempt was made"), "{e}");
    let slots = b.hsm.tool(&["--list-token-slots"]);
    let (o, _) = text(&slots);
    assert!(!o.contains("PIN locked"), "{o}");
    b.hsm.tool_ok(&["--list-objects", "--type", "privkey"]);

    // a token no slot has: the ones that exist are listed
    let e = b.fails("pkcs11:token=bob;object=k1", b.module(), &pin, &cert);
    assert!(
        e.contains("error: no token matches token \"bob\" in the PKCS#11 module")
            && e.contains("it has: \"alice\" (SoftHSM project, serial "),
        "{e}"
    );
    assert!(e.contains("hint: fix `token=` in the URI"), "{e}");

    // a module path that is a file but no module, a library that is no PKCS#11 module,
    // and one that does not exist
    let e = b.fails(&uri, Some(Path::new("/etc/passwd")), &pin, &cert);
    assert!(
        e.contains("error: /etc/passwd is not a PKCS#11 module: it cannot be loaded"),
        "{e}"
    );
    assert!(
        e.contains("hint: `pkcs11_module` must be the token's PKCS#11 library"),
        "{e}"
    );
    let libc = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/aarch64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
    .expect("libc.so.6 in a Debian multiarch folder");
    let e = b.fails(&uri, Some(libc), &pin, &cert);
    assert!(
        e.contains("is not a PKCS#11 module: it has no C_GetFunctionList"),
        "{e}"
    );
    let e = b.fails(&uri, Some(Path::new("/nonexistent/p11.so")), &pin, &cert);
    assert!(
        e.contains("error: the PKCS#11 module /nonexistent/p11.so does not exist"),
        "{e}"
    );
    assert!(
        e.contains("modules on this machine: ") && e.contains("libsofthsm2.so"),
        "{e}"
    );
    // no module anywhere: where to set one, and what is installed
    let e = b.fails(&uri, None, &pin, &cert);
    assert!(e.contains("no PKCS#11 module is named"), "{e}");
    assert!(e.contains("hint: set `pkcs11_module = "), "{e}");

    // a key the token does not have: the ones it has are listed
    let e = b.fails(&b.hsm.uri("k2"), b.module(), &pin, &cert);
    assert!(
        e.contains("error: no private key matches object \"k2\" on token \"alice\"; it has: \"k1\" (id 01)"),
        "{e}"
    );
    assert!(e.contains("hint: fix `object=`"), "{e}");

    // URIs that are not RFC 7512, or carry a PIN
    let e = b.fails("pkcs11:token=alice;objekt=k1", b.module(), &pin, &cert);
    assert!(
        e.contains("error: the key URI `pkcs11:token=alice;objekt=k1` cannot be used: unknown attribute `objekt`"),
        "{e}"
    );
    assert!(
        e.contains("hint: write the key as `pkcs11:token=LABEL;object=KEY`"),
        "{e}"
    );
    let e = b.fails(
        "pkcs11:token=alice;object=k1?pin-value=246810",
        b.module(),
        &pin,
        &cert,
    );
    assert!(e.contains("`pin-value` is not supported"), "{e}");
    assert!(e.contains("hint: remove the PIN from the URI"), "{e}");
    assert!(
        !e.contains(PIN) && e.contains("pin-value=***"),
        "the PIN is not repeated: {e}"
    );

    // the token's key with a certificate of another key
    let other = b.pki.client("alice", None);
    let e = b.fails(&uri, b.module(), &pin, &other.cert);
    assert!(
        e.contains(&format!(
            "error: the key {uri} does not belong to the certificate {}",
            other.cert.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("hint: `cert` must be the certificate signed for this key"),
        "{e}"
    );
}
