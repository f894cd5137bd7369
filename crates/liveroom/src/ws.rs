//! A minimal RFC 6455 server codec: the handshake key, frame decoding with limits, and frame
//! encoding straight into a connection's write buffer.
//!
//! Owning the codec keeps the fan-out hot path ours: a published event is one shared `Bytes`,
//! and each connection's writer only prepends a 2-10 byte header while copying it into the
//! buffer that it flushes with a single write.

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use crate::close;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
///
/// ```
/// // The example from RFC 6455 section 1.3.
/// assert_eq!(
///     liveroom::ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 section 4.1 asks for: the base64 of 16 bytes.
///
/// ```
/// assert!(liveroom::ws::valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
/// assert!(!liveroom::ws::valid_key("hello"));
/// assert!(!liveroom::ws::valid_key("dGhlIHNhbXBsZSBub25jZSE=")); // 17 bytes
/// ```
pub fn valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation = 0,
    /// UTF-8 text.
    Text = 1,
    /// Binary data.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

/// A complete message from the client.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message; liveroom answers these with an error.
    Binary(Bytes),
    /// A ping whose payload must be echoed in a pong.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// The client closes, with its code if it sent one (always a valid one: see
    /// [`valid_close_code`]).
    Close(Option<u16>),
}

/// A decoding failure and the close code that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("websocket protocol error, closing with {0}")]
pub struct DecodeError(pub u16);

/// Most frames one fragmented message may span: past it the message is refused (close 1008), so
/// a peer cannot make the server do per-frame work for one byte at a time.
pub const MAX_FRAGMENTS: u32 = 1024;

/// Whether `code` may appear in a close frame (RFC 6455 section 7.4): the defined codes (1000 to
/// 1003, 1007 to 1011, and 1012 to 1014 of the IANA registry) and 3000 to 4999. 1004, 1005, 1006
/// and 1015 are reserved and must never be sent.
///
/// ```
/// use liveroom::ws::valid_close_code;
/// assert!(valid_close_code(1000) && valid_close_code(4401));
/// assert!(!valid_close_code(1005) && !valid_close_code(999) && !valid_close_code(5000));
/// ```
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Incremental decoder for client (masked) frames, reassembling fragments.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The fragments of a message so far: its opcode, its bytes, how many frames (a `u32`
    /// keeps the decoder, which every connection's reader holds, small).
    partial: Option<(Opcode, BytesMut, u32)>,
}

impl Decoder {
    /// A decoder that refuses messages larger than `max_message` bytes (close 1009).
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Decodes the next complete message from `buf`, consuming its bytes. `Ok(None)` means more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf)? else {
                return Ok(None);
            };
            match opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Message::Pong)),
                Opcode::Close => return close_frame(&payload).map(Some),
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return Err(DecodeError(close::PROTOCOL));
                    }
                    if fin {
                        return finish(opcode, payload).map(Some);
                    }
                    self.partial = Some((opcode, payload, 1));
                }
                Opcode::Continuation => {
                    let Some((first, mut acc, frames)) = self.partial.take() else {
                        return Err(DecodeError(close::PROTOCOL));
                    };
                    if acc.len() + payload.len() > self.max_message {
                        return Err(DecodeError(close::TOO_BIG));
                    }
                    if frames >= MAX_FRAGMENTS {
                        return Err(DecodeError(close::POLICY));
                    }
                    acc.extend_from_slice(&payload);
                    if fin {
                        return finish(first, acc).map(Some);
                    }
                    self.partial = Some((first, acc, frames + 1));
                }
            }
        }
    }

    /// Parses one frame header and unmasks its payload.
    fn frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(bool, Opcode, BytesMut)>, DecodeError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(DecodeError(close::PROTOCOL)); // no extensions were negotiated
        }
        let fin = b0 & 0x80 != 0;
        let opcode = match b0 & 0x0f {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return Err(DecodeError(close::PROTOCOL)),
        };
        let control = matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
        if b1 & 0x80 == 0 {
            return Err(DecodeError(close::PROTOCOL)); // clients must mask
        }
        let (len, header) = match b1 & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (n as u64, 2),
        };
        if control && (!fin || len > 125) {
            return Err(DecodeError(close::PROTOCOL));
        }
        if len > self.max_message as u64 {
            return Err(DecodeError(close::TOO_BIG));
        }
        let len = len as usize;
        if buf.len() < header + 4 + len {
            // Wait for the payload without reserving it: the buffer grows as bytes arrive, so a
            // header that only declares a large frame costs nothing.
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[header..header + 4]);
        buf.advance(header + 4);
        let mut payload = buf.split_to(len);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        Ok(Some((fin, opcode, payload)))
    }
}

/// A close frame's payload: empty, or a valid code and a UTF-8 reason (RFC 6455 section 5.5.1).
fn close_frame(payload: &[u8]) -> Result<Message, DecodeError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(DecodeError(close::PROTOCOL)),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(DecodeError(close::PROTOCOL));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(DecodeError(close::INVALID_DATA));
            }
            Ok(Message::Close(Some(code)))
        }
    }
}

fn finish(opcode: Opcode, payload: BytesMut) -> Result<Message, DecodeError> {
    if opcode == Opcode::Binary {
        return Ok(Message::Binary(payload.freeze()));
    }
    String::from_utf8(payload.to_vec())
        .map(Message::Text)
        .map_err(|_| DecodeError(close::INVALID_DATA))
}

/// Appends one unmasked server frame holding `payload` to `out`.
pub fn encode(out: &mut BytesMut, opcode: Opcode, payload: &[u8]) {
    encode_header(out, opcode, payload.len());
    out.put_slice(payload);
}

/// Appends the header of an unmasked, final server frame of `len` bytes.
pub fn encode_header(out: &mut BytesMut, opcode: Opcode, len: usize) {
    out.reserve(len + 10);
    out.put_u8(0x80 | opcode as u8);
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Appends a close frame with `code`.
pub fn encode_close(out: &mut BytesMut, code: u16) {
    encode(out, Opcode::Close, &code.to_be_bytes());
}

/// Appends a close frame with `code` and a reason for humans, cut to the 123 bytes a control
/// frame leaves for it (RFC 6455 section 5.5), on a character boundary.
pub fn encode_close_with_reason(out: &mut BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(out, Opcode::Close, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    #[test]
    fn decodes_text_across_reads_and_fragments() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let frame = masked(1, true, b"hello");
        buf.extend_from_slice(&frame[..3]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&frame[3..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Message::Text("hello".into()))
        );
        buf.extend_from_slice(&masked(1, false, b"ab"));
        buf.extend_from_slice(&masked(9, true, b"p"));
        buf.extend_from_slice(&masked(0, true, b"cd"));
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Message::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Message::Text("abcd".into()))
        );
    }

    #[test]
    fn enforces_limits() {
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::from(&masked(1, true, &[b'a'; 200])[..]);
        assert_eq!(d.decode(&mut buf), Err(DecodeError(close::TOO_BIG)));
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::from(&masked(1, true, &[0xff, 0xfe])[..]);
        assert_eq!(d.decode(&mut buf), Err(DecodeError(close::INVALID_DATA)));
    }

    #[test]
    fn a_declared_length_reserves_nothing() {
        let mut d = Decoder::new(1 << 20);
        let frame = masked(1, true, &vec![b'a'; 100_000]);
        let mut buf = BytesMut::from(&frame[..14]);
        let before = buf.capacity();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), before, "no room reserved for the payload");
    }

    #[test]
    fn close_frames_follow_section_7() {
        let close = |payload: &[u8]| {
            let mut buf = BytesMut::from(&masked(8, true, payload)[..]);
            Decoder::new(1024).decode(&mut buf)
        };
        assert_eq!(close(b""), Ok(Some(Message::Close(None))));
        assert_eq!(close(&[0x03, 0xe8]), Ok(Some(Message::Close(Some(1000)))));
        assert_eq!(
            close(&[0x0f, 0xa0, b'o', b'k']),
            Ok(Some(Message::Close(Some(4000))))
        );
        assert_eq!(close(&[0x03]), Err(DecodeError(close::PROTOCOL)));
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Err(DecodeError(close::PROTOCOL)),
                "{code}"
            );
        }
        assert_eq!(
            close(&[0x03, 0xe8, 0xff]),
            Err(DecodeError(close::INVALID_DATA))
        );
    }

    #[test]
    fn fragments_are_bounded_in_number() {
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::from(&masked(1, false, b"a")[..]);
        for _ in 1..MAX_FRAGMENTS {
            buf.extend_from_slice(&masked(0, false, b"a"));
        }
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&masked(0, true, b"a"));
        assert_eq!(d.decode(&mut buf), Err(DecodeError(close::POLICY)));
    }
}
