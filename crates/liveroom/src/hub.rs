//! The topic table: who is subscribed to what, and publishing to them.
//!
//! The table is sharded by topic hash so publishes to different topics never contend, and a
//! publish holds a read lock only long enough to clone the topic's subscriber list. An event is serialized once into a `Bytes` envelope that every
//! subscriber's [`Outbox`](crate::outbox::Outbox) shares.

use crate::conn::Conn;
use crate::error::LiveError;
use crate::outbox::Push;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, RwLock};

const SHARDS: usize = 64;

/// Where events also go beyond this process (the Redis bus in cluster mode).
pub trait Bus: Send + Sync + 'static {
    /// Forwards an encoded envelope for `topic` to the other replicas.
    fn publish(&self, topic: &str, frame: &Bytes);
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
}

/// A topic's subscribers, copied on write: a publish clones the `Arc` under the read lock and
/// delivers after releasing it, so a subscribe in the same shard never waits for a fan-out (and
/// copies the list only if a fan-out is running on it at that moment).
type Subscribers = Arc<Vec<Arc<Conn>>>;
type Shard = RwLock<HashMap<Arc<str>, Subscribers>>;

/// The sharded topic table. See the module docs.
pub struct Hub {
    shards: Box<[Shard]>,
    bus: OnceLock<Arc<dyn Bus>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            bus: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    fn shard(&self, topic: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// Connects the cluster bus. Only the first call has an effect.
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    /// The cluster bus, if any.
    pub fn bus(&self) -> Option<&Arc<dyn Bus>> {
        self.bus.get()
    }

    /// Adds `conn` to `topic`. Returns `false` if it was already there.
    pub fn subscribe(&self, topic: &str, conn: &Arc<Conn>) -> bool {
        let mut shard = self.shard(topic).write().unwrap_or_else(|p| p.into_inner());
        let (subs, first) = match shard.get_mut(topic) {
            Some(subs) => (subs, false),
            None => (shard.entry(Arc::from(topic)).or_default(), true),
        };
        if subs.iter().any(|c| c.id == conn.id) {
            return false;
        }
        Arc::make_mut(subs).push(conn.clone());
        drop(shard);
        if first {
            if let Some(bus) = self.bus.get() {
                bus.interest(topic, true);
            }
        }
        true
    }

    /// Removes connection `id` from `topic`. Returns `false` if it was not there.
    pub fn unsubscribe(&self, topic: &str, id: u64) -> bool {
        let mut shard = self.shard(topic).write().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = shard.get_mut(topic) else {
            return false;
        };
        let Some(i) = subs.iter().position(|c| c.id == id) else {
            return false;
        };
        Arc::make_mut(subs).swap_remove(i);
        let last = subs.is_empty();
        if last {
            shard.remove(topic);
        }
        drop(shard);
        if last {
            if let Some(bus) = self.bus.get() {
                bus.interest(topic, false);
            }
        }
        true
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
                s.keys()
                    .filter(|t| t.ends_with(suffix))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Number of local subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> usize {
        let shard = self.shard(topic).read().unwrap_or_else(|p| p.into_inner());
        shard.get(topic).map_or(0, |s| s.len())
    }

    /// Publishes `event` with `data` on `topic`, here and on the bus.
    pub fn publish(&self, topic: &str, event: &str, data: &RawValue) {
        let frame = crate::protocol::envelope(topic, event, data);
        metrics::counter!("liveroom_events_published_total").increment(1);
        if let Some(bus) = self.bus.get() {
            bus.publish(topic, &frame);
        }
        self.deliver(topic, &frame);
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

    /// Delivers an encoded envelope to this process's subscribers of `topic`. Returns how many
    /// received it.
    pub fn deliver(&self, topic: &str, frame: &Bytes) -> usize {
        self.each(topic, |conn| conn.outbox.event(topic, frame.clone()))
    }

    /// Calls `push` for every local subscriber of `topic`, accounting drops and cut-offs.
    pub fn each(&self, topic: &str, mut push: impl FnMut(&Conn) -> Push) -> usize {
        let subs = {
            let shard = self.shard(topic).read().unwrap_or_else(|p| p.into_inner());
            match shard.get(topic) {
                Some(subs) => subs.clone(),
                None => return 0,
            }
        };
        let (mut delivered, mut dropped) = (0u64, 0u64);
        for conn in subs.iter() {
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
