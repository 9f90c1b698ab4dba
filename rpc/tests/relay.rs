//! Two relays back to back (laptop end and gateway end, joined by an in-memory tunnel)
//! between a libvirt client and a stand-in libvirtd that speak raw frames over real unix
//! sockets with real descriptors. The id tables are in-memory stand-ins for the gateway's
//! per-connection table and the client's streams.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use virtgate_rpc::fdio::{recv_with_fds, send_all, send_fd, stream_from_fd};
use virtgate_rpc::frame::*;
use virtgate_rpc::{relay, Descriptors, Refusal, Whole};

/// Descriptors parked under ids, shared by both ends (what the gateway table and the
/// client's streams do together).
#[derive(Default)]
struct Table {
    next: Mutex<u64>,
    fds: Mutex<HashMap<u64, OwnedFd>>,
}

impl Descriptors for Table {
    async fn export(&self, _m: &Whole, fds: Vec<OwnedFd>) -> Result<Vec<u64>, Refusal> {
        let mut ids = Vec::new();
        for fd in fds {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            self.fds.lock().unwrap().insert(*n, fd);
            ids.push(*n);
        }
        Ok(ids)
    }
    async fn import(&self, _m: &Whole, ids: Vec<u64>) -> Result<Vec<OwnedFd>, Refusal> {
        ids.into_iter()
            .map(|id| {
                self.fds
                    .lock()
                    .unwrap()
                    .remove(&id)
                    .ok_or_else(|| Refusal::new(9, format!("no descriptor {id}")))
            })
            .collect()
    }
}

fn message(kind: i32, proc: i32, serial: u32, payload: &[u8]) -> Vec<u8> {
    Header {
        len: 0,
        prog: REMOTE_PROGRAM,
        vers: 1,
        proc,
        kind,
        serial,
        status: 0,
    }
    .frame(payload)
}

/// Read one message (and the descriptors of its slots) from a raw socket.
async fn read_message(s: &UnixStream, pending: &mut Vec<u8>) -> (Header, Vec<u8>, Vec<OwnedFd>) {
    let mut fds = std::collections::VecDeque::new();
    let mut buf = [0u8; 4096];
    loop {
        if pending.len() >= HEADER_BYTES {
            let h = Header::parse(pending[..HEADER_BYTES].try_into().unwrap());
            let len = h.len as usize;
            let slots = if h.has_fds() {
                read_u32(&pending[HEADER_BYTES..]).unwrap_or(0) as usize
            } else {
                0
            };
            if pending.len() >= len + slots && fds.len() >= slots {
                let m: Vec<u8> = pending.drain(..len + slots).collect();
                return (h, m[..len].to_vec(), fds.drain(..).collect());
            }
        }
        let n = recv_with_fds(s, &mut buf, &mut fds).await.unwrap();
        assert!(n > 0, "closed while reading a message");
        pending.extend_from_slice(&buf[..n]);
    }
}

struct World {
    /// The libvirt client's socket.
    client: UnixStream,
    /// The stand-in libvirtd's socket.
    daemon: UnixStream,
}

fn world() -> World {
    let (client, local) = UnixStream::pair().unwrap();
    let (daemon, remote) = UnixStream::pair().unwrap();
    let (t1, t2) = tokio::io::duplex(1 << 16);
    let table = Arc::new(Table::default());
    tokio::spawn(relay(local, t1, table.clone()));
    tokio::spawn(relay(remote, t2, table));
    World { client, daemon }
}

#[tokio::test]
async fn open_graphics_fd_reply_brings_a_working_socket() {
    let w = world();
    let (mut c_pending, mut d_pending) = (Vec::new(), Vec::new());
    // call 343 (plain), then the daemon answers REPLY_WITH_FDS with one descriptor
    let call = message(CALL, PROC_DOMAIN_OPEN_GRAPHICS_FD, 1, &[0; 12]);
    send_all(&w.client, &call).await.unwrap();
    let (h, got, _) = read_message(&w.daemon, &mut d_pending).await;
    assert_eq!((h.proc, got), (PROC_DOMAIN_OPEN_GRAPHICS_FD, call));
    let (display, mut guest_side) = UnixStream::pair().unwrap();
    let reply = message(
        REPLY_WITH_FDS,
        PROC_DOMAIN_OPEN_GRAPHICS_FD,
        1,
        &1u32.to_be_bytes(),
    );
    send_all(&w.daemon, &reply).await.unwrap();
    send_fd(&w.daemon, &display).await.unwrap();
    drop(display);
    // a plain message right behind it must not overtake it
    let after = message(REPLY, 1, 2, &[7; 4]);
    send_all(&w.daemon, &after).await.unwrap();
    let (h, got, mut fds) = read_message(&w.client, &mut c_pending).await;
    assert_eq!((h.kind, got), (REPLY_WITH_FDS, reply));
    assert_eq!(fds.len(), 1);
    let mut viewer = stream_from_fd(fds.remove(0)).unwrap();
    guest_side.write_all(b"RFB 003.008\n").await.unwrap();
    let mut banner = [0u8; 12];
    viewer.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    let (_, got, _) = read_message(&w.client, &mut c_pending).await;
    assert_eq!(got, after);
}

#[tokio::test]
async fn open_graphics_call_carries_the_clients_socket() {
    let w = world();
    let mut d_pending = Vec::new();
    let (mine, mut viewer_side) = UnixStream::pair().unwrap();
    let call = message(
        CALL_WITH_FDS,
        PROC_DOMAIN_OPEN_GRAPHICS,
        5,
        &1u32.to_be_bytes(),
    );
    send_all(&w.client, &call).await.unwrap();
    send_fd(&w.client, &mine).await.unwrap();
    drop(mine);
    let (h, got, mut fds) = read_message(&w.daemon, &mut d_pending).await;
    assert_eq!((h.kind, h.serial, got), (CALL_WITH_FDS, 5, call));
    let mut qemu = stream_from_fd(fds.remove(0)).unwrap();
    qemu.write_all(b"REDQ").await.unwrap();
    let mut four = [0u8; 4];
    viewer_side.read_exact(&mut four).await.unwrap();
    assert_eq!(&four, b"REDQ");
}

#[tokio::test]
async fn other_descriptor_calls_get_a_libvirt_error_and_the_connection_lives() {
    let w = world();
    let (mut c_pending, mut d_pending) = (Vec::new(), Vec::new());
    // DOMAIN_CREATE_WITH_FILES-like: a call with a descriptor for another procedure
    let (f, _keep) = UnixStream::pair().unwrap();
    let call = message(CALL_WITH_FDS, 301, 9, &1u32.to_be_bytes());
    send_all(&w.client, &call).await.unwrap();
    send_fd(&w.client, &f).await.unwrap();
    let (h, body, fds) = read_message(&w.client, &mut c_pending).await;
    assert_eq!(
        (h.kind, h.status, h.serial, h.proc),
        (REPLY, STATUS_ERROR, 9, 301)
    );
    assert!(fds.is_empty());
    assert!(String::from_utf8_lossy(&body).contains("only graphical consoles"));
    // a regular file where a socket should be
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let call = message(
        CALL_WITH_FDS,
        PROC_DOMAIN_OPEN_GRAPHICS,
        10,
        &1u32.to_be_bytes(),
    );
    send_all(&w.client, &call).await.unwrap();
    send_fd(&w.client, &file).await.unwrap();
    let (h, body, _) = read_message(&w.client, &mut c_pending).await;
    assert_eq!((h.status, h.serial), (STATUS_ERROR, 10));
    assert!(String::from_utf8_lossy(&body).contains("only sockets"));
    // a reply with descriptors for an unknown procedure is replaced by an error
    let (x, _y) = UnixStream::pair().unwrap();
    let reply = message(REPLY_WITH_FDS, 400, 11, &1u32.to_be_bytes());
    send_all(&w.daemon, &reply).await.unwrap();
    send_fd(&w.daemon, &x).await.unwrap();
    let (h, _, fds) = read_message(&w.client, &mut c_pending).await;
    assert_eq!((h.kind, h.status, h.serial), (REPLY, STATUS_ERROR, 11));
    assert!(fds.is_empty());
    // and the connection still carries calls both ways
    let ping = message(CALL, 1, 12, &[1; 8]);
    send_all(&w.client, &ping).await.unwrap();
    let (_, got, _) = read_message(&w.daemon, &mut d_pending).await;
    assert_eq!(got, ping);
}
