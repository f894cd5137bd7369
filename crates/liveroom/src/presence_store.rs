//! The presence store seam: where presence counts live. [`MemoryPresence`] keeps them in this
//! process (zero config); the cluster module's Redis store shares them between replicas.
//!
//! The store sees only process-level transitions; the per-socket refcount and the leave grace
//! are the room's tracker's job, above this seam.

use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// A boxed future returned by [`PresenceStore`] methods.
pub type StoreFuture<'a, T> = BoxFuture<'a, T>;

/// Where presence counts live: in this process ([`MemoryPresence`]) or shared by replicas.
///
/// Each method is called once per *process-level* transition: `join` when the first local
/// socket of an identity subscribes, `leave` when the last one is gone and its grace ran out.
/// The futures borrow only the store: an implementation copies what it needs of the arguments
/// before it returns.
pub trait PresenceStore: Send + Sync + 'static {
    /// Counts `key` in `topic`; `data` (`None`: counted, not listed) is stored first.
    /// Returns `true` if this made the identity present anywhere (publish `join`).
    fn join(&self, topic: &str, key: &str, data: Option<&Value>) -> StoreFuture<'_, bool>;
    /// Uncounts `key` in `topic`. Returns `true` if the identity is now gone everywhere
    /// (publish `leave`).
    fn leave(&self, topic: &str, key: &str) -> StoreFuture<'_, bool>;
    /// Replaces the presence data of a member that is already counted.
    fn update(&self, topic: &str, key: &str, data: &Value) -> StoreFuture<'_, ()>;
    /// The listed members of `topic`: `(key, data)` for every present identity with data.
    fn roster(&self, topic: &str) -> StoreFuture<'_, Vec<(String, Value)>>;
}

/// Members of one room: identity -> (count, data).
type RoomCounts = HashMap<String, (usize, Option<Value>)>;

/// The zero-config store: counts in this process's memory. Empty rooms are dropped.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    rooms: Mutex<HashMap<String, RoomCounts>>,
}

impl PresenceStore for MemoryPresence {
    fn join(&self, topic: &str, key: &str, data: Option<&Value>) -> StoreFuture<'_, bool> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let entry = rooms
            .entry(topic.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_insert((0, None));
        entry.0 += 1;
        entry.1 = data.cloned();
        let first = entry.0 == 1;
        Box::pin(async move { first })
    }

    fn leave(&self, topic: &str, key: &str) -> StoreFuture<'_, bool> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = false;
        if let Some(room) = rooms.get_mut(topic) {
            if let Some(entry) = room.get_mut(key) {
                entry.0 = entry.0.saturating_sub(1);
                if entry.0 == 0 {
                    room.remove(key);
                    last = true;
                }
            }
            if room.is_empty() {
                rooms.remove(topic);
            }
        }
        Box::pin(async move { last })
    }

    fn update(&self, topic: &str, key: &str, data: &Value) -> StoreFuture<'_, ()> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = rooms.get_mut(topic).and_then(|r| r.get_mut(key)) {
            entry.1 = Some(data.clone());
        }
        Box::pin(async {})
    }

    fn roster(&self, topic: &str) -> StoreFuture<'_, Vec<(String, Value)>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<(String, Value)> = rooms
            .get(topic)
            .map(|room| {
                room.iter()
                    .filter_map(|(k, (_, d))| Some((k.clone(), d.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Box::pin(async move { list })
    }
}
