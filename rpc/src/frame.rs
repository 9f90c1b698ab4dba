//! libvirt's RPC framing, as far as a relay needs it: where each message starts and ends,
//! which messages carry file descriptors, and where those descriptors sit in the byte
//! stream. Pure code, no I/O: [`Framer::next`] is fed whatever a read returned and hands back
//! [`Event`]s, so both directions of both ends use the same state machine.
//!
//! A message is a 4-byte big-endian length (counting itself), a 24-byte [`Header`] (program,
//! version, procedure, type, serial, status, each 4 bytes big-endian) and a payload. Types
//! [`CALL_WITH_FDS`] and [`REPLY_WITH_FDS`] start their payload with an XDR `u32` count of
//! descriptors; AFTER the message come that many descriptor slots. On libvirt's own unix
//! socket a slot is one `0x00` byte sent with `SCM_RIGHTS`; inside a virtgate tunnel it is
//! an 8-byte big-endian descriptor id ([`TOKEN_LEN`]). The framer is told the slot width.
//!
//! Messages with descriptors, and the few plain calls a relay wants to read whole
//! ([`Framer::new`]'s `whole` predicate: e.g. `virDomainOpenGraphicsFD` to audit its domain),
//! are buffered and handed over in one piece with their slots; everything else passes
//! through as borrowed slices of the input without copying.

/// Bytes of the length word.
pub const LEN_BYTES: usize = 4;
/// Bytes of the length word plus the header.
pub const HEADER_BYTES: usize = LEN_BYTES + 24;
/// The largest message libvirt sends or accepts (`VIR_NET_MESSAGE_MAX` 32 MiB plus the
/// length word); anything longer is not libvirt talking.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024 + LEN_BYTES;
/// The most descriptors one message may carry (`VIR_NET_MESSAGE_NUM_FDS_MAX`).
pub const MAX_FDS: u32 = 32;
/// Messages a relay reads whole are small (a domain and two integers); a larger one is
/// refused rather than buffered.
pub const MAX_WHOLE: usize = 1024 * 1024;
/// Width of a descriptor slot inside a virtgate tunnel: a big-endian `u64` id.
pub const TOKEN_LEN: usize = 8;

/// `REMOTE_PROGRAM`: the remote driver's program number.
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// Message type: a call.
pub const CALL: i32 = 0;
/// Message type: a reply.
pub const REPLY: i32 = 1;
/// Message type: a call followed by descriptors (client → libvirtd).
pub const CALL_WITH_FDS: i32 = 4;
/// Message type: a reply followed by descriptors (libvirtd → client).
pub const REPLY_WITH_FDS: i32 = 5;
/// Message status: an error (the payload is a `remote_error`).
pub const STATUS_ERROR: i32 = 1;

/// `REMOTE_PROC_DOMAIN_OPEN_GRAPHICS`: the client passes a socket for the display.
pub const PROC_DOMAIN_OPEN_GRAPHICS: i32 = 249;
/// `REMOTE_PROC_DOMAIN_OPEN_GRAPHICS_FD`: libvirtd hands back a socket to the display.
pub const PROC_DOMAIN_OPEN_GRAPHICS_FD: i32 = 343;

/// A message header (the 24 bytes after the length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total length of the message including the length word.
    pub len: u32,
    /// Program number ([`REMOTE_PROGRAM`], keepalive, ...).
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number within the program.
    pub proc: i32,
    /// Message type ([`CALL`], [`REPLY`], ...).
    pub kind: i32,
    /// Pairs a reply with its call.
    pub serial: u32,
    /// `0` ok, [`STATUS_ERROR`], or `2` continue (streams).
    pub status: i32,
}

impl Header {
    /// Parse the first [`HEADER_BYTES`] of a message.
    pub fn parse(b: &[u8; HEADER_BYTES]) -> Header {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            len: word(0),
            prog: word(4),
            vers: word(8),
            proc: word(12) as i32,
            kind: word(16) as i32,
            serial: word(20),
            status: word(24) as i32,
        }
    }

    /// The [`HEADER_BYTES`] that encode this header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        for (i, w) in [
            self.len,
            self.prog,
            self.vers,
            self.proc as u32,
            self.kind as u32,
            self.serial,
            self.status as u32,
        ]
        .into_iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        b
    }

    /// A whole message: this header (its length set to fit) followed by `payload`.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let header = Header {
            len: (HEADER_BYTES + payload.len()) as u32,
            ..*self
        };
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(payload);
        out
    }

    /// Whether descriptors follow the message.
    pub fn has_fds(&self) -> bool {
        self.kind == CALL_WITH_FDS || self.kind == REPLY_WITH_FDS
    }
}

/// The stream does not look like libvirt RPC: the relay closes the tunnel (libvirt's own
/// client would close its connection too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length below a header or above [`MAX_MESSAGE`].
    #[error("a libvirt message of {0} bytes is not valid")]
    BadLength(u32),
    /// A descriptor count above [`MAX_FDS`].
    #[error("a libvirt message claims {0} descriptors (at most {MAX_FDS})")]
    TooManyFds(u32),
    /// A message to be read whole is larger than [`MAX_WHOLE`].
    #[error("a libvirt message of type {kind} (procedure {proc}) is {len} bytes, more than a relay buffers")]
    TooLarge {
        /// Its type.
        kind: i32,
        /// Its procedure.
        proc: i32,
        /// Its length.
        len: u32,
    },
}

/// A message read whole, with the slots that followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    /// Its header.
    pub header: Header,
    /// The whole message: length word, header and payload.
    pub bytes: Vec<u8>,
    /// The descriptor slots after it (none unless [`Header::has_fds`]), each as many bytes
    /// as the framer's slot width.
    pub slots: Vec<Vec<u8>>,
}

impl Whole {
    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_BYTES..]
    }

    /// The descriptor count the payload declares (0 for messages without descriptors).
    pub fn declared_fds(&self) -> u32 {
        if self.header.has_fds() {
            read_u32(self.payload()).unwrap_or(0)
        } else {
            0
        }
    }
}

/// What [`Framer::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Bytes to pass on unchanged (part of a message, possibly spanning messages).
    Bytes(&'a [u8]),
    /// A header (length word included) of a message that passes through: pass it on.
    Header(Header, [u8; HEADER_BYTES]),
    /// A message read whole, with its descriptor slots.
    Whole(Whole),
}

/// Where the framer is.
#[derive(Debug)]
enum State {
    /// Collecting a header: `n` of [`HEADER_BYTES`] in `buf`.
    Head { buf: [u8; HEADER_BYTES], n: usize },
    /// Passing `left` more payload bytes through.
    Body { left: usize },
    /// Buffering a whole message (`left` payload bytes to go).
    Buffer { whole: Whole, left: usize },
    /// Collecting the descriptor slots after a buffered message.
    Slots {
        whole: Whole,
        count: u32,
        partial: Vec<u8>,
    },
}

/// The state machine for one direction of one libvirt connection.
pub struct Framer {
    /// Where in the stream we are.
    state: State,
    /// Bytes per descriptor slot: 1 on libvirt's socket, [`TOKEN_LEN`] in a tunnel.
    slot_len: usize,
    /// Which plain messages to read whole as well (those with descriptors always are).
    whole: fn(&Header) -> bool,
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("state", &self.state)
            .field("slot_len", &self.slot_len)
            .finish()
    }
}

impl Framer {
    /// A framer at the start of a stream whose descriptor slots are `slot_len` bytes wide.
    pub fn new(slot_len: usize, whole: fn(&Header) -> bool) -> Framer {
        Framer {
            state: State::Head {
                buf: [0; HEADER_BYTES],
                n: 0,
            },
            slot_len: slot_len.max(1),
            whole,
        }
    }

    /// Whether the stream is between messages (something may be inserted here).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Head { n: 0, .. })
    }

    /// Consume bytes from the front of `input` and return the next event, or `None` when
    /// `input` is used up without completing one.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, FrameError> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match &mut self.state {
                State::Head { buf, n } => {
                    let take = (HEADER_BYTES - *n).min(input.len());
                    buf[*n..*n + take].copy_from_slice(&input[..take]);
                    *n += take;
                    *input = &input[take..];
                    if *n < HEADER_BYTES {
                        continue;
                    }
                    let raw = *buf;
                    let header = Header::parse(&raw);
                    let len = header.len as usize;
                    if !(HEADER_BYTES..=MAX_MESSAGE).contains(&len) {
                        return Err(FrameError::BadLength(header.len));
                    }
                    let left = len - HEADER_BYTES;
                    if header.has_fds() || (self.whole)(&header) {
                        if len > MAX_WHOLE {
                            return Err(FrameError::TooLarge {
                                kind: header.kind,
                                proc: header.proc,
                                len: header.len,
                            });
                        }
                        let mut bytes = Vec::with_capacity(len);
                        bytes.extend_from_slice(&raw);
                        let whole = Whole {
                            header,
                            bytes,
                            slots: Vec::new(),
                        };
                        self.state = State::Buffer { whole, left };
                        if let Some(e) = self.finish_buffer()? {
                            return Ok(Some(e));
                        }
                        continue;
                    }
                    self.state = if left == 0 {
                        State::Head {
                            buf: [0; HEADER_BYTES],
                            n: 0,
                        }
                    } else {
                        State::Body { left }
                    };
                    return Ok(Some(Event::Header(header, raw)));
                }
                State::Body { left } => {
                    let take = (*left).min(input.len());
                    let (now, rest) = input.split_at(take);
                    *input = rest;
                    *left -= take;
                    if *left == 0 {
                        self.state = State::Head {
                            buf: [0; HEADER_BYTES],
                            n: 0,
                        };
                    }
                    return Ok(Some(Event::Bytes(now)));
                }
                State::Buffer { whole, left } => {
                    let take = (*left).min(input.len());
                    whole.bytes.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    *left -= take;
                    if let Some(e) = self.finish_buffer()? {
                        return Ok(Some(e));
                    }
                }
                State::Slots {
                    whole,
                    count,
                    partial,
                } => {
                    let take = (self.slot_len - partial.len()).min(input.len());
                    partial.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    if partial.len() == self.slot_len {
                        whole.slots.push(std::mem::take(partial));
                        if whole.slots.len() as u32 == *count {
                            return Ok(Some(self.emit_whole()));
                        }
                    }
                }
            }
        }
    }

    /// After buffering: a complete message moves on to its slots (or is emitted).
    fn finish_buffer(&mut self) -> Result<Option<Event<'static>>, FrameError> {
        let State::Buffer { whole, left: 0 } = &mut self.state else {
            return Ok(None);
        };
        let count = whole.declared_fds();
        if count > MAX_FDS {
            return Err(FrameError::TooManyFds(count));
        }
        if count == 0 {
            return Ok(Some(self.emit_whole()));
        }
        let whole = std::mem::replace(
            whole,
            Whole {
                header: whole.header,
                bytes: Vec::new(),
                slots: Vec::new(),
            },
        );
        self.state = State::Slots {
            whole,
            count,
            partial: Vec::with_capacity(self.slot_len),
        };
        Ok(None)
    }

    /// Hand over the buffered message and go back to reading headers.
    fn emit_whole(&mut self) -> Event<'static> {
        let state = std::mem::replace(
            &mut self.state,
            State::Head {
                buf: [0; HEADER_BYTES],
                n: 0,
            },
        );
        match state {
            State::Buffer { whole, .. } | State::Slots { whole, .. } => Event::Whole(whole),
            // emit_whole is only called from the two states above
            State::Head { .. } | State::Body { .. } => Event::Bytes(&[]),
        }
    }
}

/// A big-endian `u32` at the start of `b`.
pub fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The domain name at the start of a call's payload (`remote_nonnull_domain`: an XDR
/// string first), for logs and the audit log. Skips the descriptor count of
/// [`CALL_WITH_FDS`] messages.
pub fn domain_name(whole: &Whole) -> Option<String> {
    let mut p = whole.payload();
    if whole.header.has_fds() {
        p = p.get(4..)?;
    }
    let n = read_u32(p)? as usize;
    let name = p.get(4..4 + n)?;
    Some(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: i32, proc: i32, payload: &[u8]) -> Vec<u8> {
        Header {
            len: 0,
            prog: REMOTE_PROGRAM,
            vers: 1,
            proc,
            kind,
            serial: 7,
            status: 0,
        }
        .frame(payload)
    }

    fn xdr_string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// Feed `stream` in chunks of `chunk` bytes; collect (passed bytes, wholes).
    fn run(
        stream: &[u8],
        chunk: usize,
        slot: usize,
        whole: fn(&Header) -> bool,
    ) -> (Vec<u8>, Vec<Whole>) {
        let mut f = Framer::new(slot, whole);
        let (mut passed, mut wholes) = (Vec::new(), Vec::new());
        for part in stream.chunks(chunk) {
            let mut input = part;
            while let Some(e) = f.next(&mut input).unwrap() {
                match e {
                    Event::Bytes(b) => passed.extend_from_slice(b),
                    Event::Header(_, raw) => passed.extend_from_slice(&raw),
                    Event::Whole(w) => wholes.push(w),
                }
            }
            assert!(input.is_empty());
        }
        assert!(f.at_boundary());
        (passed, wholes)
    }

    #[test]
    fn plain_messages_pass_through_in_any_chunking() {
        let mut stream = msg(CALL, 1, &[1, 2, 3, 4]);
        stream.extend(msg(REPLY, 1, &[]));
        stream.extend(msg(3, 2, &vec![9u8; 100_000]));
        for chunk in [1, 3, 28, 29, 4096, 1 << 20] {
            let (passed, wholes) = run(&stream, chunk, 1, |_| false);
            assert_eq!(passed, stream, "chunk {chunk}");
            assert!(wholes.is_empty());
        }
    }

    #[test]
    fn descriptor_messages_come_whole_with_their_slots() {
        let mut payload = 2u32.to_be_bytes().to_vec();
        payload.extend(xdr_string("web1"));
        let fd_msg = msg(REPLY_WITH_FDS, PROC_DOMAIN_OPEN_GRAPHICS_FD, &payload);
        let mut stream = msg(CALL, 5, &[0; 8]);
        stream.extend(&fd_msg);
        stream.extend([0xAA; 16]); // two 8-byte slots
        stream.extend(msg(REPLY, 6, &[1; 4]));
        for chunk in [1, 5, 64, 1 << 16] {
            let (passed, wholes) = run(&stream, chunk, TOKEN_LEN, |_| false);
            assert_eq!(wholes.len(), 1);
            let w = &wholes[0];
            assert_eq!(w.bytes, fd_msg);
            assert_eq!(w.slots, vec![vec![0xAA; 8], vec![0xAA; 8]]);
            assert_eq!(w.declared_fds(), 2);
            assert_eq!(domain_name(w).as_deref(), Some("web1"));
            let mut expect = msg(CALL, 5, &[0; 8]);
            expect.extend(msg(REPLY, 6, &[1; 4]));
            assert_eq!(passed, expect);
        }
    }

    #[test]
    fn chosen_plain_calls_come_whole() {
        let mut stream = msg(CALL, PROC_DOMAIN_OPEN_GRAPHICS_FD, &xdr_string("a b"));
        stream.extend(msg(CALL, 1, &[]));
        let (passed, wholes) = run(&stream, 2, 1, |h| h.proc == PROC_DOMAIN_OPEN_GRAPHICS_FD);
        assert_eq!(wholes.len(), 1);
        assert!(wholes[0].slots.is_empty());
        assert_eq!(domain_name(&wholes[0]).as_deref(), Some("a b"));
        assert_eq!(passed, msg(CALL, 1, &[]));
    }

    #[test]
    fn garbage_is_refused() {
        let mut f = Framer::new(1, |_| false);
        let bad = [0u8; HEADER_BYTES];
        assert_eq!(f.next(&mut &bad[..]), Err(FrameError::BadLength(0)));
        let mut f = Framer::new(1, |_| false);
        let huge = msg(REPLY_WITH_FDS, 1, &100u32.to_be_bytes());
        assert_eq!(f.next(&mut &huge[..]), Err(FrameError::TooManyFds(100)));
        let mut f = Framer::new(1, |_| true);
        let mut big = msg(CALL, 1, &[]);
        big[..4].copy_from_slice(&(MAX_WHOLE as u32 + 1).to_be_bytes());
        assert!(matches!(
            f.next(&mut &big[..]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            len: 40,
            prog: REMOTE_PROGRAM,
            vers: 1,
            proc: -3,
            kind: REPLY,
            serial: u32::MAX,
            status: STATUS_ERROR,
        };
        assert_eq!(Header::parse(&h.encode()), h);
    }
}
