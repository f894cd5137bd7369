//! Sequence numbers and replay buffers (docs/protocol.md, "Delivery").
//!
//! Every event published on a topic gets the topic's next `seq`, and the topic keeps its recent
//! envelopes, bounded by count, age and bytes ([`Replay`]), so a client that lost its
//! connection gets exactly the events it missed instead of a full reload.
//!
//! A topic's first seq is derived from the clock (`seq_base`): a topic that was dropped (idle,
//! or a restarted server) starts again far above any seq it handed out before, so a client's old
//! seq is never mistaken for a recent one; it is simply older than the buffer, and the client
//! reloads.

use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How much of a topic's recent history is kept for replay: at most `events` envelopes, none
/// older than `age`, at most `bytes` in all. The defaults ([`Replay::default`]) are
/// 512 events, 5 minutes and 1 MiB; set them server-wide with the `--replay-*` flags
/// ([`Limits`](crate::Limits)) or per stream and room (`Stream::replay`, `Room::replay`).
///
/// ```
/// use liveroom::Replay;
/// use std::time::Duration;
/// let chat = Replay::events(2_000).age(Duration::from_secs(900));
/// let ticker = Replay::off(); // no seq, no buffer: every reconnect reloads
/// # let _ = (chat, ticker);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub(crate) events: u32,
    pub(crate) age: Duration,
    pub(crate) bytes: u32,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            events: Self::EVENTS,
            age: Duration::from_millis(Self::AGE_MS),
            bytes: Self::BYTES,
        }
    }
}

impl Replay {
    /// Default number of events kept per topic: 512.
    pub const EVENTS: u32 = 512;
    /// Default age of the oldest event kept: 5 minutes.
    pub const AGE_MS: u64 = 300_000;
    /// Default bytes kept per topic: 1 MiB.
    pub const BYTES: u32 = 1 << 20;

    /// Keeps the last `n` events (and the default age and bytes).
    pub fn events(n: u32) -> Self {
        Replay {
            events: n,
            ..Replay::default()
        }
    }

    /// Keeps no event older than `age`.
    pub fn age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Keeps at most `bytes` of envelopes.
    pub fn bytes(mut self, bytes: u32) -> Self {
        self.bytes = bytes;
        self
    }

    /// No sequence numbers and no buffer: a reconnecting client always reloads.
    pub fn off() -> Self {
        Replay {
            events: 0,
            age: Duration::ZERO,
            bytes: 0,
        }
    }

    /// Whether replay is off.
    pub fn is_off(&self) -> bool {
        self.events == 0 || self.age.is_zero() || self.bytes == 0
    }

    /// How long a topic nobody is subscribed to keeps its state.
    pub(crate) fn idle(&self) -> Duration {
        self.age
    }
}

/// The first seq of a topic created now: the Unix time in milliseconds times 1000, below 2^53
/// (exact in JavaScript) until the year 2255. A later incarnation of the topic starts above an
/// earlier one as long as that one averaged under 1000 events per millisecond.
pub(crate) fn seq_base() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    ms.saturating_mul(1000)
}

/// What a buffer holds after a seq.
#[derive(Debug, PartialEq)]
pub enum Coverage {
    /// Every event after the seq, in order (empty: the client is up to date).
    Covered(Vec<(u64, Bytes)>),
    /// The buffer starts after the seq (or the seq is unknown here): events were lost for
    /// that client, which must reload.
    Truncated,
}

/// One topic's recent envelopes, oldest first, with contiguous seqs.
#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: VecDeque<(u64, Instant, Bytes)>,
    bytes: usize,
}

impl Log {
    /// Appends the envelope of `seq` and trims to `policy`. Returns the change in bytes held.
    pub fn push(&mut self, seq: u64, frame: Bytes, policy: &Replay) -> isize {
        let before = self.bytes as isize;
        if policy.is_off() {
            self.clear();
            return -before;
        }
        if self
            .entries
            .back()
            .is_some_and(|(last, ..)| seq != last + 1)
        {
            self.clear(); // a gap: what is held no longer joins up with what follows
        }
        self.bytes += frame.len();
        self.entries.push_back((seq, Instant::now(), frame));
        self.trim(policy);
        self.bytes as isize - before
    }

    /// Drops what is over `policy`'s count, bytes and age. Returns the change in bytes held.
    pub fn trim(&mut self, policy: &Replay) -> isize {
        let before = self.bytes as isize;
        let oldest = Instant::now().checked_sub(policy.age);
        while let Some((_, at, frame)) = self.entries.front() {
            let over = self.entries.len() > policy.events as usize
                || self.bytes > policy.bytes as usize
                || oldest.is_some_and(|o| *at < o);
            if !over {
                break;
            }
            self.bytes -= frame.len();
            self.entries.pop_front();
        }
        self.bytes as isize - before
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The events after `after`, given that the topic's newest seq is `head`.
    pub fn after(&self, after: u64, head: u64) -> Coverage {
        if after == head {
            return Coverage::Covered(Vec::new());
        }
        match self.entries.front() {
            Some((first, ..)) if after < head && after + 1 >= *first => Coverage::Covered(
                self.entries
                    .iter()
                    .filter(|(seq, ..)| *seq > after)
                    .map(|(seq, _, frame)| (*seq, frame.clone()))
                    .collect(),
            ),
            _ => Coverage::Truncated,
        }
    }
}

/// The `welcome` session id of connection `conn`: 128 bits keyed by a per-process secret, so it
/// cannot be guessed from the connection id, and nothing per connection stores it.
pub(crate) fn session_id(conn: u64) -> String {
    static KEYS: OnceLock<[std::collections::hash_map::RandomState; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let half = |k: &std::collections::hash_map::RandomState| {
        let mut h = k.build_hasher();
        h.write_u64(conn);
        h.finish()
    };
    format!("{:016x}{:016x}", half(&keys[0]), half(&keys[1]))
}

/// Most stream calls remembered per session.
const CALLS_PER_SESSION: usize = 1024;

#[derive(Debug, Default)]
struct Calls {
    /// Topic -> `{"path":..,"args":[..]}` of the stream call that gave it.
    topics: HashMap<String, Value>,
    /// When the connection closed: the record is kept for the replay age after that.
    closed: Option<Instant>,
}

/// Which stream call gave each session each topic, so `resume` can run that stream's guard
/// again before replaying the topic to a new connection. One server keeps it here; in cluster
/// mode the bus also keeps it in Redis, for a resume on another replica.
#[derive(Debug, Default)]
pub(crate) struct StreamCalls {
    sessions: Mutex<HashMap<String, Calls>>,
    swept: Mutex<Option<Instant>>,
}

impl StreamCalls {
    /// Records that `call` gave `session` the topic `topic`.
    pub fn record(&self, session: &str, topic: &str, call: &Value) {
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let calls = all.entry(session.to_owned()).or_default();
        if calls.topics.len() < CALLS_PER_SESSION || calls.topics.contains_key(topic) {
            calls.topics.insert(topic.to_owned(), call.clone());
        }
    }

    /// The connection of `session` closed: its record lives `keep` more, then goes.
    pub fn closed(&self, session: &str, keep: Duration) {
        let now = Instant::now();
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(calls) = all.get_mut(session) {
            calls.closed = Some(now);
        }
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        if swept.is_none_or(|at| now.duration_since(at) > Duration::from_secs(1)) {
            *swept = Some(now);
            all.retain(|_, c| c.closed.is_none_or(|at| now.duration_since(at) < keep));
        }
    }

    /// The calls recorded for `session`, by topic.
    pub fn get(&self, session: &str) -> Option<HashMap<String, Value>> {
        let all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        all.get(session).map(|c| c.topics.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Bytes {
        Bytes::from(n.to_string())
    }

    #[test]
    fn covers_exactly_what_it_holds() {
        let mut log = Log::default();
        let policy = Replay::events(3);
        for seq in 10..=14 {
            log.push(seq, frame(seq), &policy);
        }
        assert_eq!(log.after(14, 14), Coverage::Covered(vec![]));
        assert_eq!(
            log.after(11, 14),
            Coverage::Covered(vec![(12, frame(12)), (13, frame(13)), (14, frame(14))])
        );
        assert_eq!(log.after(10, 14), Coverage::Truncated, "13 is gone");
        assert_eq!(
            log.after(20, 14),
            Coverage::Truncated,
            "a seq from the future"
        );
        assert_eq!(log.bytes(), 6);
    }

    #[test]
    fn a_gap_restarts_the_log_and_bytes_bound_it() {
        let mut log = Log::default();
        let policy = Replay::events(100).bytes(4);
        log.push(1, frame(1), &policy);
        log.push(3, frame(3), &policy);
        assert_eq!(log.after(2, 3), Coverage::Covered(vec![(3, frame(3))]));
        assert_eq!(
            log.after(1, 3),
            Coverage::Truncated,
            "2 never reached this log"
        );
        for seq in 4..=9 {
            log.push(seq, frame(seq), &policy);
        }
        assert_eq!(log.bytes(), 4, "the byte bound keeps four one-byte frames");
    }

    #[tokio::test(start_paused = true)]
    async fn old_events_age_out() {
        let mut log = Log::default();
        let policy = Replay::events(100).age(Duration::from_secs(60));
        log.push(1, frame(1), &policy);
        tokio::time::advance(Duration::from_secs(61)).await;
        log.push(2, frame(2), &policy);
        assert_eq!(log.after(0, 2), Coverage::Truncated);
        assert_eq!(log.after(1, 2), Coverage::Covered(vec![(2, frame(2))]));
    }

    #[test]
    fn session_ids_are_distinct_and_stable() {
        assert_eq!(session_id(7), session_id(7));
        assert_ne!(session_id(7), session_id(8));
        assert_eq!(session_id(7).len(), 32);
    }

    #[test]
    fn seq_base_is_exact_in_javascript() {
        assert!(seq_base() < (1 << 53));
        assert!(seq_base() > 1_700_000_000_000_000);
    }
}
