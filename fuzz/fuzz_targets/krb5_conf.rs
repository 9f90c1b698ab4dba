//! krb5.conf, as the client reads its default_realm (for error hints).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = virtgate_client::error::parse_default_realm(text);
});
