//! Rooms: one declaration bundling a data stream, presence, cursors, a guard and actions under
//! a topic computed from the room's args (protocol.md section 5).
//!
//! - [`Room`] is the builder; register it with [`App::room`](crate::App::room).
//! - `presence` holds the per-process tracker (refcount + leave grace) and the
//!   [`PresenceStore`](presence::PresenceStore) trait with its in-memory implementation.
//! - `cursors` holds the per-room cursor tables and their ticker.

pub mod cursors;
pub mod presence;

use crate::app::{args_from, to_raw, BoxFuture, Reply};
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::hub::Hub;
use crate::stream::{checked_topic, Merge};
use cursors::CursorTable;
pub use cursors::Cursors;
use presence::{PresenceEvent, PresenceHook, PresenceStore, Tracker};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The type of a room's args: how many leading call args select the room (`topicArgs`).
///
/// Implemented for `()` and tuples of up to six elements; implement it for your own
/// `Deserialize` struct (deserialized from the leading args as a sequence) if you prefer.
pub trait RoomArgs: DeserializeOwned + Clone + Send + Sync + 'static {
    /// How many args select the room.
    const COUNT: usize;
}

macro_rules! room_args {
    ($($n:expr => ($($t:ident),*);)*) => {$(
        impl<$($t),*> RoomArgs for ($($t,)*)
        where $($t: DeserializeOwned + Clone + Send + Sync + 'static),*
        {
            const COUNT: usize = $n;
        }
    )*};
}

room_args! {
    0 => ();
    1 => (A);
    2 => (A, B);
    3 => (A, B, C);
    4 => (A, B, C, D);
    5 => (A, B, C, D, E);
    6 => (A, B, C, D, E, F);
}

/// The context of a room action: a [`Ctx`] whose `publish(event, data)` goes to the room.
#[derive(Clone, Debug)]
pub struct RoomCtx {
    ctx: Ctx,
    topic: Arc<str>,
}

impl RoomCtx {
    /// The room's data topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `event` with `data` to the room's data stream (`created`, `updated`,
    /// `deleted` for the default `crud` merge).
    pub fn publish(&self, event: &str, data: &impl Serialize) -> Result<(), LiveError> {
        self.ctx.publish(&self.topic, event, data)
    }
}

impl Deref for RoomCtx {
    type Target = Ctx;
    fn deref(&self) -> &Ctx {
        &self.ctx
    }
}

type TopicFn<A> = Arc<dyn Fn(&Ctx, &A) -> String + Send + Sync>;
type InitFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<Reply> + Send + Sync>;
type GuardFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<Result<(), LiveError>> + Send + Sync>;
type PresenceFn = Arc<dyn Fn(&Ctx) -> Value + Send + Sync>;
/// An action with its args split: room args first, the action's own args after.
type ActionFn<A> = Arc<dyn Fn(RoomCtx, A, Vec<Value>) -> BoxFuture<Reply> + Send + Sync>;

/// A room declaration. See the crate docs for the full seed example.
///
/// ```no_run
/// use liveroom::{App, Ctx, LiveError, Room, RoomCtx};
/// use serde_json::json;
///
/// let board = Room::new(|_ctx: &Ctx, (id,): &(String,)| format!("board:{id}"))
///     .init(|_ctx, (_id,): (String,)| async move { Ok::<_, LiveError>(Vec::<serde_json::Value>::new()) })
///     .presence(|ctx| json!({ "name": ctx.user().and_then(|u| u.get("name")).cloned() }))
///     .cursors(true)
///     .action("addCard", |ctx: RoomCtx, (id,): (String,), (title,): (String,)| async move {
///         let card = json!({ "id": title.len(), "boardId": id, "title": title });
///         ctx.publish("created", &card)?;
///         Ok(card)
///     });
/// let app = App::new().room("collab", "board", board);
/// ```
pub struct Room<A: RoomArgs> {
    topic: TopicFn<A>,
    init: Option<InitFn<A>>,
    presence: Option<PresenceFn>,
    cursors: Cursors,
    guard: Option<GuardFn<A>>,
    actions: BTreeMap<String, (ActionFn<A>, Vec<String>)>,
    merge: Merge,
    on_join: Option<PresenceHook>,
    on_leave: Option<PresenceHook>,
    grace: Duration,
    arg_names: Vec<String>,
}

impl<A: RoomArgs> Room<A> {
    /// A room whose data topic is `topic(ctx, room_args)`.
    pub fn new(topic: impl Fn(&Ctx, &A) -> String + Send + Sync + 'static) -> Self {
        Room {
            topic: Arc::new(topic),
            init: None,
            presence: None,
            cursors: false.into(),
            guard: None,
            actions: BTreeMap::new(),
            merge: Merge::crud("id"),
            on_join: None,
            on_leave: None,
            grace: Duration::from_secs(5),
            arg_names: Vec::new(),
        }
    }

    /// Loads the data stream's initial value.
    pub fn init<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize,
    {
        self.init = Some(crate::app::erase_init(init));
        self
    }

    /// Turns presence on: `presence(ctx)` is what others see of a member. Returning
    /// `Value::Null` counts the member without listing it.
    pub fn presence(mut self, presence: impl Fn(&Ctx) -> Value + Send + Sync + 'static) -> Self {
        self.presence = Some(Arc::new(presence));
        self
    }

    /// Turns cursors on (`true`) or sets their throttle ([`Cursors::throttle`]).
    pub fn cursors(mut self, cursors: impl Into<Cursors>) -> Self {
        self.cursors = cursors.into();
        self
    }

    /// Runs before every room subscription (data, presence, cursors) and every action. An
    /// error denies: the caller is not subscribed and never appears in any roster.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.guard = Some(Arc::new(move |ctx, args| Box::pin(guard(ctx, args))));
        self
    }

    /// Adds an action `name` (`[A-Za-z0-9_]+`): it receives the room args, then its own args
    /// `B` (a tuple), typed.
    ///
    /// # Panics
    /// If `name` is not a valid action name.
    pub fn action<B, R, F, Fut>(mut self, name: &str, action: F) -> Self
    where
        B: DeserializeOwned + Send + 'static,
        R: Serialize,
        F: Fn(RoomCtx, A, B) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
    {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "invalid action name `{name}`"
        );
        let action = Arc::new(action);
        let f: ActionFn<A> = Arc::new(move |ctx, room_args, rest| {
            let own = args_from::<B>(rest);
            let action = action.clone();
            Box::pin(async move { to_raw(action(ctx, room_args, own?).await?) })
        });
        self.actions.insert(name.to_owned(), (f, Vec::new()));
        self
    }

    /// Names of an action's own args, for the manifest and generated clients.
    pub fn action_args<S: Into<String>>(
        mut self,
        name: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        if let Some((_, n)) = self.actions.get_mut(name) {
            *n = names.into_iter().map(Into::into).collect();
        }
        self
    }

    /// Names of the room args, for the manifest and generated clients.
    pub fn args<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.arg_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The data stream's merge mode (default `crud` keyed by `id`).
    pub fn merge(mut self, merge: Merge) -> Self {
        self.merge = merge;
        self
    }

    /// Shorthand for `merge(Merge::crud(key))`.
    pub fn key(self, key: &str) -> Self {
        self.merge(Merge::crud(key))
    }

    /// Called once when an identity joins the room (first socket anywhere).
    pub fn on_join(mut self, hook: impl Fn(&PresenceEvent) + Send + Sync + 'static) -> Self {
        self.on_join = Some(Arc::new(hook));
        self
    }

    /// Called once per actual leave (after the grace, last socket anywhere).
    pub fn on_leave(mut self, hook: impl Fn(&PresenceEvent) + Send + Sync + 'static) -> Self {
        self.on_leave = Some(Arc::new(hook));
        self
    }

    /// How long a member stays after its last socket left (default 5 s), so reloads and
    /// reconnects do not flicker.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub(crate) fn erase(self, module: &str, name: &str) -> RoomDef {
        let Room {
            topic,
            init,
            presence,
            cursors,
            guard,
            actions,
            merge,
            on_join,
            on_leave,
            grace,
            arg_names,
        } = self;
        let count = A::COUNT;
        let parse = move |args: &[Value]| -> Result<A, LiveError> {
            if args.len() < count {
                return Err(LiveError::invalid(format!(
                    "invalid args: the room takes {count} args, got {}",
                    args.len()
                )));
            }
            args_from::<A>(args[..count].to_vec())
        };
        let parse = Arc::new(parse);
        let p = parse.clone();
        let topic_fn = Box::new(
            move |ctx: &Ctx, args: &[Value]| -> Result<Arc<str>, LiveError> {
                checked_topic(topic(ctx, &p(args)?))
            },
        );
        let p = parse.clone();
        let guard_fn = Box::new(
            move |ctx: Ctx, args: &[Value]| -> BoxFuture<Result<(), LiveError>> {
                match (&guard, p(args)) {
                    (_, Err(e)) => Box::pin(async move { Err(e) }),
                    (None, Ok(_)) => Box::pin(async { Ok(()) }),
                    (Some(g), Ok(a)) => g(ctx, a),
                }
            },
        );
        let p = parse.clone();
        let empty = if merge == Merge::Set {
            Value::Null
        } else {
            json!([])
        };
        let init_fn = Box::new(move |ctx: Ctx, args: Vec<Value>| -> BoxFuture<Reply> {
            match (&init, p(&args)) {
                (_, Err(e)) => Box::pin(async move { Err(e) }),
                (None, Ok(_)) => {
                    let empty = empty.clone();
                    Box::pin(async move { to_raw(empty) })
                }
                (Some(init), Ok(a)) => init(ctx, a),
            }
        });
        let mut action_names = BTreeMap::new();
        let mut erased_actions = BTreeMap::new();
        for (n, (f, names)) in actions {
            let p = parse.clone();
            let erased: ErasedAction = Box::new(move |ctx: RoomCtx, mut args: Vec<Value>| {
                let room_args = p(&args)?;
                let rest = args.split_off(count);
                Ok(f(ctx, room_args, rest))
            });
            action_names.insert(n.clone(), names);
            erased_actions.insert(n, erased);
        }
        RoomDef {
            module: module.to_owned(),
            name: name.to_owned(),
            topic_args: count,
            topic_fn,
            guard_fn,
            init_fn,
            actions: erased_actions,
            action_names,
            presence,
            cursors,
            merge,
            on_join,
            on_leave,
            grace,
            arg_names,
            runtime: OnceLock::new(),
        }
    }
}

type ErasedAction =
    Box<dyn Fn(RoomCtx, Vec<Value>) -> Result<BoxFuture<Reply>, LiveError> + Send + Sync>;
type ErasedTopic = Box<dyn Fn(&Ctx, &[Value]) -> Result<Arc<str>, LiveError> + Send + Sync>;
type ErasedGuard = Box<dyn Fn(Ctx, &[Value]) -> BoxFuture<Result<(), LiveError>> + Send + Sync>;

/// Which room path a call is for.
#[derive(Debug, Clone)]
pub(crate) enum RoomPart {
    Data,
    Presence,
    Cursors,
    Action(String),
    Cursor,
}

struct Runtime {
    tracker: Arc<Tracker>,
    cursors: Option<Arc<CursorTable>>,
}

/// A type-erased room with its runtime state.
pub(crate) struct RoomDef {
    pub module: String,
    pub name: String,
    topic_args: usize,
    topic_fn: ErasedTopic,
    guard_fn: ErasedGuard,
    init_fn: Box<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<Reply> + Send + Sync>,
    actions: BTreeMap<String, ErasedAction>,
    action_names: BTreeMap<String, Vec<String>>,
    presence: Option<PresenceFn>,
    cursors: Cursors,
    pub merge: Merge,
    on_join: Option<PresenceHook>,
    on_leave: Option<PresenceHook>,
    grace: Duration,
    arg_names: Vec<String>,
    runtime: OnceLock<Runtime>,
}

impl std::fmt::Debug for RoomDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Room({}/{})", self.module, self.name)
    }
}

impl RoomDef {
    /// The path suffixes this room answers.
    pub fn parts(&self) -> Vec<(String, RoomPart)> {
        let mut parts = vec![("__data".to_owned(), RoomPart::Data)];
        if self.presence.is_some() {
            parts.push(("__presence".into(), RoomPart::Presence));
        }
        if self.cursors.enabled {
            parts.push(("__cursors".into(), RoomPart::Cursors));
            parts.push(("__cursor".into(), RoomPart::Cursor));
        }
        for name in self.actions.keys() {
            parts.push((format!("__action/{name}"), RoomPart::Action(name.clone())));
        }
        parts
    }

    /// Connects the room to the hub and the presence store (at build time).
    pub fn attach(&self, hub: Arc<Hub>, store: Arc<dyn PresenceStore>) {
        let cursors = self
            .cursors
            .enabled
            .then(|| CursorTable::new(hub.clone(), self.cursors.throttle));
        let mut tracker = Tracker::new(hub, store, self.grace);
        tracker.on_join = self.on_join.clone();
        tracker.on_leave = self.on_leave.clone();
        if let Some(c) = &cursors {
            let c = c.clone();
            tracker.left = Some(Arc::new(move |topic, key| c.remove(topic, key)));
        }
        let _ = self.runtime.set(Runtime {
            tracker: Arc::new(tracker),
            cursors,
        });
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.get().expect("room attached at build")
    }

    /// The room's cursor table, if cursors are on.
    pub fn cursor_table(&self) -> Option<&Arc<CursorTable>> {
        self.runtime().cursors.as_ref()
    }

    pub fn topic(&self, ctx: &Ctx, args: &[Value]) -> Result<Arc<str>, LiveError> {
        (self.topic_fn)(ctx, args)
    }

    pub fn presence_topic(&self, topic: &str) -> Arc<str> {
        format!("{topic}:presence").into()
    }

    pub fn cursors_topic(&self, topic: &str) -> Arc<str> {
        format!("{topic}:cursors").into()
    }

    pub fn guard(&self, ctx: Ctx, args: &[Value]) -> BoxFuture<Result<(), LiveError>> {
        (self.guard_fn)(ctx, args)
    }

    pub fn init(&self, ctx: Ctx, args: Vec<Value>) -> BoxFuture<Reply> {
        (self.init_fn)(ctx, args)
    }

    /// Guard, then the action. `Err` if there is no such action.
    pub fn action(
        self: &Arc<Self>,
        name: &str,
        ctx: Ctx,
        topic: Arc<str>,
        args: Vec<Value>,
    ) -> Result<BoxFuture<Reply>, LiveError> {
        if !self.actions.contains_key(name) {
            return Err(LiveError::not_found(format!("no action `{name}`")));
        }
        let this = self.clone();
        let name = name.to_owned();
        Ok(Box::pin(async move {
            this.guard(ctx.clone(), &args)
                .await
                .map_err(|e| crate::app::guard_error(&ctx, e))?;
            let fut = (this.actions[&name])(RoomCtx { ctx, topic }, args)?;
            fut.await
        }))
    }

    /// A data subscription made `ctx`'s identity a member (once per socket).
    pub async fn join(&self, topic: &Arc<str>, ctx: &Ctx) {
        let data = self.presence.as_ref().map(|p| p(ctx));
        let data = data.filter(|d| !d.is_null());
        self.runtime()
            .tracker
            .join(topic, &ctx.conn.identity, data)
            .await;
    }

    /// A socket's data subscription ended.
    pub async fn leave(&self, topic: &Arc<str>, conn: &Conn) {
        self.runtime().tracker.leave(topic, &conn.identity);
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

    pub fn roster(&self, topic: Arc<str>) -> BoxFuture<Reply> {
        let tracker = self.runtime().tracker.clone();
        Box::pin(async move { to_raw(tracker.roster(&topic).await) })
    }

    /// The current cursor positions of room `topic`: this replica's, plus in cluster mode
    /// those other replicas recorded.
    pub fn cursor_snapshot(&self, topic: &str) -> BoxFuture<Reply> {
        let local = self.cursor_table().map_or(json!([]), |c| c.snapshot(topic));
        let remote = self
            .runtime()
            .tracker
            .hub
            .bus()
            .map(|bus| bus.load_cursors(&format!("{topic}:cursors")));
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

    /// Splits `__cursor` args into the room topic and the position object.
    pub fn cursor_args(
        &self,
        ctx: &Ctx,
        mut args: Vec<Value>,
    ) -> Result<(Arc<str>, Map<String, Value>), LiveError> {
        if args.len() != self.topic_args + 1 {
            return Err(LiveError::invalid(format!(
                "invalid args: __cursor takes the {} room args then a position",
                self.topic_args
            )));
        }
        let Some(Value::Object(position)) = args.pop() else {
            return Err(LiveError::invalid(
                "invalid args: the position must be an object",
            ));
        };
        Ok((self.topic(ctx, &args)?, position))
    }

    pub fn cursor_move(&self, topic: &Arc<str>, conn: &Conn, position: Map<String, Value>) {
        if let Some(c) = self.cursor_table() {
            c.set(topic, &conn.identity, position);
        }
    }

    /// The manifest entry.
    pub fn describe(&self) -> Value {
        let mut d = self.merge.describe();
        d["topicArgs"] = self.topic_args.into();
        d["args"] = json!(self.arg_names);
        d["presence"] = self.presence.is_some().into();
        d["cursors"] = self.cursors.enabled.into();
        d["actions"] = self
            .action_names
            .iter()
            .map(|(n, own)| {
                let all: Vec<&String> = self.arg_names.iter().chain(own).collect();
                (n.clone(), json!({ "args": all }))
            })
            .collect::<Map<String, Value>>()
            .into();
        d
    }
}
