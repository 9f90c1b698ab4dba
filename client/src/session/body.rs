//! Answers read as they arrive: h2's body of an answer as an `http_body::Body`
//! ([`RecvBody`], from `virtgate-tunnel`), the body of [`Session::get_stream`] (the event stream), the content type
//! of any answer, and the problem+json body of an error answer.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use virtgate_proto::{Problem, PROBLEM_CONTENT_TYPE};

use super::Session;
use crate::error::Error;

pub use virtgate_tunnel::RecvBody;

/// The body of a streamed answer ([`Session::get_stream`]), read chunk by chunk.
pub struct BodyStream {
    /// h2's body.
    pub(super) body: RecvBody,
    /// The session, to explain a body that breaks off.
    pub(super) session: Session,
    /// The request, for messages (`GET /v1/events`).
    pub(super) what: String,
}

impl BodyStream {
    /// The next chunk of data; `None` when the gateway ended the answer. A broken
    /// connection or a reset stream is an error.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                Some(Err(e)) => return Err(self.session.request_error(&self.what, &e).await),
            }
        }
    }
}

/// The `content-type` of an answer, when it has a readable one.
pub(super) fn content_type<B>(resp: &Response<B>) -> Option<String> {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The problem+json body of an error answer, or one made up from the status and text.
pub(super) fn problem(status: StatusCode, body: &[u8]) -> Error {
    Error::Problem {
        problem: parse_problem(status, body),
    }
}

/// The problem an error answer with `status` and `body` (any bytes the gateway, or
/// whatever answered, sent) stands for: the decoded problem+json body, or one made up
/// from the status and the body's text. The in-memory decoder behind every error answer,
/// also the entry point of `fuzz/fuzz_targets/problem_json.rs`.
pub fn parse_problem(status: StatusCode, body: &[u8]) -> Problem {
    if let Ok(p) = serde_json::from_slice::<Problem>(body) {
        return p;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut p = Problem::new(
        status.as_u16(),
        "http",
        format!(
            "the gateway answered {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
    );
    if !text.is_empty() {
        p = p.detail(text.chars().take(300).collect::<String>());
    }
    p.hint(format!(
        "expected a {PROBLEM_CONTENT_TYPE} body; is this a virtgated gateway?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::report;

    #[test]
    fn problem_bodies_are_decoded() {
        let body = br#"{"type":"urn:virtgate:domain-not-found","title":"no such domain","status":404,"detail":"domain `zz` does not exist or is not yours","hint":"run `virtgate list` to see your domains"}"#;
        let e = problem(StatusCode::NOT_FOUND, body);
        assert_eq!(
            report(&e),
            "error: no such domain: domain `zz` does not exist or is not yours\n\
             hint: run `virtgate list` to see your domains"
        );
    }

    #[test]
    fn other_bodies_become_a_problem_naming_the_status() {
        let e = problem(StatusCode::BAD_GATEWAY, b"upstream down\n");
        let r = report(&e);
        assert!(
            r.starts_with("error: the gateway answered 502 Bad Gateway: upstream down"),
            "{r}"
        );
        assert!(
            r.contains("hint: expected a application/problem+json body"),
            "{r}"
        );
    }
}
