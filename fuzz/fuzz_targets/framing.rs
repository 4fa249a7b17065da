//! The RFC 6587 framer: any bytes, fed in pieces of any size, never panic,
//! and every byte ends up in a message, a drop or the buffer.
#![no_main]
use banhammer::source::syslog::framing::{SyslogFrame, SyslogFramer};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 64) + 1;
    let mut framer = SyslogFramer::new(512);
    let mut buf = BytesMut::new();
    let mut frames = 0usize;
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        while let Ok(Some(f)) = framer.decode(&mut buf) {
            if let SyslogFrame::Message(m) = &f {
                assert!(m.len() <= 512, "a message over the limit came through");
            }
            frames += 1;
            assert!(frames <= rest.len() + 1, "more frames than bytes");
        }
    }
    while let Ok(Some(_)) = framer.decode_eof(&mut buf) {
        frames += 1;
        assert!(frames <= rest.len() + 2);
    }
});
