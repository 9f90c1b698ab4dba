//! libvirt error replies a relay writes itself, when it refuses a message that carries
//! descriptors (an unsupported procedure, a descriptor that is not a socket, a descriptor
//! the gateway will not hand out). The libvirt client then raises an ordinary
//! `libvirtError` with our message, and its connection lives on: a bare byte where a
//! descriptor should be would make it drop the whole connection instead.
//!
//! The payload is XDR `remote_error` (libvirt's `remote_protocol.x`): `code`, `domain`,
//! `message` (optional string), `level`, `dom` (optional domain), `str1`..`str3` (optional
//! strings), `int1`, `int2`, `net` (optional network).

use crate::frame::{Header, REPLY, STATUS_ERROR};

/// `VIR_ERR_NO_SUPPORT`: no support for this function (virt-viewer then falls back from
/// `virDomainOpenGraphicsFD` to `virDomainOpenGraphics`).
pub const VIR_ERR_NO_SUPPORT: i32 = 3;
/// `VIR_ERR_OPERATION_FAILED`.
pub const VIR_ERR_OPERATION_FAILED: i32 = 9;
/// `VIR_ERR_OPERATION_UNSUPPORTED`.
pub const VIR_ERR_OPERATION_UNSUPPORTED: i32 = 84;
/// `VIR_ERR_ACCESS_DENIED`.
pub const VIR_ERR_ACCESS_DENIED: i32 = 88;
/// `VIR_FROM_RPC`: where the error comes from, as libvirt numbers it.
pub const VIR_FROM_RPC: i32 = 7;
/// `VIR_ERR_ERROR`: the error level.
const VIR_ERR_ERROR: i32 = 2;

/// Why a relay refused a message; becomes the libvirt error the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A `virErrorNumber` (one of the constants above).
    pub code: i32,
    /// What the user reads, including what to do.
    pub message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The error REPLY to the call whose header is `call` (same program, version, procedure
/// and serial).
pub fn error_reply(call: &Header, refusal: &Refusal) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64 + refusal.message.len());
    let int = |p: &mut Vec<u8>, v: i32| p.extend_from_slice(&v.to_be_bytes());
    int(&mut payload, refusal.code);
    int(&mut payload, VIR_FROM_RPC);
    // message: present
    int(&mut payload, 1);
    xdr_string(&mut payload, &refusal.message);
    int(&mut payload, VIR_ERR_ERROR);
    int(&mut payload, 0); // dom: absent
    int(&mut payload, 0); // str1: absent
    int(&mut payload, 0); // str2: absent
    int(&mut payload, 0); // str3: absent
    int(&mut payload, 0); // int1
    int(&mut payload, 0); // int2
    int(&mut payload, 0); // net: absent
    Header {
        kind: REPLY,
        status: STATUS_ERROR,
        ..*call
    }
    .frame(&payload)
}

/// Append an XDR string (length, bytes, zero padding to 4). libvirt caps strings at
/// 4 MiB; our messages are short, and a longer one is cut.
fn xdr_string(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(4096)];
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
    out.resize(out.len() + (4 - b.len() % 4) % 4, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{read_u32, CALL_WITH_FDS, HEADER_BYTES, REMOTE_PROGRAM};

    #[test]
    fn error_reply_answers_the_call() {
        let call = Header {
            len: 100,
            prog: REMOTE_PROGRAM,
            vers: 1,
            proc: 249,
            kind: CALL_WITH_FDS,
            serial: 42,
            status: 0,
        };
        let r = error_reply(&call, &Refusal::new(VIR_ERR_NO_SUPPORT, "nope"));
        let h = Header::parse(r[..HEADER_BYTES].try_into().unwrap());
        assert_eq!(h.len as usize, r.len());
        assert_eq!((h.prog, h.proc, h.serial), (REMOTE_PROGRAM, 249, 42));
        assert_eq!((h.kind, h.status), (REPLY, STATUS_ERROR));
        let p = &r[HEADER_BYTES..];
        assert_eq!(read_u32(p), Some(3));
        assert_eq!(read_u32(&p[8..]), Some(1));
        assert_eq!(read_u32(&p[12..]), Some(4));
        assert_eq!(&p[16..20], b"nope");
        // level, dom, str1-3, int1, int2, net
        assert_eq!(p.len(), 20 + 8 * 4);
        assert_eq!(r.len() % 4, 0);
    }
}
