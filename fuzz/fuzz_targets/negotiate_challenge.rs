//! `WWW-Authenticate: Negotiate <base64>` challenges, as the client reads them. Input:
//! header values separated by '\n'.
#![no_main]
use http::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use libfuzzer_sys::fuzz_target;
use virtgate_client::transport::kerberos::parse_challenge;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(WWW_AUTHENTICATE, v);
        }
    }
    let _ = parse_challenge(&headers);
});
