//! The erased room: its data stream, its actions, and the runtime state (presence tracker,
//! cursor table) attached at build time. The session drives a room through this.

use super::cursors::{CursorTable, Cursors};
use super::lobby::{Lobby, MetaFn};
use super::presence::{PresenceHook, Tracker};
use crate::args::{Params, SchemaFn};
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{to_raw, CallFn, Reply};
use crate::hub::Hub;
use crate::presence_store::PresenceStore;
use crate::rate::Scoped;
use crate::stream::StreamDef;
use futures_util::future::BoxFuture;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What others see of a member.
pub(crate) type PresenceFn = Arc<dyn Fn(&Ctx) -> Value + Send + Sync>;

/// Whether a cursor position (or awareness state) has the room's declared type.
pub(crate) type PositionCheck = fn(&Value) -> bool;

/// A fire-and-forget room call's args: the room args, then its object (`None`: `null`).
pub(crate) type Split = (Vec<Value>, Option<Map<String, Value>>);

/// One erased action: guard, topic and handler in one call.
pub(crate) struct Action {
    pub call: CallFn,
    /// The action's own args (after the room args).
    pub params: Params,
    /// The schema of its result.
    pub result: SchemaFn,
    /// Its rate limit, if not the default one.
    pub rate: Option<Scoped>,
}

/// Which room stream a call is for (actions are registered as calls of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomPart {
    Data,
    Presence,
    Cursors,
    /// `__cursor`, the fire-and-forget position update.
    Cursor,
    /// `__presence_update`, the fire-and-forget awareness update.
    Update,
    /// `__lobby`, the stream of the declaration's open rooms.
    Lobby,
}

/// Who may read a room declaration's lobby.
pub(crate) type LobbyGuard =
    Arc<dyn Fn(Ctx) -> BoxFuture<'static, Result<(), LiveError>> + Send + Sync>;

/// A room's lobby, as declared: the metadata function and its schema, and its guard, if any.
pub(crate) struct LobbyParts {
    pub meta: Option<(MetaFn, SchemaFn)>,
    pub guard: Option<LobbyGuard>,
}

/// Everything a room declaration erases into.
pub(crate) struct Parts {
    pub module: String,
    pub name: String,
    /// The data stream; its params are the room args.
    pub data: StreamDef,
    pub actions: BTreeMap<String, Action>,
    /// What others see of a member, and its schema.
    pub presence: Option<(PresenceFn, SchemaFn)>,
    pub cursors: Cursors,
    /// The cursor position type, if the room declared one.
    pub position: Option<(PositionCheck, SchemaFn)>,
    pub on_join: Option<PresenceHook>,
    pub on_leave: Option<PresenceHook>,
    pub grace: Duration,
    /// Listed members at most; further ones are counted.
    pub listed_limit: usize,
    /// Whether clients may set awareness state, and its type check.
    pub awareness: Option<(PositionCheck, SchemaFn)>,
    pub lobby: Option<LobbyParts>,
}

struct Runtime {
    tracker: Arc<Tracker>,
    cursors: Option<Arc<CursorTable>>,
    lobby: Option<Arc<Lobby>>,
}

/// A type-erased room with its runtime state.
pub(crate) struct RoomDef {
    parts: Parts,
    runtime: OnceLock<Runtime>,
}

impl std::fmt::Debug for RoomDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Room({}/{})", self.parts.module, self.parts.name)
    }
}

/// The presence topic of room `topic`.
pub(crate) fn presence_topic(topic: &str) -> Arc<str> {
    format!("{topic}:presence").into()
}

/// The cursors topic of room `topic`.
pub(crate) fn cursors_topic(topic: &str) -> Arc<str> {
    format!("{topic}:cursors").into()
}

/// Splits a room call's args: `args` keeps the `count` room args, the rest is returned (none
/// when there are too few: parsing the room args then names the first one missing).
pub(crate) fn split_room_args(args: &mut Vec<Value>, count: usize) -> Vec<Value> {
    args.split_off(count.min(args.len()))
}

impl RoomDef {
    pub fn new(parts: Parts) -> Self {
        RoomDef {
            parts,
            runtime: OnceLock::new(),
        }
    }

    pub fn module(&self) -> &str {
        &self.parts.module
    }

    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// The data stream (its guard and topic are the room's).
    pub fn data(&self) -> &StreamDef {
        &self.parts.data
    }

    pub fn actions(&self) -> &BTreeMap<String, Action> {
        &self.parts.actions
    }

    /// The stream path suffixes this room answers.
    pub fn parts(&self) -> Vec<(&'static str, RoomPart)> {
        let mut parts = vec![("__data", RoomPart::Data)];
        if self.parts.presence.is_some() {
            parts.push(("__presence", RoomPart::Presence));
            if self.parts.awareness.is_some() {
                parts.push(("__presence_update", RoomPart::Update));
            }
        }
        if self.parts.cursors.enabled {
            parts.push(("__cursors", RoomPart::Cursors));
            parts.push(("__cursor", RoomPart::Cursor));
        }
        if self.parts.lobby.is_some() {
            parts.push(("__lobby", RoomPart::Lobby));
        }
        parts
    }

    /// How many leading args select the room.
    pub fn topic_args(&self) -> usize {
        self.parts.data.params.names.len()
    }

    /// The room args of a stream call (extra args are ignored).
    pub fn room_args(&self, mut args: Vec<Value>) -> Vec<Value> {
        split_room_args(&mut args, self.topic_args());
        args
    }

    /// Connects the room to the hub and the presence store (at build time).
    pub fn attach(&self, hub: Arc<Hub>, store: Arc<dyn PresenceStore>) {
        let p = &self.parts;
        let cursors = p
            .cursors
            .enabled
            .then(|| CursorTable::new(hub.clone(), p.cursors));
        let lobby = p.lobby.as_ref().map(|l| {
            let name = format!("{}/{}", p.module, p.name);
            let meta = l.meta.as_ref().map(|(f, _)| f.clone());
            Arc::new(Lobby::new(hub.clone(), store.clone(), name, meta))
        });
        let mut tracker = Tracker::new(hub, store, p.grace);
        if let Some(l) = &lobby {
            let l = l.clone();
            tracker.counted = Some(Arc::new(move |topic, count| {
                let (l, topic) = (l.clone(), topic.clone());
                tokio::spawn(async move { l.changed(&topic, count).await });
            }));
        }
        tracker.limit = p.listed_limit;
        tracker.on_join = p.on_join.clone();
        tracker.on_leave = p.on_leave.clone();
        if let Some(c) = &cursors {
            let c = c.clone();
            tracker.left = Some(Arc::new(move |topic, key| c.remove(topic, key)));
        }
        let tracker = Arc::new(tracker);
        let _ = self.runtime.set(Runtime {
            tracker,
            cursors,
            lobby,
        });
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.get().expect("room attached at build")
    }

    /// The room's presence tracker.
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.runtime().tracker
    }

    /// The room's lobby, if it has one.
    pub fn lobby(&self) -> Option<&Arc<Lobby>> {
        self.runtime().lobby.as_ref()
    }

    /// Runs the lobby's guard (none: everyone may read it).
    pub async fn lobby_gate(&self, ctx: Ctx) -> Result<(), LiveError> {
        match self.parts.lobby.as_ref().and_then(|l| l.guard.as_ref()) {
            Some(guard) => guard(ctx).await,
            None => Ok(()),
        }
    }

    /// The room's cursor table, if cursors are on.
    pub fn cursor_table(&self) -> Option<&Arc<CursorTable>> {
        self.runtime().cursors.as_ref()
    }

    /// What others see of `ctx`'s identity as a member (`None`: counted, not listed).
    pub fn presence_of(&self, ctx: &Ctx) -> Option<Value> {
        let data = self.parts.presence.as_ref().map(|(p, _)| p(ctx));
        data.filter(|d| !d.is_null())
    }

    /// A data subscription made `ctx`'s identity a member (once per socket), seen as `data`.
    /// `args` are the room args (for the lobby entry of a room this join opens).
    pub async fn join(&self, topic: &Arc<str>, ctx: &Ctx, data: Option<Value>, args: &[Value]) {
        let runtime = self.runtime();
        let count = runtime.tracker.join(topic, &ctx.conn.identity, data).await;
        if let (Some(count), Some(lobby)) = (count, &runtime.lobby) {
            lobby.joined(topic, ctx, args, count).await;
        }
    }

    /// A socket's data subscription ended: its identity's leave grace may start.
    pub fn leave(&self, topic: &Arc<str>, conn: &Conn) {
        self.runtime().tracker.leave(topic, &conn.identity, conn.id);
    }

    /// A socket that moved its cursor without being a member left: remove that cursor,
    /// unless the identity is a member here (then its presence leave will).
    pub fn drop_cursor_unless_member(&self, topic: &Arc<str>, conn: &Conn) {
        if let Some(c) = self.cursor_table() {
            if !self.runtime().tracker.is_member(topic, &conn.identity) {
                c.remove(topic, &conn.identity);
            }
        }
    }

    /// Ends every pending leave now (shutdown).
    pub async fn flush_leaves(&self) {
        self.runtime().tracker.flush().await;
    }

    /// The listed roster of room `topic`, for `conn`'s presence stream reply; its `count`
    /// event follows the reply.
    pub fn roster(&self, topic: Arc<str>, conn: Arc<Conn>) -> BoxFuture<'static, Reply> {
        let tracker = self.runtime().tracker.clone();
        Box::pin(async move {
            let (list, count) = tracker.roster(&topic).await;
            let presence = presence_topic(&topic);
            if let Ok(raw) = serde_json::value::to_raw_value(&count) {
                // Held with the topic until the reply is queued, so it comes right after it.
                let frame = crate::protocol::envelope(&presence, "count", &raw);
                conn.outbox.event(&presence, frame, 0);
            }
            to_raw(list)
        })
    }

    /// Splits `__presence_update` args into the room args and the state (`None`: `null`, clear).
    pub fn update_args(&self, args: Vec<Value>) -> Result<Split, LiveError> {
        let check = self.parts.awareness.as_ref().map(|(fits, _)| *fits);
        self.split_last(args, "__presence_update", "an update", "awareness", check)
    }

    /// Splits the args of `what` (the room args, then an object or `null`), checking the object
    /// against the room's declared type `check` (named `kind` in errors).
    fn split_last(
        &self,
        mut args: Vec<Value>,
        what: &str,
        object: &str,
        kind: &str,
        check: Option<PositionCheck>,
    ) -> Result<Split, LiveError> {
        let n = self.topic_args();
        if args.len() != n + 1 {
            return Err(LiveError::invalid(format!(
                "invalid args: {what} takes the {n} room args then an object or null"
            )));
        }
        let last = args.pop();
        if last
            .as_ref()
            .is_some_and(|v| v.is_object() && check.is_some_and(|fits| !fits(v)))
        {
            return Err(LiveError::invalid(format!(
                "invalid args: {object} does not have the room's {kind} type"
            )));
        }
        match last {
            Some(Value::Null) => Ok((args, None)),
            Some(Value::Object(o)) => Ok((args, Some(o))),
            _ => Err(LiveError::invalid(format!(
                "invalid args: {object} must be an object or null"
            ))),
        }
    }

    /// Sets `conn`'s awareness state in room `topic` (`Err(size)` beyond `max` bytes).
    pub async fn update_presence(
        &self,
        topic: &Arc<str>,
        conn: &Conn,
        state: Option<Map<String, Value>>,
        max: usize,
    ) -> Result<(), usize> {
        let tracker = &self.runtime().tracker;
        tracker
            .set_state(topic, &conn.identity, conn.id, state, max)
            .await
    }

    /// The current cursor positions of room `topic`: this replica's, plus in cluster mode
    /// those other replicas recorded.
    pub fn cursor_snapshot(&self, topic: &str) -> BoxFuture<'static, Reply> {
        let local = self.cursor_table().map_or(json!([]), |c| c.snapshot(topic));
        let remote = self
            .runtime()
            .tracker
            .hub
            .bus()
            .map(|bus| bus.load_cursors(&cursors_topic(topic)));
        Box::pin(async move {
            let Some(remote) = remote else {
                return to_raw(local);
            };
            let mut merged: indexmap::IndexMap<String, Value> = remote
                .await
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| Some((v.get("key")?.as_str()?.to_owned(), v)))
                .collect();
            for v in local.as_array().into_iter().flatten() {
                if let Some(k) = v.get("key").and_then(Value::as_str) {
                    merged.insert(k.to_owned(), v.clone());
                }
            }
            to_raw(merged.into_values().collect::<Vec<_>>())
        })
    }

    /// Splits `__cursor` args into the room args and the position object (`None`: `null`,
    /// the pointer left: remove the cursor).
    pub fn cursor_args(&self, args: Vec<Value>) -> Result<Split, LiveError> {
        let check = self.parts.position.as_ref().map(|(fits, _)| *fits);
        self.split_last(args, "__cursor", "the position", "position", check)
    }

    /// Records `conn`'s identity's new cursor position in room `topic`, or removes its cursor.
    pub fn cursor_move(&self, topic: &Arc<str>, conn: &Conn, position: Option<Map<String, Value>>) {
        if let Some(c) = self.cursor_table() {
            match position {
                Some(p) => c.set(topic, &conn.identity, p),
                None => c.remove(topic, &conn.identity),
            }
        }
    }

    /// The manifest entry: merge mode, args, the schemas of its data, presence data, cursor
    /// position and each action's args and result.
    pub fn describe(&self, generator: &mut SchemaGenerator) -> Value {
        let p = &self.parts;
        let mut d = p.data.merge.describe();
        d["topicArgs"] = self.topic_args().into();
        let room = &p.data.params;
        d["args"] = json!(room.names);
        let room_params = room.describe(generator);
        d["params"] = json!(room_params);
        d["data"] = (p.data.data)(generator).to_value();
        d["presence"] = p.presence.is_some().into();
        if let Some((_, schema)) = &p.presence {
            d["presenceData"] = schema(generator).to_value();
            d["presenceLimit"] = p.listed_limit.into();
        }
        if let Some((_, schema)) = &p.awareness {
            d["awareness"] = schema(generator).to_value();
        }
        d["cursors"] = p.cursors.enabled.into();
        d["lobby"] = p.lobby.is_some().into();
        if let Some((_, schema)) = p.lobby.as_ref().and_then(|l| l.meta.as_ref()) {
            d["lobbyMeta"] = schema(generator).to_value();
        }
        if let Some((_, schema)) = &p.position {
            d["cursorPosition"] = schema(generator).to_value();
        }
        let mut actions = Map::new();
        for (n, a) in &p.actions {
            let names: Vec<&String> = room.names.iter().chain(&a.params.names).collect();
            let mut params = room_params.clone();
            params.extend(a.params.describe(generator));
            let result = (a.result)(generator).to_value();
            actions.insert(
                n.clone(),
                json!({ "args": names, "params": params, "result": result }),
            );
        }
        d["actions"] = actions.into();
        d
    }
}
