//! Gateway URLs (`https://`, `ssh://`, `unix:`...). Invariant: Display parses again to the
//! same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_client::url::GatewayUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = GatewayUrl::parse(text) {
        let _ = u.authority();
        let shown = u.to_string();
        match GatewayUrl::parse(&shown) {
            Ok(again) => assert_eq!(u, again, "{text:?} shown as {shown:?}"),
            Err(e) => panic!("{text:?} parsed, but its Display {shown:?} does not: {e}"),
        }
    }
});
