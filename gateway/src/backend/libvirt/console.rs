//! The serial console as a byte stream: `virDomainOpenConsole` on a libvirt stream, bridged
//! to one end of a [`tokio::io::duplex`] pipe that the tunnel splices to the client.
//!
//! The stream lives on a libvirt connection of its own (opened by the caller): a blocking
//! `virStreamRecv` keeps the connection's I/O to itself while it waits, and on the shared
//! connection other calls were seen to stall for a keepalive period (5 s) behind it.
//!
//! libvirt streams block, so two plain threads carry the bytes, one per direction:
//! - `rx`: `virStreamRecv` (blocks until the guest writes) → the pipe;
//! - `tx`: the pipe → `virStreamSend`.
//!
//! Either side ending ends both, without polling: when the client closes (or the tunnel is
//! dropped), `tx` reads EOF, aborts the libvirt stream, which makes the blocked `virStreamRecv`
//! of `rx` return; when the domain stops or libvirtd goes away, `rx` sees EOF or an error,
//! cancels `tx` (which waits on the pipe with a cancellation token) and drops its half of the
//! pipe, so the tunnel reads EOF. Both threads then return; nothing outlives the tunnel.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;
use virt::stream::Stream;

/// Bytes per read on either side.
const CHUNK: usize = 16 * 1024;
/// Buffer of the pipe between the tunnel and the threads.
const PIPE: usize = 64 * 1024;

/// Start the two threads for an opened console `stream`; returns the tunnel's end of the
/// pipe. `label` names the domain in logs.
pub fn bridge(stream: Stream, label: &str) -> std::io::Result<DuplexStream> {
    let handle = tokio::runtime::Handle::current();
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(ours);
    let stream = Arc::new(stream);
    let done = CancellationToken::new();

    let (rx_stream, rx_done, rx_handle) = (stream.clone(), done.clone(), handle.clone());
    let rx_label = label.to_owned();
    std::thread::Builder::new()
        .name("libvirt-console-rx".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rx_stream.recv(&mut buf) {
                    Ok(n) if n > 0 => {
                        let chunk = &buf[..n as usize];
                        let wrote = rx_handle.block_on(async {
                            tokio::select! {
                                r = pipe_wr.write_all(chunk) => r.is_ok(),
                                _ = rx_done.cancelled() => false,
                            }
                        });
                        if !wrote {
                            break;
                        }
                    }
                    Ok(_) => {
                        tracing::debug!(domain = %rx_label, "serial console stream ended");
                        if !rx_done.is_cancelled() {
                            let _ = Stream::clone(&rx_stream).finish();
                        }
                        break;
                    }
                    Err(e) => {
                        if !rx_done.is_cancelled() {
                            tracing::info!(domain = %rx_label, error = %e, "serial console stream failed");
                        }
                        break;
                    }
                }
            }
            rx_done.cancel();
            let _ = rx_handle.block_on(pipe_wr.shutdown());
        })?;

    let tx_label = label.to_owned();
    let tx_stream = stream.clone();
    let spawned = std::thread::Builder::new()
        .name("libvirt-console-tx".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = handle.block_on(async {
                    tokio::select! {
                        r = pipe_rd.read(&mut buf) => r.unwrap_or(0),
                        _ = done.cancelled() => 0,
                    }
                });
                if n == 0 {
                    break;
                }
                if let Err(e) = send_all(&tx_stream, &buf[..n]) {
                    tracing::info!(domain = %tx_label, error = %e, "cannot write to the serial console");
                    break;
                }
            }
            let first = !done.is_cancelled();
            done.cancel();
            if first {
                // The client side ended first: wake the blocked virStreamRecv.
                if let Err(e) = Stream::clone(&tx_stream).abort() {
                    tracing::debug!(domain = %tx_label, error = %e, "aborting the console stream");
                }
            }
        });
    if let Err(e) = spawned {
        // rx holds its own references; aborting the stream ends it.
        let _ = Stream::clone(&stream).abort();
        return Err(e);
    }
    Ok(theirs)
}

/// Send all of `data` (a blocking stream may take it in parts).
fn send_all(stream: &Stream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        match stream.send(data) {
            Ok(k) if k > 0 => data = data.get(k as usize..).unwrap_or_default(),
            Ok(_) => return Err("the stream took no bytes".into()),
            Err(e) => return Err(e.message().to_owned()),
        }
    }
    Ok(())
}
