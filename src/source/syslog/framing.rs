//! RFC 6587 framing of a syslog byte stream (TCP, TLS): a pure decoder.
//!
//! Each frame is either octet-counted (`LEN SP MSG`) or terminated by LF,
//! CRLF or NUL; the kind is decided per frame by its first byte, as
//! rsyslog and syslog-ng send them (a digit starts an octet count). Bytes
//! between frames that are only terminators (rsyslog's octet counts are
//! followed by a newline of their own) are skipped.
//!
//! Problems a stream recovers from are items, not errors, so the
//! connection keeps going: an oversized frame is discarded up to its end
//! (the octet count says where; otherwise the next LF) and reported as
//! [`SyslogFrame::Dropped`]; so is a frame that cannot start where the
//! previous octet count ended (a wrong count), which is discarded up to
//! the next LF. A partial frame at the end of the stream is delivered if it
//! is an LF frame (its terminator is all that is missing) and dropped if it
//! is an octet-counted one.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Why bytes were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A frame longer than the maximum message size.
    Oversized,
    /// A frame that does not start as one: garbage after an octet-counted
    /// frame (a wrong count), or a count of zero.
    BadFraming,
    /// The stream ended inside an octet-counted frame.
    Truncated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogFrame {
    Message(Bytes),
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a frame.
    Start,
    /// Discarding this many more bytes of an oversized octet-counted frame.
    SkipCount(u64),
    /// Discarding up to and including the next LF.
    SkipLine,
}

/// The RFC 6587 decoder.
#[derive(Debug)]
pub struct SyslogFramer {
    max: usize,
    state: State,
    /// The previous frame was octet-counted: the next one must start with a
    /// count (or a `<PRI>`), anything else means the count was wrong.
    counted: bool,
}

/// Longest octet count accepted (digits).
const MAX_DIGITS: usize = 10;

impl SyslogFramer {
    pub fn new(max_message_size: usize) -> SyslogFramer {
        SyslogFramer {
            max: max_message_size.max(1),
            state: State::Start,
            counted: false,
        }
    }

    /// Inside a frame being discarded (more bytes of it are expected).
    pub fn mid_frame(&self) -> bool {
        self.state != State::Start
    }
}

fn is_terminator(b: u8) -> bool {
    matches!(b, b'\n' | b'\r' | b'\0')
}

/// Strips what terminates a line-framed message (CR before LF).
fn trim_end(mut b: Bytes) -> Bytes {
    while b.last().is_some_and(|&c| is_terminator(c)) {
        b.truncate(b.len() - 1);
    }
    b
}

impl Decoder for SyslogFramer {
    type Item = SyslogFrame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<SyslogFrame>, std::io::Error> {
        loop {
            match self.state {
                State::SkipCount(n) => {
                    let take = n.min(src.len() as u64);
                    src.advance(take as usize);
                    if take < n {
                        self.state = State::SkipCount(n - take);
                        return Ok(None);
                    }
                    self.state = State::Start;
                }
                State::SkipLine => match memchr::memchr2(b'\n', b'\0', src) {
                    Some(p) => {
                        src.advance(p + 1);
                        self.state = State::Start;
                    }
                    None => {
                        src.clear();
                        return Ok(None);
                    }
                },
                State::Start => {
                    let skip = src.iter().take_while(|&&b| is_terminator(b)).count();
                    src.advance(skip);
                    let Some(&first) = src.first() else {
                        return Ok(None);
                    };
                    if first.is_ascii_digit() {
                        match self.octet_frame(src) {
                            Some(done) => return Ok(done),
                            // digits not followed by a space: a line after all
                            None => {}
                        }
                    } else if self.counted && first != b'<' {
                        self.counted = false;
                        self.state = State::SkipLine;
                        return Ok(Some(SyslogFrame::Dropped(DropReason::BadFraming)));
                    }
                    return Ok(self.line_frame(src));
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<SyslogFrame>, std::io::Error> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let rest = src.split().freeze();
        if self.state != State::Start {
            return Ok(None);
        }
        if rest[0].is_ascii_digit() && self.count_prefix(&rest).is_some() {
            return Ok(Some(SyslogFrame::Dropped(DropReason::Truncated)));
        }
        Ok(Some(SyslogFrame::Message(trim_end(rest))))
    }
}

impl SyslogFramer {
    /// `Some((count, header length))` if `buf` starts with `DIGITS SP`;
    /// `Some((0, 0))` if it may still (too few bytes yet); `None` if not.
    fn count_prefix(&self, buf: &[u8]) -> Option<(u64, usize)> {
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > MAX_DIGITS {
            return None;
        }
        match buf.get(digits) {
            None => Some((0, 0)),
            Some(b' ') => {
                let n = std::str::from_utf8(&buf[..digits]).ok()?.parse().ok()?;
                Some((n, digits + 1))
            }
            Some(_) => None,
        }
    }

    /// An octet-counted frame: Some(result) if `src` starts with a count,
    /// None if it does not (then it is a line).
    fn octet_frame(&mut self, src: &mut BytesMut) -> Option<Option<SyslogFrame>> {
        let (n, head) = self.count_prefix(src)?;
        if head == 0 {
            // the count is not complete yet
            return Some(None);
        }
        self.counted = true;
        if n == 0 {
            src.advance(head);
            return Some(Some(SyslogFrame::Dropped(DropReason::BadFraming)));
        }
        if n > self.max as u64 {
            src.advance(head);
            self.state = State::SkipCount(n);
            return Some(Some(SyslogFrame::Dropped(DropReason::Oversized)));
        }
        let n = n as usize;
        if src.len() < head + n {
            src.reserve(head + n - src.len());
            return Some(None);
        }
        src.advance(head);
        let msg = src.split_to(n).freeze();
        Some(Some(SyslogFrame::Message(trim_end(msg))))
    }

    /// A frame ending at LF or NUL.
    fn line_frame(&mut self, src: &mut BytesMut) -> Option<SyslogFrame> {
        self.counted = false;
        let limit = src.len().min(self.max + 1);
        match memchr::memchr2(b'\n', b'\0', &src[..limit]) {
            Some(p) if p <= self.max => {
                let line = src.split_to(p + 1).freeze();
                Some(SyslogFrame::Message(trim_end(line)))
            }
            _ if src.len() > self.max => {
                self.state = State::SkipLine;
                Some(SyslogFrame::Dropped(DropReason::Oversized))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SyslogFrame {
        SyslogFrame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Decodes `input` fed in two pieces split at `split`, then EOF.
    fn decode_split(input: &[u8], split: usize, max: usize) -> Vec<SyslogFrame> {
        let mut d = SyslogFramer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in [&input[..split], &input[split..]] {
            buf.extend_from_slice(part);
            while let Some(f) = d.decode(&mut buf).expect("decode") {
                out.push(f);
            }
        }
        while let Some(f) = d.decode_eof(&mut buf).expect("eof") {
            out.push(f);
        }
        out
    }

    /// The same frames whichever byte the input is split at.
    fn check(input: &str, max: usize, want: &[SyslogFrame]) {
        for split in 0..=input.len() {
            assert_eq!(
                decode_split(input.as_bytes(), split, max),
                want,
                "input {input:?} split at {split}"
            );
        }
    }

    #[test]
    fn line_framing_with_lf_crlf_and_nul() {
        check(
            "<13>a b\n<13>c\r\n<13>d\0<13>e",
            100,
            &[msg("<13>a b"), msg("<13>c"), msg("<13>d"), msg("<13>e")],
        );
    }

    #[test]
    fn octet_counting_with_and_without_trailing_newline() {
        // rsyslog counts the newline it sends; logger does not send one
        check(
            "8 <13>abc\n7 <13>def5 <13>x",
            100,
            &[msg("<13>abc"), msg("<13>def"), msg("<13>x")],
        );
    }

    #[test]
    fn kinds_mix_frame_by_frame() {
        check(
            "<13>line\n6 <13>ab<13>next\n",
            100,
            &[msg("<13>line"), msg("<13>ab"), msg("<13>next")],
        );
    }

    #[test]
    fn oversized_frames_are_dropped_and_the_stream_resyncs() {
        check(
            "20 <13>0123456789abcdef5 <13>k<13>0123456789\n<13>ok\n",
            10,
            &[
                SyslogFrame::Dropped(DropReason::Oversized),
                msg("<13>k"),
                SyslogFrame::Dropped(DropReason::Oversized),
                msg("<13>ok"),
            ],
        );
    }

    #[test]
    fn a_wrong_count_is_dropped_up_to_the_next_line() {
        // the count says 4 where the message has 7 bytes
        check(
            "4 <13>abc\n<13>next\n",
            100,
            &[
                msg("<13>"),
                SyslogFrame::Dropped(DropReason::BadFraming),
                msg("<13>next"),
            ],
        );
        check(
            "0 <13>x\n",
            100,
            &[SyslogFrame::Dropped(DropReason::BadFraming), msg("<13>x")],
        );
    }

    #[test]
    fn digits_without_a_space_are_a_line() {
        check("2026-11-22 x\n", 100, &[msg("2026-11-22 x")]);
    }

    #[test]
    fn a_partial_counted_frame_at_eof_is_reported() {
        check(
            "50 <13>abc",
            100,
            &[SyslogFrame::Dropped(DropReason::Truncated)],
        );
    }
}
