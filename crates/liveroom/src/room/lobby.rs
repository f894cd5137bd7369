//! A room declaration's lobby: the rooms of it that have members right now, each with its
//! cluster-wide member count and optional metadata ([`Room::lobby`](crate::Room::lobby)).
//!
//! The lobby follows the presence store's counts. The replica whose join takes a room's count
//! from 0 to 1 opens the room: it computes the metadata (once per open), records the room's
//! entry in the store and publishes it (`created`). Every later count change publishes the
//! entry again with the new count (`created` is an upsert in the crud merge), and the replica
//! whose leave takes the count to 0 closes it (`deleted`). A replica that reaps a dead one's
//! members publishes the same changes for the rooms they were in (`Live::lobby_count`). Entries carry the count's
//! `version`, so a client can keep the newest of two that crossed on the way.
//!
//! Wire: the stream `<module>/<room>/__lobby` (no args), topic `lobby:<module>/<room>`, merge
//! `crud` keyed by `room`; an entry is `{"room": topic, "args": [...], "meta": .., "count": N,
//! "version": V}`.

use crate::ctx::Ctx;
use crate::handler::{to_raw, Reply};
use crate::hub::Hub;
use crate::presence_store::{Count, PresenceStore};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The metadata of a room that opens, from the opening member's context and the room args.
pub(crate) type MetaFn = Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<'static, Value> + Send + Sync>;

/// At most this many rooms' entries are cached per lobby; beyond, the cache starts over (entries
/// come back from the store on demand). Rooms closed by another replica leave theirs here.
const KNOWN_MAX: usize = 10_000;

/// The lobby topic of the room declaration `name` (`<module>/<room>`).
pub(crate) fn lobby_topic(name: &str) -> Arc<str> {
    format!("lobby:{name}").into()
}

/// One declaration's lobby (see the module docs).
pub(crate) struct Lobby {
    hub: Arc<Hub>,
    store: Arc<dyn PresenceStore>,
    /// `<module>/<room>`.
    name: String,
    topic: Arc<str>,
    meta: Option<MetaFn>,
    /// The fixed part (`args`, `meta`) of rooms seen here, by room topic.
    known: Mutex<HashMap<Arc<str>, Value>>,
}

impl Lobby {
    pub fn new(
        hub: Arc<Hub>,
        store: Arc<dyn PresenceStore>,
        name: String,
        meta: Option<MetaFn>,
    ) -> Self {
        Lobby {
            topic: lobby_topic(&name),
            hub,
            store,
            name,
            meta,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The lobby's topic.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The declaration's name, `<module>/<room>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Value>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, topic: &Arc<str>, info: &Value) {
        let mut known = self.known();
        if known.len() >= KNOWN_MAX && !known.contains_key(topic) {
            known.clear();
        }
        known.insert(topic.clone(), info.clone());
    }

    /// A join here changed room `topic`'s count: opens the room at 1, else publishes the count.
    pub async fn joined(&self, topic: &Arc<str>, ctx: &Ctx, args: &[Value], count: Count) {
        if count.total == 1 {
            let meta = match &self.meta {
                Some(f) => f(ctx.clone(), args.to_vec()).await,
                None => Value::Null,
            };
            let info = json!({ "args": args, "meta": meta });
            self.store.open_room(&self.name, topic, &info).await;
            self.remember(topic, &info);
            self.publish(topic, &info, count);
        } else {
            self.changed(topic, count).await;
        }
    }

    /// Room `topic`'s count changed (a leave here, or a reap): publishes it, or closes the
    /// room at 0.
    pub async fn changed(&self, topic: &Arc<str>, count: Count) {
        if count.total == 0 {
            self.known().remove(topic);
            self.store.close_room(&self.name, topic).await;
            let _ = self
                .hub
                .publish_value(&self.topic, "deleted", &json!({ "room": &**topic }));
            return;
        }
        let cached = self.known().get(topic).cloned();
        let info = match cached {
            Some(info) => info,
            // Opened on another replica: its entry is in the store.
            None => match self.store.room_info(topic).await {
                Some((_, info)) => {
                    self.remember(topic, &info);
                    info
                }
                None => return,
            },
        };
        self.publish(topic, &info, count);
    }

    /// Whether room `topic` was seen here (its entry is cached).
    pub fn knows(&self, topic: &str) -> bool {
        self.known().contains_key(topic)
    }

    /// A cluster transition (a reap, a re-assertion after an outage) changed the count of a room
    /// seen here: records its entry again (Redis may have come back empty) and publishes.
    pub async fn restore(&self, topic: &Arc<str>, count: Count) {
        let cached = self.known().get(topic).cloned();
        match cached {
            Some(info) if count.total > 0 => {
                self.store.open_room(&self.name, topic, &info).await;
                self.publish(topic, &info, count);
            }
            _ => self.changed(topic, count).await,
        }
    }

    fn publish(&self, topic: &str, info: &Value, count: Count) {
        let _ = self
            .hub
            .publish_value(&self.topic, "created", &entry(topic, info, count));
    }

    /// The open rooms, for the lobby stream's initial data.
    pub fn list(&self) -> BoxFuture<'static, Reply> {
        let (store, name) = (self.store.clone(), self.name.clone());
        Box::pin(async move {
            let rooms = store.rooms(&name).await;
            let list: Vec<Value> = rooms
                .iter()
                .map(|(topic, info, count)| entry(topic, info, *count))
                .collect();
            to_raw(list)
        })
    }
}

/// A lobby entry: `{"room","args","meta","count","version"}`.
fn entry(topic: &str, info: &Value, count: Count) -> Value {
    json!({
        "room": topic,
        "args": info.get("args").cloned().unwrap_or(Value::Null),
        "meta": info.get("meta").cloned().unwrap_or(Value::Null),
        "count": count.total,
        "version": count.version,
    })
}
