//! The client's SSH known_hosts file (plain and hashed `|1|salt|hash` entries, markers,
//! ports): `transport::ssh::known_hosts::KnownHosts::parse`, `algorithms_for`, and `check`
//! with a fixed Ed25519 host key (the key of the seeds' `gw.example.org`), which runs the
//! host matching (patterns, `[host]:port`, HMAC-SHA1 of hashed names). Invariant: a host
//! whose key `check` calls known has that key's algorithm among `algorithms_for`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use russh::keys::PublicKey;
use std::path::Path;
use std::sync::OnceLock;
use virtgate_client::transport::ssh::known_hosts::{KnownHosts, Verdict};

/// The host key presented in every check.
fn host_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJI2ln0UDYwrQBMZbUMUfgOObmpn+VDcFT1/SBO12OTe",
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let k = KnownHosts::parse(Path::new("known_hosts"), text);
    for name in ["gw.example.org", "[gw.example.org]:2222", "10.0.0.1"] {
        let algorithms = k.algorithms_for(name);
        if let Verdict::Known { .. } = k.check(name, host_key()) {
            assert!(algorithms.contains(&host_key().algorithm()), "{name}");
        }
    }
});
