//! Events across replicas over Redis pub/sub.
//!
//! One channel per topic, `__live-bus:{<room>}<suffix>` (see [`super::keys`]), and each replica
//! subscribes only to the topics it has local subscribers for: traffic scales with interest,
//! not with the number of replicas (a pattern subscription would send every event to every
//! replica). On a Redis Cluster the channels are sharded (`SSUBSCRIBE`/`SPUBLISH`): a message
//! goes only to the shard that owns the room, and from there to the replicas subscribed to it.
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

use super::breaker::{Mode, Redis, RedisDown};
use super::config::ClusterConfig;
use super::{keys, sequence};
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

/// The control channel every replica subscribes to: a replica that may have lost presence
/// events publishes its id here once Redis is back, and every other replica then corrects its
/// local rosters from Redis (docs/clustering.md, "Convergence").
pub const RESYNC_CHANNEL: &str = keys::RESYNC_CHANNEL;
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

    /// The publish command of this Redis (`SPUBLISH` on a Redis Cluster), once it answered.
    async fn publish_command(&self) -> Result<&'static str, RedisDown> {
        if !self.redis.available() {
            return Err(RedisDown::Open);
        }
        Ok(match self.redis.detect().await? {
            Mode::Cluster => "SPUBLISH",
            Mode::Standalone => "PUBLISH",
        })
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<(String, Bytes)>) {
        let mut batch = Vec::with_capacity(PIPELINE);
        while rx.recv_many(&mut batch, PIPELINE).await > 0 {
            let n = batch.len() as u64;
            let sent = match self.publish_command().await {
                Ok(publish) => {
                    let cmds = batch
                        .drain(..)
                        .map(|(channel, payload)| {
                            let mut cmd = redis::cmd(publish);
                            cmd.arg(&channel).arg(payload.as_ref());
                            (channel, cmd)
                        })
                        .collect();
                    self.redis
                        .pipelines(cmds)
                        .await
                        .map(|replies| replies.iter().filter(|r| r.is_err()).count() as u64)
                }
                Err(e) => Err(e),
            };
            batch.clear();
            let dropped = sent.unwrap_or(n);
            metrics::counter!("liveroom_redis_published_total").increment(n - dropped);
            if dropped > 0 {
                self.lost.store(true, Ordering::Relaxed);
                metrics::counter!("liveroom_redis_publish_dropped_total").increment(dropped);
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
            let mut failed = self.send_sequenced(&live, &topics).await;
            if failed
                .iter()
                .any(|(_, e)| matches!(e, RedisDown::Failed(e) if sequence::is_noscript(e)))
            {
                // A Redis (or, on a cluster, a shard) that restarted or failed over: load the
                // script everywhere and send again what it refused, and only that.
                let _ = self
                    .redis
                    .run(|mut c| async move {
                        sequence::publish_script()
                            .prepare_invoke()
                            .load_async(&mut c)
                            .await
                    })
                    .await;
                let retry: Vec<Group> = failed.iter().map(|(i, _)| topics[*i].clone()).collect();
                failed = self
                    .send_sequenced(&live, &retry)
                    .await
                    .into_iter()
                    .map(|(i, e)| (failed[i].0, e))
                    .collect();
            }
            let dropped: u64 = failed.iter().map(|(i, _)| topics[*i].2.len() as u64).sum();
            metrics::counter!("liveroom_redis_published_total").increment(n - dropped);
            if failed.is_empty() {
                self.send_markers();
            } else {
                // Whether Redis ran them is unknown: this replica's subscribers get them now,
                // without a seq, and every replica's a reload marker later.
                metrics::counter!("liveroom_redis_publish_dropped_total").increment(dropped);
                for (i, _) in &failed {
                    let (topic, _, _, local) = &topics[*i];
                    for body in local {
                        live.hub().deliver(topic, &crate::hub::sealed(body));
                    }
                    self.note_unsequenced(topic);
                }
            }
            if rx.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }

    /// Sends one script call per topic (one pipeline per slot); returns the topics (by index)
    /// whose call failed, with the error.
    async fn send_sequenced(&self, live: &Live, topics: &[Group]) -> Vec<(usize, RedisDown)> {
        let publish = match self.publish_command().await {
            Ok(p) => p,
            Err(e) => return (0..topics.len()).map(|i| (i, e.clone())).collect(),
        };
        let cmds = topics
            .iter()
            .map(|(topic, policy, bodies, _)| {
                let floor = live.hub().head(topic);
                let cmd = sequence::publish(publish, topic, bodies, policy, floor);
                (keys::seq(topic), cmd)
            })
            .collect();
        match self.redis.pipelines(cmds).await {
            Ok(replies) => replies
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| r.err().map(|e| (i, e)))
                .collect(),
            Err(e) => (0..topics.len()).map(|i| (i, e.clone())).collect(),
        }
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

    /// Waits `self.reconnect` while keeping track of interest (nothing is subscribed meanwhile).
    /// `false`: the bus is gone.
    async fn wait_disconnected(
        &self,
        cmds: &mut mpsc::UnboundedReceiver<Cmd>,
        interests: &mut HashSet<String>,
    ) -> bool {
        self.connected.store(false, Ordering::Relaxed);
        self.release_waiters(None); // never hold a subscription up on a dead Redis
        let sleep = tokio::time::sleep(self.reconnect);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Subscribe(t)) => { interests.insert(t.clone()); self.release_waiters(Some(&t)); }
                    Some(Cmd::Unsubscribe(t)) => { interests.remove(&t); }
                    None => return false,
                },
            }
        }
    }

    /// The subscriber connection is gone: nothing is subscribed until the next one.
    async fn lost_subscriber(&self, why: &str) {
        tracing::warn!("{why}");
        self.connected.store(false, Ordering::Relaxed);
        self.subscribed.lock().unwrap().clear();
        tokio::time::sleep(self.reconnect).await;
    }

    /// Marks the subscriber up on `interests`; after the first time, events may have been
    /// missed meanwhile: local rosters need a correction and the topics a repair.
    async fn connected_again(&self, live: &Live, interests: &HashSet<String>) {
        *self.subscribed.lock().unwrap() = interests.clone();
        self.connected.store(true, Ordering::Relaxed);
        self.release_waiters(None);
        if self.connections.fetch_add(1, Ordering::Relaxed) > 0 {
            self.reconnected.notify_one(); // kept as a permit if nobody waits yet
            for topic in interests {
                self.repair(live, topic).await;
            }
        }
    }

    async fn subscriber(self: Arc<Self>, mut cmds: mpsc::UnboundedReceiver<Cmd>, live: Live) {
        let mut interests: HashSet<String> = HashSet::new();
        let mode = loop {
            if self.redis.available() {
                if let Ok(mode) = self.redis.detect().await {
                    break mode;
                }
            }
            if !self.wait_disconnected(&mut cmds, &mut interests).await {
                return;
            }
        };
        match mode {
            Mode::Standalone => self.subscribe_standalone(cmds, interests, live).await,
            Mode::Cluster => self.subscribe_sharded(cmds, interests, live).await,
        }
    }

    async fn subscribe_standalone(
        self: Arc<Self>,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut interests: HashSet<String>,
        live: Live,
    ) {
        loop {
            let pubsub = match self.redis.client() {
                Ok(client) if self.redis.available() => {
                    tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                _ => None,
            };
            let Some(pubsub) = pubsub else {
                if !self.wait_disconnected(&mut cmds, &mut interests).await {
                    return;
                }
                continue;
            };
            let (mut sink, mut stream) = pubsub.split();
            let channels: Vec<String> = interests
                .iter()
                .map(|t| keys::channel(t))
                .chain([RESYNC_CHANNEL.to_owned()])
                .collect();
            if sink.subscribe(&channels).await.is_err() {
                continue;
            }
            self.connected_again(&live, &interests).await;
            loop {
                tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Subscribe(t)) => {
                            interests.insert(t.clone());
                            if sink.subscribe(keys::channel(&t)).await.is_err() {
                                break;
                            }
                            self.subscribed.lock().unwrap().insert(t.clone());
                            self.release_waiters(Some(&t));
                        }
                        Some(Cmd::Unsubscribe(t)) => {
                            interests.remove(&t);
                            self.subscribed.lock().unwrap().remove(&t);
                            if sink.unsubscribe(keys::channel(&t)).await.is_err() {
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
            self.lost_subscriber("redis pub/sub connection lost; reconnecting")
                .await;
        }
    }

    /// The subscriber on a Redis Cluster: sharded subscriptions on one RESP3 cluster
    /// connection, which sends each `SSUBSCRIBE` to the shard owning the channel's slot and
    /// moves the subscriptions after a failover or a slot migration.
    ///
    /// A node's connection dropping shows up as a `Disconnection` push. Until every subscribed
    /// slot answers again (a failover takes about two node timeouts), a keyed probe per slot
    /// runs every other `reconnect`; a probe that hits a moved slot makes the connection
    /// refresh its slot map. Then every channel is subscribed again, on its slot's current
    /// primary, the topics are repaired from their buffers, and local rosters corrected; all of
    /// it twice, the second pass a little later for a slot that moved late.
    async fn subscribe_sharded(
        self: Arc<Self>,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut interests: HashSet<String>,
        live: Live,
    ) {
        loop {
            let (tx, mut pushes) = mpsc::unbounded_channel();
            let conn = match self.redis.cluster_client(Some(tx)) {
                Ok(client) if self.redis.available() => {
                    tokio::time::timeout(Duration::from_secs(2), client.get_async_connection())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                _ => None,
            };
            let Some(mut conn) = conn else {
                if !self.wait_disconnected(&mut cmds, &mut interests).await {
                    return;
                }
                continue;
            };
            if !Self::ssubscribe_all(&conn, &interests).await {
                if !self.wait_disconnected(&mut cmds, &mut interests).await {
                    return;
                }
                continue;
            }
            self.connected_again(&live, &interests).await;
            // Repairs still due after a node dropped (0: none), and when the next is.
            let mut repairs = 0u8;
            let probe = tokio::time::sleep(Duration::from_secs(3600));
            tokio::pin!(probe);
            loop {
                tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Subscribe(t)) => {
                            interests.insert(t.clone());
                            // A failure here is a node away: the connection re-subscribes
                            // the tracked channel once it is back.
                            let _ = conn.ssubscribe(keys::channel(&t)).await;
                            self.subscribed.lock().unwrap().insert(t.clone());
                            self.release_waiters(Some(&t));
                        }
                        Some(Cmd::Unsubscribe(t)) => {
                            interests.remove(&t);
                            self.subscribed.lock().unwrap().remove(&t);
                            let _ = conn.sunsubscribe(keys::channel(&t)).await;
                        }
                        None => return,
                    },
                    push = pushes.recv() => match push {
                        Some(push) if push.kind == redis::PushKind::Disconnection => {
                            tracing::warn!("a redis cluster node's connection dropped; re-routing subscriptions");
                            repairs = 2;
                            probe.as_mut().reset(tokio::time::Instant::now() + self.reconnect);
                        }
                        // A slot moved to another shard (a migration): that shard's node
                        // drops its subscribers of the slot's channels.
                        Some(push) if push.kind == redis::PushKind::SUnsubscribe
                            && push.data.first().and_then(bytes_of).and_then(|c| std::str::from_utf8(c).ok()).and_then(keys::channel_topic).is_some_and(|t| interests.contains(&t)) =>
                        {
                            tracing::info!("a redis cluster slot moved; subscribing again where it went");
                            repairs = 2;
                            probe.as_mut().reset(tokio::time::Instant::now());
                        }
                        Some(push) if push.kind == redis::PushKind::SMessage => {
                            if let [channel, payload, ..] = push.data.as_slice() {
                                if let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) {
                                    if let Ok(channel) = std::str::from_utf8(channel) {
                                        self.receive(&live, channel, payload).await;
                                    }
                                }
                            }
                        }
                        Some(_) => {}
                        None => break, // the connection is gone
                    },
                    _ = &mut probe, if repairs > 0 => {
                        if self.probe_slots(&conn, &interests).await
                            && Self::ssubscribe_all(&conn, &interests).await
                        {
                            repairs -= 1;
                            self.reconnected.notify_one();
                            for topic in &interests {
                                self.repair(&live, topic).await;
                            }
                        }
                        let next = if repairs > 0 { self.reconnect * 2 } else { Duration::from_secs(3600) };
                        probe.as_mut().reset(tokio::time::Instant::now() + next);
                    }
                }
            }
            self.lost_subscriber("redis cluster subscriber connection lost; reconnecting")
                .await;
        }
    }

    /// Subscribes `conn` to the channels of `interests` and the control channel, each on the
    /// shard that owns it now. Subscribing again to a channel is harmless, and it is what moves
    /// a subscription after a failover: the connection's own re-subscription does not always
    /// follow a slot to its new primary.
    async fn ssubscribe_all(
        conn: &redis::cluster_async::ClusterConnection,
        interests: &HashSet<String>,
    ) -> bool {
        let channels: Vec<String> = interests
            .iter()
            .map(|t| keys::channel(t))
            .chain([RESYNC_CHANNEL.to_owned()])
            .collect();
        let subscribed = futures_util::future::join_all(channels.iter().map(|ch| {
            let mut c = conn.clone();
            async move { c.ssubscribe(ch).await }
        }))
        .await;
        subscribed.iter().all(Result::is_ok)
    }

    /// Whether every slot of `interests` answers on `conn` (one keyed `EXISTS` per slot).
    async fn probe_slots(
        &self,
        conn: &redis::cluster_async::ClusterConnection,
        interests: &HashSet<String>,
    ) -> bool {
        use redis::cluster_routing::Slot;
        let mut slots = HashSet::new();
        let probes: Vec<String> = interests
            .iter()
            .map(|t| keys::seq(t))
            .filter(|k| slots.insert(Slot::for_key(k)))
            .collect();
        let answered = futures_util::future::join_all(probes.iter().map(|k| {
            let mut c = conn.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    redis::cmd("EXISTS").arg(k).query_async::<i64>(&mut c),
                )
                .await
            }
        }))
        .await;
        answered.iter().all(|r| matches!(r, Ok(Ok(_))))
    }

    async fn receive(&self, live: &Live, channel: &str, payload: &[u8]) {
        if channel == RESYNC_CHANNEL {
            if payload != self.replica.as_bytes() {
                self.resync.notify_one();
            }
            return;
        }
        let Some(topic) = keys::channel_topic(channel) else {
            return;
        };
        let topic = topic.as_str();
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
        let (redis, key) = (self.redis.clone(), keys::session(session));
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
        let (redis, key) = (self.redis.clone(), keys::session(session));
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
            .try_send((keys::channel(topic), payload.into()))
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
        let hash = keys::cursors(cursor_topic);
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
        let hash = keys::cursors(cursor_topic);
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

/// The bytes of a push's bulk string.
fn bytes_of(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        _ => None,
    }
}
