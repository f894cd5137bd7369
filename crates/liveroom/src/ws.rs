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
    /// The client closes, with its code if it sent one.
    Close(Option<u16>),
}

/// A decoding failure and the close code that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("websocket protocol error, closing with {0}")]
pub struct DecodeError(pub u16);

/// Incremental decoder for client (masked) frames, reassembling fragments.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    partial: Option<(Opcode, BytesMut)>,
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
                Opcode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return Err(DecodeError(close::PROTOCOL));
                    }
                    if fin {
                        return finish(opcode, payload).map(Some);
                    }
                    self.partial = Some((opcode, payload));
                }
                Opcode::Continuation => {
                    let Some((first, mut acc)) = self.partial.take() else {
                        return Err(DecodeError(close::PROTOCOL));
                    };
                    if acc.len() + payload.len() > self.max_message {
                        return Err(DecodeError(close::TOO_BIG));
                    }
                    acc.extend_from_slice(&payload);
                    if fin {
                        return finish(first, acc).map(Some);
                    }
                    self.partial = Some((first, acc));
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
            buf.reserve(header + 4 + len - buf.len());
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
}
