//! PKCS#11 URIs (RFC 7512) given as `--key pkcs11:...`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_client::pkcs11::uri::{redacted, Pkcs11Uri};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redacted(text);
    if let Ok(u) = Pkcs11Uri::parse(text) {
        let _ = u.describe_token();
        let _ = u.describe_key();
    }
});
