//! The administrator's path with a real service user: the CA and the gateway's files made
//! by `virtgate-pki` as root, then `virtgated check-config` run as `nobody` (the service user
//! simulated with `setpriv`), which must read the gateway's files and nothing of the CA.
//! Needs root (folders are given to the `nogroup` group).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The service user and its group (Debian's unprivileged pair).
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// A temp folder others may traverse (like /etc), holding a copy of `virtgated` that the
/// service user may run.
fn service_tmp() -> (TempDir, PathBuf) {
    let tmp = virtgate_tests::tempdir();
    assert_eq!(
        std::fs::metadata(tmp.path()).unwrap().uid(),
        0,
        "these tests give files to another group and run programs as `{USER}`: run them as root"
    );
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gw = tmp.path().join("virtgated");
    std::fs::copy(bin("virtgated"), &gw).expect("copy virtgated");
    (tmp, gw)
}

/// `ARGS` run as the service user, with its own group only.
fn as_service(program: &Path, args: &[&str]) -> Ran {
    let out = Command::new(system_bin("setpriv", "util-linux"))
        .args(["--reuid", USER, "--regid", GROUP, "--clear-groups"])
        .arg(program)
        .args(args)
        .env_remove("VIRTGATE_GATEWAY_CONFIG")
        .output()
        .expect("run setpriv");
    Ran::from(out)
}

/// A gateway configuration for the files `issue-server --out pki` wrote; the audit log in a
/// folder of the service user's.
fn gateway_config(t: &Path, pki: &Path) -> PathBuf {
    let log = t.join("log");
    std::fs::create_dir(&log).unwrap();
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    let p = |name: &str| pki.join(name).display().to_string();
    let text = format!(
        "[listen]\ntcp = [\"127.0.0.1:0\"]\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         crl = \"{}\"\n\n[backend]\nkind = \"libvirt\"\nuri = \"test:///default\"\n\n\
         [[rule]]\nwho = [\"alice\"]\ndomains = [\"*\"]\nrole = \"viewer\"\n\n[audit]\npath = \"{}\"\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem"),
        p("crl.pem"),
        log.join("audit.jsonl").display()
    );
    let path = t.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Group id of `name` in /etc/group.
fn gid_of(name: &str) -> u32 {
    virtgate_pki::share::group_by_name(name)
        .unwrap_or_else(|| panic!("no group {name} in /etc/group"))
        .gid
}

/// The CRL number openssl reads from `crl`.
fn crl_number(t: &Path, crl: &Path) -> String {
    let crl = crl.display().to_string();
    openssl(t, &["crl", "-in", &crl, "-noout", "-crlnumber"])
        .ok("openssl crl -crlnumber")
        .stdout
}

#[test]
fn the_service_user_reads_the_gateway_files_and_never_the_ca() {
    let (tmp, gw) = service_tmp();
    let t = tmp.path();
    let ca = t.join("etc/virtgate/ca");
    let pki_dir = t.join("etc/virtgate/pki");

    // the CA's parent folders do not exist yet
    let r = pki_in(t, &ca, &["init", "--name", "hv1 CA"]).ok("init");
    assert!(
        r.stderr.contains("NOT encrypted") && r.stderr.contains("--passphrase-file"),
        "init must warn about an unencrypted ca.key: {}",
        r.stderr
    );
    assert_eq!(
        mode(&t.join("etc")),
        0o755,
        "a missing parent must not lock others out"
    );
    assert_eq!(mode(&t.join("etc/virtgate")), 0o755);
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);

    let out = pki_dir.display().to_string();
    let r = pki(
        &ca,
        &[
            "issue-server",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            &out,
            "--group",
            GROUP,
        ],
    )
    .ok("issue-server");
    assert!(
        r.stdout.contains(&format!("readable by group {GROUP}")),
        "{}",
        r.stdout
    );
    let gid = gid_of(GROUP);
    for (name, want) in [
        ("", 0o750),
        ("server.key", 0o640),
        ("server.pem", 0o644),
        ("ca.pem", 0o644),
        ("crl.pem", 0o644),
    ] {
        let p = pki_dir.join(name);
        assert_eq!(mode(&p), want, "mode of {}", p.display());
    }
    assert_eq!(std::fs::metadata(&pki_dir).unwrap().gid(), gid);
    assert_eq!(
        std::fs::metadata(pki_dir.join("server.key")).unwrap().gid(),
        gid
    );
    pki(
        &ca,
        &["issue-client", "alice", "--out", "alice", "--no-passphrase"],
    )
    .ok("alice");

    // the service user: the gateway's files yes, the CA no
    let config = gateway_config(t, &pki_dir);
    let cfg = config.display().to_string();
    let r = as_service(&gw, &["--config", &cfg, "check-config"]);
    assert_eq!(
        r.code,
        Some(0),
        "check-config as {USER}:\n{}{}",
        r.stdout,
        r.stderr
    );
    let cat = system_bin("cat", "coreutils");
    let r = as_service(&cat, &[ca.join("ca.key").to_str().unwrap()]);
    assert_ne!(r.code, Some(0), "{USER} read ca.key");
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    let r = as_service(&cat, &[ca.join("index.json").to_str().unwrap()]);
    assert_ne!(r.code, Some(0), "{USER} read the CA's index");

    // revoke publishes the CRL where the gateway reads it
    let before = crl_number(t, &pki_dir.join("crl.pem"));
    let r = pki(&ca, &["revoke", "alice"]).ok("revoke");
    assert!(r
        .stdout
        .contains(&format!("wrote {}", pki_dir.join("crl.pem").display())));
    assert!(
        r.stdout.contains("systemctl reload virtgated"),
        "{}",
        r.stdout
    );
    let published = std::fs::read(pki_dir.join("crl.pem")).unwrap();
    assert_eq!(published, std::fs::read(ca.join("crl.pem")).unwrap());
    assert_ne!(crl_number(t, &pki_dir.join("crl.pem")), before);
    let crl = pki_dir.join("crl.pem").display().to_string();
    let cafile = pki_dir.join("ca.pem").display().to_string();
    let r = openssl(
        t,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            &cafile,
            "-CRLfile",
            &crl,
            "alice/alice.pem",
        ],
    );
    assert_ne!(r.code, Some(0), "alice passed the published CRL");

    // `crl` renews every copy, and the service user can still read it
    let before = crl_number(t, &pki_dir.join("crl.pem"));
    pki(&ca, &["crl"]).ok("crl");
    assert_ne!(crl_number(t, &pki_dir.join("crl.pem")), before);
    let r = as_service(&gw, &["--config", &cfg, "check-config"]);
    assert_eq!(r.code, Some(0), "check-config after crl:\n{}", r.stderr);
}

#[test]
fn a_folder_that_keeps_the_service_user_out_is_named() {
    let (tmp, gw) = service_tmp();
    let t = tmp.path();
    let ca = t.join("ca");
    pki(&ca, &["init"]).ok("init");
    // into the CA folder: it stays private, and virtgate-pki says so
    let r = pki(&ca, &["issue-server", "--dns", "localhost"]).ok("issue-server");
    assert!(r.stderr.contains("stays private"), "{}", r.stderr);
    assert!(r.stderr.contains("--out /etc/virtgate/pki"), "{}", r.stderr);
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&ca.join("server.key")), 0o600);

    let config = gateway_config(t, &ca);
    let r = as_service(&gw, &["--config", config.to_str().unwrap(), "check-config"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    let want = format!(
        "the folder {} (root:root 0700) keeps this user out",
        ca.display()
    );
    assert!(
        r.stderr.contains(&want),
        "the hint must name the folder:\n{}",
        r.stderr
    );
}

#[test]
fn groups_and_published_crls_on_the_command_line() {
    let (tmp, _gw) = service_tmp();
    let t = tmp.path();
    let ca = t.join("ca");
    pki(&ca, &["init"]).ok("init");
    let r = pki(
        &ca,
        &[
            "issue-server",
            "--dns",
            "localhost",
            "--out",
            "pki",
            "--group",
            "no-such-group-vg",
        ],
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stderr.contains("there is no group `no-such-group-vg`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: create it (`addgroup --system"),
        "{}",
        r.stderr
    );
    assert!(
        !t.join("pki/server.key").exists(),
        "nothing is written after the refusal"
    );

    // `crl --out FILE` publishes now and at every later revoke
    std::fs::create_dir(t.join("pub")).unwrap();
    let r = pki(&ca, &["crl", "--out", "pub/crl.pem"]).ok("crl --out");
    assert!(
        r.stdout
            .contains("every later `revoke` and `crl` also writes"),
        "{}",
        r.stdout
    );
    pki(
        &ca,
        &["issue-client", "bob", "--out", "bob", "--no-passphrase"],
    )
    .ok("bob");
    pki(&ca, &["revoke", "bob"]).ok("revoke");
    assert_eq!(
        std::fs::read(t.join("pub/crl.pem")).unwrap(),
        std::fs::read(ca.join("crl.pem")).unwrap()
    );
    // a copy whose folder is gone is an error naming it (the CA's own CRL is written)
    std::fs::remove_dir_all(t.join("pub")).unwrap();
    let r = pki(&ca, &["crl"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("publishing the CRL to"), "{}", r.stderr);
    assert!(r.stderr.contains("pub/crl.pem"), "{}", r.stderr);
}
