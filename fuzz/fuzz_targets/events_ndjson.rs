//! The client's event stream (NDJSON, `/v1/events`): its line splitter `cmd::events::Lines`
//! fed in chunks whose sizes come from the input, each line decoded as a
//! virtgate_proto::Event as the (private) `emit` does. Invariant: the lines and the rest
//! hold no more bytes than were fed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_client::cmd::events::Lines;
use virtgate_proto::Event;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = (chunk as usize).max(1);
    let mut lines = Lines::default();
    let mut out = 0;
    for piece in rest.chunks(chunk) {
        for line in lines.push(piece) {
            out += line.len();
            let _ = serde_json::from_str::<Event>(&line);
        }
    }
    if let Some(line) = lines.finish() {
        out += line.len();
        let _ = serde_json::from_str::<Event>(&line);
    }
    assert!(
        out <= rest.len() * 3,
        "{out} bytes of lines out of {} fed",
        rest.len()
    );
});
