//! The replica's lease, the reaper of dead replicas, and re-assertion after an outage.
//!
//! - `__live-replica:{<id>}`: the lease, a key with a TTL of `lease`, refreshed every
//!   `heartbeat` with `SET .. XX` (so a lost lease is noticed).
//! - `__live-replica-epochs`: HASH of replica id -> epoch of its registration, so survivors
//!   know whom to check.
//!
//! Every heartbeat a replica refreshes its lease and checks the others' leases. A missing lease
//! means a dead (or cut-off) replica: survivors remove its contributions room by room (one
//! script per room, on the room's shard; running it twice is harmless) and publish `leave`
//! (and cursor `remove`) for the identities that left the cluster. A replica that finds its own
//! lease lost, or comes back from a Redis outage, registers again under a new epoch, re-asserts
//! its in-memory truth room by room and corrects its clients' rosters; a reaper still working
//! with the old epoch skips the rooms it re-asserted.

use super::breaker::Redis;
use super::bus::RedisBus;
use super::config::ClusterConfig;
use super::keys::{self, REPLICAS};
use super::presence::{RedisPresence, Transition};
use crate::registry::Live;
use serde_json::json;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How many times a roster correction is sent (see the heartbeat).
const CORRECTIONS: u8 = 2;

/// A fresh random replica id (16 hex digits).
pub fn replica_id() -> Arc<str> {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish()).into()
}

/// One replica's membership in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    redis: Redis,
    replica: Arc<str>,
    store: Arc<RedisPresence>,
    bus: Arc<RedisBus>,
    live: Mutex<Option<Live>>,
    stop: Notify,
    stopped: AtomicBool,
}

impl Cluster {
    pub(crate) fn new(
        config: ClusterConfig,
        redis: Redis,
        replica: Arc<str>,
        store: Arc<RedisPresence>,
        bus: Arc<RedisBus>,
    ) -> Self {
        Cluster {
            config,
            redis,
            replica,
            store,
            bus,
            live: Mutex::new(None),
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
        }
    }

    pub(crate) fn start(self: &Arc<Self>, live: Live) {
        *self.live.lock().unwrap() = Some(live.clone());
        tokio::spawn(self.clone().heartbeat(live));
    }

    async fn heartbeat(self: Arc<Self>, live: Live) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        let mut ever_registered = false;
        let mut beats: u64 = 0;
        // Rounds of roster correction still to do. Local rosters may be wrong after this
        // replica's bus came back (it missed others' events), or after another replica asked
        // (it lost some of its own). Each correction is sent twice, a heartbeat apart: a `set`
        // read from Redis can race an event already in flight, the second one cannot race the
        // same event.
        let mut corrections: u8 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // Events were missed meanwhile, and after a Redis Cluster failover the new
                // primary may lack this replica's last writes: correct both.
                _ = self.bus.reconnected() => {
                    corrections = CORRECTIONS;
                    self.store.mark_dirty();
                }
                _ = self.bus.resync_requested() => corrections = CORRECTIONS,
                _ = self.stop.notified() => return,
            }
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            beats += 1;
            let held = self.renew(registered).await;
            tracing::debug!(?held, registered, corrections, "heartbeat");
            let Ok(held) = held else {
                continue; // Redis down: serve locally, the breaker keeps this cheap
            };
            // Events this replica published may not have reached everyone: a presence
            // transition failed (dirty), the lease was lost (reaped meanwhile), or a publish
            // was dropped.
            let mut announce = false;
            let dirty = self.store.dirty();
            if !ever_registered && !registered {
                self.report_mode();
            }
            if !held || !registered || dirty {
                if registered && !held {
                    tracing::warn!(replica = %self.replica, "lease was lost; re-registering");
                }
                registered = self.register().await && self.reassert(&live).await;
                if registered {
                    // Whatever changed while Redis was away, local clients now get the truth.
                    corrections = CORRECTIONS;
                    announce = ever_registered || dirty;
                    ever_registered = true;
                }
            }
            if registered && (announce || self.bus.take_lost()) {
                tracing::info!(replica = %self.replica, "back after losing events; asking every replica to correct its rosters");
                metrics::counter!("liveroom_cluster_resyncs_total").increment(1);
                self.bus.request_resync();
                corrections = CORRECTIONS;
            }
            if corrections > 0 && registered && self.correct_rosters(&live).await {
                corrections -= 1;
            }
            self.reap(&live).await;
            if beats % 30 == 0 {
                self.store.refresh_ttl().await;
            }
        }
    }

    /// Refreshes the lease (and the replica's entry, in case a reaper removed it while the
    /// lease was briefly lost). `Ok(false)`: the lease had expired (or never existed).
    async fn renew(&self, registered: bool) -> Result<bool, super::breaker::RedisDown> {
        if !registered {
            return Ok(false);
        }
        let key = keys::lease(&self.replica);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(self.store.epoch())
            .arg("PX")
            .arg(self.config.lease.as_millis() as u64)
            .arg("XX");
        let mut entry = redis::cmd("HSET");
        entry
            .arg(REPLICAS)
            .arg(&*self.replica)
            .arg(self.store.epoch());
        let mut replies = self
            .redis
            .pipelines(vec![(key, set), (REPLICAS.to_owned(), entry)])
            .await?
            .into_iter();
        let set = replies.next().unwrap_or(Err(super::RedisDown::Timeout))?;
        Ok(set != redis::Value::Nil)
    }

    /// Registers under a new epoch: the lease, then the entry.
    async fn register(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let epoch = now.max(self.store.epoch() + 1);
        let key = keys::lease(&self.replica);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(epoch)
            .arg("PX")
            .arg(self.config.lease.as_millis() as u64);
        let mut entry = redis::cmd("HSET");
        entry.arg(REPLICAS).arg(&*self.replica).arg(epoch);
        let ok = self
            .redis
            .pipelines(vec![(key, set), (REPLICAS.to_owned(), entry)])
            .await
            .is_ok_and(|r| r.iter().all(Result::is_ok));
        if ok {
            self.store.set_epoch(epoch);
        }
        ok
    }

    /// Says which kind of Redis this replica works with, once.
    fn report_mode(&self) {
        let cluster = self.redis.mode() == Some(super::breaker::Mode::Cluster);
        metrics::gauge!("liveroom_redis_cluster_mode").set(if cluster { 1.0 } else { 0.0 });
        if cluster {
            tracing::info!(url = %self.config.url, "redis cluster mode: rooms spread over the shards by hash slot, sharded pub/sub");
        }
    }

    /// Re-asserts this replica's members, publishing the cluster-wide transitions that causes.
    /// `false` if Redis failed (what did change is published all the same).
    async fn reassert(&self, live: &Live) -> bool {
        match self.store.reassert().await {
            Ok(changes) => {
                self.announce(live, changes);
                true
            }
            Err((_, changes)) => {
                self.announce(live, changes);
                false
            }
        }
    }

    /// Publishes what a script changed: `join` for the listed, `leave` (and the cursor's
    /// `remove`) for the gone, one `count` per room.
    fn announce(&self, live: &Live, changes: Vec<Transition>) {
        for change in changes {
            match change {
                Transition::Listed { topic, key, data } => {
                    let _ = live.publish(
                        &format!("{topic}:presence"),
                        "join",
                        &json!({ "key": key, "data": data }),
                    );
                }
                Transition::Gone { topic, key, listed } => {
                    self.publish_gone(live, &topic, &key, listed)
                }
                Transition::Count { topic, count } => {
                    let _ = live.publish(
                        &format!("{topic}:presence"),
                        "count",
                        &crate::room::announce::count_data(count),
                    );
                    live.lobby_count(&topic, count);
                }
                Transition::Counted { .. } => {}
            }
        }
    }

    /// Sends every local presence subscriber the cluster-wide roster as a `set`. Only a roster
    /// read from Redis is sent (never the local fallback, which would hide other replicas'
    /// members). `false` if Redis failed.
    async fn correct_rosters(&self, live: &Live) -> bool {
        for presence_topic in live.hub().topics_ending_with(":presence") {
            let Some(topic) = presence_topic.strip_suffix(":presence") else {
                continue;
            };
            let Ok(roster) = self.store.cluster_roster(topic).await else {
                return false;
            };
            let count = crate::room::announce::count_data(roster.count);
            let roster: Vec<_> = roster
                .listed
                .into_iter()
                .map(|(key, data)| json!({ "key": key, "data": data }))
                .collect();
            if let Ok(raw) = serde_json::value::to_raw_value(&roster) {
                let frame = crate::protocol::envelope(&presence_topic, "set", &raw);
                live.hub().deliver(&presence_topic, &frame);
            }
            if let Ok(raw) = serde_json::value::to_raw_value(&count) {
                let frame = crate::protocol::envelope(&presence_topic, "count", &raw);
                live.hub().deliver(&presence_topic, &frame);
            }
        }
        true
    }

    fn publish_gone(&self, live: &Live, topic: &str, key: &str, listed: bool) {
        if listed {
            let _ = live.publish(
                &format!("{topic}:presence"),
                "leave",
                &json!({ "key": key }),
            );
        }
        let cursors = format!("{topic}:cursors");
        let remove = json!({ "key": key });
        // Local observers get it through the room's tick; the other replicas through the bus.
        live.mirror_cursor(&cursors, "remove", &remove);
        crate::hub::Bus::store_cursors(&*self.bus, &cursors, &[(key.into(), None)]);
        if let Ok(raw) = serde_json::value::to_raw_value(&remove) {
            let frame = crate::protocol::envelope(&cursors, "remove", &raw);
            crate::hub::Bus::publish(&*self.bus, &cursors, &frame);
        }
    }

    /// Removes the contributions of replicas whose lease expired.
    async fn reap(&self, live: &Live) {
        let Ok(replicas) = self
            .redis
            .run(|mut c| async move {
                redis::AsyncCommands::hgetall::<_, HashMap<String, u64>>(&mut c, REPLICAS).await
            })
            .await
        else {
            return;
        };
        let others: Vec<(String, u64)> = replicas
            .into_iter()
            .filter(|(id, _)| **id != *self.replica)
            .collect();
        if others.is_empty() {
            return;
        }
        let cmds = others
            .iter()
            .map(|(id, _)| {
                let key = keys::lease(id);
                let mut exists = redis::cmd("EXISTS");
                exists.arg(&key);
                (key, exists)
            })
            .collect();
        let Ok(alive) = self.redis.pipelines(cmds).await else {
            return;
        };
        for ((id, epoch), alive) in others.iter().zip(alive) {
            if !matches!(alive, Ok(redis::Value::Int(0))) {
                continue; // alive, or not known dead
            }
            let (changes, forgotten) = self.store.reap(id, *epoch).await;
            if forgotten {
                let id = id.clone();
                let _ = self
                    .redis
                    .run(|mut c| async move {
                        redis::AsyncCommands::hdel::<_, _, ()>(&mut c, REPLICAS, id).await
                    })
                    .await;
            }
            let gone = changes
                .iter()
                .filter(|c| matches!(c, Transition::Gone { .. }))
                .count();
            if gone > 0 {
                tracing::warn!(replica = %id, left = gone, "reaped a dead replica's presence");
            }
            metrics::counter!("liveroom_cluster_reaped_total").increment(gone as u64);
            self.announce(live, changes);
        }
    }

    /// Graceful shutdown: presence was already released (leaves published); send what is
    /// queued, then give up the lease so nobody needs to reap us.
    pub(crate) async fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.notify_waiters();
        self.bus.flush(std::time::Duration::from_secs(2)).await;
        let (lease, index) = (keys::lease(&self.replica), keys::rooms_of(&self.replica));
        let mut del = redis::cmd("DEL");
        del.arg(&lease).arg(&index); // one slot: both carry the replica's tag
        let mut entry = redis::cmd("HDEL");
        entry.arg(REPLICAS).arg(&*self.replica);
        let _ = self
            .redis
            .pipelines(vec![(lease, del), (REPLICAS.to_owned(), entry)])
            .await;
    }
}
