//! Reading and writing a unix socket together with the descriptors that travel on it
//! (`SCM_RIGHTS`), on tokio's readiness: `recvmsg`/`sendmsg` through rustix, so no unsafe
//! code here.
//!
//! A `recvmsg` returns the descriptors with the read that contains their byte (the read
//! may go on past that byte: measured here, `hello`, a descriptor byte and `after` sent as
//! three writes came back as one read with the descriptor). So "descriptors in the order
//! their bytes arrive" is a queue the relay pops from when the framer reaches a slot: by
//! then the read that brought the slot has brought its descriptor.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::frame::MAX_FDS;

/// Read into `buf`, appending any descriptors that came along to `fds`. `Ok(0)` is the end
/// of the stream. Descriptors beyond what one message may carry are an error (the kernel
/// would have closed the ones that did not fit).
pub async fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    sock.async_io(Interest::READABLE, || {
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS as usize))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        if r.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "more descriptors arrived than one libvirt message may carry",
            ));
        }
        Ok(r.bytes)
    })
    .await
}

/// Write all of `data`.
pub async fn send_all(sock: &UnixStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = sock
            .async_io(Interest::WRITABLE, || {
                Ok(rustix::net::send(sock, data, SendFlags::NOSIGNAL)?)
            })
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

/// Send one `0x00` byte carrying `fd`: a descriptor slot on libvirt's socket.
pub async fn send_fd(sock: &UnixStream, fd: impl AsFd) -> io::Result<()> {
    let fds = [fd.as_fd()];
    loop {
        let n = sock
            .async_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                    return Err(io::Error::other("no room for a descriptor"));
                }
                Ok(rustix::net::sendmsg(
                    sock,
                    &[IoSlice::new(&[0])],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            })
            .await?;
        if n == 1 {
            return Ok(());
        }
    }
}

/// Shut down the writing half (the peer reads the end of the stream).
pub fn shutdown_write(sock: &UnixStream) -> io::Result<()> {
    match rustix::net::shutdown(sock, rustix::net::Shutdown::Write) {
        Ok(()) => Ok(()),
        // the peer is gone already
        Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `fd` is a socket (what libvirt passes for displays; other descriptors are not
/// carried).
pub fn is_socket(fd: impl AsFd) -> bool {
    rustix::fs::fstat(fd)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket)
        .unwrap_or(false)
}

/// A tokio socket from a descriptor that came over `SCM_RIGHTS` (must be a unix stream
/// socket; libvirt's display descriptors are socketpair ends).
pub fn stream_from_fd(fd: OwnedFd) -> io::Result<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn descriptors_arrive_with_their_byte() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut x, y) = UnixStream::pair().unwrap();
        send_all(&a, b"hello").await.unwrap();
        send_fd(&a, &y).await.unwrap();
        drop(y);
        send_all(&a, b"after").await.unwrap();
        let mut fds = VecDeque::new();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while got.len() < 11 {
            let n = recv_with_fds(&b, &mut buf, &mut fds).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            // the read that brought the descriptor's byte brought the descriptor
            assert_eq!(fds.len(), usize::from(got.len() >= 6));
        }
        assert_eq!(got, b"hello\0after");
        assert_eq!(fds.len(), 1);
        let fd = fds.pop_front().unwrap();
        assert!(is_socket(&fd));
        let mut passed = stream_from_fd(fd).unwrap();
        passed.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        x.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        shutdown_write(&a).unwrap();
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).await.unwrap(), 0);
    }

    #[test]
    fn files_are_not_sockets() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(!is_socket(&f));
    }
}
