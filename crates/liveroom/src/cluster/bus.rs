//! Events across replicas over Redis pub/sub.
//!
//! One channel per topic, `__live-bus:<topic>`, and each replica subscribes only to the topics
//! it has local subscribers for: traffic scales with interest, not with the number of
//! replicas (a pattern subscription would send every event to every replica).
//!
//! Events with a seq (the default) go through the script of [`super::sequence`], which
//! numbers, buffers and publishes them; every replica, this one included, delivers them from
//! the channel, in seq order, and fills a gap (after a reconnect, say) from the buffer before
//! going on. Events without a seq (cursor ticks, topics with replay off) are published as
//! `<replica id>|<envelope>`, and a replica skips its own echo. Both are queued (bounded) and
//! sent as pipelines, each kind by one task.
//!
//! When Redis is down, this replica's events still reach its own subscribers, without a seq;
//! once Redis is back, each topic that had such events gets a reload marker (a sequenced event
//! every replica delivers), so no client anywhere silently misses them.

use super::breaker::Redis;
use super::config::ClusterConfig;
use super::sequence;
use crate::hub::Bus;
use crate::registry::Live;
use crate::replay::{Coverage, Replay};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Channel prefix.
pub const CHANNEL_PREFIX: &str = "__live-bus:";
/// The control channel every replica subscribes to: a replica that may have lost presence
/// events publishes its id here once Redis is back, and every other replica then corrects its
/// local rosters from Redis (docs/clustering.md, "Convergence").
pub const RESYNC_CHANNEL: &str = "__live-ctl:resync";
/// Prefix of the per-room cursor position hashes (`<identity>` -> position JSON).
pub const CURSORS_PREFIX: &str = "__live-cursors:";
/// Cursor hashes expire after a minute without moves.
const CURSORS_TTL_MS: i64 = 60_000;
const QUEUE: usize = 65_536;
const PIPELINE: usize = 256;
/// Most topics remembered as having had events without a seq during an outage; beyond it,
/// the rest get no reload marker (counted in `liveroom_redis_publish_dropped_total`).
const UNSEQUENCED: usize = 10_000;

/// A topic, an envelope body, its replay policy, and whether this replica delivers it without
/// a seq if Redis fails (not for a reload marker: that one is due again once Redis is back).
type Sequenced = (String, Bytes, Replay, bool);

/// One topic's share of a pipeline: its policy, its bodies, and those to deliver here if the
/// pipeline fails.
type Group = (String, Replay, Vec<Bytes>, Vec<Bytes>);

enum Cmd {
    Subscribe(String),
    Unsubscribe(String),
}

type Rx<T> = Mutex<Option<mpsc::Receiver<T>>>;
type URx<T> = Mutex<Option<mpsc::UnboundedReceiver<T>>>;

/// The Redis event bus (see the module docs).
pub struct RedisBus {
    redis: Redis,
    replica: Arc<str>,
    publish_tx: mpsc::Sender<(String, Bytes)>,
    publish_rx: Rx<(String, Bytes)>,
    seq_tx: mpsc::Sender<Sequenced>,
    seq_rx: Rx<Sequenced>,
    /// Topics that had events without a seq while Redis was down: each gets a reload marker.
    unsequenced: Mutex<HashSet<String>>,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    cmd_rx: URx<Cmd>,
    connected: AtomicBool,
    /// Successful (re)connections of the subscriber.
    connections: AtomicU64,
    /// Signalled when the subscriber is back after a gap (events may have been missed).
    reconnected: Notify,
    /// Signalled when another replica asked for a roster correction.
    resync: Notify,
    /// A publish of this replica failed or was dropped since the last [`RedisBus::take_lost`].
    lost: AtomicBool,
    subscribed: Mutex<HashSet<String>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    idle: Notify,
    reconnect: Duration,
}

impl RedisBus {
    pub(crate) fn new(redis: Redis, replica: Arc<str>, config: &ClusterConfig) -> Arc<Self> {
        let (publish_tx, publish_rx) = mpsc::channel(QUEUE);
        let (seq_tx, seq_rx) = mpsc::channel(QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        Arc::new(RedisBus {
            redis,
            replica,
            publish_tx,
            publish_rx: Mutex::new(Some(publish_rx)),
            seq_tx,
            seq_rx: Mutex::new(Some(seq_rx)),
            unsequenced: Mutex::new(HashSet::new()),
            cmd_tx,
            cmd_rx: Mutex::new(Some(cmd_rx)),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            reconnected: Notify::new(),
            resync: Notify::new(),
            lost: AtomicBool::new(false),
            subscribed: Mutex::new(HashSet::new()),
            waiters: Mutex::new(HashMap::new()),
            idle: Notify::new(),
            reconnect: config.heartbeat.min(Duration::from_millis(500)),
        })
    }

    /// Starts the publisher and subscriber tasks.
    pub(crate) fn start(self: &Arc<Self>, live: Live) {
        let rx = self.publish_rx.lock().unwrap().take();
        let seq_rx = self.seq_rx.lock().unwrap().take();
        let cmds = self.cmd_rx.lock().unwrap().take();
        if let (Some(rx), Some(seq_rx), Some(cmds)) = (rx, seq_rx, cmds) {
            tokio::spawn(self.clone().publisher(rx));
            tokio::spawn(self.clone().sequencer(seq_rx, live.clone()));
            tokio::spawn(self.clone().subscriber(cmds, live));
        }
    }

    /// Whether the subscriber connection is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Resolves when the subscriber connection came back after a gap: events published in
    /// the meantime were missed, so local rosters need a correction.
    pub(crate) async fn reconnected(&self) {
        self.reconnected.notified().await;
    }

    /// Resolves when another replica published on [`RESYNC_CHANNEL`]: events it published may
    /// have been lost, so local rosters need a correction.
    pub(crate) async fn resync_requested(&self) {
        self.resync.notified().await;
    }

    /// Whether a publish failed or was dropped since the last call (and clears that).
    pub(crate) fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::Relaxed)
    }

    /// Asks every other replica to correct its rosters from Redis (see [`RESYNC_CHANNEL`]).
    pub(crate) fn request_resync(&self) {
        let payload = Bytes::copy_from_slice(self.replica.as_bytes());
        if self
            .publish_tx
            .try_send((RESYNC_CHANNEL.to_owned(), payload))
            .is_err()
        {
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    /// Waits (bounded) until every queued publish was sent.
    pub async fn flush(&self, within: Duration) {
        let wait = async {
            while self.publish_tx.capacity() < self.publish_tx.max_capacity()
                || self.seq_tx.capacity() < self.seq_tx.max_capacity()
            {
                tokio::select! {
                    _ = self.idle.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<(String, Bytes)>) {
        let mut batch = Vec::with_capacity(PIPELINE);
        while rx.recv_many(&mut batch, PIPELINE).await > 0 {
            let n = batch.len() as u64;
            let items = std::mem::take(&mut batch);
            let sent = self
                .redis
                .run(|mut c| async move {
                    let mut p = redis::pipe();
                    for (channel, payload) in &items {
                        p.publish(channel, payload.as_ref()).ignore();
                    }
                    p.query_async::<()>(&mut c).await
                })
                .await;
            match sent {
                Ok(()) => metrics::counter!("liveroom_redis_published_total").increment(n),
                Err(_) => {
                    self.lost.store(true, Ordering::Relaxed);
                    metrics::counter!("liveroom_redis_publish_dropped_total").increment(n)
                }
            }
            if rx.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }

    /// Sends sequenced events: one script call per topic per pipeline.
    async fn sequencer(self: Arc<Self>, mut rx: mpsc::Receiver<Sequenced>, live: Live) {
        let mut batch = Vec::with_capacity(PIPELINE);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, PIPELINE) => n,
                // Nothing to send: Redis may be back, and reload markers due.
                _ = tokio::time::sleep(self.reconnect) => {
                    if self.redis.available() {
                        self.send_markers();
                    }
                    continue;
                }
            };
            if received == 0 {
                return;
            }
            let n = batch.len() as u64;
            let mut topics: Vec<Group> = Vec::new();
            for (topic, body, policy, fallback) in batch.drain(..) {
                let i = match topics.iter().position(|(t, ..)| *t == topic) {
                    Some(i) => i,
                    None => {
                        topics.push((topic, policy, Vec::new(), Vec::new()));
                        topics.len() - 1
                    }
                };
                let (.., bodies, local) = &mut topics[i];
                if fallback {
                    local.push(body.clone());
                }
                bodies.push(body);
            }
            let mut sent = self.send_sequenced(&topics).await;
            if matches!(&sent, Err(super::RedisDown::Failed(e)) if sequence::is_noscript(e)) {
                let _ = self
                    .redis
                    .run(|mut c| async move {
                        sequence::publish_script()
                            .prepare_invoke()
                            .load_async(&mut c)
                            .await
                    })
                    .await;
                sent = self.send_sequenced(&topics).await;
            }
            match sent {
                Ok(()) => {
                    metrics::counter!("liveroom_redis_published_total").increment(n);
                    self.send_markers();
                }
                Err(_) => {
                    // Whether Redis ran them is unknown: this replica's subscribers get them
                    // now, without a seq, and every replica's a reload marker later.
                    metrics::counter!("liveroom_redis_publish_dropped_total").increment(n);
                    for (topic, _, _, local) in &topics {
                        for body in local {
                            live.hub().deliver(topic, &crate::hub::sealed(body));
                        }
                        self.note_unsequenced(topic);
                    }
                }
            }
            if rx.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }

    async fn send_sequenced(&self, topics: &[Group]) -> Result<(), super::RedisDown> {
        self.redis
            .run(|mut c| async move {
                let mut p = redis::pipe();
                for (topic, policy, bodies, _) in topics {
                    let channel = format!("{CHANNEL_PREFIX}{topic}");
                    sequence::publish(&mut p, &channel, topic, bodies, policy);
                    p.ignore();
                }
                p.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Queues `body` for the sequencer; hands it back (and notes the topic) if Redis is down or
    /// the queue is full. `fallback`: deliver it here without a seq if the pipeline fails.
    fn enqueue(
        &self,
        topic: &str,
        body: Bytes,
        policy: Replay,
        fallback: bool,
    ) -> Result<(), Bytes> {
        let refused = if self.redis.available() {
            match self
                .seq_tx
                .try_send((topic.to_owned(), body, policy, fallback))
            {
                Ok(()) => return Ok(()),
                Err(e) => e.into_inner().1,
            }
        } else {
            body
        };
        metrics::counter!("liveroom_redis_publish_dropped_total").increment(1);
        self.note_unsequenced(topic);
        Err(refused)
    }

    fn note_unsequenced(&self, topic: &str) {
        self.lost.store(true, Ordering::Relaxed);
        let mut set = self.unsequenced.lock().unwrap();
        if set.len() < UNSEQUENCED {
            set.insert(topic.to_owned());
        }
    }

    /// Redis answers again: every topic that had events without a seq gets the reload marker.
    fn send_markers(&self) {
        let topics: Vec<String> = {
            let mut set = self.unsequenced.lock().unwrap();
            if set.is_empty() {
                return;
            }
            set.drain().collect()
        };
        for topic in topics {
            let mut body = bytes::BytesMut::new();
            crate::protocol::truncated_into(&mut body, &topic);
            tracing::info!(
                topic,
                "events were delivered without a seq: reload marker sent"
            );
            let _ = self.enqueue(&topic, body.freeze(), Replay::default(), false);
        }
    }

    /// Events of `topic` may have been missed here (a gap in its seqs): delivers them from the
    /// Redis buffer, or the reload marker if it no longer has them.
    async fn repair(&self, live: &Live, topic: &str) {
        let hub = live.hub();
        let head = hub.head(topic);
        if head == 0 {
            return;
        }
        let age = hub.replay_of(topic).age;
        metrics::counter!("liveroom_cluster_gaps_total").increment(1);
        match sequence::read(&self.redis, topic, head, age).await {
            Some((Coverage::Covered(events), _)) => {
                for (seq, frame) in events {
                    hub.deliver_sequenced(topic, seq, &frame);
                }
            }
            _ => {
                tracing::warn!(topic, "events missed and no longer buffered: reload marker");
                hub.forget_sequence(topic);
                hub.deliver(topic, &crate::protocol::truncated(topic));
            }
        }
    }

    fn release_waiters(&self, topic: Option<&str>) {
        let mut w = self.waiters.lock().unwrap();
        let list: Vec<oneshot::Sender<()>> = match topic {
            Some(t) => w.remove(t).unwrap_or_default(),
            None => w.drain().flat_map(|(_, v)| v).collect(),
        };
        for tx in list {
            let _ = tx.send(());
        }
    }

    async fn subscriber(self: Arc<Self>, mut cmds: mpsc::UnboundedReceiver<Cmd>, live: Live) {
        let mut interests: HashSet<String> = HashSet::new();
        loop {
            let pubsub = if self.redis.available() {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    self.redis.client().get_async_pubsub(),
                )
                .await
            } else {
                Ok(Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "circuit open",
                ))))
            };
            let Ok(Ok(pubsub)) = pubsub else {
                self.connected.store(false, Ordering::Relaxed);
                self.release_waiters(None); // never hold a subscription up on a dead Redis
                let sleep = tokio::time::sleep(self.reconnect);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = cmds.recv() => match cmd {
                            Some(Cmd::Subscribe(t)) => { interests.insert(t.clone()); self.release_waiters(Some(&t)); }
                            Some(Cmd::Unsubscribe(t)) => { interests.remove(&t); }
                            None => return,
                        },
                    }
                }
                continue;
            };
            let (mut sink, mut stream) = pubsub.split();
            let channels: Vec<String> = interests
                .iter()
                .map(|t| format!("{CHANNEL_PREFIX}{t}"))
                .chain([RESYNC_CHANNEL.to_owned()])
                .collect();
            if sink.subscribe(&channels).await.is_err() {
                continue;
            }
            *self.subscribed.lock().unwrap() = interests.clone();
            self.connected.store(true, Ordering::Relaxed);
            self.release_waiters(None);
            if self.connections.fetch_add(1, Ordering::Relaxed) > 0 {
                self.reconnected.notify_one(); // kept as a permit if nobody waits yet
                                               // Events published while the subscriber was away: from the buffers.
                for topic in &interests {
                    self.repair(&live, topic).await;
                }
            }
            loop {
                tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Subscribe(t)) => {
                            interests.insert(t.clone());
                            if sink.subscribe(format!("{CHANNEL_PREFIX}{t}")).await.is_err() {
                                break;
                            }
                            self.subscribed.lock().unwrap().insert(t.clone());
                            self.release_waiters(Some(&t));
                        }
                        Some(Cmd::Unsubscribe(t)) => {
                            interests.remove(&t);
                            self.subscribed.lock().unwrap().remove(&t);
                            if sink.unsubscribe(format!("{CHANNEL_PREFIX}{t}")).await.is_err() {
                                break;
                            }
                        }
                        None => return,
                    },
                    msg = stream.next() => match msg {
                        Some(msg) => self.receive(&live, msg.get_channel_name(), msg.get_payload_bytes()).await,
                        None => break,
                    },
                }
            }
            tracing::warn!("redis pub/sub connection lost; reconnecting");
            self.connected.store(false, Ordering::Relaxed);
            self.subscribed.lock().unwrap().clear();
            tokio::time::sleep(self.reconnect).await;
        }
    }

    async fn receive(&self, live: &Live, channel: &str, payload: &[u8]) {
        if channel == RESYNC_CHANNEL {
            if payload != self.replica.as_bytes() {
                self.resync.notify_one();
            }
            return;
        }
        let Some(topic) = channel.strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        if let Some(events) = sequence::parse(payload) {
            metrics::counter!("liveroom_redis_received_total").increment(events.len() as u64);
            let hub = live.hub();
            for (seq, frame) in events {
                let head = hub.head(topic);
                if head > 0 && seq > head + 1 {
                    self.repair(live, topic).await;
                }
                hub.deliver_sequenced(topic, seq, &frame);
            }
            return;
        }
        let id = self.replica.as_bytes();
        if payload.len() <= id.len() || payload[id.len()] != b'|' {
            return;
        }
        if &payload[..id.len()] == id {
            return; // our own echo
        }
        metrics::counter!("liveroom_redis_received_total").increment(1);
        let frame = Bytes::copy_from_slice(&payload[id.len() + 1..]);
        if topic.ends_with(":cursors") {
            // Cursor changes go through the room's tick here, within each observer's budget.
            if let Ok(env) = serde_json::from_slice::<serde_json::Value>(&frame) {
                if let (Some(event), Some(data)) = (env["event"].as_str(), env.get("data")) {
                    live.mirror_cursor(topic, event, data);
                }
            }
            return;
        }
        live.hub().deliver(topic, &frame);
    }
}

impl Bus for RedisBus {
    fn sequences(&self) -> bool {
        true
    }

    fn publish_sequenced(&self, topic: &str, body: Bytes, policy: Replay) -> Result<(), Bytes> {
        self.enqueue(topic, body, policy, true)
    }

    fn replay(
        &self,
        topic: &str,
        after: u64,
        age: Duration,
    ) -> BoxFuture<'static, Option<(Coverage, u64)>> {
        let (redis, topic) = (self.redis.clone(), topic.to_owned());
        Box::pin(async move { sequence::read(&redis, &topic, after, age).await })
    }

    fn head(&self, topic: &str, age: Duration) -> BoxFuture<'static, Option<u64>> {
        let (redis, topic) = (self.redis.clone(), topic.to_owned());
        Box::pin(async move { sequence::head(&redis, &topic, age).await })
    }

    fn save_stream(&self, session: &str, topic: &str, call: &serde_json::Value) {
        if !self.redis.available() {
            return;
        }
        let (redis, key) = (self.redis.clone(), sequence::session_key(session));
        let (topic, call) = (topic.to_owned(), call.to_string());
        tokio::spawn(async move {
            let _ = redis
                .run(|mut c| async move {
                    redis::pipe()
                        .hset(&key, topic, call)
                        .ignore()
                        .pexpire(&key, sequence::SESSION_TTL_MS)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
        });
    }

    fn load_streams(
        &self,
        session: &str,
    ) -> BoxFuture<'static, Option<HashMap<String, serde_json::Value>>> {
        let (redis, key) = (self.redis.clone(), sequence::session_key(session));
        Box::pin(async move {
            let all: HashMap<String, String> = redis
                .run(|mut c| async move { redis::AsyncCommands::hgetall(&mut c, key).await })
                .await
                .ok()?;
            Some(
                all.into_iter()
                    .filter_map(|(t, v)| Some((t, serde_json::from_str(&v).ok()?)))
                    .collect(),
            )
        })
    }

    fn publish(&self, topic: &str, frame: &Bytes) {
        let mut payload = Vec::with_capacity(self.replica.len() + 1 + frame.len());
        payload.extend_from_slice(self.replica.as_bytes());
        payload.push(b'|');
        payload.extend_from_slice(frame);
        if self
            .publish_tx
            .try_send((format!("{CHANNEL_PREFIX}{topic}"), payload.into()))
            .is_err()
        {
            self.lost.store(true, Ordering::Relaxed);
            metrics::counter!("liveroom_redis_publish_dropped_total").increment(1);
        }
    }

    fn interest(&self, topic: &str, interested: bool) {
        let cmd = if interested {
            Cmd::Subscribe(topic.to_owned())
        } else {
            Cmd::Unsubscribe(topic.to_owned())
        };
        let _ = self.cmd_tx.send(cmd);
    }

    fn store_cursors(&self, cursor_topic: &str, changes: &[(Arc<str>, Option<serde_json::Value>)]) {
        if changes.is_empty() || !self.redis.available() {
            return;
        }
        let hash = format!("{CURSORS_PREFIX}{cursor_topic}");
        let changes: Vec<(String, Option<String>)> = changes
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_string())))
            .collect();
        let redis = self.redis.clone();
        tokio::spawn(async move {
            let _ = redis
                .run(|mut c| async move {
                    let mut p = redis::pipe();
                    for (key, value) in &changes {
                        match value {
                            Some(v) => p.hset(&hash, key, v).ignore(),
                            None => p.hdel(&hash, key).ignore(),
                        };
                    }
                    p.pexpire(&hash, CURSORS_TTL_MS).ignore();
                    p.query_async::<()>(&mut c).await
                })
                .await;
        });
    }

    fn load_cursors(
        &self,
        cursor_topic: &str,
    ) -> BoxFuture<'static, Option<Vec<serde_json::Value>>> {
        let hash = format!("{CURSORS_PREFIX}{cursor_topic}");
        let redis = self.redis.clone();
        Box::pin(async move {
            let all: HashMap<String, String> = redis
                .run(|mut c| async move { redis::AsyncCommands::hgetall(&mut c, hash).await })
                .await
                .ok()?;
            Some(
                all.values()
                    .filter_map(|v| serde_json::from_str(v).ok())
                    .collect(),
            )
        })
    }

    fn ready(&self, topic: &str) -> BoxFuture<'static, ()> {
        // Checked and registered under the waiters' lock: the subscriber changes `connected`
        // and `subscribed` before it takes that lock to release waiters, so either this sees
        // the change or the subscriber sees this waiter. (Checking first and registering after
        // could miss the wake-up and stall the socket for the whole 2 s bound.)
        let mut waiters = self.waiters.lock().unwrap();
        if !self.connected() || self.subscribed.lock().unwrap().contains(topic) {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        waiters.entry(topic.to_owned()).or_default().push(tx);
        drop(waiters);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
