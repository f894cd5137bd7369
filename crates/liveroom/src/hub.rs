//! The topic table: who is subscribed to what, each topic's sequence numbers and replay
//! buffer, and publishing.
//!
//! The table is sharded by topic hash, so topics never contend with each other; each topic has
//! its own lock, under which a publish takes the next seq, appends the envelope to the topic's
//! `Log` and pushes it to every subscriber. One lock per topic is what makes every subscriber
//! see a topic's events in seq order, and what lets a subscription and a read of the buffer be
//! exact. An event is serialized once into a `Bytes` envelope that every subscriber's
//! [`Outbox`](crate::outbox::Outbox) and the buffer share.
//!
//! In cluster mode a [`Bus`] that [sequences](Bus::sequences) takes over: it assigns seqs
//! cluster-wide (in Redis) and hands every event back, this replica's own included, through
//! [`Hub::deliver_sequenced`], in seq order.
//!
//! A topic stays in the table while it has subscribers, and for its replay age after the last
//! one left, so a client that reconnects within that time can still resume; idle topics are
//! swept a shard at a time.

use crate::conn::Conn;
use crate::error::LiveError;
use crate::outbox::{Out, Push};
use crate::presence_store::Members;
use crate::replay::{seq_base, Coverage, Log, Replay};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use tokio::time::Instant;

const SHARDS: usize = 64;
/// A shard is swept for idle topics at most this often.
const SWEEP_EVERY_MS: u64 = 1000;

/// Where events also go beyond this process (the Redis bus in cluster mode).
pub trait Bus: Send + Sync + 'static {
    /// Forwards an encoded envelope without a seq (cursor ticks, topics with replay off) for
    /// `topic` to the other replicas.
    fn publish(&self, topic: &str, frame: &Bytes);
    /// Whether this bus assigns seqs cluster-wide: then [`Hub::publish`] hands events to
    /// [`Bus::publish_sequenced`] and the bus delivers them back, in seq order.
    fn sequences(&self) -> bool {
        false
    }
    /// Takes an envelope without its closing brace (`body`), to be given the topic's next
    /// cluster-wide seq, buffered per `policy` and delivered on every replica. Hands `body`
    /// back if it cannot (Redis is down): the hub then delivers it here only, without a seq.
    fn publish_sequenced(&self, _topic: &str, body: Bytes, _policy: Replay) -> Result<(), Bytes> {
        Err(body)
    }
    /// The events after `after`, none older than `age`, in the cluster-wide buffer of
    /// `topic`, and its newest seq (`None`: the buffer cannot be read now).
    fn replay(
        &self,
        _topic: &str,
        _after: u64,
        _age: std::time::Duration,
    ) -> BoxFuture<'static, Option<(Coverage, u64)>> {
        Box::pin(async { None })
    }
    /// The newest cluster-wide seq of `topic`, started now if it has none, to expire after
    /// `age` without events (`None`: unknown now).
    fn head(&self, _topic: &str, _age: std::time::Duration) -> BoxFuture<'static, Option<u64>> {
        Box::pin(async { None })
    }
    /// This replica gained its first (`true`) or lost its last (`false`) local subscriber.
    fn interest(&self, topic: &str, interested: bool);
    /// Resolves once events of `topic` from other replicas are flowing here (or at once if
    /// the bus is down), so a stream's initial load cannot miss them.
    fn ready(&self, topic: &str) -> BoxFuture<'static, ()>;
    /// Records a room's latest cursor changes (`None`: removed) where late joiners on other
    /// replicas can read them.
    fn store_cursors(
        &self,
        _cursor_topic: &str,
        _changes: &[(Arc<str>, Option<serde_json::Value>)],
    ) {
    }
    /// The cursor positions every replica recorded for `cursor_topic` (`None`: unknown).
    fn load_cursors(
        &self,
        _cursor_topic: &str,
    ) -> BoxFuture<'static, Option<Vec<serde_json::Value>>> {
        Box::pin(async { None })
    }
    /// Records, for resuming on another replica, which stream call (`path`, `args`) gave
    /// session `session` the topic `topic`.
    fn save_stream(&self, _session: &str, _topic: &str, _call: &serde_json::Value) {}
    /// The stream calls recorded for `session`, by topic.
    fn load_streams(
        &self,
        _session: &str,
    ) -> BoxFuture<'static, Option<HashMap<String, serde_json::Value>>> {
        Box::pin(async { None })
    }
}

/// One topic: its subscribers, seq and buffer, under one lock (see the module docs).
#[derive(Debug)]
struct Topic {
    subs: Vec<Arc<Conn>>,
    /// The newest seq assigned (one server) or delivered (cluster) here; 0: none yet.
    seq: u64,
    log: Log,
    policy: Replay,
    /// When it was last published to or left by its last subscriber: idle topics are swept
    /// this long after.
    touched: Instant,
}

type Shard = RwLock<HashMap<Arc<str>, Arc<Mutex<Topic>>>>;

/// The sharded topic table. See the module docs.
pub struct Hub {
    shards: Box<[Shard]>,
    swept: Box<[AtomicU64]>,
    started: Instant,
    bus: OnceLock<Arc<dyn Bus>>,
    members: OnceLock<Arc<dyn Members>>,
    replay: Replay,
    /// `true` while the cluster's Redis is unreachable (see [`Hub::health`]).
    health: tokio::sync::watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(Replay::default())
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

fn lock(topic: &Mutex<Topic>) -> MutexGuard<'_, Topic> {
    topic.lock().unwrap_or_else(|p| p.into_inner())
}

/// `{"topic":..,"event":..,"data":..` : an envelope without its closing brace, to which a seq
/// (or just the brace) is added.
fn envelope_body(topic: &str, event: &str, data: &RawValue) -> BytesMut {
    let mut buf = BytesMut::with_capacity(48 + topic.len() + event.len() + data.get().len());
    crate::protocol::encode::envelope_into(&mut buf, topic, event, data);
    buf
}

/// An envelope body (see [`Bus::publish_sequenced`]) closed without a seq.
pub(crate) fn sealed(body: &[u8]) -> Bytes {
    seal(BytesMut::from(body), 0)
}

/// Closes `body` with `,"seq":N}` (or just `}` for 0).
fn seal(mut body: BytesMut, seq: u64) -> Bytes {
    if seq > 0 {
        use std::fmt::Write;
        let _ = write!(body, ",\"seq\":{seq}"); // into the buffer, no string in between
    }
    body.put_u8(b'}');
    body.freeze()
}

impl Hub {
    /// A table whose topics keep `replay` unless a stream says otherwise.
    pub fn new(replay: Replay) -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            swept: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            started: Instant::now(),
            bus: OnceLock::new(),
            members: OnceLock::new(),
            replay,
            health: tokio::sync::watch::Sender::new(false),
        }
    }

    fn shard_of(&self, topic: &str) -> usize {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        h.finish() as usize % SHARDS
    }

    fn get(&self, topic: &str) -> Option<Arc<Mutex<Topic>>> {
        let shard = self.shards[self.shard_of(topic)]
            .read()
            .unwrap_or_else(|p| p.into_inner());
        shard.get(topic).cloned()
    }

    fn get_or_insert(&self, topic: &str) -> Arc<Mutex<Topic>> {
        if let Some(t) = self.get(topic) {
            return t;
        }
        let i = self.shard_of(topic);
        self.sweep(i);
        let mut shard = self.shards[i].write().unwrap_or_else(|p| p.into_inner());
        shard
            .entry(Arc::from(topic))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Topic {
                    subs: Vec::new(),
                    seq: 0,
                    log: Log::default(),
                    policy: self.replay,
                    touched: Instant::now(),
                }))
            })
            .clone()
    }

    /// Drops shard `i`'s topics that nobody subscribed to for their replay age (at most once a
    /// second per shard).
    fn sweep(&self, i: usize) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.swept[i].load(Ordering::Relaxed);
        if now < last + SWEEP_EVERY_MS
            || self.swept[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut shard = self.shards[i].write().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0isize;
        shard.retain(|_, t| {
            let mut t = lock(t);
            if !t.subs.is_empty() || t.touched.elapsed() < t.policy.idle() {
                let policy = t.policy;
                freed -= t.log.trim(&policy);
                return true;
            }
            freed += t.log.bytes() as isize;
            false
        });
        buffered(-freed);
    }

    /// Connects the cluster bus. Only the first call has an effect.
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    /// The cluster bus, if any.
    pub fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.get()
    }

    /// Connects the rooms' presence (at build), for `Ctx::set_presence`.
    pub(crate) fn set_members(&self, members: Arc<dyn Members>) {
        let _ = self.members.set(members);
    }

    /// The rooms' presence, once built.
    pub(crate) fn members(&self) -> Option<&Arc<dyn Members>> {
        self.members.get()
    }

    fn sequencing_bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.get().filter(|b| b.sequences())
    }

    /// Whether events from other replicas may be missing (`true` while the cluster's Redis is
    /// unreachable), as a watch. The server tells its clients about each change, with a
    /// `degraded` or `recovered` event on `__realtime` (docs/protocol.md); a custom server can
    /// do the same with [`protocol::health`](crate::protocol::health).
    ///
    /// ```
    /// let hub = liveroom::hub::Hub::default();
    /// assert!(!*hub.health().borrow()); // one process: never degraded
    /// hub.set_degraded(true);
    /// assert!(*hub.health().borrow());
    /// ```
    pub fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.subscribe()
    }

    /// Sets the health [`Hub::health`] reports (the cluster does, from its circuit breaker).
    pub fn set_degraded(&self, degraded: bool) {
        self.health
            .send_if_modified(|d| std::mem::replace(d, degraded) != degraded);
    }

    /// The server-wide replay policy.
    pub fn default_replay(&self) -> Replay {
        self.replay
    }

    /// Sets the replay policy of `topic` (a stream that subscribes declares its own).
    pub fn set_replay(&self, topic: &str, policy: Replay) {
        let t = self.get_or_insert(topic);
        let mut t = lock(&t);
        t.policy = policy;
        if policy.is_off() {
            buffered(-(t.log.bytes() as isize));
            t.log.clear();
        }
    }

    /// The replay policy `topic` follows.
    pub fn replay_of(&self, topic: &str) -> Replay {
        self.get(topic).map_or(self.replay, |t| lock(&t).policy)
    }

    /// Adds `conn` to `topic`. Returns `false` if it was already there.
    pub fn subscribe(&self, topic: &str, conn: &Arc<Conn>) -> bool {
        let t = self.get_or_insert(topic);
        let mut t = lock(&t);
        if t.subs.iter().any(|c| c.id == conn.id) {
            return false;
        }
        t.subs.push(conn.clone());
        let first = t.subs.len() == 1;
        drop(t);
        if first {
            if let Some(bus) = self.bus.get() {
                bus.interest(topic, true);
            }
        }
        true
    }

    /// Removes connection `id` from `topic`. Returns the topic's newest seq at that moment (the
    /// last event the connection was given) if it was there.
    pub fn unsubscribe(&self, topic: &str, id: u64) -> Option<u64> {
        let t = self.get(topic)?;
        let mut t = lock(&t);
        let i = t.subs.iter().position(|c| c.id == id)?;
        t.subs.swap_remove(i);
        let (last, seq) = (t.subs.is_empty(), t.seq);
        if last {
            t.touched = Instant::now();
            if t.policy.is_off() || self.sequencing_bus().is_some() {
                // Nothing to resume from here (in cluster mode, events stop arriving now, so
                // what is held would no longer join up: replays read Redis).
                t.seq = 0;
                buffered(-(t.log.bytes() as isize));
                t.log.clear();
            }
        }
        drop(t);
        if last {
            if let Some(bus) = self.bus.get() {
                bus.interest(topic, false);
            }
        }
        Some(seq)
    }

    /// Waits (bounded) until remote events of `topic` reach this process.
    pub async fn ready(&self, topic: &str) {
        if let Some(bus) = self.bus.get() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), bus.ready(topic)).await;
        }
    }

    /// Topics with local subscribers whose name ends with `suffix`.
    pub fn topics_ending_with(&self, suffix: &str) -> Vec<Arc<str>> {
        self.shards
            .iter()
            .flat_map(|s| {
                let s = s.read().unwrap_or_else(|p| p.into_inner());
                s.iter()
                    .filter(|(name, t)| name.ends_with(suffix) && !lock(t).subs.is_empty())
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Number of local subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.get(topic).map_or(0, |t| lock(&t).subs.len())
    }

    /// Publishes `event` with `data` on `topic`, here and on the bus, with the topic's next
    /// seq (unless its replay is off).
    pub fn publish(&self, topic: &str, event: &str, data: &RawValue) {
        metrics::counter!("liveroom_events_published_total").increment(1);
        let body = envelope_body(topic, event, data);
        if let Some(bus) = self.sequencing_bus() {
            let policy = self.replay_of(topic);
            if policy.is_off() {
                return self.unsequenced(topic, &seal(body, 0));
            }
            if let Err(body) = bus.publish_sequenced(topic, body.freeze(), policy) {
                // Redis is down: this replica's subscribers still get it, without a seq (the
                // bus has noted the topic and sends a reload marker once Redis is back).
                self.deliver(topic, &sealed(&body));
            }
            return;
        }
        // One server: the seq, the buffer and the fan-out under one lock taken once.
        let t = match self.get(topic) {
            Some(t) => t,
            None if self.replay.is_off() => return self.unsequenced(topic, &seal(body, 0)),
            None => self.get_or_insert(topic),
        };
        let mut t = lock(&t);
        if t.policy.is_off() {
            drop(t);
            return self.unsequenced(topic, &seal(body, 0));
        }
        let seq = if t.seq == 0 { seq_base() } else { t.seq } + 1;
        let frame = seal(body, seq);
        Self::append(&mut t, seq, &frame);
        Self::push_all(topic, &t.subs, |conn| {
            conn.outbox.event(topic, frame.clone(), seq)
        });
    }

    /// Publishes several events on `topic` at once, in order: on one server each subscriber
    /// gets them queued together (one frame for clients that take batches); through the bus
    /// they go one by one, each with its own seq.
    pub fn publish_all(&self, topic: &str, events: &[(&str, Value)]) {
        let raws: Vec<(&str, Box<RawValue>)> = events
            .iter()
            .filter_map(|(e, d)| Some((*e, serde_json::value::to_raw_value(d).ok()?)))
            .collect();
        let t = match self.get(topic) {
            Some(t) if self.sequencing_bus().is_none() && raws.len() > 1 => t,
            _ => {
                for (event, raw) in &raws {
                    self.publish(topic, event, raw);
                }
                return;
            }
        };
        metrics::counter!("liveroom_events_published_total").increment(raws.len() as u64);
        let mut t = lock(&t);
        let sequenced = !t.policy.is_off();
        let mut frames = Vec::with_capacity(raws.len());
        let mut seq = 0;
        for (event, raw) in &raws {
            let body = envelope_body(topic, event, raw);
            if sequenced {
                seq = if t.seq == 0 { seq_base() } else { t.seq } + 1;
                let frame = seal(body, seq);
                Self::append(&mut t, seq, &frame);
                frames.push(frame);
            } else {
                frames.push(seal(body, 0));
            }
        }
        if !sequenced {
            if let Some(bus) = self.bus.get() {
                frames.iter().for_each(|f| bus.publish(topic, f));
            }
        }
        let frames: Arc<[Bytes]> = frames.into();
        Self::push_all(topic, &t.subs, |conn| {
            conn.outbox.event(topic, Out::Many(frames.clone()), seq)
        });
    }

    /// Publishes `event` with `data` on `topic` without a seq, whatever the topic's replay
    /// (state that is not a log: cursor changes).
    pub fn broadcast(&self, topic: &str, event: &str, data: &impl serde::Serialize) {
        let Ok(raw) = serde_json::value::to_raw_value(data) else {
            return;
        };
        metrics::counter!("liveroom_events_published_total").increment(1);
        self.unsequenced(topic, &crate::protocol::envelope(topic, event, &raw));
    }

    fn unsequenced(&self, topic: &str, frame: &Bytes) {
        if let Some(bus) = self.bus.get() {
            bus.publish(topic, frame);
        }
        self.deliver(topic, frame);
    }

    fn append(t: &mut Topic, seq: u64, frame: &Bytes) {
        t.seq = seq;
        t.touched = Instant::now();
        let policy = t.policy;
        buffered(t.log.push(seq, frame.clone(), &policy));
    }

    /// Serializes `data` once and publishes it (see [`Hub::publish`]).
    pub fn publish_value(
        &self,
        topic: &str,
        event: &str,
        data: &impl serde::Serialize,
    ) -> Result<(), LiveError> {
        let raw = serde_json::value::to_raw_value(data)?;
        self.publish(topic, event, &raw);
        Ok(())
    }

    /// Delivers a sequenced envelope that the bus received (cluster mode) to this process's
    /// subscribers, and keeps it for replay. An event at or below the newest seq delivered
    /// here is a duplicate and skipped. Returns whether it was delivered.
    pub fn deliver_sequenced(&self, topic: &str, seq: u64, frame: &Bytes) -> bool {
        let Some(t) = self.get(topic) else {
            return false;
        };
        let mut t = lock(&t);
        if seq <= t.seq {
            return false;
        }
        Self::append(&mut t, seq, frame);
        Self::push_all(topic, &t.subs, |conn| {
            conn.outbox.event(topic, frame.clone(), seq)
        });
        true
    }

    /// The newest seq delivered (cluster) or assigned (one server) here for `topic`; 0: none.
    pub fn head(&self, topic: &str) -> u64 {
        self.get(topic).map_or(0, |t| lock(&t).seq)
    }

    /// Forgets what this process holds of `topic`'s sequence (cluster mode, after the bus lost
    /// events of it): the next event is taken as it comes, and replays read Redis.
    pub fn forget_sequence(&self, topic: &str) {
        if let Some(t) = self.get(topic) {
            let mut t = lock(&t);
            t.seq = 0;
            buffered(-(t.log.bytes() as isize));
            t.log.clear();
        }
    }

    /// What this process's buffer of `topic` holds after `after`, and the topic's newest seq.
    pub fn replay_local(&self, topic: &str, after: u64) -> (Coverage, u64) {
        match self.get(topic) {
            Some(t) => {
                let t = lock(&t);
                (t.log.after(after, t.seq), t.seq)
            }
            None => (Coverage::Truncated, 0),
        }
    }

    /// The events after `after` of `topic`: from this process's buffer, else (cluster mode)
    /// from Redis. Also returns the newest seq known.
    pub async fn replay(&self, topic: &str, after: u64) -> (Coverage, u64) {
        let (local, head) = self.replay_local(topic, after);
        if matches!(local, Coverage::Covered(_)) && head > 0 {
            return (local, head);
        }
        match self.sequencing_bus() {
            Some(bus) => {
                let age = self.replay_of(topic).age;
                bus.replay(topic, after, age).await.unwrap_or((local, head))
            }
            None => (local, head),
        }
    }

    /// The seq a stream reply on `topic` carries: the newest one (this process's, else in
    /// cluster mode the cluster's). A topic without events yet starts its sequence here, so
    /// the first reply already has a seq to replay from. 0 when replay is off.
    pub async fn current_seq(&self, topic: &str) -> u64 {
        let policy = self.replay_of(topic);
        if policy.is_off() {
            return 0;
        }
        if let Some(bus) = self.sequencing_bus() {
            let local = self.head(topic);
            if local > 0 {
                return local;
            }
            return bus.head(topic, policy.age).await.unwrap_or(0);
        }
        let t = self.get_or_insert(topic);
        let mut t = lock(&t);
        if t.seq == 0 {
            t.seq = seq_base();
            t.touched = Instant::now();
        }
        t.seq
    }

    /// Delivers an encoded envelope without a seq to this process's subscribers of `topic`.
    /// Returns how many received it.
    pub fn deliver(&self, topic: &str, frame: &Bytes) -> usize {
        self.each(topic, |conn| conn.outbox.event(topic, frame.clone(), 0))
    }

    /// Calls `push` for every local subscriber of `topic`, accounting drops and cut-offs.
    pub fn each(&self, topic: &str, push: impl FnMut(&Conn) -> Push) -> usize {
        match self.get(topic) {
            Some(t) => Self::push_all(topic, &lock(&t).subs, push),
            None => 0,
        }
    }

    fn push_all(topic: &str, subs: &[Arc<Conn>], mut push: impl FnMut(&Conn) -> Push) -> usize {
        let (mut delivered, mut dropped) = (0u64, 0u64);
        for conn in subs {
            match push(conn) {
                Push::Queued => delivered += 1,
                Push::Dropped => dropped += 1,
                Push::Overflow => {
                    dropped += 1;
                    metrics::counter!("liveroom_slow_consumer_disconnects_total").increment(1);
                    tracing::warn!(conn = conn.id, topic, "slow consumer cut off (1013)");
                }
            }
        }
        metrics::counter!("liveroom_events_delivered_total").increment(delivered);
        if dropped > 0 {
            metrics::counter!("liveroom_frames_dropped_total").increment(dropped);
        }
        delivered as usize
    }
}

/// Tracks the bytes held by replay buffers in `liveroom_replay_buffer_bytes`.
fn buffered(delta: isize) {
    if delta != 0 {
        metrics::gauge!("liveroom_replay_buffer_bytes").increment(delta as f64);
    }
}
