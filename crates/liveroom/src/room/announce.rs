//! Presence announcements of a room: the first `join`, `leave` or awareness change of a quiet
//! room goes out at once; the ones that follow within a tick (50 ms) are coalesced per member
//! (latest wins) and published together with one `count` event, queued as one group per
//! subscriber, so a burst of joins reaches each observer as one frame.
//!
//! A small room (at most [`SMALL_ROOM`] local presence subscribers) also announces at once the
//! first change of each *other* member within a tick: a burst costs it little (members ×
//! changes frames), and a join that follows another by a few milliseconds is not held for up to
//! a tick. A member's second change within the tick still waits (awareness stays throttled).

use crate::hub::Hub;
use crate::presence_store::Count;
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The data of a `count` event: `{"total": N, "version": V}`.
pub(crate) fn count_data(count: Count) -> Value {
    json!({ "total": count.total, "version": count.version })
}

/// One pending announcement of a member.
#[derive(Debug, Clone)]
pub(crate) enum Announce {
    Join(Value),
    Leave,
}

/// Rooms with at most this many local presence subscribers announce each member's first change
/// in a tick at once (see the module docs).
pub(crate) const SMALL_ROOM: usize = 32;

#[derive(Default)]
struct Window {
    pending: IndexMap<Arc<str>, Announce>,
    count: Option<Count>,
    /// Members announced during this tick: their next change waits for the tick's end.
    announced: HashSet<Arc<str>>,
}

impl Window {
    /// Takes what waits, leaving the window open.
    fn take(&mut self) -> Window {
        Window {
            pending: std::mem::take(&mut self.pending),
            count: self.count.take(),
            announced: HashSet::new(),
        }
    }
}

/// Coalesces a room's presence announcements per tick (see the module docs).
pub(crate) struct Announcer {
    hub: Arc<Hub>,
    tick: Duration,
    /// Rooms inside a tick window; what waits for the window's end.
    open: Mutex<HashMap<Arc<str>, Window>>,
}

impl Announcer {
    pub fn new(hub: Arc<Hub>, tick: Duration) -> Arc<Self> {
        Arc::new(Announcer {
            hub,
            tick,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Window>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces `changes` (per member, latest wins) and a new `count` (of several in one
    /// tick the highest version goes out).
    pub fn announce(
        self: &Arc<Self>,
        topic: &Arc<str>,
        changes: Vec<(Arc<str>, Announce)>,
        count: Option<Count>,
    ) {
        if changes.is_empty() && count.is_none() {
            return;
        }
        self.add(topic, |w| {
            w.pending.extend(changes);
            if let Some(count) = count {
                if w.count.is_none_or(|c| c.version < count.version) {
                    w.count = Some(count);
                }
            }
        });
    }

    /// Adds to the room's window; a room without one publishes at once and opens one, and so does
    /// a small room for members not announced yet in this tick.
    fn add(self: &Arc<Self>, topic: &Arc<str>, add: impl FnOnce(&mut Window)) {
        let mut open = self.open();
        if let Some(w) = open.get_mut(topic) {
            // Nothing waits (so nothing can be overtaken) and only members not announced yet.
            let idle = w.pending.is_empty() && w.count.is_none();
            add(w);
            if idle && w.pending.keys().all(|k| !w.announced.contains(k)) && self.small(topic) {
                let now = w.take();
                w.announced.extend(now.pending.keys().cloned());
                drop(open);
                self.publish(topic, now);
            }
            return;
        }
        let mut now = Window::default();
        add(&mut now);
        let announced = now.pending.keys().cloned().collect();
        open.insert(
            topic.clone(),
            Window {
                announced,
                ..Window::default()
            },
        );
        drop(open);
        self.publish(topic, now);
        let (this, topic) = (self.clone(), topic.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.tick).await;
                let window = {
                    let mut open = this.open();
                    let Some(w) = open.get_mut(&topic) else {
                        return; // flushed
                    };
                    if w.pending.is_empty() && w.count.is_none() {
                        open.remove(&topic);
                        return;
                    }
                    let now = w.take();
                    w.announced = now.pending.keys().cloned().collect();
                    now
                };
                this.publish(&topic, window);
            }
        });
    }

    /// Whether the room has few enough local presence subscribers to announce at once.
    fn small(&self, topic: &str) -> bool {
        self.hub.subscribers(&format!("{topic}:presence")) <= SMALL_ROOM
    }

    /// Sends every open window now (shutdown).
    pub fn flush_all(&self) {
        let windows: Vec<(Arc<str>, Window)> = self.open().drain().collect();
        for (topic, w) in windows {
            self.publish(&topic, w);
        }
    }

    fn publish(&self, topic: &str, window: Window) {
        let presence = format!("{topic}:presence");
        let mut events = Vec::with_capacity(window.pending.len() + 1);
        for (key, a) in window.pending {
            events.push(match a {
                Announce::Join(data) => ("join", json!({ "key": &*key, "data": data })),
                Announce::Leave => ("leave", json!({ "key": &*key })),
            });
        }
        if let Some(count) = window.count {
            events.push(("count", count_data(count)));
        }
        self.hub.publish_all(&presence, &events);
    }
}
