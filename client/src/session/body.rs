//! Answers read as they arrive: the body of [`Session::get_stream`] (the event stream), and
//! the content type of any answer.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Session;
use crate::error::Error;

/// The body of a streamed answer ([`Session::get_stream`]), read chunk by chunk.
pub struct BodyStream {
    /// hyper's body.
    pub(super) body: Incoming,
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
pub(super) fn content_type(resp: &Response<Incoming>) -> Option<String> {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
