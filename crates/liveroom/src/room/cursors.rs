//! Cursors: live positions of the people in a room.
//!
//! Moves are not published one by one. Each room keeps the latest position per identity and a
//! ticker publishes what changed once per throttle interval as one shared batch of `update` /
//! `remove` envelopes. That makes the throttle per connection with a trailing edge (the latest
//! position always goes out), and the cost of a tick independent of how often people move.
//! A subscriber that is congested gets the room's full snapshot as a `set` event in a
//! conflated slot instead, so its queue holds at most one cursor frame per room.
//!
//! **Adaptive rate.** A tick sends at most the room's budget (default 3,000 positions/s, so 150
//! per 50 ms tick) to every observer. Changes wait in arrival order and a tick takes the oldest
//! first, so as a room grows each user's effective rate drops while no cursor waits more than
//! `ceil(movers / per_tick)` ticks (7 ticks, 350 ms, at 1,000 movers). In cluster mode other
//! replicas' changes join the same line, so the budget holds per observer cluster-wide.
//! A `null` position removes the user's cursor (the pointer left the board).

use crate::hub::Hub;
use crate::outbox::Out;
use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Cursor options of a room: `true` for the defaults, or a throttle.
///
/// ```
/// use liveroom::room::Cursors;
/// use std::time::Duration;
/// let default: Cursors = true.into();
/// let slower = Cursors::throttle(Duration::from_millis(100));
/// # let _ = (default, slower);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursors {
    pub(crate) enabled: bool,
    pub(crate) throttle: Duration,
    pub(crate) budget: u32,
}

impl Cursors {
    /// The default throttle: one tick per room every 50 ms.
    pub const DEFAULT_THROTTLE: Duration = Duration::from_millis(50);
    /// The default budget: positions per second each observer receives at most.
    pub const DEFAULT_BUDGET: u32 = 3000;

    /// Cursors on, publishing at most once per `interval` per room (default 50 ms).
    pub fn throttle(interval: Duration) -> Self {
        Cursors {
            throttle: interval.max(Duration::from_millis(1)),
            ..true.into()
        }
    }

    /// Sets the per-observer budget: at most `positions` per second reach each observer
    /// (default 3,000); beyond it the effective rate per user drops (see the module docs).
    ///
    /// ```
    /// # use liveroom::room::Cursors;
    /// let frugal = Cursors::from(true).budget(1000);
    /// # let _ = frugal;
    /// ```
    pub fn budget(self, positions: u32) -> Self {
        Cursors {
            budget: positions.max(1),
            ..self
        }
    }

    /// How many positions one tick sends at most.
    pub(crate) fn per_tick(&self) -> usize {
        ((self.budget as f64 * self.throttle.as_secs_f64()).floor() as usize).max(1)
    }
}

impl From<bool> for Cursors {
    fn from(enabled: bool) -> Self {
        Cursors {
            enabled,
            throttle: Self::DEFAULT_THROTTLE,
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

/// A change waiting for a tick: `Some` an update, `None` a removal; `local` if it was made on
/// this replica (then the tick also sends it to the others).
#[derive(Debug, Clone)]
struct Change {
    value: Option<Value>,
    local: bool,
}

#[derive(Default)]
struct CursorRoom {
    /// Latest published position per identity, each `{"key":..,...position}`.
    positions: IndexMap<Arc<str>, Value>,
    /// Changes not sent yet, oldest first (a newer change of a key keeps its place).
    pending: IndexMap<Arc<str>, Change>,
    ticking: bool,
}

/// All cursor rooms of one room declaration.
pub(crate) struct CursorTable {
    hub: Arc<Hub>,
    throttle: Duration,
    per_tick: usize,
    rooms: Mutex<HashMap<Arc<str>, CursorRoom>>,
}

impl CursorTable {
    pub fn new(hub: Arc<Hub>, options: Cursors) -> Arc<Self> {
        Arc::new(CursorTable {
            hub,
            throttle: options.throttle,
            per_tick: options.per_tick(),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this table has cursors of room `topic`.
    pub fn knows(&self, topic: &str) -> bool {
        self.rooms().contains_key(topic)
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, CursorRoom>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `key`'s new position in room `topic`.
    pub fn set(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>, position: Map<String, Value>) {
        let mut value = Map::with_capacity(position.len() + 1);
        value.insert("key".into(), Value::String(key.to_string()));
        value.extend(position.into_iter().filter(|(k, _)| k != "key"));
        self.change(topic, key, Some(Value::Object(value)), true);
    }

    /// Removes `key`'s cursor from room `topic` (the user left).
    pub fn remove(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>) {
        let known = self
            .rooms()
            .get(topic)
            .is_some_and(|r| r.positions.contains_key(key) || r.pending.contains_key(key));
        if known {
            self.change(topic, key, None, true);
        }
    }

    fn change(
        self: &Arc<Self>,
        topic: &Arc<str>,
        key: &Arc<str>,
        value: Option<Value>,
        local: bool,
    ) {
        let mut rooms = self.rooms();
        let room = rooms.entry(topic.clone()).or_default();
        if room
            .pending
            .insert(key.clone(), Change { value, local })
            .is_some()
        {
            metrics::counter!("liveroom_cursor_moves_coalesced_total").increment(1);
        }
        if !room.ticking {
            room.ticking = true;
            let this = self.clone();
            let topic = topic.clone();
            tokio::spawn(async move { this.run(topic).await });
        }
    }

    /// The current positions in room `topic`, for a `__cursors` reply.
    pub fn snapshot(&self, topic: &str) -> Value {
        Value::Array(
            self.rooms()
                .get(topic)
                .map(|r| r.positions.values().cloned().collect())
                .unwrap_or_default(),
        )
    }

    async fn run(&self, topic: Arc<str>) {
        let cursor_topic = format!("{topic}:cursors");
        let mut interval = tokio::time::interval(self.throttle);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            // This replica's changes go to the others too; theirs only to local observers.
            let mut local_frames = Vec::new();
            let (frames, snapshot, changes) = {
                let mut rooms = self.rooms();
                let Some(room) = rooms.get_mut(&topic) else {
                    return;
                };
                if room.pending.is_empty() {
                    room.ticking = false;
                    if room.positions.is_empty() {
                        rooms.remove(&topic);
                    }
                    return;
                }
                let take = room.pending.len().min(self.per_tick);
                if take < room.pending.len() {
                    metrics::counter!("liveroom_cursor_moves_deferred_total")
                        .increment((room.pending.len() - take) as u64);
                }
                let mut frames = Vec::with_capacity(take);
                let mut changes = Vec::with_capacity(take);
                for (key, change) in room.pending.drain(..take) {
                    let local = change.local;
                    let frames = if local {
                        &mut local_frames
                    } else {
                        &mut frames
                    };
                    if local {
                        changes.push((key.clone(), change.value.clone()));
                    }
                    let (event, data) = match change.value {
                        Some(v) => {
                            room.positions.insert(key, v.clone());
                            ("update", v)
                        }
                        None => {
                            room.positions.shift_remove(&key);
                            ("remove", serde_json::json!({ "key": &*key }))
                        }
                    };
                    if let Ok(raw) = serde_json::value::to_raw_value(&data) {
                        frames.push(crate::protocol::envelope(&cursor_topic, event, &raw));
                    }
                }
                let snapshot: Vec<Value> = room.positions.values().cloned().collect();
                (frames, snapshot, changes)
            };
            if let Some(bus) = self.hub.bus() {
                if !changes.is_empty() {
                    bus.store_cursors(&cursor_topic, &changes);
                }
                for f in &local_frames {
                    bus.publish(&cursor_topic, f);
                }
            }
            let mut all = local_frames;
            all.extend(frames);
            self.deliver(&cursor_topic, all, snapshot);
        }
    }

    fn deliver(&self, cursor_topic: &str, frames: Vec<Bytes>, snapshot: Vec<Value>) {
        metrics::counter!("liveroom_events_published_total").increment(frames.len() as u64);
        let frames: Arc<[Bytes]> = frames.into();
        let key: Arc<str> = cursor_topic.into();
        let mut set_frame: Option<Bytes> = None;
        self.hub.each(cursor_topic, |conn| {
            let o = &conn.outbox;
            if o.congested() || o.has_latest(cursor_topic) {
                let frame = set_frame.get_or_insert_with(|| {
                    let raw = serde_json::value::to_raw_value(&snapshot).unwrap_or_else(|_| {
                        serde_json::value::RawValue::from_string("[]".into()).expect("valid")
                    });
                    crate::protocol::envelope(cursor_topic, "set", &raw)
                });
                o.latest(key.clone(), frame.clone())
            } else {
                o.event(cursor_topic, Out::Many(frames.clone()), 0)
            }
        });
    }

    /// Takes an event that another replica published on room `topic`'s cursors: it waits in
    /// the same line as local changes, so local observers get it within their budget, and
    /// snapshots here include it.
    pub fn mirror(self: &Arc<Self>, topic: &str, event: &str, data: &Value) {
        let Some(key) = data.get("key").and_then(Value::as_str) else {
            return;
        };
        let value = match event {
            "update" => Some(data.clone()),
            "remove" => None,
            _ => return,
        };
        self.change(&topic.into(), &key.into(), value, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Conn;
    use crate::outbox::Drain;

    fn position(x: i64) -> Map<String, Value> {
        let Value::Object(m) = serde_json::json!({ "x": x }) else {
            unreachable!()
        };
        m
    }

    /// The event envelopes queued for `conn`, as JSON.
    fn taken(conn: &Conn) -> Vec<Value> {
        let mut d = Drain::default();
        conn.outbox.drain(&mut d);
        d.messages(false)
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn one_update_per_tick_with_the_latest_position() {
        let hub = Arc::new(Hub::default());
        let table = CursorTable::new(hub.clone(), Cursors::throttle(Duration::from_millis(50)));
        let conn = Conn::new(None, 1 << 20);
        hub.subscribe("r:cursors", &conn);
        let (topic, key): (Arc<str>, Arc<str>) = ("r".into(), "alice".into());
        for x in 0..20 {
            table.set(&topic, &key, position(x));
        }
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert!(taken(&conn).is_empty(), "nothing before the tick");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(
            taken(&conn),
            [
                serde_json::json!({"topic":"r:cursors","event":"update","data":{"key":"alice","x":19}})
            ]
        );
        // A quiet tick publishes nothing and stops the ticker; the next move restarts it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(taken(&conn).is_empty());
        table.set(&topic, &key, position(42));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(taken(&conn)[0]["data"]["x"], 42);
        assert_eq!(
            table.snapshot("r"),
            serde_json::json!([{"key":"alice","x":42}])
        );
        // Removal goes out on the next tick and empties the snapshot.
        table.remove(&topic, &key);
        table.remove(&topic, &"nobody".into()); // unknown: nothing
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            taken(&conn),
            [serde_json::json!({"topic":"r:cursors","event":"remove","data":{"key":"alice"}})]
        );
        assert_eq!(table.snapshot("r"), serde_json::json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_congested_subscriber_gets_one_conflated_set() {
        let hub = Arc::new(Hub::default());
        let table = CursorTable::new(hub.clone(), Cursors::throttle(Duration::from_millis(50)));
        let slow = Conn::new(None, 400);
        let fast = Conn::new(None, 1 << 20);
        hub.subscribe("r:cursors", &slow);
        hub.subscribe("r:cursors", &fast);
        // More than a quarter of the slow one's limit is waiting to be written.
        let waiting = format!("\"{}\"", " ".repeat(148));
        slow.outbox.event("other", bytes::Bytes::from(waiting), 0);
        let topic: Arc<str> = "r".into();
        // Moves at 0, 60 and 110 ms: one per tick (the ticks are at 50, 100 and 150 ms).
        for round in 0..3 {
            table.set(&topic, &"a".into(), position(round));
            table.set(&topic, &"b".into(), position(-round));
            let wait = if round == 0 { 60 } else { 50 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        assert_eq!(taken(&fast).len(), 6, "the fast one got every update");
        let got = taken(&slow);
        let cursor_frames: Vec<&Value> = got.iter().filter(|f| f["topic"] == "r:cursors").collect();
        assert_eq!(
            cursor_frames,
            [
                &serde_json::json!({"topic":"r:cursors","event":"set","data":[{"key":"a","x":2},{"key":"b","x":-2}]})
            ],
            "one set with the latest positions"
        );
    }
}
