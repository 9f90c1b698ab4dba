//! The client's event stream (NDJSON, `/v1/events`): its line splitter `cmd::events::Lines`
//! fed in chunks whose sizes come from the input, each line rendered by
//! `cmd::events::render_line` as `virtgate events` and `virtgate events --json` print it.
//! Invariants: the lines and the rest hold no more bytes than were fed (3× for lossy
//! UTF-8); with `--json` a line that is not blank is printed unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_client::cmd::events::{render_line, Lines};

/// Renders one line both ways; returns its length.
fn render(line: &str) -> usize {
    let json = render_line(line, true);
    if line.trim().is_empty() {
        assert!(json.is_none());
        assert!(render_line(line, false).is_none());
    } else {
        assert_eq!(json.as_deref(), Some(line));
        assert!(render_line(line, false).is_some());
    }
    line.len()
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = (chunk as usize).max(1);
    let mut lines = Lines::default();
    let mut out = 0;
    for piece in rest.chunks(chunk) {
        for line in lines.push(piece) {
            out += render(&line);
        }
    }
    if let Some(line) = lines.finish() {
        out += render(&line);
    }
    assert!(
        out <= rest.len() * 3,
        "{out} bytes of lines out of {} fed",
        rest.len()
    );
});
