//! `virtgated demo`: a throwaway PKI, a demo VM under QEMU, a `demo` client profile with an
//! encrypted key, and a gateway serving it: what README command 1 shows a new user.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{bin, poll, text, ChildGuard};

#[test]
fn demo_serves_a_vm_to_the_demo_profile() {
    let dir = virtgate_tests::tempdir();
    let demo = dir.path().join("demo");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("virtgate.toml");
    // A user config that already has another profile: the demo must keep it.
    std::fs::write(
        &config,
        "[profile.work]\nurl = \"virtgate://hv.example.org\"\n",
    )
    .unwrap();
    let child = Command::new(bin("virtgated"))
        .args(["--allow-root", "demo", "--dir"])
        .arg(&demo)
        .env("HOME", &home)
        .env("VIRTGATE_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("demo.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child, "virtgated demo");
    poll("demo ready file", Duration::from_secs(60), || {
        if let Some(s) = guard.try_status() {
            panic!(
                "demo exited early ({s}): {}",
                std::fs::read_to_string(dir.path().join("demo.err")).unwrap_or_default()
            );
        }
        demo.join("ready").exists().then_some(())
    });
    let profiles = std::fs::read_to_string(&config).unwrap();
    assert!(profiles.contains("[profile.work]"), "kept: {profiles}");
    assert!(profiles.contains("[profile.demo]"), "added: {profiles}");

    let client = |args: &[&str]| {
        let out = virtgate_tests::run(
            Command::new(bin("virtgate"))
                .env("HOME", &home)
                .env("VIRTGATE_CONFIG", &config)
                .env_remove("VIRTGATE_KEY_PASSPHRASE")
                .args(["-p", "demo"])
                .args(args),
        );
        let (o, e) = text(&out);
        assert!(out.status.success(), "virtgate {args:?}: {e}");
        o
    };
    let list: Value = serde_json::from_str(&client(&["list", "--json"])).unwrap();
    assert!(list.to_string().contains("\"demo\""), "{list}");

    // The key the profile uses is encrypted.
    let keys: Vec<_> = walk(&demo)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .filter(|p| !p.ends_with("server.key") && !p.ends_with("ca.key"))
        .collect();
    assert!(!keys.is_empty());
    for k in &keys {
        let pem = std::fs::read_to_string(k).unwrap();
        assert!(
            pem.contains("ENCRYPTED PRIVATE KEY"),
            "{} is not encrypted",
            k.display()
        );
    }

    // A real VNC client sees the demo VM's BIOS screen through the tunnel.
    let mut fwd = Command::new(bin("virtgate"))
        .env("HOME", &home)
        .env("VIRTGATE_CONFIG", &config)
        .args(["-p", "demo", "vnc", "demo", "--no-viewer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = virtgate_tests::fixture::process::LineReader::new(fwd.stdout.take().unwrap());
    let _fwd = ChildGuard::new(fwd, "virtgate vnc");
    let url = lines.next_line(Duration::from_secs(30)).expect("vnc URL");
    let addr = url
        .trim()
        .strip_prefix("vnc://")
        .unwrap()
        .replace(':', "::");
    let shot = dir.path().join("demo.jpg");
    assert_eq!(snapshot_until(&addr, &shot, SEABIOS), SEABIOS);

    // Ctrl-C stops the demo and its VM.
    guard.signal("INT");
    let status = guard
        .wait_deadline(Duration::from_secs(20))
        .expect("demo stops on Ctrl-C");
    assert!(status.success(), "{status}");
    let qmp = walk(&demo).into_iter().find(|p| p.ends_with("qmp.sock"));
    if let Some(q) = qmp {
        assert!(
            std::os::unix::net::UnixStream::connect(q).is_err(),
            "demo VM still running"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
