//! problem+json bodies, as the client decodes them (serde_json into virtgate_proto::Problem;
//! the client's own wrapper is `pub(super)`). Invariant: serialize + decode round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_proto::Problem;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<Problem>(data) {
        let _ = p.kind_name();
        let again: Problem = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(p, again);
    }
});
