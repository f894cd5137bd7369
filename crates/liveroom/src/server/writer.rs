//! The connection's single writer: it waits for queued frames, frames everything queued as
//! WebSocket frames into one buffer, and writes it with one call.

use crate::close;
use crate::conn::Conn;
use crate::outbox::Drain;
use crate::protocol::NOOP;
use crate::ws::{encode, encode_close, encode_header, Opcode};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// After this long without a frame, the writer sends a `noop`: browsers do not show pings to the
/// page, and the svelte-realtime client reconnects after 150 s without a message.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// When to ping a silent peer and when to give up on it (see [`Limits`](crate::Limits)), in
/// milliseconds: kept small, since every connection's writer holds it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Liveness {
    /// Ping after this much silence; zero: never ping, never time out.
    ping_after: u32,
    /// Close after this much more silence.
    close_after: u32,
}

impl Liveness {
    pub fn of(limits: &crate::Limits) -> Self {
        let ms = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Liveness {
            ping_after: ms(limits.ping_interval_ms),
            close_after: ms(limits.ping_timeout_ms),
        }
    }

    fn check(self, silent: Duration) -> Idle {
        let silent = silent.as_millis();
        let ping_after = u128::from(self.ping_after);
        if ping_after == 0 || silent < ping_after {
            Idle::Fine
        } else if silent < ping_after + u128::from(self.close_after) {
            Idle::Ping
        } else {
            Idle::GiveUp
        }
    }

    /// How often the writer wakes up to check when nothing is queued.
    fn tick(self) -> Duration {
        let keepalive = KEEPALIVE.as_millis() as u32;
        let ms = match self.ping_after {
            0 => keepalive,
            p => p.min(self.close_after.max(1)).min(keepalive),
        };
        Duration::from_millis(ms.into())
    }
}

/// How long a write may stay blocked while the connection is closing (a slow consumer cut off
/// with 1013, shutdown) before the peer is given up on.
const STALLED_WRITE: Duration = Duration::from_secs(2);

/// The write buffer is dropped after a burst larger than this, so a quiet connection does not
/// keep it.
const KEEP_BUFFER: usize = 64 * 1024;

/// Runs until the peer is gone or a close was written. Every connection keeps this future for
/// its whole life, so its state is kept to a minimum: the liveness clocks live in [`Conn`]
/// (measured: two more words here cost 0.17 KiB of RSS per idle connection).
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    conn: std::sync::Arc<Conn>,
    mut writer: W,
    liveness: Liveness,
) {
    let mut drain = Drain::default();
    let mut buf = BytesMut::new();
    loop {
        let woke = tokio::time::timeout(liveness.tick(), conn.outbox.next(&mut drain)).await;
        let idle = woke.is_err();
        if idle {
            if conn.quiet_for() >= KEEPALIVE {
                conn.wrote(); // the noop is on its way
                conn.outbox.reply(Bytes::from_static(NOOP));
            }
            match liveness.check(conn.silent_for()) {
                Idle::Fine => continue,
                Idle::Ping => encode(&mut buf, Opcode::Ping, b""),
                Idle::GiveUp => {
                    // A half-open connection, or a peer that stopped answering.
                    metrics::counter!("liveroom_silent_disconnects_total").increment(1);
                    conn.outbox.close(close::GOING_AWAY);
                    continue;
                }
            }
        } else {
            conn.wrote();
            encode_drain(&drain, &mut buf, conn.outbox.batch());
        }
        if !write_unless_stalled(&conn, &mut writer, &buf).await {
            return;
        }
        if !idle && drain.close.is_some() {
            let _ = writer.shutdown().await;
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::new();
        }
    }
}

/// What a writer with nothing to write does about the peer's silence.
enum Idle {
    Fine,
    Ping,
    GiveUp,
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
        o.event("t", Bytes::from_static(b"{}"), 0);
        o.event("t", Bytes::from_static(b"[1]"), 0);
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
