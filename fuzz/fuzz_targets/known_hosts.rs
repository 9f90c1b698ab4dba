//! The client's SSH known_hosts file (plain and hashed entries, markers, ports).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use virtgate_client::transport::ssh::known_hosts::KnownHosts;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let k = KnownHosts::parse(Path::new("known_hosts"), text);
    let _ = k.algorithms_for("gw.example.org");
    let _ = k.algorithms_for("[gw.example.org]:2222");
});
