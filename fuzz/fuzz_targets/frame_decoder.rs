//! `liveroom::protocol::decode` on arbitrary text: it must never panic, never recurse deeper
//! than its nesting limit, and every call it accepts must carry a valid path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveroom::protocol::{decode, valid_path, Frame, MAX_BATCH};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode(text) {
        Ok(Frame::Call(call)) => assert!(valid_path(&call.path), "{:?}", call.path),
        Ok(Frame::Batch { calls, .. }) => {
            assert!(calls.len() <= MAX_BATCH);
            for call in calls.into_iter().flatten() {
                assert!(valid_path(&call.path), "{:?}", call.path);
            }
        }
        Ok(_) => {}
        Err(e) => assert!(!e.message.is_empty()),
    }
});
