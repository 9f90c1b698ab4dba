//! Fixtures for virtgate's integration tests: builders that start real processes (the
//! gateway, QEMU, later a KDC, sshd and libvirtd) on loopback and stop them on drop.
//!
//! Layout: [`fixture::pki`] makes a CA with the real `virtgate-pki`; [`fixture::qemu`]
//! starts a diskless TCG QEMU with unix QMP/VNC/serial sockets; [`fixture::gateway`] writes
//! a config and starts `virtgated` on port 0, learning its addresses from stdout;
//! [`fixture::client`] runs `virtgate` with a profile of its own, curl, and `virtgate vnc`;
//! [`fixture::vnc`] takes screenshots with vncsnapshot; [`fixture::guest`] assembles a
//! tiny guest kernel (magenta screen, serial echo, ACPI power button) for `-kernel`;
//! [`fixture::xvfb`] runs a private X server for graphical clients and screenshots it;
//! [`fixture::libvirtd`] starts a private virtlogd + libvirtd (in a mount namespace of its
//! own) and defines domains booting that guest, with VNC and/or SPICE consoles or none.
//! [`fixture::softhsm`] initialises a SoftHSM2 token in the test's dir (`SOFTHSM2_CONF`).
//! [`fixture::process`] holds the child guards and deadlines all of them use.
//!
//! The binaries under test are the workspace's own (`virtgated`, `virtgate`,
//! `virtgate-pki`), found next to the test executable in cargo's target directory: run
//! `cargo build --workspace --bins` before `cargo test` (scripts/test.sh does both).

#![forbid(unsafe_code)]

pub mod fixture;

use std::path::PathBuf;

pub use fixture::chromium::{Chromium, ChromiumBuilder};
pub use fixture::client::{curl, metric, ClientUser, Forwarder};
pub use fixture::gateway::{Gateway, GatewayBuilder};
pub use fixture::guest::{guest_kernel, guest_screen_fraction, GuestOptions, GUEST_SCREEN_RGB};
pub use fixture::libvirtd::{Domain, DomainSpec, Graphics, Libvirtd};
pub use fixture::pki::{ClientCert, Pki};
pub use fixture::process::{poll, run, text, ChildGuard, LineReader};
pub use fixture::qemu::{Qemu, QemuBuilder};
pub use fixture::shared::SharedUp;
pub use fixture::xvfb::Xvfb;

/// A temp dir of the test's own under /tmp (short paths: unix sockets live in it), named
/// `vg-…`; removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vg-")
        .tempdir_in("/tmp")
        .expect("create a temp dir under /tmp")
}

/// Path of one of the workspace's binaries (`virtgated`, `virtgate`, `virtgate-pki`).
///
/// Panics with the command that builds it when it is missing: a test must fail, not skip.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("VIRTGATE_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(
            p.is_file(),
            "{} not found (VIRTGATE_BIN_DIR is set)",
            p.display()
        );
        return p;
    }
    // target/debug/deps/it-HASH -> target/debug/NAME
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/PROFILE/deps");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Path of a system program the tests need; panics with the package that provides it.
pub fn system_bin(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: run `sudo apt-get install -y {package}` (or scripts/test.sh)"
    );
}
