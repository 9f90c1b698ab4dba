//! API request paths and queries. Invariant: `to_path` of a parsed path parses again to the
//! same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_proto::ApiPath;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let connect = flags & 1 == 1;
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    if let Ok(parsed) = ApiPath::parse(path, query, connect) {
        let shown = parsed.to_path();
        let (p2, q2) = match shown.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (shown.as_str(), None),
        };
        match ApiPath::parse(p2, q2, connect) {
            Ok(again) => assert_eq!(parsed, again, "{text:?} -> {shown:?}"),
            Err(e) => panic!("{text:?} parsed, but its to_path {shown:?} does not: {e}"),
        }
    }
});
