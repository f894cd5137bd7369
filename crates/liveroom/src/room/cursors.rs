//! Cursors: live positions of the people in a room.
//!
//! Moves are not published one by one. Each room keeps the latest position per identity and a
//! ticker publishes what changed once per throttle interval as one shared batch of `update` /
//! `remove` envelopes. That makes the throttle per connection with a trailing edge (the latest
//! position always goes out), and the cost of a tick independent of how often people move.
//! A subscriber that is congested gets the room's full snapshot as a `set` event in a
//! conflated slot instead, so its queue holds at most one cursor frame per room.

use crate::hub::Hub;
use crate::outbox::{Out, Push};
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
}

impl Cursors {
    /// Cursors on, publishing at most once per `interval` per room (default 50 ms).
    pub fn throttle(interval: Duration) -> Self {
        Cursors {
            enabled: true,
            throttle: interval.max(Duration::from_millis(1)),
        }
    }
}

impl From<bool> for Cursors {
    fn from(enabled: bool) -> Self {
        Cursors {
            enabled,
            throttle: Duration::from_millis(50),
        }
    }
}

#[derive(Default)]
struct CursorRoom {
    /// Latest published position per identity, each `{"key":..,...position}`.
    positions: IndexMap<Arc<str>, Value>,
    /// Changes since the last tick: `Some` an update, `None` a removal.
    pending: IndexMap<Arc<str>, Option<Value>>,
    ticking: bool,
}

/// All cursor rooms of one room declaration.
pub(crate) struct CursorTable {
    hub: Arc<Hub>,
    throttle: Duration,
    rooms: Mutex<HashMap<Arc<str>, CursorRoom>>,
}

impl CursorTable {
    pub fn new(hub: Arc<Hub>, throttle: Duration) -> Arc<Self> {
        Arc::new(CursorTable {
            hub,
            throttle,
            rooms: Mutex::new(HashMap::new()),
        })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, CursorRoom>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `key`'s new position in room `topic`.
    pub fn set(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>, position: Map<String, Value>) {
        let mut value = Map::with_capacity(position.len() + 1);
        value.insert("key".into(), Value::String(key.to_string()));
        value.extend(position.into_iter().filter(|(k, _)| k != "key"));
        self.change(topic, key, Some(Value::Object(value)));
    }

    /// Removes `key`'s cursor from room `topic` (the user left).
    pub fn remove(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>) {
        let known = self
            .rooms()
            .get(topic)
            .is_some_and(|r| r.positions.contains_key(key) || r.pending.contains_key(key));
        if known {
            self.change(topic, key, None);
        }
    }

    fn change(self: &Arc<Self>, topic: &Arc<str>, key: &Arc<str>, value: Option<Value>) {
        let mut rooms = self.rooms();
        let room = rooms.entry(topic.clone()).or_default();
        if room.pending.insert(key.clone(), value).is_some() {
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
                let mut frames = Vec::with_capacity(room.pending.len());
                let mut changes = Vec::with_capacity(room.pending.len());
                for (key, change) in room.pending.drain(..) {
                    changes.push((key.clone(), change.clone()));
                    let (event, data) = match change {
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
                bus.store_cursors(&cursor_topic, &changes);
            }
            self.deliver(&cursor_topic, frames, snapshot);
        }
    }

    fn deliver(&self, cursor_topic: &str, frames: Vec<Bytes>, snapshot: Vec<Value>) {
        metrics::counter!("liveroom_events_published_total").increment(frames.len() as u64);
        if let Some(bus) = self.hub.bus() {
            for f in &frames {
                bus.publish(cursor_topic, f);
            }
        }
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
                o.latest(key.clone(), frame.clone());
                Push::Queued
            } else {
                o.event(cursor_topic, Out::Many(frames.clone()))
            }
        });
    }

    /// Applies an event that another replica published on `cursor_topic`, so snapshots here
    /// include remote cursors too.
    pub fn mirror(&self, topic: &str, event: &str, data: &Value) {
        let Some(key) = data.get("key").and_then(Value::as_str) else {
            return;
        };
        let mut rooms = self.rooms();
        match event {
            "update" => {
                rooms
                    .entry(topic.into())
                    .or_default()
                    .positions
                    .insert(key.into(), data.clone());
            }
            "remove" => {
                if let Some(r) = rooms.get_mut(topic) {
                    r.positions.shift_remove(key);
                    if r.positions.is_empty() && !r.ticking {
                        rooms.remove(topic);
                    }
                }
            }
            _ => {}
        }
    }
}
