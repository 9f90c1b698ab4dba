//! libvirt's own GUI clients through `virtgate libvirt`, under a private X server: the
//! window must show THIS guest's screen (the test guest paints its text screen magenta,
//! [`guest_screen_fraction`]), not a blank window or an error dialog. virt-viewer
//! `--attach` takes the same descriptor path as virt-manager (`virDomainOpenGraphicsFD`,
//! one call per SPICE channel); virt-manager is run too.
//!
//! With `VIRTGATE_SCREENSHOTS=DIR` the final screenshots are kept there (docs/ has one).

use std::time::Duration;

use virtgate_tests::{guest_screen_fraction, system_bin, ChildGuard, Xvfb};

use super::GWorld;

/// A console window showing the guest covers at least this share of the 1280×1024 screen
/// with the guest's colour (the guest's 720×400 screen alone is 22 %).
const SHOWN: f64 = 0.12;

/// How long a viewer may take to connect and draw under TCG on a busy machine.
const DRAW_DEADLINE: Duration = Duration::from_secs(90);

/// Titles of windows that mean the client failed.
fn error_windows(x: &Xvfb) -> Vec<String> {
    x.window_names()
        .into_iter()
        .filter(|t| {
            let t = t.to_lowercase();
            t.contains("error") || t.contains("fail") || t.contains("cannot")
        })
        .collect()
}

/// Wait until the screen shows the guest; keep the picture when asked to. On failure the
/// clients' logs are printed and the fixture's folder is copied to /tmp/virtgate-failed-*.
fn wait_for_guest(x: &Xvfb, what: &str, keep_as: &str) {
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        x.wait_for_screen(what, DRAW_DEADLINE, |png| {
            guest_screen_fraction(png) >= SHOWN
        })
    }));
    let png = match waited {
        Ok(png) => png,
        Err(panic) => {
            let keep =
                std::path::PathBuf::from(format!("/tmp/virtgate-failed-{}", std::process::id()));
            let _ = std::process::Command::new("cp")
                .arg("-r")
                .arg(x.dir())
                .arg(&keep)
                .status();
            for entry in std::fs::read_dir(x.dir()).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "log") {
                    let log = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!("--- {} (last lines) ---", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
            eprintln!("fixture folder kept in {}", keep.display());
            std::panic::resume_unwind(panic);
        }
    };
    let errors = error_windows(x);
    assert!(errors.is_empty(), "{what}: error windows {errors:?}");
    if let Some(dir) = std::env::var_os("VIRTGATE_SCREENSHOTS") {
        let path = std::path::Path::new(&dir).join(keep_as);
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Start a GUI client on `x`, stopped on drop.
fn gui(x: &Xvfb, program: &str, package: &str, args: &[&str], what: &str) -> ChildGuard {
    let log = std::fs::File::create(x.dir().join(format!("{program}.log"))).expect("log file");
    let child = x
        .command(system_bin(program, package))
        .args(args)
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    ChildGuard::new(child, what)
}

#[test]
fn virt_viewer_attach_shows_vnc_and_spice_guests_through_virtgate() {
    let w = GWorld::start();
    let (_fwd, uri, _fwd_err) = w.libvirt(&w.adam, false, "rw");
    for (domain, proto) in [(&w.vnc.name, "vnc"), (&w.spice.name, "spice")] {
        let x = Xvfb::start(&w.dir.path().join(format!("x-{proto}")));
        let _viewer = gui(
            &x,
            "virt-viewer",
            "virt-viewer",
            &["--attach", "-c", &uri, domain],
            "virt-viewer",
        );
        wait_for_guest(
            &x,
            &format!("virt-viewer --attach showing the {proto} guest"),
            &format!("virt-viewer-{proto}.png"),
        );
    }
    // the descriptors went through the gateway (no local display socket was used)
    let lines = super::descriptor_audit(&w.audit);
    for d in [&w.vnc.name, &w.spice.name] {
        assert!(
            lines.iter().any(|l| l["domain"] == d.as_str()),
            "no descriptor for {d}: {lines:#?}"
        );
    }
}

#[test]
fn virt_manager_shows_the_console_through_virtgate() {
    let w = GWorld::start();
    let (_fwd, uri, _fwd_err) = w.libvirt(&w.adam, false, "rw");
    let x = Xvfb::start(&w.dir.path().join("x"));
    let _vm = gui(
        &x,
        "virt-manager",
        "virt-manager",
        &[
            "--no-fork",
            "--connect",
            &uri,
            "--show-domain-console",
            &w.spice.name,
        ],
        "virt-manager",
    );
    wait_for_guest(&x, "virt-manager's console window", "virt-manager.png");
    let lines = super::descriptor_audit(&w.audit);
    assert!(
        lines.iter().any(|l| l["domain"] == w.spice.name.as_str()),
        "{lines:#?}"
    );
}
