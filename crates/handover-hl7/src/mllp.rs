//! MLLP (HL7 Minimal Lower Layer Protocol) framing: `0x0B <payload> 0x1C 0x0D`.
//!
//! [`MllpDecoder`] is a push-style streaming decoder: feed it whatever a read
//! returned with [`MllpDecoder::push`] and drain complete frames with
//! [`MllpDecoder::next_frame`]. It never does IO itself.
//!
//! Behaviour on imperfect input (senders in the wild are sloppy):
//!
//! * Bytes between frames are skipped. ASCII whitespace (a stray `\r\n`
//!   between frames is common) is skipped silently; any other skipped byte is
//!   counted in [`MllpDecoder::discarded_bytes`] so the caller can log it.
//! * A frame ends at the first `0x1C`. The trailing `0x0D` is consumed when it
//!   follows, but a **missing** `0x0D` is tolerated: the frame is emitted as
//!   soon as `0x1C` arrives, without waiting for the next byte. This is safe
//!   because `0x1C` can never occur inside an HL7 v2 payload (it is a control
//!   character, and no UTF-8 or ISO-8859-1 multi-byte sequence contains it),
//!   so `0x1C` alone unambiguously ends the frame; it also avoids a dead-lock
//!   with a sender that omits `0x0D` and then waits for its ACK.
//! * A `0x0B` inside a frame restarts the frame: the sender gave up on what it
//!   was sending (a timeout, a reconnect inside an interface engine) and began
//!   again, so the partial bytes before it are discarded (counted in
//!   [`MllpDecoder::discarded_bytes`], and the restart in
//!   [`MllpDecoder::restarted_frames`], for the caller to log) and framing
//!   continues from the new `0x0B`. This is what MLLP receivers usually do; the
//!   alternative, keeping it as data, glued the abandoned start onto the next
//!   message and lost that message. `0x0B` is a control character that HL7 v2
//!   text never carries unescaped, so it cannot be meant as data.
//! * A frame whose payload grows beyond `max_frame_len` yields
//!   [`FrameError::TooLarge`] once; the rest of that frame is discarded and the
//!   decoder resynchronises at the next `0x0B`. Memory use is bounded by
//!   `max_frame_len` plus the frames already decoded but not yet drained.

use std::collections::VecDeque;

/// Start-of-block byte (vertical tab) that opens an MLLP frame.
pub const START_BLOCK: u8 = 0x0B;
/// End-of-block byte (file separator) that closes an MLLP frame.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that follows [`END_BLOCK`] in a well-formed frame.
pub const TRAILER: u8 = 0x0D;
/// Most bytes of an oversized frame's first line kept in [`FrameError::TooLarge`].
pub const HEAD_LEN: usize = 1024;
/// Default maximum payload length accepted by [`MllpDecoder::default`]: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Errors reported by [`MllpDecoder`] for a frame that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame's payload exceeded the decoder's limit; it was discarded.
    #[error("mllp frame exceeds the maximum length of {limit} bytes")]
    TooLarge {
        /// The configured maximum payload length in bytes.
        limit: usize,
        /// The frame's first line (its MSH segment), at most [`HEAD_LEN`] bytes, so that
        /// the refusal can still name the message it refuses.
        head: Vec<u8>,
    },
    /// The stream ended in the middle of a frame (see [`MllpDecoder::finish`]).
    #[error("stream ended inside an mllp frame after {len} payload bytes")]
    Truncated {
        /// Payload bytes received before the stream ended.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame, looking for [`START_BLOCK`].
    Idle,
    /// Inside a frame, collecting payload until [`END_BLOCK`].
    InFrame,
    /// Just saw [`END_BLOCK`]; a [`TRAILER`] may follow.
    AfterEnd,
}

/// Streaming MLLP frame decoder.
///
/// ```
/// use handover_hl7::mllp::{encode, MllpDecoder};
///
/// let mut decoder = MllpDecoder::new(64 * 1024);
/// let wire = encode(b"MSH|^~\\&|A\r");
/// decoder.push(&wire[..5]);
/// assert!(decoder.next_frame().is_none());
/// decoder.push(&wire[5..]);
/// assert_eq!(decoder.next_frame(), Some(Ok(b"MSH|^~\\&|A\r".to_vec())));
/// ```
#[derive(Debug, Clone)]
pub struct MllpDecoder {
    max_frame_len: usize,
    state: State,
    current: Vec<u8>,
    ready: VecDeque<Result<Vec<u8>, FrameError>>,
    discarded: u64,
    restarted: u64,
}

impl Default for MllpDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl MllpDecoder {
    /// Creates a decoder accepting payloads of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            state: State::Idle,
            current: Vec::new(),
            ready: VecDeque::new(),
            discarded: 0,
            restarted: 0,
        }
    }

    /// The maximum payload length this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Feeds bytes read from the connection; they may hold any part of any
    /// number of frames.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Idle => match bytes.iter().position(|&b| b == START_BLOCK) {
                    Some(pos) => {
                        self.discard(&bytes[..pos]);
                        self.state = State::InFrame;
                        self.current.clear();
                        bytes = &bytes[pos + 1..];
                    }
                    None => {
                        self.discard(bytes);
                        bytes = &[];
                    }
                },
                State::InFrame => {
                    let (chunk, end) = match bytes
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK)
                    {
                        Some(pos) => (&bytes[..pos], Some(pos)),
                        None => (bytes, None),
                    };
                    if let Some(pos) = end.filter(|&pos| bytes[pos] == START_BLOCK) {
                        // The sender started the frame again: drop what it had sent of it.
                        let partial = std::mem::take(&mut self.current);
                        self.discard(&partial);
                        self.discard(chunk);
                        self.restarted = self.restarted.saturating_add(1);
                        bytes = &bytes[pos + 1..];
                        continue;
                    }
                    if self.current.len() + chunk.len() > self.max_frame_len {
                        // Too large: report once, drop what we have and skip
                        // everything up to the next start byte.
                        let mut head = std::mem::take(&mut self.current);
                        if head.len() < HEAD_LEN {
                            head.extend_from_slice(
                                &chunk[..chunk.len().min(HEAD_LEN - head.len())],
                            );
                        }
                        head.truncate(
                            head.iter()
                                .position(|&b| b == b'\r' || b == b'\n')
                                .unwrap_or(head.len())
                                .min(HEAD_LEN),
                        );
                        head.shrink_to_fit();
                        self.ready.push_back(Err(FrameError::TooLarge {
                            limit: self.max_frame_len,
                            head,
                        }));
                        self.state = State::Idle;
                        // The remainder of this chunk is re-scanned in Idle
                        // (discarded up to the next 0x0B).
                        continue;
                    }
                    self.current.extend_from_slice(chunk);
                    match end {
                        Some(pos) => {
                            let frame = std::mem::take(&mut self.current);
                            self.ready.push_back(Ok(frame));
                            self.state = State::AfterEnd;
                            bytes = &bytes[pos + 1..];
                        }
                        None => bytes = &[],
                    }
                }
                State::AfterEnd => {
                    if bytes.first() == Some(&TRAILER) {
                        bytes = &bytes[1..];
                    }
                    self.state = State::Idle;
                }
            }
        }
    }

    /// Returns the next decoded frame (or frame error), or `None` when more
    /// bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        self.ready.pop_front()
    }

    /// Whether a frame has been started but not yet finished.
    pub fn has_partial_frame(&self) -> bool {
        self.state == State::InFrame
    }

    /// Total number of non-whitespace bytes skipped outside frames so far
    /// (including the remainder of oversized frames and the partial frames
    /// given up by a restart). Whitespace between frames is not counted.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// How many frames were restarted so far: a `0x0B` arrived inside a frame, and the
    /// bytes of the frame before it were discarded (and counted in
    /// [`MllpDecoder::discarded_bytes`]).
    pub fn restarted_frames(&self) -> u64 {
        self.restarted
    }

    /// Signals the end of the stream. Returns [`FrameError::Truncated`] if a
    /// frame was in progress (its bytes are dropped). Frames already decoded
    /// stay available from [`MllpDecoder::next_frame`].
    pub fn finish(&mut self) -> Option<FrameError> {
        let was_in_frame = self.state == State::InFrame;
        let len = self.current.len();
        self.current = Vec::new();
        self.state = State::Idle;
        was_in_frame.then_some(FrameError::Truncated { len })
    }

    fn discard(&mut self, bytes: &[u8]) {
        let counted = bytes.iter().filter(|b| !b.is_ascii_whitespace()).count();
        self.discarded = self.discarded.saturating_add(counted as u64);
    }
}

/// Wraps `payload` in an MLLP frame: `0x0B payload 0x1C 0x0D`.
///
/// The payload must not contain [`END_BLOCK`] (`0x1C`); HL7 v2 text never
/// does. This function does not check it: a payload containing `0x1C` would
/// be cut short by the receiver.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(payload);
    out.push(END_BLOCK);
    out.push(TRAILER);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn drain(d: &mut MllpDecoder) -> Vec<Result<Vec<u8>, FrameError>> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn two_frames_in_one_read_with_crlf_between() {
        let mut d = MllpDecoder::default();
        let mut wire = encode(b"one");
        wire.extend_from_slice(b"\r\n");
        wire.extend(encode(b"two"));
        d.push(&wire);
        assert_eq!(
            drain(&mut d),
            vec![Ok(b"one".to_vec()), Ok(b"two".to_vec())]
        );
        assert_eq!(d.discarded_bytes(), 0);
        assert!(!d.has_partial_frame());
    }

    #[test]
    fn byte_by_byte() {
        let mut d = MllpDecoder::default();
        for b in encode(b"MSH|x") {
            d.push(&[b]);
        }
        assert_eq!(drain(&mut d), vec![Ok(b"MSH|x".to_vec())]);
    }

    #[test]
    fn garbage_is_counted_and_skipped() {
        let mut d = MllpDecoder::default();
        d.push(b"junk\r\n");
        d.push(&encode(b"a"));
        d.push(b"xx");
        d.push(&encode(b"b"));
        assert_eq!(drain(&mut d), vec![Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
        assert_eq!(d.discarded_bytes(), 6);
    }

    #[test]
    fn missing_trailer_is_tolerated_and_emitted_immediately() {
        let mut d = MllpDecoder::default();
        d.push(b"\x0Bfirst\x1C");
        assert_eq!(drain(&mut d), vec![Ok(b"first".to_vec())]);
        d.push(b"\x0Bsecond\x1C\x0Bthird\x1C\r");
        assert_eq!(
            drain(&mut d),
            vec![Ok(b"second".to_vec()), Ok(b"third".to_vec())]
        );
        assert_eq!(d.discarded_bytes(), 0);
    }

    #[test]
    fn trailer_split_from_end_block() {
        let mut d = MllpDecoder::default();
        d.push(b"\x0Bp\x1C");
        d.push(b"\r\x0Bq\x1C\r");
        assert_eq!(drain(&mut d), vec![Ok(b"p".to_vec()), Ok(b"q".to_vec())]);
        assert_eq!(d.discarded_bytes(), 0);
    }

    #[test]
    fn oversized_frame_reports_once_and_resyncs() {
        let mut d = MllpDecoder::new(4);
        d.push(b"\x0B12345");
        d.push(b"6789\x1C\r");
        d.push(&encode(b"1234"));
        assert_eq!(
            drain(&mut d),
            vec![
                Err(FrameError::TooLarge {
                    limit: 4,
                    head: b"12345".to_vec()
                }),
                Ok(b"1234".to_vec())
            ]
        );
        // "123456789" minus nothing kept, plus the 0x1C: all non-whitespace.
        assert_eq!(d.discarded_bytes(), 10);
    }

    #[test]
    fn an_oversized_frame_keeps_its_first_line_for_the_refusal() {
        let mut d = MllpDecoder::new(64);
        d.push(b"\x0BMSH|^~\\&|PAS|RX1|HO|LA|20240301||ADT^A01|C1|P|2.4\rPID|||");
        d.push(&[b'x'; 100]);
        d.push(b"\x1C\r");
        let Some(Err(FrameError::TooLarge { head, .. })) = d.next_frame() else {
            panic!("no error");
        };
        assert_eq!(head, b"MSH|^~\\&|PAS|RX1|HO|LA|20240301||ADT^A01|C1|P|2.4");
        // A first line longer than HEAD_LEN is cut there.
        let mut d = MllpDecoder::new(4 * HEAD_LEN);
        d.push(b"\x0B");
        d.push(&vec![b'M'; 5 * HEAD_LEN]);
        let Some(Err(FrameError::TooLarge { head, .. })) = d.next_frame() else {
            panic!("no error");
        };
        assert_eq!(head.len(), HEAD_LEN);
    }

    #[test]
    fn oversized_then_next_frame_in_same_read() {
        let mut d = MllpDecoder::new(3);
        let mut wire = encode(b"toolong");
        wire.extend(encode(b"ok"));
        d.push(&wire);
        assert_eq!(
            drain(&mut d),
            vec![
                Err(FrameError::TooLarge {
                    limit: 3,
                    head: b"toolong".to_vec()
                }),
                Ok(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn exact_limit_is_accepted() {
        let mut d = MllpDecoder::new(3);
        d.push(&encode(b"abc"));
        assert_eq!(drain(&mut d), vec![Ok(b"abc".to_vec())]);
    }

    #[test]
    fn finish_reports_truncation() {
        let mut d = MllpDecoder::default();
        d.push(b"\x0BMSH|");
        assert!(d.has_partial_frame());
        assert_eq!(d.finish(), Some(FrameError::Truncated { len: 4 }));
        assert_eq!(d.finish(), None);
        assert!(d.next_frame().is_none());
    }

    #[test]
    fn empty_frame_is_delivered() {
        let mut d = MllpDecoder::default();
        d.push(&encode(b""));
        assert_eq!(drain(&mut d), vec![Ok(Vec::new())]);
    }

    #[test]
    fn a_start_byte_inside_a_frame_restarts_it() {
        let mut d = MllpDecoder::default();
        // The sender gives up after a few bytes and sends the whole message again.
        d.push(b"\x0BMSH|^~\\&|PAS|RX1|HAND\x0BMSH|^~\\&|PAS|RX1|HANDOVER\r\x1C\r");
        assert_eq!(
            drain(&mut d),
            vec![Ok(b"MSH|^~\\&|PAS|RX1|HANDOVER\r".to_vec())]
        );
        assert_eq!(d.restarted_frames(), 1);
        assert_eq!(d.discarded_bytes(), 21);
        assert!(!d.has_partial_frame());
        // Split across reads, and twice in a row: the last start byte wins.
        d.push(b"\x0Bab");
        d.push(b"c\x0B");
        d.push(b"\x0Bxyz\x1C");
        assert_eq!(drain(&mut d), vec![Ok(b"xyz".to_vec())]);
        assert_eq!(d.restarted_frames(), 3);
        assert_eq!(d.discarded_bytes(), 24);
        // A frame that would have been too large restarts as well, without an error.
        let mut d = MllpDecoder::new(4);
        d.push(b"\x0B123\x0B4567");
        d.push(b"\x0Bok\x1C\r");
        assert_eq!(drain(&mut d), vec![Ok(b"ok".to_vec())]);
        assert_eq!(d.restarted_frames(), 2);
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            FrameError::TooLarge {
                limit: 10,
                head: Vec::new()
            }
            .to_string(),
            "mllp frame exceeds the maximum length of 10 bytes"
        );
    }
}
