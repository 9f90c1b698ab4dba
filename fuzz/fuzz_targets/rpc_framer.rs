//! libvirt RPC framing (virtgate_rpc::Framer), fed in chunks whose sizes come from the input.
//! Invariants: bytes are consumed (no infinite loop), Whole payloads stay under MAX_WHOLE.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_rpc::frame::{self, Event, Framer, Header, HEADER_BYTES, MAX_WHOLE};

fn whole(h: &Header) -> bool {
    h.prog == frame::REMOTE_PROGRAM
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let slot_len = data[0] as usize;
    let chunk = (data[1] as usize).max(1);
    let mut input = &data[2..];
    if input.len() >= HEADER_BYTES {
        let h = Header::parse(input[..HEADER_BYTES].try_into().unwrap());
        let _ = h.has_fds();
        let _ = h.encode();
    }
    let mut framer = Framer::new(slot_len, whole);
    while !input.is_empty() {
        let take = chunk.min(input.len());
        let mut piece = &input[..take];
        input = &input[take..];
        loop {
            let before = piece.len();
            match framer.next(&mut piece) {
                Ok(Some(Event::Whole(w))) => {
                    assert!(w.payload().len() <= MAX_WHOLE);
                    let _ = w.declared_fds();
                    let _ = frame::domain_name(&w);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
            if piece.is_empty() {
                break;
            }
            assert!(
                piece.len() < before || before == 0,
                "framer made no progress"
            );
        }
    }
    let _ = framer.at_boundary();
});
