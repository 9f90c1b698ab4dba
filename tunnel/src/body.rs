//! The body of a request or an answer read from h2, as an `http_body::Body`
//! ([`RecvBody`]): each chunk's window goes back as it is read (a body is read whole, or
//! passed on as it comes), unlike a tunnel's ([`crate::Tunnel`]), whose window waits for
//! the local socket.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

/// h2's DATA frames and trailers of one stream, as a body.
pub struct RecvBody {
    /// h2's stream of DATA frames.
    recv: h2::RecvStream,
    /// DATA ended; trailers (if any) are next.
    data_done: bool,
}

impl RecvBody {
    /// The body of the stream `recv` receives.
    pub fn new(recv: h2::RecvStream) -> RecvBody {
        RecvBody {
            recv,
            data_done: false,
        }
    }
}

impl std::fmt::Debug for RecvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBody")
            .field("data_done", &self.data_done)
            .finish_non_exhaustive()
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = self.get_mut();
        if !me.data_done {
            match ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // fails only when the stream is gone, and then nothing is owed
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => me.data_done = true,
            }
        }
        match ready!(me.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
