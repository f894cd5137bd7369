//! The connection's single writer: it waits for queued frames, frames everything queued as
//! WebSocket frames into one buffer, and writes it with one call.

use crate::conn::Conn;
use crate::outbox::Drain;
use crate::protocol::NOOP;
use crate::ws::{encode, encode_close, encode_header, Opcode};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// After this long without a frame, the writer sends a `noop` so idle connections stay open
/// through proxies.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a write may stay blocked while the connection is closing (a slow consumer cut off
/// with 1013, shutdown) before the peer is given up on.
const STALLED_WRITE: Duration = Duration::from_secs(2);

/// The write buffer is dropped after a burst larger than this, so a quiet connection does not
/// keep it.
const KEEP_BUFFER: usize = 64 * 1024;

/// Runs until the peer is gone or a close was written.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(conn: std::sync::Arc<Conn>, mut writer: W) {
    let mut drain = Drain::default();
    let mut buf = BytesMut::new();
    loop {
        if tokio::time::timeout(KEEPALIVE, conn.outbox.next(&mut drain))
            .await
            .is_err()
        {
            conn.outbox.reply(Bytes::from_static(NOOP));
            continue;
        }
        encode_drain(&drain, &mut buf, conn.outbox.batch());
        if !write_unless_stalled(&conn, &mut writer, &buf).await {
            return;
        }
        if drain.close.is_some() {
            let _ = writer.shutdown().await;
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::new();
        }
    }
}

/// Appends everything drained as WebSocket frames to `buf`: pongs, replies, events (one
/// `{"type":"batch"}` frame when `batch` allows), then the close frame if one was requested.
pub(super) fn encode_drain(drain: &Drain, buf: &mut BytesMut, batch: bool) {
    for p in &drain.pongs {
        encode(buf, Opcode::Pong, p);
    }
    for r in &drain.replies {
        encode(buf, Opcode::Text, r);
    }
    if drain.batches(batch) {
        // One frame: its header, then the envelopes straight into `buf` (no second copy).
        encode_header(buf, Opcode::Text, drain.batch_len());
        drain.write_batch(buf);
    } else {
        drain.each_event(|e| encode(buf, Opcode::Text, e));
    }
    if let Some(code) = drain.close {
        encode_close(buf, code);
    }
}

/// Writes `buf`, unless the peer stopped reading and the connection is closing: a peer that
/// never reads again must not hold its session (subscriptions, room memberships) forever.
/// `false` if the write failed or was abandoned.
async fn write_unless_stalled<W: AsyncWrite + Unpin>(
    conn: &Conn,
    writer: &mut W,
    buf: &[u8],
) -> bool {
    let mut write = std::pin::pin!(writer.write_all(buf));
    // Most writes complete at once: no timer for them.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
    })
    .await;
    if let std::task::Poll::Ready(r) = first {
        return r.is_ok();
    }
    let mut closing_seen = false;
    loop {
        tokio::select! {
            r = write.as_mut() => return r.is_ok(),
            () = tokio::time::sleep(STALLED_WRITE) => {
                // Closing at two checks in a row: blocked for STALLED_WRITE since the close.
                if conn.outbox.is_closing() && std::mem::replace(&mut closing_seen, true) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    #[test]
    fn batch_frames_carry_their_exact_length() {
        let o = Outbox::new(1 << 20);
        o.set_batch(true);
        o.reply(Bytes::from_static(b"r"));
        o.event("t", Bytes::from_static(b"{}"));
        o.event("t", Bytes::from_static(b"[1]"));
        let mut d = Drain::default();
        o.drain(&mut d);
        let mut buf = BytesMut::new();
        encode_drain(&d, &mut buf, true);
        let batch = br#"{"type":"batch","events":[{},[1]]}"#;
        let mut want = BytesMut::new();
        encode(&mut want, Opcode::Text, b"r");
        encode(&mut want, Opcode::Text, batch);
        assert_eq!(buf, want);
    }
}
