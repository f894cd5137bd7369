//! Presence: who is in a room.
//!
//! Two layers, so that reloads never flicker and clusters stay consistent:
//! - `Tracker` (per process, here): counts this process's sockets per (room topic, identity),
//!   runs the leave grace and holds each member's awareness state. Only its 0→1 and (after the
//!   grace) 1→0 transitions reach the store.
//! - [`PresenceStore`] (in memory, or Redis in cluster mode): counts processes per identity,
//!   decides who is listed (the room's listed limit), and says whether a transition is the
//!   first join or the last leave anywhere, which decides who publishes `join` and `leave`.
//!
//! What a member shows is its *base* data (the room's presence function, or
//! [`RoomCtx::set_presence`](crate::room::RoomCtx::set_presence)) plus the awareness *state* one of
//! its sockets set (`presence.update` in the JS client): the base's fields win, so a client can
//! add `typing` or `editing` but never rename itself. A socket's state goes when that socket
//! leaves.
//!
//! Announcements go through the room's `Announcer` (room/announce), which coalesces them per
//! tick.

use super::announce::{count_data, Announce, Announcer};
use crate::hub::Hub;
use crate::presence_store::{Count, PresenceStore};
use serde_json::{json, Map, Value};
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

/// Told the room's new count after a last leave here (the lobby).
pub(crate) type CountFn = Arc<dyn Fn(&Arc<str>, Count) + Send + Sync>;

/// The default listed-member limit of a room ([`Room::presence_limit`](crate::Room::presence_limit)).
pub const DEFAULT_LISTED_LIMIT: usize = 1000;

/// How often a busy room's presence announcements go out.
pub const PRESENCE_TICK: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Member {
    sockets: usize,
    /// What the room's presence function (or `set_presence`) says; `None`: counted only.
    base: Option<Value>,
    /// Awareness state, and the socket that set it.
    state: Option<(u64, Map<String, Value>)>,
    /// Bumped on every transition so a stale grace timer knows it lost.
    generation: u64,
    leaving: bool,
}

impl Member {
    /// What others see: the base with the state's fields it does not have.
    fn shown(&self) -> Option<Value> {
        let base = self.base.as_ref()?;
        match (base, &self.state) {
            (Value::Object(b), Some((_, state))) => {
                let mut shown = b.clone();
                for (k, v) in state {
                    shown.entry(k.clone()).or_insert_with(|| v.clone());
                }
                Some(Value::Object(shown))
            }
            _ => Some(base.clone()),
        }
    }
}

/// The per-process layer (see the module docs).
pub(crate) struct Tracker {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn PresenceStore>,
    pub grace: Duration,
    pub limit: usize,
    pub on_join: Option<PresenceHook>,
    pub on_leave: Option<PresenceHook>,
    pub left: Option<LeaveFn>,
    pub counted: Option<CountFn>,
    pub announcer: Arc<Announcer>,
    members: Mutex<Members>,
}

/// (room topic, identity) -> this process's record of that member.
type Members = HashMap<(Arc<str>, Arc<str>), Member>;

impl Tracker {
    pub fn new(hub: Arc<Hub>, store: Arc<dyn PresenceStore>, grace: Duration) -> Self {
        Tracker {
            announcer: Announcer::new(hub.clone(), PRESENCE_TICK),
            hub,
            store,
            grace,
            limit: DEFAULT_LISTED_LIMIT,
            on_join: None,
            on_leave: None,
            left: None,
            counted: None,
            members: Mutex::new(HashMap::new()),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket of `key` subscribed to the room's data topic, with base data `data`. Returns
    /// the room's new count when this was the identity's first join anywhere.
    pub async fn join(
        &self,
        topic: &Arc<str>,
        key: &Arc<str>,
        data: Option<Value>,
    ) -> Option<Count> {
        let changed = {
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
                    Some(d) if m.base.as_ref() != Some(d) => {
                        m.base = data.clone();
                        Some(m.shown())
                    }
                    _ => Some(None),
                }
            } else {
                members.insert(
                    (topic.clone(), key.clone()),
                    Member {
                        sockets: 1,
                        base: data.clone(),
                        state: None,
                        generation: 0,
                        leaving: false,
                    },
                );
                None
            }
        };
        // `Some(changed data)` for a member that was already here.
        if let Some(changed) = changed {
            if let Some(shown) = changed {
                self.show(topic, key, shown).await;
            }
            return None;
        }
        let joined = self.store.join(topic, key, data.as_ref(), self.limit).await;
        let changes = match (&data, joined.listed) {
            (Some(data), true) => vec![(key.clone(), Announce::Join(data.clone()))],
            _ => Vec::new(),
        };
        let count = joined.first.then_some(joined.count);
        self.announcer.announce(topic, changes, count);
        if joined.first {
            if let Some(hook) = &self.on_join {
                hook(&PresenceEvent {
                    topic: topic.clone(),
                    key: key.clone(),
                    data,
                });
            }
        }
        count
    }

    /// Stores `shown` as `key`'s data and announces it if the member is listed.
    async fn show(&self, topic: &Arc<str>, key: &Arc<str>, shown: Value) {
        if self.store.update(topic, key, &shown, self.limit).await {
            let changes = vec![(key.clone(), Announce::Join(shown))];
            self.announcer.announce(topic, changes, None);
        }
    }

    /// Sets `key`'s base data (the server's `set_presence`). `false` if it is not a member here.
    pub async fn set_base(&self, topic: &Arc<str>, key: &Arc<str>, data: Value) -> bool {
        let shown = {
            let mut members = self.members();
            let Some(m) = members.get_mut(&(topic.clone(), key.clone())) else {
                return false;
            };
            m.base = Some(data);
            m.shown()
        };
        if let Some(shown) = shown {
            self.show(topic, key, shown).await;
        }
        true
    }

    /// Sets (or with `None` clears) the awareness state of `key`, on behalf of socket `conn`.
    /// `Err(size)` when the member would show more than `max` bytes of JSON. Ignored for an
    /// identity that is not a member here.
    pub async fn set_state(
        &self,
        topic: &Arc<str>,
        key: &Arc<str>,
        conn: u64,
        state: Option<Map<String, Value>>,
        max: usize,
    ) -> Result<(), usize> {
        let shown = {
            let mut members = self.members();
            let Some(m) = members.get_mut(&(topic.clone(), key.clone())) else {
                return Ok(());
            };
            let before = m.state.take();
            m.state = state.map(|s| (conn, s));
            let shown = m.shown();
            let size = shown.as_ref().map_or(0, crate::protocol::json_len);
            if size > max {
                m.state = before;
                return Err(size);
            }
            shown
        };
        if let Some(shown) = shown {
            self.show(topic, key, shown).await;
        }
        Ok(())
    }

    /// Whether `key` is a member of `topic` in this process (inside its grace included).
    pub fn is_member(&self, topic: &Arc<str>, key: &Arc<str>) -> bool {
        self.members().contains_key(&(topic.clone(), key.clone()))
    }

    /// Socket `conn` of `key` left the room's data topic: its awareness state goes with it,
    /// and the last socket starts the grace.
    pub fn leave(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>, conn: u64) {
        let (generation, cleared) = {
            let mut members = self.members();
            let Some(m) = members.get_mut(&(topic.clone(), key.clone())) else {
                return;
            };
            let cleared = match &m.state {
                Some((owner, _)) if *owner == conn => {
                    m.state = None;
                    m.shown()
                }
                _ => None,
            };
            m.sockets = m.sockets.saturating_sub(1);
            if m.sockets > 0 {
                (None, cleared)
            } else {
                m.leaving = true;
                m.generation += 1;
                (Some(m.generation), cleared)
            }
        };
        if generation.is_none() && cleared.is_none() {
            return; // another tab stays, and this one set no state
        }
        let this = self.clone();
        let (topic, key) = (topic.clone(), key.clone());
        tokio::spawn(async move {
            if let Some(shown) = cleared {
                this.show(&topic, &key, shown).await;
            }
            if let Some(generation) = generation {
                tokio::time::sleep(this.grace).await;
                this.finish_leave(&topic, &key, Some(generation)).await;
            }
        });
    }

    /// Completes a leave whose grace ran out (`generation` must still match), or any pending
    /// leave when `generation` is `None` (shutdown).
    async fn finish_leave(&self, topic: &Arc<str>, key: &Arc<str>, generation: Option<u64>) {
        {
            let mut members = self.members();
            let k = (topic.clone(), key.clone());
            match members.get(&k) {
                Some(m) if m.leaving && generation.is_none_or(|g| g == m.generation) => {
                    members.remove(&k);
                }
                _ => return,
            }
        }
        let left = self.store.leave(topic, key, self.limit).await;
        let mut changes = Vec::with_capacity(1 + left.promoted.len());
        if left.listed {
            changes.push((key.clone(), Announce::Leave));
        }
        for (key, data) in left.promoted {
            changes.push((key.into(), Announce::Join(data)));
        }
        self.announcer
            .announce(topic, changes, left.last.then_some(left.count));
        if left.last {
            if let Some(counted) = &self.counted {
                counted(topic, left.count);
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

    /// Ends every leave that is waiting for its grace, now, and sends what is announced.
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
        self.announcer.flush_all();
    }

    /// The listed roster of `topic` and its `count` event data.
    pub async fn roster(&self, topic: &str) -> (Value, Value) {
        let roster = self.store.roster(topic).await;
        let list = roster
            .listed
            .into_iter()
            .map(|(key, data)| json!({ "key": key, "data": data }))
            .collect();
        (Value::Array(list), count_data(roster.count))
    }
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
        t.leave(&topic, &key, 1);
        tokio::time::sleep(Duration::from_millis(4000)).await;
        t.join(&topic, &key, Some(serde_json::json!({"name": "A"})))
            .await; // reload
        tokio::time::sleep(Duration::from_millis(10_000)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert_eq!(t.roster("board:1").await.0.as_array().unwrap().len(), 1);
        t.leave(&topic, &key, 1);
        tokio::time::sleep(Duration::from_millis(4999)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 0, "still inside the grace");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 1);
        assert_eq!(t.roster("board:1").await.0, serde_json::json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn two_tabs_one_join_one_leave() {
        let (t, joins, leaves) = tracker(100);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "bob".into());
        t.join(&topic, &key, None).await;
        t.join(&topic, &key, None).await;
        t.leave(&topic, &key, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(leaves.load(Ordering::SeqCst), 0);
        t.leave(&topic, &key, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 1)
        );
        // Unlisted (no data): counted but not in the roster.
        t.join(&topic, &key, None).await;
        assert_eq!(t.roster("r").await.0, serde_json::json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn new_data_on_reload_is_an_upsert_not_a_leave() {
        let (t, joins, leaves) = tracker(5000);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "ann".into());
        t.join(&topic, &key, Some(serde_json::json!({"name": "Ann"})))
            .await;
        t.leave(&topic, &key, 1);
        t.join(&topic, &key, Some(serde_json::json!({"name": "Anna"})))
            .await;
        tokio::time::sleep(Duration::from_millis(6000)).await;
        assert_eq!(
            (joins.load(Ordering::SeqCst), leaves.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert_eq!(
            t.roster("r").await.0,
            serde_json::json!([{"key": "ann", "data": {"name": "Anna"}}])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flush_ends_pending_leaves_now() {
        let (t, _, leaves) = tracker(60_000);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "c".into());
        t.join(&topic, &key, Some(Value::Null)).await;
        t.leave(&topic, &key, 1);
        t.flush().await;
        assert_eq!(leaves.load(Ordering::SeqCst), 1);
    }

    /// A tracker over an in-memory store, with its hub (grace 5 s).
    fn on_hub() -> (Arc<Hub>, Arc<Tracker>) {
        let hub = Arc::new(Hub::default());
        let store = Arc::new(MemoryPresence::default());
        let t = Tracker::new(hub.clone(), store, Duration::from_secs(5));
        (hub, Arc::new(t))
    }

    /// The events queued for `conn`, as (event, data), and how many drains (frames) it took.
    fn events(conn: &crate::conn::Conn) -> Vec<(String, Value)> {
        let mut d = crate::outbox::Drain::default();
        conn.outbox.drain(&mut d);
        let mut out = Vec::new();
        d.each_event(|b| {
            let v: Value = serde_json::from_slice(b).unwrap();
            out.push((v["event"].as_str().unwrap().to_owned(), v["data"].clone()));
        });
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_joins_goes_out_as_one_queued_group_with_one_count() {
        let (hub, t) = on_hub();
        let observer = crate::conn::Conn::new(None, 1 << 20);
        hub.subscribe("r:presence", &observer);
        // A large room: more observers than a small room has.
        let others: Vec<_> = (0..crate::room::announce::SMALL_ROOM)
            .map(|_| crate::conn::Conn::new(None, 1 << 20))
            .collect();
        for o in &others {
            hub.subscribe("r:presence", o);
        }
        let topic: Arc<str> = "r".into();
        // The first join of a quiet room goes out at once, with its count.
        t.join(&topic, &"a".into(), Some(json!({"n": "a"}))).await;
        let first = events(&observer);
        assert_eq!(
            first[0],
            ("join".into(), json!({"key": "a", "data": {"n": "a"}}))
        );
        assert_eq!(first[1].0, "count");
        assert_eq!(first[1].1["total"], 1);
        // 50 more within the tick: nothing until it ends, then all of them and one count.
        for i in 0..50 {
            t.join(&topic, &format!("u{i}").into(), Some(json!({"n": i})))
                .await;
        }
        assert!(events(&observer).is_empty(), "coalesced until the tick");
        tokio::time::sleep(PRESENCE_TICK + Duration::from_millis(1)).await;
        let mut d = crate::outbox::Drain::default();
        observer.outbox.drain(&mut d);
        assert_eq!(d.event_count(), 51, "50 joins and one count");
        assert_eq!(
            d.messages(true).len(),
            1,
            "one frame for a client that takes batches"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_room_announces_each_members_first_change_at_once() {
        let (hub, t) = on_hub();
        let observer = crate::conn::Conn::new(None, 1 << 20);
        hub.subscribe("r:presence", &observer);
        let topic: Arc<str> = "r".into();
        t.join(&topic, &"a".into(), Some(json!({"n": "a"}))).await;
        assert_eq!(events(&observer)[0].0, "join");
        // Another member a moment later, inside the tick: at once too.
        t.join(&topic, &"b".into(), Some(json!({"n": "b"}))).await;
        let second = events(&observer);
        assert_eq!(
            second[0],
            ("join".into(), json!({"key": "b", "data": {"n": "b"}}))
        );
        // b's next change within the tick waits for it (latest wins), and so does what follows.
        let typing = json!({"typing": true}).as_object().cloned();
        t.set_state(&topic, &"b".into(), 1, typing, 1024)
            .await
            .unwrap();
        t.join(&topic, &"c".into(), Some(json!({"n": "c"}))).await;
        assert!(events(&observer).is_empty(), "held until the tick");
        tokio::time::sleep(PRESENCE_TICK + Duration::from_millis(1)).await;
        let keys: Vec<Value> = events(&observer)
            .into_iter()
            .filter(|(e, _)| e == "join")
            .map(|(_, d)| d["key"].clone())
            .collect();
        assert_eq!(keys, [json!("b"), json!("c")]);
    }

    #[tokio::test(start_paused = true)]
    async fn awareness_state_merges_under_the_base_and_goes_with_its_socket() {
        let (_, t) = on_hub();
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "ann".into());
        t.join(&topic, &key, Some(json!({"name": "Ann"}))).await;
        t.join(&topic, &key, Some(json!({"name": "Ann"}))).await; // a second tab
        let state = |v: Value| v.as_object().cloned();
        // The base wins: a client cannot rename itself.
        t.set_state(
            &topic,
            &key,
            7,
            state(json!({"editing": "c1", "name": "Eve"})),
            1024,
        )
        .await
        .unwrap();
        let roster = t.roster("r").await.0;
        assert_eq!(
            roster,
            json!([{"key": "ann", "data": {"name": "Ann", "editing": "c1"}}])
        );
        // Over the size cap: refused, the old state stays.
        let big = json!({ "editing": "x".repeat(2000) });
        assert!(t
            .set_state(&topic, &key, 7, state(big), 1024)
            .await
            .is_err());
        assert_eq!(t.roster("r").await.0[0]["data"]["editing"], "c1");
        // Another tab leaving leaves the state; the socket that set it takes it along.
        t.leave(&topic, &key, 8);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(t.roster("r").await.0[0]["data"]["editing"], "c1");
        t.leave(&topic, &key, 7);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            t.roster("r").await.0,
            json!([{"key": "ann", "data": {"name": "Ann"}}])
        );
        // The server's set_presence replaces the base.
        t.join(&topic, &key, None).await;
        assert!(
            t.set_base(&topic, &key, json!({"name": "Ann", "status": "away"}))
                .await
        );
        assert_eq!(t.roster("r").await.0[0]["data"]["status"], "away");
        assert!(!t.set_base(&topic, &"nobody".into(), json!({})).await);
    }
}
