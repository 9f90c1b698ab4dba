//! The Debian package: built once per test run with `scripts/package.sh` (cargo-deb), then
//! its contents (`dpkg-deb -c` / `-I`), lintian, the licence inventory and copyright file,
//! the unit's sandbox score, the shipped configuration, and (in `package/chroot.rs`) an
//! install on a fresh Debian 12 root made with debootstrap, where the service starts and
//! answers `virtgate whoami`.
//!
//! Needs dpkg-dev, lintian, debootstrap, binutils and systemd's `systemd-analyze`
//! (scripts/setup.sh installs them). Building the package is the release build that
//! scripts/bench.sh also makes (`cargo build --release --bins`): minutes the first time,
//! shared with the benchmark and reused afterwards.

mod chroot;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use virtgate_tests::fixture::process::run_deadline;
use virtgate_tests::{bin, system_bin, text};

/// The workspace's root folder.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The .deb, built by `scripts/package.sh` on first use.
pub(crate) fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        system_bin("dpkg-shlibdeps", "dpkg-dev");
        let start = Instant::now();
        let out = run_deadline(
            Command::new("bash")
                .arg(workspace().join("scripts/package.sh"))
                .current_dir(workspace()),
            Duration::from_secs(40 * 60),
        );
        let (o, e) = text(&out);
        assert!(out.status.success(), "scripts/package.sh failed:\n{e}\n{o}");
        let path = PathBuf::from(o.lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file(),
            "scripts/package.sh printed no package path:\n{o}"
        );
        eprintln!(
            "package built in {:.0?}: {}",
            start.elapsed(),
            path.display()
        );
        path
    })
}

/// Runs `program ARGS` to its end (5 minutes at most), returning (status ok, stdout, stderr).
pub(crate) fn sh(program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = run_deadline(Command::new(program).args(args), Duration::from_secs(300));
    let (o, e) = text(&out);
    (out.status.success(), o, e)
}

#[test]
fn contents_binaries_units_conffile_docs_and_maintainer_scripts() {
    let deb = deb().display().to_string();
    let dpkg_deb = system_bin("dpkg-deb", "dpkg");
    let (ok, list, e) = sh(&dpkg_deb, &["-c", &deb]);
    assert!(ok, "dpkg-deb -c: {e}");
    let has = |path: &str, mode: &str| {
        list.lines()
            .any(|l| l.starts_with(mode) && l.ends_with(&format!(" .{path}")))
    };
    for p in [
        "/usr/bin/virtgated",
        "/usr/bin/virtgate",
        "/usr/bin/virtgate-pki",
        "/etc/init.d/virtgated",
    ] {
        assert!(has(p, "-rwxr-xr-x"), "{p} missing or not 0755:\n{list}");
    }
    for p in [
        "/lib/systemd/system/virtgated.service",
        "/lib/systemd/system/virtgate-crl.service",
        "/lib/systemd/system/virtgate-crl.timer",
        "/etc/virtgate/gateway.toml",
        "/usr/lib/tmpfiles.d/virtgate.conf",
        "/usr/share/doc/virtgate/copyright",
        "/usr/share/doc/virtgate/changelog.Debian.gz",
        "/usr/share/man/man8/virtgated.8.gz",
        "/usr/share/man/man8/virtgated-reload.8.gz",
        "/usr/share/man/man1/virtgate.1.gz",
        "/usr/share/man/man1/virtgate-vnc.1.gz",
        "/usr/share/man/man8/virtgate-pki.8.gz",
        "/usr/share/man/man8/virtgate-pki-issue-server.8.gz",
    ] {
        assert!(has(p, "-rw-r--r--"), "{p} missing or not 0644:\n{list}");
    }
    for name in ["virtgated", "virtgate", "virtgate-pki"] {
        for p in [
            format!("/usr/share/bash-completion/completions/{name}"),
            format!("/usr/share/zsh/vendor-completions/_{name}"),
            format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
        ] {
            assert!(has(&p, "-rw-r--r--"), "{p} missing:\n{list}");
        }
    }

    let (ok, info, e) = sh(&dpkg_deb, &["-I", &deb]);
    assert!(ok, "dpkg-deb -I: {e}");
    assert!(info.contains("Package: virtgate\n"), "{info}");
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_default();
    for lib in ["libc6", "libvirt0", "libgssapi-krb5-2", "adduser", "procps"] {
        assert!(depends.contains(lib), "Depends lacks {lib}: {depends}");
    }
    let field = |name: &str| {
        let (ok, o, e) = sh(&dpkg_deb, &["-I", &deb, name]);
        assert!(ok, "dpkg-deb -I {name}: {e}");
        o
    };
    let conffiles = field("conffiles");
    for c in ["/etc/virtgate/gateway.toml", "/etc/init.d/virtgated"] {
        assert!(
            conffiles.lines().any(|l| l == c),
            "{c} is not a conffile:\n{conffiles}"
        );
    }
    let postinst = field("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(postinst.contains("for group in kvm libvirt"), "{postinst}");
    assert!(
        postinst.contains("install -d -o \"$USER\" -g \"$USER\" -m 0750 \"$dir\""),
        "{postinst}"
    );
    let copyright = std::fs::read_to_string(workspace().join("deploy/debian/copyright")).unwrap();
    assert!(
        copyright.contains("Files: *\nCopyright: 2026 The virtgate authors\nLicense: Apache-2.0")
    );
    assert!(
        copyright.contains(" vendor/virt/*\n vendor/virt-sys/*\n"),
        "virt is not listed"
    );
    assert!(copyright.contains("libvirt.so.0 (libvirt0): LGPL-2.1+"));
}

#[test]
fn lintian_finds_no_error() {
    let lintian = system_bin("lintian", "lintian");
    let deb = deb().display().to_string();
    let start = Instant::now();
    let (ok, o, e) = sh(&lintian, &["--fail-on", "error", &deb]);
    eprintln!("lintian took {:.0?}:\n{o}", start.elapsed());
    let errors: Vec<&str> = o.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(ok && errors.is_empty(), "lintian errors:\n{o}\n{e}");
}

#[test]
fn licences_are_allowed_and_the_copyright_file_is_current() {
    let dist = bin("virtgate-dist");
    let root = workspace();
    let manifest = root.join("Cargo.toml").display().to_string();
    let (ok, o, e) = sh(
        &dist,
        &["licenses", "--check", "--manifest-path", &manifest],
    );
    assert!(ok, "virtgate-dist licenses --check:\n{e}\n{o}");
    assert!(
        o.lines()
            .any(|l| l.starts_with("virt ") && l.contains("LGPL-2.1")),
        "{o}"
    );
    let copyright = root.join("deploy/debian/copyright").display().to_string();
    let (ok, _, e) = sh(
        &dist,
        &[
            "copyright",
            "--manifest-path",
            &manifest,
            "--check",
            &copyright,
        ],
    );
    assert!(ok, "{e}");

    // every shared library the programs load is named in the copyright file
    let readelf = system_bin("readelf", "binutils");
    let text = std::fs::read_to_string(root.join("deploy/debian/copyright")).unwrap();
    for program in ["virtgated", "virtgate", "virtgate-pki"] {
        let path = bin(program).display().to_string();
        let (ok, o, e) = sh(&readelf, &["-d", &path]);
        assert!(ok, "readelf: {e}");
        for line in o.lines().filter(|l| l.contains("(NEEDED)")) {
            let lib = line
                .rsplit('[')
                .next()
                .unwrap_or_default()
                .trim_end_matches(']');
            assert!(
                text.contains(&format!("  {lib} (")),
                "{program} loads {lib}, which deploy/debian/copyright does not name: add it \
                 to SHARED_LIBRARIES in dist/src/copyright.rs and regenerate the file"
            );
        }
    }
}

#[test]
fn the_unit_is_sandboxed_to_an_exposure_of_2_5_or_less() {
    let analyze = system_bin("systemd-analyze", "systemd");
    let unit = workspace()
        .join("deploy/virtgated.service")
        .display()
        .to_string();
    let (_, o, e) = sh(&analyze, &["security", "--offline=yes", &unit]);
    let line = o
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{o}\n{e}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in `{line}`"));
    eprintln!("{line}");
    assert!(score <= 2.5, "{line}\n{o}");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify\n",
        "NotifyAccess=main\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "ExecStart=/usr/bin/virtgated ",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
}

#[test]
fn the_openrc_script_is_valid_shell_with_the_gateways_pidfile() {
    let script = workspace().join("deploy/virtgated.openrc");
    let (ok, _, e) = sh(&system_bin("sh", "dash"), &["-n", script.to_str().unwrap()]);
    assert!(ok, "sh -n: {e}");
    let text = std::fs::read_to_string(&script).unwrap();
    for want in [
        "pidfile=\"/run/virtgate/virtgated.pid\"",
        "--pidfile ${pidfile}",
        "extra_started_commands=\"reload\"",
        "start_pre()",
    ] {
        assert!(text.contains(want), "the OpenRC script lacks {want:?}");
    }
    assert!(
        !text.contains("command_background"),
        "the gateway writes its own pidfile"
    );
}

#[test]
fn the_shipped_configuration_parses_and_only_lacks_files_made_at_set_up() {
    let config = workspace()
        .join("deploy/gateway.toml")
        .display()
        .to_string();
    let (ok, o, e) = sh(&bin("virtgated"), &["--config", &config, "check-config"]);
    if ok {
        return; // this host has /etc/virtgate/pki and /var/log/virtgate set up
    }
    let first = e.lines().next().unwrap_or_default();
    // made at set-up: the certificates (virtgate-pki), the folders (the package)
    let expected = [
        "/etc/virtgate/pki/",
        "folder /var/log/virtgate ",
        "folder /run/virtgate ",
    ];
    assert!(
        expected.iter().any(|x| first.contains(x)) && first.contains("does not exist"),
        "deploy/gateway.toml must only miss the files made at set-up, got:\n{o}{e}"
    );
}
