//! /etc/passwd-format text, as the gateway reads user entries (groups).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for e in virtgate_gateway::authn::groups::parse_passwd(text) {
        let _ = format!("{e:?}");
    }
});
