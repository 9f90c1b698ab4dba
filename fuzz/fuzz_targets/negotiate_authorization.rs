//! `Authorization: Negotiate <base64>` request headers, as the gateway reads them
//! (`api::negotiate::negotiate_token`). Input: header values separated by '\n'.
#![no_main]
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use virtgate_gateway::api::negotiate::negotiate_token;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(AUTHORIZATION, v);
        }
    }
    let _ = negotiate_token(&headers);
});
