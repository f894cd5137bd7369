//! `liveroom::ws::Decoder` on arbitrary bytes fed in arbitrary chunks: it must never panic,
//! never return a message larger than its limit or a close code RFC 6455 forbids, and consume
//! what it reports.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liveroom::ws::{valid_close_code, Decoder, Message};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(MAX);
    let mut buf = BytesMut::new();
    // Feed the input in chunks of `split + 1` bytes, decoding after each.
    for chunk in rest.chunks(split as usize + 1) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Text(t))) => assert!(t.len() <= MAX),
                Ok(Some(Message::Binary(b))) => assert!(b.len() <= MAX),
                Ok(Some(Message::Ping(p))) => assert!(p.len() <= 125),
                Ok(Some(Message::Close(Some(code)))) => assert!(valid_close_code(code)),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return, // the connection would be closed
            }
        }
    }
});
