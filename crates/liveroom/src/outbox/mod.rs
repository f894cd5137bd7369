//! The per-connection outbound queue: bounded in bytes, replies before broadcasts, held events
//! for streams still loading, and conflated slots for state where only the newest value matters.
//!
//! Publishers only take a short mutex and push a shared `Bytes`; they never wait on a socket.
//! The connection's single writer task takes everything queued at once ([`Outbox::drain`]) and
//! turns it into one write, which is where the throughput comes from. The outbox knows nothing
//! of the transport: the writer frames what it drains (the server's writer as WebSocket frames,
//! a custom server through [`Drain::messages`]).

mod drain;

pub use drain::{Drain, Out};

use crate::close;
use bytes::Bytes;
use indexmap::IndexMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Events held for one topic, with their seqs (0: none).
type Held = VecDeque<(u64, Out)>;

#[derive(Debug, Default)]
struct State {
    /// The pong for the latest ping not answered yet: at most one (RFC 6455 section 5.5.3 lets
    /// a pong answer only the most recent ping), so a peer that pings and never reads holds one
    /// pong here, not one per ping.
    pongs: Vec<Bytes>,
    replies: Vec<Bytes>,
    events: Vec<Out>,
    /// Topics whose stream reply is not queued yet, with the events that arrived meanwhile
    /// and their seqs (0: none), so a replay can skip the ones it already contains.
    held: Vec<(Arc<str>, Held)>,
    /// Newest value per key, replacing older unsent ones.
    latest: IndexMap<Arc<str>, Bytes>,
    bytes: usize,
    close: Option<u16>,
}

/// Outcome of pushing an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The connection is closing; the frame was dropped.
    Dropped,
    /// This push overflowed the byte limit: the connection is now being cut off (1013).
    Overflow,
}

/// What [`Outbox::release`] lets through for one held topic.
#[derive(Debug, Clone, Default)]
pub struct Release {
    /// The held topic.
    pub topic: Arc<str>,
    /// Envelopes to send before the held events (a catch-up from the replay buffer).
    pub replay: Vec<Bytes>,
    /// Held events with a seq at or below this were replayed already: they are dropped.
    pub through: u64,
}

impl Release {
    /// Releases `topic`'s held events as they are.
    pub fn all(topic: Arc<str>) -> Self {
        Release {
            topic,
            ..Release::default()
        }
    }
}

/// A connection's outbound queue. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// The byte limit, as a `u32` (4 GiB is far past any sane limit): every connection holds
    /// one, and the smaller field leaves room in `Conn` for the liveness clock.
    limit: u32,
    batch: AtomicBool,
}

impl Outbox {
    /// An outbox holding at most `limit` bytes of unsent frames.
    pub fn new(limit: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            batch: AtomicBool::new(false),
        }
    }

    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queues inconsistent in a way that
        // matters more than losing the connection, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client sent `caps:["batch"]`.
    pub fn set_batch(&self, on: bool) {
        self.batch.store(on, Ordering::Relaxed);
    }

    /// Whether events may be sent as `{"type":"batch"}` frames.
    pub fn batch(&self) -> bool {
        self.batch.load(Ordering::Relaxed)
    }

    /// Queues a reply or ack. Replies answer the client's own requests, so they are not dropped
    /// at the limit like events; but a client that lets twice the limit pile up unread (calls
    /// without reading) is cut off (1013) rather than allowed to grow the server's memory.
    pub fn reply(&self, frame: Bytes) {
        let mut s = self.lock();
        if s.close.is_some() {
            return;
        }
        if s.bytes + frame.len() > self.limit() * 2 {
            Self::cut(&mut s);
            drop(s);
            metrics::counter!("liveroom_slow_consumer_disconnects_total").increment(1);
            self.notify.notify_one();
            return;
        }
        s.bytes += frame.len();
        s.replies.push(frame);
        drop(s);
        self.notify.notify_one();
    }

    /// Queues a pong with the ping's payload, replacing an unsent one. Its bytes count against
    /// the limit like everything else queued.
    pub fn pong(&self, payload: Bytes) {
        let mut s = self.lock();
        if s.close.is_some() {
            return;
        }
        s.bytes += payload.len();
        if let Some(old) = s.pongs.pop() {
            s.bytes -= old.len();
        }
        s.pongs.push(payload);
        drop(s);
        self.notify.notify_one();
    }

    /// Queues an event published on `topic` with `seq` (0: none).
    pub fn event(&self, topic: &str, frame: impl Into<Out>, seq: u64) -> Push {
        let frame = frame.into();
        let mut s = self.lock();
        if s.close.is_some() {
            return Push::Dropped;
        }
        if s.bytes + frame.len() > self.limit() {
            Self::cut(&mut s);
            drop(s);
            self.notify.notify_one();
            return Push::Overflow;
        }
        s.bytes += frame.len();
        if let Some((_, held)) = s.held.iter_mut().find(|(t, _)| &**t == topic) {
            held.push_back((seq, frame));
            return Push::Queued;
        }
        let was_empty = s.events.is_empty() && s.replies.is_empty();
        s.events.push(frame);
        drop(s);
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Queues `frame` under `key`, replacing an unsent frame with the same key: for state where
    /// only the newest value matters (cursor snapshots), so a congested client never queues more
    /// than one per key.
    pub fn latest(&self, key: Arc<str>, frame: Bytes) -> Push {
        let mut s = self.lock();
        if s.close.is_some() {
            return Push::Dropped;
        }
        let held = s.held.iter().any(|(t, _)| *t == key);
        let replaced = if held {
            0
        } else {
            s.latest.get(&key).map_or(0, Bytes::len)
        };
        if s.bytes - replaced + frame.len() > self.limit() {
            Self::cut(&mut s);
            drop(s);
            self.notify.notify_one();
            return Push::Overflow;
        }
        s.bytes += frame.len();
        if let Some((_, held)) = s.held.iter_mut().find(|(t, _)| *t == key) {
            // The topic's stream reply is not out yet: keep the ordering rule.
            held.push_back((0, Out::One(frame)));
            return Push::Queued;
        }
        if let Some(old) = s.latest.insert(key, frame) {
            s.bytes -= old.len();
        }
        drop(s);
        self.notify.notify_one();
        Push::Queued
    }

    /// Whether an unsent frame is queued under `key`.
    pub fn has_latest(&self, key: &str) -> bool {
        self.lock().latest.contains_key(key)
    }

    /// More than a quarter of the limit is waiting: time to conflate rather than queue.
    pub fn congested(&self) -> bool {
        self.lock().bytes > self.limit() / 4
    }

    /// Holds events of `topic` until [`release`](Self::release): a stream's reply must reach the
    /// client before the events published on its topic while its initial data loads.
    pub fn hold(&self, topic: Arc<str>) {
        let mut s = self.lock();
        if !s.held.iter().any(|(t, _)| *t == topic) {
            s.held.push((topic, VecDeque::new()));
        }
    }

    /// Queues `reply` (if any), then for each of `topics` its replayed envelopes and the
    /// events held for it (those not replayed already).
    pub fn release(&self, topics: &[Release], reply: Option<Bytes>) {
        let mut s = self.lock();
        let mut held = Vec::with_capacity(topics.len());
        for r in topics {
            let i = s.held.iter().position(|(t, _)| *t == r.topic);
            held.push((r, i.map(|i| s.held.swap_remove(i).1).unwrap_or_default()));
        }
        if s.close.is_some() {
            return;
        }
        if let Some(reply) = reply {
            s.bytes += reply.len();
            s.replies.push(reply);
        }
        // Held events are already counted in `bytes`. The writer sends replies before events,
        // so these reach the client after the reply, as the ordering rule wants.
        for (r, h) in held {
            for frame in &r.replay {
                s.bytes += frame.len();
                s.events.push(Out::One(frame.clone()));
            }
            for (seq, frame) in h {
                if seq > 0 && seq <= r.through {
                    s.bytes -= frame.len();
                } else {
                    s.events.push(frame);
                }
            }
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Starts closing with `code` after what is queued is written (1001 shutdown, 4401, ...).
    pub fn close(&self, code: u16) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(code);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// The slow-consumer cut-off: drop what is queued, close with 1013.
    fn cut(s: &mut State) {
        s.pongs.clear();
        s.replies.clear();
        s.events.clear();
        s.held.clear();
        s.latest.clear();
        s.bytes = 0;
        s.close = Some(close::TRY_AGAIN);
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Takes everything queued into `into` (cleared first). Returns `false` if there was nothing.
    pub fn drain(&self, into: &mut Drain) -> bool {
        into.clear();
        let mut s = self.lock();
        std::mem::swap(&mut s.pongs, &mut into.pongs);
        std::mem::swap(&mut s.replies, &mut into.replies);
        std::mem::swap(&mut s.events, &mut into.events);
        if !s.latest.is_empty() {
            into.events
                .extend(s.latest.drain(..).map(|(_, v)| Out::One(v)));
        }
        s.bytes = s
            .held
            .iter()
            .flat_map(|(_, h)| h.iter())
            .map(|(_, out)| out.len())
            .sum();
        into.close = s.close;
        !into.is_empty()
    }

    /// Waits until something is queued or a close is requested, then drains it.
    pub async fn next(&self, into: &mut Drain) {
        loop {
            if self.drain(into) {
                return;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_first_and_holds_keep_order() {
        let o = Outbox::new(1 << 20);
        o.hold("t".into());
        assert_eq!(o.event("t", Bytes::from_static(b"e1"), 0), Push::Queued);
        o.event("u", Bytes::from_static(b"u1"), 0);
        o.release(&[Release::all("t".into())], Some(Bytes::from_static(b"r")));
        let mut d = Drain::default();
        assert!(o.drain(&mut d));
        assert_eq!(d.replies, vec![Bytes::from_static(b"r")]);
        assert_eq!(
            d.messages(false),
            vec![
                Bytes::from_static(b"r"),
                Bytes::from_static(b"u1"),
                Bytes::from_static(b"e1")
            ]
        );
        o.event("u", Bytes::from_static(b"{}"), 0);
        o.event("u", Bytes::from_static(b"[]"), 0);
        o.drain(&mut d);
        assert_eq!(
            d.messages(true),
            vec![Bytes::from_static(br#"{"type":"batch","events":[{},[]]}"#)]
        );
    }

    #[test]
    fn overflow_cuts_the_connection() {
        let o = Outbox::new(10);
        assert_eq!(o.event("t", Bytes::from_static(b"123456"), 0), Push::Queued);
        assert_eq!(
            o.event("t", Bytes::from_static(b"123456"), 0),
            Push::Overflow
        );
        assert_eq!(o.event("t", Bytes::from_static(b"1"), 0), Push::Dropped);
        let mut d = Drain::default();
        o.drain(&mut d);
        assert!(d.events.is_empty());
        assert_eq!(d.close, Some(1013));
    }

    #[test]
    fn unread_replies_are_bounded_too() {
        let o = Outbox::new(10);
        o.reply(Bytes::from_static(b"0123456789"));
        o.reply(Bytes::from_static(b"0123456789"));
        assert!(!o.is_closing());
        o.reply(Bytes::from_static(b"x"));
        let mut d = Drain::default();
        o.drain(&mut d);
        assert!(d.replies.is_empty());
        assert_eq!(d.close, Some(1013));
    }

    #[test]
    fn latest_waits_behind_a_held_reply() {
        let o = Outbox::new(1000);
        o.hold("c".into());
        o.latest("c".into(), Bytes::from_static(b"set"));
        let mut d = Drain::default();
        assert!(!o.drain(&mut d), "nothing before the reply");
        o.release(
            &[Release::all("c".into())],
            Some(Bytes::from_static(b"reply")),
        );
        o.drain(&mut d);
        assert_eq!(
            d.messages(false),
            vec![Bytes::from_static(b"reply"), Bytes::from_static(b"set")]
        );
    }

    #[test]
    fn a_release_skips_held_events_the_replay_contains() {
        let o = Outbox::new(1000);
        o.hold("t".into());
        o.event("t", Bytes::from_static(b"e5"), 5);
        o.event("t", Bytes::from_static(b"e6"), 6);
        o.event("t", Bytes::from_static(b"x"), 0);
        let release = Release {
            topic: "t".into(),
            replay: vec![Bytes::from_static(b"e4"), Bytes::from_static(b"e5")],
            through: 5,
        };
        o.release(&[release], None);
        let mut d = Drain::default();
        o.drain(&mut d);
        assert_eq!(
            d.messages(false),
            ["e4", "e5", "e6", "x"].map(|s| Bytes::from(s.as_bytes().to_vec()))
        );
        assert!(!o.drain(&mut d));
        assert_eq!(o.lock().bytes, 0, "what was dropped is no longer counted");
    }

    #[test]
    fn a_ping_flood_without_reading_holds_one_pong() {
        let o = Outbox::new(1000);
        for i in 0..10_000u32 {
            o.pong(Bytes::from(i.to_string()));
        }
        let mut d = Drain::default();
        o.drain(&mut d);
        assert_eq!(d.pongs, vec![Bytes::from_static(b"9999")]);
        assert!(!o.drain(&mut d), "nothing left");
    }

    #[test]
    fn latest_replaces_unsent() {
        let o = Outbox::new(1000);
        o.latest("k".into(), Bytes::from_static(b"old"));
        o.latest("k".into(), Bytes::from_static(b"new"));
        let mut d = Drain::default();
        o.drain(&mut d);
        assert_eq!(d.messages(false), vec![Bytes::from_static(b"new")]);
    }
}
