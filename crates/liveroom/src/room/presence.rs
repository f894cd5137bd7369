//! Presence: who is in a room.
//!
//! Two layers, so that reloads never flicker and clusters stay consistent:
//! - `Tracker` (per process, here): counts this process's sockets per (room topic, identity)
//!   and runs the leave grace. Only its 0→1 and (after the grace) 1→0 transitions reach the
//!   store.
//! - [`PresenceStore`] (in memory, or Redis in cluster mode): counts processes per identity and
//!   says whether a transition is the first join or the last leave anywhere, which decides who
//!   publishes `join` and `leave`.

use crate::hub::Hub;
use crate::presence_store::PresenceStore;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A join or leave, as given to `on_join` / `on_leave`.
#[derive(Debug, Clone)]
pub struct PresenceEvent {
    /// The room's data topic.
    pub topic: Arc<str>,
    /// The identity key.
    pub key: Arc<str>,
    /// The presence data (`None` for unlisted members and for leaves).
    pub data: Option<Value>,
}

pub(crate) type PresenceHook = Arc<dyn Fn(&PresenceEvent) + Send + Sync>;

/// What happens when an identity really leaves a room (after its grace), besides `leave`.
pub(crate) type LeaveFn = Arc<dyn Fn(&Arc<str>, &Arc<str>) + Send + Sync>;

#[derive(Debug)]
struct Member {
    sockets: usize,
    listed: bool,
    data: Option<Value>,
    /// Bumped on every transition so a stale grace timer knows it lost.
    generation: u64,
    leaving: bool,
}

/// The per-process layer (see the module docs).
pub(crate) struct Tracker {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn PresenceStore>,
    pub grace: Duration,
    pub on_join: Option<PresenceHook>,
    pub on_leave: Option<PresenceHook>,
    pub left: Option<LeaveFn>,
    members: Mutex<Members>,
}

/// (room topic, identity) -> this process's record of that member.
type Members = HashMap<(Arc<str>, Arc<str>), Member>;

impl Tracker {
    pub fn new(hub: Arc<Hub>, store: Arc<dyn PresenceStore>, grace: Duration) -> Self {
        Tracker {
            hub,
            store,
            grace,
            on_join: None,
            on_leave: None,
            left: None,
            members: Mutex::new(HashMap::new()),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket of `key` subscribed to the room's data topic.
    pub async fn join(&self, topic: &Arc<str>, key: &Arc<str>, data: Option<Value>) {
        let existing = {
            let mut members = self.members();
            if let Some(m) = members.get_mut(&(topic.clone(), key.clone())) {
                m.sockets += 1;
                if m.leaving {
                    // Back inside the grace: cancel the leave; nobody saw anything.
                    m.leaving = false;
                    m.generation += 1;
                }
                // A new tab or a reload with new presence data (a renamed user): others see
                // the change as a `join` upsert, never as a leave and a join.
                match &data {
                    Some(d) if m.data.as_ref() != Some(d) => {
                        m.data = data.clone();
                        m.listed = true;
                        Some(data.clone())
                    }
                    _ => Some(None),
                }
            } else {
                members.insert(
                    (topic.clone(), key.clone()),
                    Member {
                        sockets: 1,
                        listed: data.is_some(),
                        data: data.clone(),
                        generation: 0,
                        leaving: false,
                    },
                );
                None
            }
        };
        // `Some(changed data)` for a member that was already here.
        if let Some(changed) = existing {
            if let Some(data) = changed {
                self.store.update(topic, key, &data).await;
                let payload = serde_json::json!({ "key": &**key, "data": data });
                publish(&self.hub, &format!("{topic}:presence"), "join", &payload);
            }
            return;
        }
        let first = self.store.join(topic, key, data.as_ref()).await;
        if first {
            if let Some(data) = &data {
                let payload = serde_json::json!({ "key": &**key, "data": data });
                publish(&self.hub, &format!("{topic}:presence"), "join", &payload);
            }
            if let Some(hook) = &self.on_join {
                hook(&PresenceEvent {
                    topic: topic.clone(),
                    key: key.clone(),
                    data,
                });
            }
        }
    }

    /// Whether `key` is a member of `topic` in this process (inside its grace included).
    pub fn is_member(&self, topic: &Arc<str>, key: &Arc<str>) -> bool {
        self.members().contains_key(&(topic.clone(), key.clone()))
    }

    /// A socket of `key` left the room's data topic. The last one starts the grace.
    pub fn leave(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>) {
        let generation = {
            let mut members = self.members();
            let Some(m) = members.get_mut(&(topic.clone(), key.clone())) else {
                return;
            };
            m.sockets = m.sockets.saturating_sub(1);
            if m.sockets > 0 {
                return;
            }
            m.leaving = true;
            m.generation += 1;
            m.generation
        };
        let this = self.clone();
        let (topic, key) = (topic.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            this.finish_leave(&topic, &key, Some(generation)).await;
        });
    }

    /// Completes a leave whose grace ran out (`generation` must still match), or any pending
    /// leave when `generation` is `None` (shutdown).
    async fn finish_leave(&self, topic: &Arc<str>, key: &Arc<str>, generation: Option<u64>) {
        let listed = {
            let mut members = self.members();
            let k = (topic.clone(), key.clone());
            match members.get(&k) {
                Some(m) if m.leaving && generation.is_none_or(|g| g == m.generation) => {
                    let listed = m.listed;
                    members.remove(&k);
                    listed
                }
                _ => return,
            }
        };
        let last = self.store.leave(topic, key).await;
        if last {
            if listed {
                let payload = serde_json::json!({ "key": &**key });
                publish(&self.hub, &format!("{topic}:presence"), "leave", &payload);
            }
            if let Some(left) = &self.left {
                left(topic, key);
            }
            if let Some(hook) = &self.on_leave {
                hook(&PresenceEvent {
                    topic: topic.clone(),
                    key: key.clone(),
                    data: None,
                });
            }
        }
    }

    /// Ends every leave that is waiting for its grace, now.
    pub async fn flush(&self) {
        let pending: Vec<(Arc<str>, Arc<str>)> = self
            .members()
            .iter()
            .filter(|(_, m)| m.leaving)
            .map(|(k, _)| k.clone())
            .collect();
        for (topic, key) in pending {
            self.finish_leave(&topic, &key, None).await;
        }
    }

    /// The listed roster of `topic`.
    pub async fn roster(&self, topic: &str) -> Value {
        let list = self.store.roster(topic).await;
        Value::Array(
            list.into_iter()
                .map(|(key, data)| serde_json::json!({ "key": key, "data": data }))
                .collect(),
        )
    }
}

fn publish(hub: &Hub, topic: &str, event: &str, data: &Value) {
    // A `Value` always serializes.
    let _ = hub.publish_value(topic, event, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence_store::MemoryPresence;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tracker(grace_ms: u64) -> (Arc<Tracker>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let mut t = Tracker::new(
            Arc::new(Hub::default()),
            Arc::new(MemoryPresence::default()),
            Duration::from_millis(grace_ms),
        );
        let (joins, leaves) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (j, l) = (joins.clone(), leaves.clone());
        t.on_join = Some(Arc::new(move |_| {
            j.fetch_add(1, Ordering::SeqCst);
        }));
        t.on_leave = Some(Arc::new(move |_| {
            l.fetch_add(1, Ordering::SeqCst);
        }));
        (Arc::new(t), joins, leaves)
    }

    #[tokio::test(start_paused = true)]
    async fn grace_cancels_leave_and_rejoin() {
        let (t, joins, leaves) = tracker(5000);
        let (topic, key): (Arc<str>, Arc<str>) = ("board:1".into(), "alice".into());
        t.join(&topic, &key, Some(serde_json::json!({"name": "A"})))
            .await;
        t.leave(&topic, &key);
        tokio::time::sleep(Duration::from_millis(4000)).await;
        t.join(&topic, &key, Some(serde_json::json!({"name": "A"})))
            .await; // reload
        tokio::time::sleep(Duration::from_millis(10_000)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert_eq!(t.roster("board:1").await.as_array().unwrap().len(), 1);
        t.leave(&topic, &key);
        tokio::time::sleep(Duration::from_millis(4999)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 0, "still inside the grace");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 1);
        assert_eq!(t.roster("board:1").await, serde_json::json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn two_tabs_one_join_one_leave() {
        let (t, joins, leaves) = tracker(100);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "bob".into());
        t.join(&topic, &key, None).await;
        t.join(&topic, &key, None).await;
        t.leave(&topic, &key);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 0);
        t.leave(&topic, &key);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 1)
        );
        // Unlisted (no data): counted but not in the roster.
        t.join(&topic, &key, None).await;
        assert_eq!(t.roster("r").await, serde_json::json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn new_data_on_reload_is_an_upsert_not_a_leave() {
        let (t, joins, leaves) = tracker(5000);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "ann".into());
        t.join(&topic, &key, Some(serde_json::json!({"name": "Ann"})))
            .await;
        t.leave(&topic, &key);
        t.join(&topic, &key, Some(serde_json::json!({"name": "Anna"})))
            .await;
        tokio::time::sleep(Duration::from_millis(6000)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert_eq!(
            t.roster("r").await,
            serde_json::json!([{"key": "ann", "data": {"name": "Anna"}}])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flush_ends_pending_leaves_now() {
        let (t, _, leaves) = tracker(60_000);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "c".into());
        t.join(&topic, &key, Some(Value::Null)).await;
        t.leave(&topic, &key);
        t.flush().await;
        assert_eq!(leaves.load(Ordering::SeqCst), 1);
    }
}
