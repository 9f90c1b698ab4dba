//! The CRL command's user-supplied arguments: revocation reason names and hex serials.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = virtgate_pki::crl::parse_reason(text);
    if let Some(bytes) = virtgate_pki::crl::serial_bytes(text) {
        // a serial given in hex decodes to at most half as many bytes (plus one)
        assert!(bytes.len() <= text.len() / 2 + 1, "{text:?} -> {bytes:?}");
    }
});
