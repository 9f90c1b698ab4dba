//! virtgate's integration tests: one binary, one module per area. Every test starts the
//! real programs it needs (virtgated, virtgate, virtgate-pki, QEMU, curl, vncsnapshot,
//! openssl) in a temp dir of its own, on loopback, and stops them on drop.
//!
//! Run with `scripts/test.sh` (installs the Debian packages, builds the binaries, tests).

mod api;
mod badinput;
mod browser;
mod config;
mod deadpeer;
mod demo;
mod doctor;
mod enroll;
mod fixtures;
mod graphics;
mod hostile;
mod kerberos;
mod libvirt;
mod lifecycle;
mod limits;
mod package;
mod pkcs11;
mod pki;
mod privilege;
mod reload;
mod service;
mod shared;
mod soak;
mod spice;
mod ssh;
mod supervise;
mod vnc;
mod webcli;
mod webpages;
mod websession;
mod websocket;

/// Shared set-up of the API tests: a CA, a QEMU domain `web1` and a gateway granting
/// `alice` operator on `web*`.
pub struct World {
    pub pki: virtgate_tests::Pki,
    pub alice: virtgate_tests::ClientCert,
    pub qemu: virtgate_tests::Qemu,
    /// More domains, not granted to alice by the default rule.
    pub others: Vec<virtgate_tests::Qemu>,
    pub gateway: virtgate_tests::Gateway,
    /// Dropped last: the processes above stop before their files go.
    /// Owns every file and socket of the test; removed last.
    pub dir: tempfile::TempDir,
}

impl World {
    /// Start the world; `f` may adjust the gateway before it starts.
    pub fn start(
        f: impl FnOnce(virtgate_tests::GatewayBuilder) -> virtgate_tests::GatewayBuilder,
    ) -> World {
        Self::start_with(&[], f)
    }

    /// Like [`World::start`] with more QEMU domains named `others`.
    pub fn start_with(
        others: &[&str],
        f: impl FnOnce(virtgate_tests::GatewayBuilder) -> virtgate_tests::GatewayBuilder,
    ) -> World {
        let dir = virtgate_tests::tempdir();
        let pki = virtgate_tests::Pki::new(dir.path(), "ca");
        let alice = pki.client("alice", Some("alice secret"));
        let qemu = virtgate_tests::QemuBuilder::new("web1").start(dir.path());
        let others: Vec<_> = others
            .iter()
            .map(|n| {
                virtgate_tests::QemuBuilder::new(n)
                    .serial(false)
                    .start(dir.path())
            })
            .collect();
        let mut gw = virtgate_tests::GatewayBuilder::new(&pki).domain(qemu.domain_toml());
        for o in &others {
            gw = gw.domain(o.domain_toml());
        }
        let gw = gw.rule(&["alice"], &["web*"], "operator");
        let gateway = f(gw).start(&dir.path().join("gw"));
        World {
            pki,
            alice,
            qemu,
            others,
            gateway,
            dir,
        }
    }

    /// A client for `cert` talking to listener `i` of the gateway.
    pub fn client(
        &self,
        name: &str,
        i: usize,
        cert: &virtgate_tests::ClientCert,
    ) -> virtgate_tests::ClientUser {
        virtgate_tests::ClientUser::new(&self.dir.path().join(name), &self.gateway.url(i), cert)
    }
}
