//! Which HTTP a connection speaks, told from its first bytes: an HTTP/2 client starts with
//! the preface (RFC 9113 §3.4; every virtgate client, browsers that chose h2 by ALPN),
//! anything else is HTTP/1.1. [`sniff`] reads at most the preface's 24 bytes and hands back
//! the stream with them put back in front ([`Rewind`]), for h2 or hyper to read again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first bytes were read already, and are read again.
#[derive(Debug)]
pub struct Rewind<IO> {
    /// The bytes read by [`sniff`], not yet read again.
    head: [u8; PREFACE.len()],
    /// Where the unread part of `head` starts and ends.
    at: usize,
    /// End of what `head` holds.
    len: usize,
    /// The stream.
    inner: IO,
}

/// Read as much of the preface as the client sends (at most 24 bytes, stopping at the first
/// byte that differs): whether it is HTTP/2, and the stream with those bytes put back.
pub async fn sniff<IO: AsyncRead + Unpin>(mut io: IO) -> io::Result<(bool, Rewind<IO>)> {
    let mut head = [0u8; PREFACE.len()];
    let mut len = 0;
    while len < head.len() {
        let n = io.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len] != PREFACE[..len] {
            break;
        }
    }
    let h2 = len == PREFACE.len() && head == *PREFACE;
    Ok((
        h2,
        Rewind {
            head,
            at: 0,
            len,
            inner: io,
        },
    ))
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.at < me.len {
            let n = (me.len - me.at).min(buf.remaining());
            buf.put_slice(&me.head[me.at..me.at + n]);
            me.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    async fn sniffed(sent: &[u8]) -> (bool, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        drop(client);
        let (h2, mut rest) = sniff(server).await.unwrap();
        let mut all = Vec::new();
        rest.read_to_end(&mut all).await.unwrap();
        (h2, all)
    }

    #[tokio::test]
    async fn the_preface_is_told_and_every_byte_read_again() {
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04");
        assert_eq!(sniffed(&h2).await, (true, h2.clone()));
        let h1 = b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        assert_eq!(sniffed(&h1).await, (false, h1.clone()));
        // a client that leaves in the middle of the preface
        assert_eq!(
            sniffed(&PREFACE[..10]).await,
            (false, PREFACE[..10].to_vec())
        );
        assert_eq!(sniffed(b"").await, (false, Vec::new()));
    }
}
