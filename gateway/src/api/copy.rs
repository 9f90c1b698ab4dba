//! Copying a tunnel both ways: the client's stream and the backend's socket, with
//! half-closes passed through (an end of file on one side shuts the other side's writing
//! half down, and the other direction goes on).
//!
//! `tokio::io::copy_bidirectional_with_sizes` did this with two buffers per tunnel that it
//! zero-fills when the tunnel opens (256 KiB each, `tuning::SPLICE_BUFFER`): 512 KiB of
//! `memset` per tunnel, and once glibc serves such sizes from its heap, pages made resident
//! for tunnels that carry a few bytes. Here each direction reads into a `BytesMut` that is
//! never zeroed, reserved when the first read comes, and reused: what a tunnel never
//! receives is never touched.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use virtgate_proto::tuning::SPLICE_BUFFER;

/// Copy between `client` and `backend` until both directions ended; returns the bytes
/// carried client → backend (up) and backend → client (down). An error in either direction
/// ends both.
pub async fn both_ways<A, B>(client: A, backend: B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    tokio::try_join!(one_way(&mut cr, &mut bw), one_way(&mut br, &mut cw))
}

/// Copy `from` to `to` until `from` ends, then shut `to`'s writing half down.
async fn one_way<R, W>(from: &mut R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    loop {
        if buf.capacity() == 0 {
            buf.reserve(SPLICE_BUFFER);
        }
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        // no flush per chunk: neither side buffers (hyper's upgraded stream's flush only
        // waits until its send task took the chunk, which the next write waits for anyway)
        to.write_all(&buf).await?;
        total += n as u64;
        // keeps the allocation: the next read fills it from the start
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_and_half_closes_pass_both_ways() {
        let (client, mut client_far) = tokio::io::duplex(64 << 10);
        let (backend, mut backend_far) = tokio::io::duplex(64 << 10);
        let copy = tokio::spawn(both_ways(client, backend));
        let up: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = up.clone();
        let writer = tokio::spawn(async move {
            client_far.write_all(&sent).await.unwrap();
            client_far.shutdown().await.unwrap();
            // the other direction still runs after our half-close
            let mut down = Vec::new();
            client_far.read_to_end(&mut down).await.unwrap();
            down
        });
        let mut got = Vec::new();
        backend_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up, "every byte up, then an end of file");
        backend_far
            .write_all(b"answer after the half-close")
            .await
            .unwrap();
        backend_far.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"answer after the half-close");
        let (u, d) = copy.await.unwrap().unwrap();
        assert_eq!((u, d), (300_000, 27));
    }
}
