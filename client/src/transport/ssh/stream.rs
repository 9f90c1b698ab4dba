//! The `direct-streamlocal` channel as the byte stream HTTP/2 runs on.
//!
//! russh's own `ChannelStream` writes through `ChannelTx`: every `poll_write` takes at most
//! one SSH packet, copies it, and allocates two boxed futures (the window lock and the
//! queue permit), and it is not vectored — so hyper's h2 writes each DATA frame's 9-byte
//! header as an SSH packet of its own, then the payload 32 KiB at a time. This stream
//! gathers whatever h2 hands it (header and payload, several frames) into one buffer, one
//! copy, and gives it to russh whole with `ChannelWriteHalf::data_bytes`, which cuts it
//! into packets without copying; the next write (or flush) waits until russh has taken it
//! (window and queue), so at most [`WRITE_CHUNK`] bytes wait here.
//!
//! Reading takes the channel's messages as they come: data is copied out, end-of-file and
//! a closed channel end the stream, anything else (exit status, requests) is skipped — as
//! `ChannelStream` does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use russh::client::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Client;

/// Most bytes one write takes in: a few HTTP/2 frames (64 KiB each, `tuning::MAX_FRAME`)
/// with their headers, so a bulk stream's frames go out in full SSH packets while an
/// interactive frame written next waits behind at most this much in the client.
pub const WRITE_CHUNK: usize = 256 << 10;

/// The next message of the channel, with the read half handed back.
type NextMsg = BoxFuture<'static, (ChannelReadHalf, Option<ChannelMsg>)>;

/// The channel as an `AsyncRead + AsyncWrite`; it keeps the SSH connection's handle.
pub struct SshStream {
    /// The read half while no message is awaited.
    read_half: Option<ChannelReadHalf>,
    /// The message being awaited (it owns the read half meanwhile).
    next: Option<NextMsg>,
    /// Data received and not yet read, and how much of it was read.
    unread: Option<(Bytes, usize)>,
    /// The server sent end-of-file or closed the channel.
    eof: bool,
    /// The write half, shared with the send in flight.
    write_half: Arc<ChannelWriteHalf<Msg>>,
    /// Bytes handed to russh and not yet all taken (window, queue), or the end-of-file.
    sending: Option<BoxFuture<'static, Result<(), russh::Error>>>,
    /// End-of-file was sent.
    shut: bool,
    /// Keeps the session alive as long as the stream.
    _handle: Handle<Client>,
}

impl SshStream {
    /// The stream over `channel`, keeping `handle` (the SSH connection) alive with it.
    pub fn new(channel: Channel<Msg>, handle: Handle<Client>) -> Self {
        let (read_half, write_half) = channel.split();
        SshStream {
            read_half: Some(read_half),
            next: None,
            unread: None,
            eof: false,
            write_half: Arc::new(write_half),
            sending: None,
            shut: false,
            _handle: handle,
        }
    }

    /// Wait until russh has taken everything handed to it so far.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(f) = self.sending.as_mut() {
            let r = ready!(f.as_mut().poll(cx));
            self.sending = None;
            r.map_err(broken)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Hand `send` to russh and start it at once, so the first packets leave now; an error
    /// is this write's (nothing waits).
    fn start(
        &mut self,
        cx: &mut Context<'_>,
        send: BoxFuture<'static, Result<(), russh::Error>>,
    ) -> io::Result<()> {
        self.sending = Some(send);
        match self.poll_sent(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// The next channel message (`None`: the channel is closed).
    fn poll_msg(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        if self.next.is_none() {
            let Some(mut half) = self.read_half.take() else {
                return Poll::Ready(None);
            };
            self.next = Some(Box::pin(async move {
                let msg = half.wait().await;
                (half, msg)
            }));
        }
        let Some(next) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let (half, msg) = ready!(next.as_mut().poll(cx));
        self.next = None;
        self.read_half = Some(half);
        Poll::Ready(msg)
    }
}

/// A russh send that failed: the channel or the connection is gone.
fn broken(e: russh::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("the SSH channel closed: {e}"),
    )
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some((data, at)) = this.unread.as_mut() {
                let n = buf.remaining().min(data.len() - *at);
                buf.put_slice(data.get(*at..*at + n).unwrap_or_default());
                *at += n;
                if *at == data.len() {
                    this.unread = None;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.poll_msg(cx)) {
                Some(ChannelMsg::Data { data }) if !data.is_empty() => {
                    this.unread = Some((data, 0));
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => this.eof = true,
                Some(_) => {}
            }
        }
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_sent(cx))?;
        if this.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the SSH channel was shut down for writing",
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut chunk = BytesMut::with_capacity(total.min(WRITE_CHUNK));
        for b in bufs {
            let room = chunk.capacity() - chunk.len();
            if room == 0 {
                break;
            }
            chunk.extend_from_slice(b.get(..room.min(b.len())).unwrap_or_default());
        }
        let n = chunk.len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let w = this.write_half.clone();
        let data = chunk.freeze();
        this.start(cx, Box::pin(async move { w.data_bytes(data).await }))?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_sent(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_sent(cx))?;
        if !this.shut {
            this.shut = true;
            let w = this.write_half.clone();
            this.start(cx, Box::pin(async move { w.eof().await }))?;
            ready!(this.poll_sent(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}
