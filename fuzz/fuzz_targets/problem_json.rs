//! problem+json bodies of error answers, through the client's own decoder
//! `session::parse_problem` (problem+json, or a problem made up from the status and the
//! body's text), then rendered as `main` prints it (`error::report`). Invariants: a decoded
//! problem+json body serializes and decodes to itself; a body that is not one becomes a
//! problem with the answer's status and at most 300 characters of its text.
#![no_main]
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use virtgate_client::error::{report, Error};
use virtgate_client::session::parse_problem;
use virtgate_proto::Problem;

fuzz_target!(|data: &[u8]| {
    let problem = parse_problem(StatusCode::BAD_GATEWAY, data);
    if let Ok(p) = serde_json::from_slice::<Problem>(data) {
        assert_eq!(p, problem);
        let _ = p.kind_name();
        let again: Problem = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(p, again);
    } else {
        assert_eq!(problem.status, 502);
        let detail = problem.detail.as_deref().unwrap_or("");
        assert!(
            detail.chars().count() <= 300,
            "detail of {} chars",
            detail.len()
        );
    }
    let text = report(&Error::Problem { problem });
    assert!(text.starts_with("error: "), "{text}");
});
