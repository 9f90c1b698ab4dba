//! The package on a fresh Debian 12: a minbase root made by debootstrap (cached in
//! /var/tmp/virtgate-tests-bookworm, built once), copied per run; `apt-get install
//! ./virtgate_*.deb` inside it resolves the dependencies from Debian, then the README's
//! administrator path runs there: CA and certificates with virtgate-pki, the shipped
//! configuration, the service started by OpenRC as the `virtgate` user (Debian's openrc
//! package, installed in the copy only: systemd cannot run here, PID 1 is not systemd),
//! `virtgate whoami`, reloads (good and refused), a revocation, stop.
//!
//! Downloads from deb.debian.org (or $VIRTGATE_DEBIAN_MIRROR); the .deb files apt fetches
//! are kept in /var/tmp/virtgate-tests-bookworm-apt for the next run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use virtgate_tests::fixture::process::run_deadline;
use virtgate_tests::{poll, system_bin, text};

/// The cached minbase root.
const CACHE: &str = "/var/tmp/virtgate-tests-bookworm";
/// apt's downloads, shared by the copies.
const APT_CACHE: &str = "/var/tmp/virtgate-tests-bookworm-apt";
/// Written last into a finished cache.
const DONE: &str = ".virtgate-complete";

/// The cached root, made with debootstrap when missing.
fn bookworm_root() -> PathBuf {
    let cache = PathBuf::from(CACHE);
    if cache.join(DONE).is_file() {
        return cache;
    }
    let debootstrap = system_bin("debootstrap", "debootstrap");
    let mirror = std::env::var("VIRTGATE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    let tmp = PathBuf::from(format!("{CACHE}.tmp-{}", std::process::id()));
    let start = Instant::now();
    let out = run_deadline(
        Command::new(debootstrap)
            .args(["--variant=minbase", "bookworm"])
            .arg(&tmp)
            .arg(&mirror),
        Duration::from_secs(20 * 60),
    );
    let (o, e) = text(&out);
    assert!(
        out.status.success(),
        "debootstrap {mirror} failed:\n{e}\n{o}"
    );
    std::fs::write(tmp.join(DONE), "").expect("mark the root complete");
    let _ = std::fs::remove_dir_all(&cache); // an unfinished older attempt
    std::fs::rename(&tmp, &cache).expect("move the new root into the cache");
    eprintln!(
        "debootstrap --variant=minbase bookworm: {:.0?}",
        start.elapsed()
    );
    cache
}

/// A throwaway copy of the cached root with /proc and apt's cache mounted; everything in it
/// is killed, unmounted and removed on drop.
struct Chroot {
    /// The copy.
    root: PathBuf,
    /// Mount points inside it, unmounted in reverse.
    mounts: Vec<PathBuf>,
}

impl Chroot {
    /// Copies the cached root.
    fn new(cache: &Path) -> Chroot {
        let root = PathBuf::from(format!(
            "/var/tmp/vg-chroot-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let out = run_deadline(
            Command::new(system_bin("cp", "coreutils"))
                .arg("-a")
                .arg(cache)
                .arg(&root),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "cp -a: {}", text(&out).1);
        let mut c = Chroot {
            root,
            mounts: Vec::new(),
        };
        std::fs::create_dir_all(Path::new(APT_CACHE).join("partial")).expect("apt cache");
        c.mount(&["-t", "proc", "proc"], "proc");
        c.mount(&["--bind", APT_CACHE], "var/cache/apt/archives");
        c
    }

    /// `mount ARGS ROOT/at`.
    fn mount(&mut self, args: &[&str], at: &str) {
        let target = self.root.join(at);
        let out = run_deadline(
            Command::new(system_bin("mount", "mount"))
                .args(args)
                .arg(&target),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "mount {args:?} {}: {}",
            target.display(),
            text(&out).1
        );
        self.mounts.push(target);
    }

    /// Runs `args` inside with a clean environment; (ok, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = run_deadline(
            Command::new(system_bin("chroot", "coreutils"))
                .arg(&self.root)
                .args(args)
                .env_clear()
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .env("HOME", "/root")
                .env("LANG", "C.UTF-8")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(600),
        );
        let (o, e) = text(&out);
        (out.status.success(), o, e)
    }

    /// Like [`Chroot::run`], failing the test when the command fails; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, o, e) = self.run(args);
        assert!(ok, "in the chroot, {args:?} failed:\n{o}\n{e}");
        o
    }

    /// Runs `args` as the service user, with its groups.
    fn as_service(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec![
            "setpriv",
            "--reuid",
            "virtgate",
            "--regid",
            "virtgate",
            "--init-groups",
        ];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `stat -c '%U:%G %a' PATH` inside.
    fn stat(&self, path: &str) -> String {
        self.ok(&["stat", "-c", "%U:%G %a", path])
            .trim()
            .to_string()
    }

    /// The host path of `path` inside.
    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Writes a root-only file inside.
    fn write_secret(&self, path: &str, contents: &str) {
        let p = self.path(path);
        std::fs::write(&p, contents).expect("write into the chroot");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Kills every process whose root is this copy (the gateway started by OpenRC).
    fn kill_inside(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(p.path().join("root")).is_ok_and(|r| r == self.root) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        self.kill_inside();
        std::thread::sleep(Duration::from_millis(200));
        for m in self.mounts.iter().rev() {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        // never remove through a mount that is still there (the apt cache is a bind mount
        // on the same file system, which --one-file-system would not stop)
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!(" {}", self.root.display());
        if mounts.lines().any(|l| l.contains(&prefix)) {
            eprintln!(
                "leaving {} in place: something is still mounted in it",
                self.root.display()
            );
            return;
        }
        let _ = Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(&self.root)
            .status();
    }
}

/// This process's hard limit on open files (a container may cap it below 65536).
fn nofile_hard_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
        .unwrap_or(65536)
}

/// Prints how long a step took (for the CI budget).
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let v = f();
    eprintln!("{what}: {:.1?}", start.elapsed());
    v
}

#[test]
fn installs_on_a_fresh_debian_12_and_the_service_answers() {
    let deb = super::deb();
    let cache = timed("bookworm root (cached after the first run)", bookworm_root);
    let c = timed("copy of the root", || Chroot::new(&cache));
    std::fs::copy(deb, c.path("/tmp/virtgate.deb")).expect("copy the .deb in");
    // what udev and libvirt-daemon-system would have made on a hypervisor host
    c.ok(&["groupadd", "--system", "kvm"]);
    c.ok(&["groupadd", "--system", "libvirt"]);
    timed("apt-get update", || c.ok(&["apt-get", "update", "-q"]));
    let out = timed("apt-get install ./virtgate.deb", || {
        c.ok(&[
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "/tmp/virtgate.deb",
        ])
    });
    assert!(
        out.contains("Setting up virtgate (") && out.contains("libvirt0"),
        "{out}"
    );

    // what postinst made
    let user = c.ok(&["getent", "passwd", "virtgate"]);
    assert!(
        user.trim_end()
            .ends_with(":/var/lib/virtgate:/usr/sbin/nologin"),
        "{user}"
    );
    let groups = c.ok(&["id", "-nG", "virtgate"]);
    for g in ["virtgate", "kvm", "libvirt"] {
        assert!(
            groups.split_whitespace().any(|x| x == g),
            "virtgate is not in {g}: {groups}"
        );
    }
    assert_eq!(c.stat("/var/log/virtgate"), "virtgate:virtgate 750");
    assert_eq!(c.stat("/run/virtgate"), "virtgate:virtgate 755");
    assert_eq!(c.stat("/etc/virtgate/gateway.toml"), "root:root 644");

    // the shipped configuration only lacks the certificates
    let (ok, _, e) = c.as_service(&["virtgated", "check-config"]);
    assert!(
        !ok && e.starts_with(
            "error: tls.cert: certificate file /etc/virtgate/pki/server.pem does not exist"
        ),
        "{e}"
    );

    // the README's set-up: an encrypted CA key, the gateway's files, a user's files
    c.write_secret("/root/ca.pass", "correct horse ca\n");
    c.write_secret("/root/alice.pass", "alice battery\n");
    // as the README has it: `umask 077` first, which virtgate-pki's modes must not depend on
    let pki = |args: &[&str]| {
        let mut all = vec![
            "sh",
            "-c",
            "umask 077 && exec \"$@\"",
            "sh",
            "virtgate-pki",
            "--dir",
            "/etc/virtgate/ca",
            "--ca-passphrase-file",
            "/root/ca.pass",
        ];
        all.extend_from_slice(args);
        c.ok(&all)
    };
    pki(&[
        "init",
        "--name",
        "hv1 CA",
        "--passphrase-file",
        "/root/ca.pass",
    ]);
    let out = pki(&[
        "issue-server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        "/etc/virtgate/pki",
    ]);
    assert!(
        out.contains("readable by group virtgate"),
        "the default group: {out}"
    );
    pki(&[
        "issue-client",
        "alice",
        "--out",
        "/root/alice",
        "--passphrase-file",
        "/root/alice.pass",
    ]);
    assert_eq!(c.stat("/etc/virtgate/ca"), "root:root 700");
    assert_eq!(c.stat("/etc/virtgate/ca/ca.key"), "root:root 600");
    assert_eq!(c.stat("/etc/virtgate/pki"), "root:virtgate 750");
    assert_eq!(c.stat("/etc/virtgate/pki/server.key"), "root:virtgate 640");
    assert_eq!(c.stat("/etc/virtgate/pki/crl.pem"), "root:root 644");

    // the admin's edits: a free port on loopback (the chroot shares this host's network), alice
    let conf = c.path("/etc/virtgate/gateway.toml");
    let shipped = std::fs::read_to_string(&conf).unwrap();
    let edited = shipped
        .replace("tcp = [\"[::]:16520\"]", "tcp = [\"127.0.0.1:0\"]")
        .replace("who = [\"root\"]", "who = [\"root\", \"alice\"]");
    assert_ne!(
        edited.matches("127.0.0.1:0").count() + edited.matches("\"alice\"]").count(),
        0
    );
    std::fs::write(&conf, &edited).unwrap();
    let (ok, o, e) = c.as_service(&["virtgated", "check-config"]);
    assert!(ok, "check-config as virtgate:\n{o}{e}");
    let (ok, _, e) = c.as_service(&["cat", "/etc/virtgate/ca/ca.key"]);
    assert!(
        !ok && e.contains("Permission denied"),
        "the service user read ca.key: {e}"
    );

    // the service, as OpenRC starts it (user virtgate, the gateway's own pidfile)
    timed("apt-get install openrc (in the copy only)", || {
        c.ok(&[
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "openrc",
        ])
    });
    std::fs::create_dir_all(c.path("/run/openrc")).unwrap();
    std::fs::write(c.path("/run/openrc/softlevel"), "").unwrap();
    // started with a low soft limit on descriptors, which the script must raise
    let hard = nofile_hard_limit();
    let prlimit = format!("--nofile=1024:{hard}");
    timed("rc-service virtgated start", || {
        c.ok(&["prlimit", &prlimit, "rc-service", "virtgated", "start"])
    });
    let pid = std::fs::read_to_string(c.path("/run/virtgate/virtgated.pid"))
        .expect("the gateway's pidfile");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = c.ok(&["id", "-u", "virtgate"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(uid.trim())),
        "the gateway does not run as virtgate:\n{status}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim())).unwrap();
    let want = hard.min(65536).to_string();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some(&want)),
        "the OpenRC script did not raise the descriptor limit to {want}:\n{limits}"
    );
    let log = c.path("/var/log/virtgate/virtgated.log");
    let port = poll(
        "the gateway's TCP port in its log",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("listening on 127.0.0.1:"))
                .map(|p| p.trim().to_string())
        },
    );
    let url = format!("virtgate://127.0.0.1:{port}");
    let whoami = |c: &Chroot| {
        c.run(&[
            "virtgate",
            "--url",
            &url,
            "--ca",
            "/root/alice/ca.pem",
            "--cert",
            "/root/alice/alice.pem",
            "--key",
            "/root/alice/alice.key",
            "--passphrase-file",
            "/root/alice.pass",
            "whoami",
        ])
    };
    let (ok, o, e) = whoami(&c);
    assert!(
        ok && o.contains("user:      alice") && o.contains("method:    certificate"),
        "{o}{e}"
    );
    let o = c.ok(&[
        "virtgate",
        "--url",
        "virtgate+unix:///run/virtgate/virtgate.sock",
        "whoami",
    ]);
    assert!(
        o.contains("user:      root") && o.contains("method:    unix"),
        "{o}"
    );

    // reload: a broken configuration is refused and the gateway keeps serving
    c.ok(&["rc-service", "virtgated", "reload"]);
    std::fs::write(&conf, format!("{edited}\nbogus_key = 1\n")).unwrap();
    let (ok, o, e) = c.run(&["rc-service", "virtgated", "reload"]);
    assert!(
        !ok && format!("{o}{e}").contains("bogus_key"),
        "a bad reload must fail and say why:\n{o}{e}"
    );
    let (ok, o, e) = whoami(&c);
    assert!(
        ok,
        "the gateway stopped serving after a refused reload: {o}{e}"
    );
    std::fs::write(&conf, &edited).unwrap();

    // revoke alice: the CRL in /etc/virtgate/pki, a reload, and she is out
    pki(&["revoke", "alice"]);
    c.ok(&["rc-service", "virtgated", "reload"]);
    let (ok, o, e) = whoami(&c);
    assert!(
        !ok && e.contains("revoked"),
        "alice still gets in after revoke + reload:\n{o}{e}"
    );

    timed("rc-service virtgated stop", || {
        c.ok(&["rc-service", "virtgated", "stop"])
    });
    assert!(
        !c.path("/run/virtgate/virtgated.pid").exists(),
        "the gateway left its pidfile"
    );
}
