//! Rooms: one declaration bundling a data stream, presence, cursors, a guard and actions under
//! a topic computed from the room's args (protocol.md section 5).
//!
//! - [`Room`] (here) is the builder; register it with [`App::room`](crate::App::room). Its data
//!   part is a [`Stream`]: the room's guard and topic are that stream's, and every other part
//!   (presence, cursors, actions) passes the same gate first.
//! - `def` is the erased room with its runtime state, what the session talks to.
//! - `announce` coalesces a room's presence announcements per tick, with its `count`.
//! - `lobby` keeps a declaration's list of open rooms and their counts ([`Room::lobby`]).
//! - [`presence`] is the per-process tracker (refcount + leave grace) over the
//!   [`PresenceStore`](crate::presence_store::PresenceStore).
//! - [`cursors`] holds the per-room cursor tables and their ticker.

pub(crate) mod announce;
pub mod cursors;
pub(crate) mod def;
pub(crate) mod lobby;
pub mod presence;

pub use cursors::Cursors;
pub use presence::PresenceEvent;

use crate::args::{schema_of, Params, SchemaFn};
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{to_raw, CallFn, Reply};
use crate::merge::Merge;
use crate::rate::{RateLimit, Scoped};
use crate::stream::Stream;
use def::{Action, PositionCheck, PresenceFn, RoomDef};
use futures_util::future::BoxFuture;
use presence::PresenceHook;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// What a room's args type must be: deserializable from the leading call args (a struct whose
/// fields, in order, are the room args, or a tuple), with a schema, cheap to clone. Their
/// number is the room's `topicArgs`.
pub trait RoomArgs: DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static {}

impl<T: DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static> RoomArgs for T {}

/// The context of a room's `init` and actions: a [`Ctx`] whose `publish(event, data)` goes to
/// the room.
#[derive(Clone, Debug)]
pub struct RoomCtx<S = ()> {
    ctx: Ctx<S>,
    topic: Arc<str>,
}

impl<S> RoomCtx<S> {
    /// The room's data topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `event` with `data` to the room's data stream (`created`, `updated`,
    /// `deleted` for the default `crud` merge).
    pub fn publish(&self, event: &str, data: &impl Serialize) -> Result<(), LiveError> {
        self.ctx.publish(&self.topic, event, data)
    }

    /// Replaces what others see of the caller in this room (its presence data), announced as a
    /// `join` upsert and kept for late joiners, on every replica. `Ok(false)` when the caller
    /// is not a member here (it never subscribed the room's data, or it left).
    ///
    /// ```no_run
    /// # use liveroom::{Ctx, LiveError, Room};
    /// let room = Room::new(|_: &Ctx, (id,): &(String,)| format!("doc:{id}"))
    ///     .presence(|ctx| serde_json::json!({ "name": ctx.identity(), "status": "here" }))
    ///     .action("away", |ctx, _room, ()| async move {
    ///         let me = serde_json::json!({ "name": ctx.identity(), "status": "away" });
    ///         ctx.set_presence(&me).await
    ///     });
    /// ```
    pub async fn set_presence(&self, data: &impl Serialize) -> Result<bool, LiveError> {
        self.ctx.set_presence(&self.topic, data).await
    }
}

impl<S> Deref for RoomCtx<S> {
    type Target = Ctx<S>;
    fn deref(&self) -> &Ctx<S> {
        &self.ctx
    }
}

/// An action with its args split: room args first, the action's own args after (parsed inside,
/// so their errors name the right argument).
type ActionFn<A, S> =
    Arc<dyn Fn(RoomCtx<S>, A, Vec<Value>) -> BoxFuture<'static, Reply> + Send + Sync>;

/// A typed action: the call, its own args, the schema of its result.
struct TypedAction<A, S> {
    call: ActionFn<A, S>,
    params: Params,
    result: SchemaFn,
}

/// What others see of a member, serialized, before the app's state is known.
type TypedPresence<S> = Arc<dyn Fn(&Ctx<S>) -> Value + Send + Sync>;

/// A room declaration. See the crate docs for the full seed example.
///
/// `A` is the type of the room args (a struct whose fields are the args in order, or a tuple);
/// `S` the app's state ([`App::with_state`](crate::App::with_state)).
///
/// ```no_run
/// use liveroom::{App, Ctx, JsonSchema, LiveError, Room};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Deserialize, JsonSchema)]
/// #[serde(rename_all = "camelCase")]
/// struct Board { board_id: String }
///
/// #[derive(Deserialize, JsonSchema)]
/// struct AddCard { title: String }
///
/// #[derive(Serialize, JsonSchema)]
/// struct Card { id: String, title: String }
///
/// #[derive(Serialize, JsonSchema)]
/// struct Member { name: String }
///
/// let board = Room::new(|_ctx: &Ctx, b: &Board| format!("board:{}", b.board_id))
///     .init(|_ctx, _board| async move { Ok::<_, LiveError>(Vec::<Card>::new()) })
///     .presence(|ctx| Member { name: ctx.identity().to_owned() })
///     .cursors(true)
///     .action("addCard", |ctx, Board { board_id }, AddCard { title }| async move {
///         let card = Card { id: format!("{board_id}:{title}"), title };
///         ctx.publish("created", &card)?;
///         Ok(card)
///     });
/// let app = App::new().room("collab", "board", board);
/// ```
pub struct Room<A: RoomArgs, S = ()> {
    data: Stream<A, S>,
    /// How many leading call args are the room's (`topicArgs`).
    topic_args: usize,
    presence: Option<(TypedPresence<S>, SchemaFn)>,
    cursors: Cursors,
    position: Option<(PositionCheck, SchemaFn)>,
    actions: BTreeMap<String, TypedAction<A, S>>,
    /// Rate limits: one for all actions, and per action.
    rate: Option<Scoped>,
    action_rates: BTreeMap<String, Scoped>,
    on_join: Option<TypedHook<S>>,
    on_leave: Option<TypedHook<S>>,
    grace: Duration,
    listed_limit: usize,
    awareness: Option<(PositionCheck, SchemaFn)>,
    lobby: Option<Option<(TypedMeta<A, S>, SchemaFn)>>,
    lobby_guard: Option<TypedLobbyGuard<S>>,
}

/// Who may read a lobby, before the app's state is known.
type TypedLobbyGuard<S> =
    Arc<dyn Fn(Ctx<S>) -> BoxFuture<'static, Result<(), LiveError>> + Send + Sync>;

/// A lobby's metadata function, before the app's state is known.
type TypedMeta<A, S> = Arc<dyn Fn(Ctx<S>, A) -> BoxFuture<'static, Value> + Send + Sync>;

/// A presence hook, before the app's state is known.
type TypedHook<S> = Arc<dyn Fn(&S, &PresenceEvent) + Send + Sync>;

/// Hands the app's state to a presence hook.
fn erase_hook<S: Clone + Send + Sync + 'static>(
    hook: Option<TypedHook<S>>,
    state: &S,
) -> Option<PresenceHook> {
    let state = state.clone();
    hook.map(|h| Arc::new(move |e: &PresenceEvent| h(&state, e)) as PresenceHook)
}

/// The default leave grace of a room ([`Room::grace`]): 5 s, long enough for a reload.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Whether a cursor position (or awareness state) deserializes into `P`.
fn position_fits<P: DeserializeOwned>(position: &Value) -> bool {
    P::deserialize(position).is_ok()
}

impl<A: RoomArgs, S: Clone + Send + Sync + 'static> Room<A, S> {
    /// A room whose data topic is `topic(ctx, room_args)`. The topic function runs only for
    /// callers the [guard](Room::guard) let in.
    ///
    /// # Panics
    /// If `A` takes a variable number of args (a `Vec`, a `Value`): a room needs a fixed count.
    pub fn new(topic: impl Fn(&Ctx<S>, &A) -> String + Send + Sync + 'static) -> Self {
        let params = Params::of::<A>();
        assert!(
            !params.is_rest(),
            "room args must be a struct or a tuple (their count is the room's topicArgs), not {}",
            std::any::type_name::<A>()
        );
        Room {
            data: Stream::with_topic(topic),
            topic_args: params.names.len(),
            presence: None,
            cursors: false.into(),
            position: None,
            actions: BTreeMap::new(),
            rate: None,
            action_rates: BTreeMap::new(),
            on_join: None,
            on_leave: None,
            grace: DEFAULT_GRACE,
            listed_limit: presence::DEFAULT_LISTED_LIMIT,
            awareness: None,
            lobby: None,
            lobby_guard: None,
        }
    }

    /// Gives the declaration a lobby: the stream `<module>/<room>/__lobby` (no args) of its
    /// rooms that have members, each `{room, args, meta, count, version}` with its member
    /// count across the cluster, kept up to date as members come and go (the first member
    /// opens a room, the last leave closes it). The JS client's `board.lobby()` reads it. Any
    /// connected socket may read it unless [`Room::lobby_guard`] says otherwise.
    ///
    /// ```
    /// # use liveroom::{Ctx, Room};
    /// let hall: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("hall:{id}"))
    ///     .presence(|ctx| ctx.identity().to_owned())
    ///     .lobby();
    /// # let _ = hall;
    /// ```
    pub fn lobby(mut self) -> Self {
        if self.lobby.is_none() {
            self.lobby = Some(None);
        }
        self
    }

    /// Who may read the lobby (see [`Room::lobby`]): `guard(ctx)` runs before the lobby stream
    /// subscribes a socket; an error refuses it (the room's own guard needs room args, which a
    /// lobby read has none of).
    ///
    /// ```
    /// # use liveroom::{Ctx, LiveError, Room};
    /// let hall: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("hall:{id}"))
    ///     .lobby()
    ///     .lobby_guard(|ctx| async move {
    ///         if ctx.is_guest() { Err(LiveError::unauthenticated("sign in")) } else { Ok(()) }
    ///     });
    /// # let _ = hall;
    /// ```
    pub fn lobby_guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self = self.lobby();
        self.lobby_guard = Some(Arc::new(move |ctx| Box::pin(guard(ctx))));
        self
    }

    /// A lobby (see [`Room::lobby`]) whose entries carry `meta(ctx, room_args)`, computed once
    /// each time a room opens, with the context of the member who opened it (a title from the
    /// database, say). Its type is the generated clients' `meta`.
    ///
    /// ```
    /// # use liveroom::{Ctx, Room};
    /// let hall: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("hall:{id}"))
    ///     .presence(|ctx| ctx.identity().to_owned())
    ///     .lobby_meta(|_ctx, (id,)| async move { format!("Hall {id}") });
    /// # let _ = hall;
    /// ```
    pub fn lobby_meta<M, F, Fut>(mut self, meta: F) -> Self
    where
        M: Serialize + JsonSchema,
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = M> + Send + 'static,
    {
        let meta = Arc::new(meta);
        let f: TypedMeta<A, S> = Arc::new(move |ctx, args| {
            let fut = meta(ctx, args);
            Box::pin(async move { serde_json::to_value(fut.await).unwrap_or(Value::Null) })
        });
        self.lobby = Some(Some((f, schema_of::<M>)));
        self
    }

    /// Loads the data stream's initial value. It gets the room's context (whose `publish` goes
    /// to the room) and the room args; its result type is the data type generated clients see.
    pub fn init<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(RoomCtx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize + JsonSchema,
    {
        self.data = self
            .data
            .init_with_topic(move |ctx, topic, args| init(RoomCtx { ctx, topic }, args));
        self
    }

    /// Turns presence on: `presence(ctx)` is what others see of a member (its type is the
    /// presence data type of generated clients). Serializing to `null` (`None`) counts the
    /// member without listing it.
    pub fn presence<P, F>(mut self, presence: F) -> Self
    where
        P: Serialize + JsonSchema,
        F: Fn(&Ctx<S>) -> P + Send + Sync + 'static,
    {
        let f: TypedPresence<S> = Arc::new(move |ctx| {
            serde_json::to_value(presence(ctx)).unwrap_or_else(|e| {
                tracing::error!(error = %e, "presence data does not serialize");
                Value::Null
            })
        });
        self.presence = Some((f, schema_of::<P>));
        self
    }

    /// Lists at most `limit` members (default 1,000): further ones are counted, not listed, so
    /// a room of 10,000 costs each observer a roster of `limit` plus `count` events. They wait
    /// in join order and take the place of listed members that leave.
    ///
    /// ```
    /// # use liveroom::{Ctx, Room};
    /// let hall: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("hall:{id}"))
    ///     .presence(|ctx| ctx.identity().to_owned())
    ///     .presence_limit(50);
    /// # let _ = hall;
    /// ```
    pub fn presence_limit(mut self, limit: usize) -> Self {
        self.listed_limit = limit;
        self
    }

    /// Lets members share awareness state of type `U` (who is typing, which card is being
    /// edited): the JS client's `presence.update(...roomArgs, state)` sends it, fire-and-forget.
    /// Others see it merged into the member's presence data (the presence function's fields
    /// win, so a client cannot rename itself), as a `join` upsert, at most one per member per
    /// 50 ms tick, latest wins. A socket's state goes when it leaves; `null` clears it. The
    /// merged data is capped at [`Limits::max_presence_bytes`](crate::Limits::max_presence_bytes).
    ///
    /// ```
    /// # use liveroom::{Ctx, JsonSchema, Room};
    /// #[derive(serde::Deserialize, JsonSchema)]
    /// struct Editing { editing: Option<String> }
    /// let board: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("board:{id}"))
    ///     .presence(|ctx| serde_json::json!({ "name": ctx.identity() }))
    ///     .awareness::<Editing>();
    /// # let _ = board;
    /// ```
    pub fn awareness<U: DeserializeOwned + JsonSchema>(mut self) -> Self {
        self.awareness = Some((position_fits::<U>, schema_of::<U>));
        self
    }

    /// Turns cursors on (`true`) or sets their throttle ([`Cursors::throttle`]).
    pub fn cursors(mut self, cursors: impl Into<Cursors>) -> Self {
        self.cursors = cursors.into();
        self
    }

    /// Types the cursor positions: a move whose position does not deserialize into `P` is
    /// dropped (and counted as a bad input), and generated clients type positions as `P`.
    /// Without it a position is any object (`{x, y, ...}` in the JS client's types).
    ///
    /// ```
    /// use liveroom::{Ctx, JsonSchema, Room};
    /// #[derive(serde::Deserialize, JsonSchema)]
    /// struct Point { x: f64, y: f64 }
    /// let room: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("doc:{id}"))
    ///     .cursors(true)
    ///     .cursor_position::<Point>();
    /// # let _ = room;
    /// ```
    pub fn cursor_position<P: DeserializeOwned + JsonSchema>(mut self) -> Self {
        self.position = Some((position_fits::<P>, schema_of::<P>));
        self
    }

    /// Runs first on every room subscription (data, presence, cursors) and every action,
    /// before the topic function and anything else. An error denies: the caller is not
    /// subscribed and never appears in any roster.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.data = self.data.guard(guard);
        self
    }

    /// Adds an action `name` (`[A-Za-z0-9_]+`): it receives the room's context, the room args,
    /// then its own args `B` (a struct whose fields are the args in order, named in generated
    /// clients, or a tuple), typed. A wrong arg is answered `VALIDATION` naming it.
    ///
    /// # Panics
    /// If `name` is not a valid action name or was added before.
    pub fn action<B, R, F, Fut>(mut self, name: &str, action: F) -> Self
    where
        B: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema,
        F: Fn(RoomCtx<S>, A, B) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
    {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "invalid action name `{name}`"
        );
        let params = Params::of::<B>();
        let (own, offset) = (params.clone(), self.topic_args);
        let action = Arc::new(action);
        let call: ActionFn<A, S> = Arc::new(move |ctx, room_args, rest| {
            let parsed = own.parse::<B>(rest, offset);
            let action = action.clone();
            Box::pin(async move { to_raw(action(ctx, room_args, parsed?).await?) })
        });
        let typed = TypedAction {
            call,
            params,
            result: schema_of::<R>,
        };
        assert!(
            self.actions.insert(name.to_owned(), typed).is_none(),
            "action `{name}` added twice"
        );
        self
    }

    /// Limits the calls of this room's actions per identity, all actions together, instead of
    /// the server-wide [`Limits::calls`](crate::Limits::calls). Beyond it an action is answered
    /// `RATE_LIMITED` with `retryAfter`, without running.
    ///
    /// ```
    /// # use liveroom::{Ctx, RateLimit, Room};
    /// let room = Room::new(|_: &Ctx, (id,): &(String,)| format!("board:{id}"))
    ///     .rate_limit(RateLimit::per_second(10).burst(30));
    /// ```
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate = Some(Scoped::new(limit));
        self
    }

    /// Limits one action per identity (overrides [`Room::rate_limit`] for it).
    ///
    /// # Panics
    /// If no action `name` was added before.
    pub fn action_rate_limit(mut self, name: &str, limit: RateLimit) -> Self {
        assert!(
            self.actions.contains_key(name),
            "action_rate_limit(\"{name}\", ..): no action `{name}` was added before"
        );
        self.action_rates
            .insert(name.to_owned(), Scoped::new(limit));
        self
    }

    /// How many of the room's recent data events are kept for members that reconnect (default:
    /// the server-wide `--replay-*` settings; see [`Stream::replay`]).
    pub fn replay(mut self, replay: crate::Replay) -> Self {
        self.data = self.data.replay(replay);
        self
    }

    /// The data stream's merge mode (default `crud` keyed by `id`).
    pub fn merge(mut self, merge: Merge) -> Self {
        self.data = self.data.merge(merge);
        self
    }

    /// Shorthand for `merge(Merge::crud(key))`.
    pub fn key(self, key: &str) -> Self {
        self.merge(Merge::crud(key))
    }

    /// Called once when an identity joins the room (first socket anywhere), with the app's
    /// state.
    ///
    /// ```
    /// # use liveroom::{Ctx, Room};
    /// let room: Room<(String,)> = Room::new(|_: &Ctx, (id,): &(String,)| format!("doc:{id}"))
    ///     .on_join(|_state, e| println!("{} joined {}", e.key, e.topic));
    /// # let _ = room;
    /// ```
    pub fn on_join(mut self, hook: impl Fn(&S, &PresenceEvent) + Send + Sync + 'static) -> Self {
        self.on_join = Some(Arc::new(hook));
        self
    }

    /// Called once per actual leave (after the grace, last socket anywhere), with the app's
    /// state.
    pub fn on_leave(mut self, hook: impl Fn(&S, &PresenceEvent) + Send + Sync + 'static) -> Self {
        self.on_leave = Some(Arc::new(hook));
        self
    }

    /// How long a member stays after its last socket left (default 5 s), so reloads and
    /// reconnects do not flicker.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub(crate) fn erase(self, module: &str, name: &str, state: S) -> RoomDef {
        let (data, gate) = self.data.erase_sharing_gate(state.clone());
        // The data stream parses the room args: its params are the room's.
        let room_params = data.params.clone();
        let count = self.topic_args;
        let actions = self
            .actions
            .into_iter()
            .map(|(action_name, typed)| {
                let (gate, room, state) = (gate.clone(), room_params.clone(), state.clone());
                let f = typed.call;
                let call: CallFn = Arc::new(move |ctx: Ctx, mut args: Vec<Value>| {
                    let (gate, f) = (gate.clone(), f.clone());
                    let own = def::split_room_args(&mut args, count);
                    let room_args = room.parse::<A>(args, 0).map(|r| (r, own));
                    let ctx = ctx.with_state(state.clone());
                    Box::pin(async move {
                        let (room_args, own) = room_args?;
                        let topic = gate.pass(&ctx, &room_args).await?;
                        f(RoomCtx { ctx, topic }, room_args, own).await
                    })
                });
                let rate = self.action_rates.get(&action_name).copied().or(self.rate);
                let action = Action {
                    call,
                    params: typed.params,
                    result: typed.result,
                    rate,
                };
                (action_name, action)
            })
            .collect();
        let presence = self.presence.map(|(f, schema)| {
            let state = state.clone();
            let erased: PresenceFn =
                Arc::new(move |ctx: &Ctx| f(&ctx.clone().with_state(state.clone())));
            (erased, schema)
        });
        let lobby_guard = self.lobby_guard.map(|g| {
            let state = state.clone();
            let erased: def::LobbyGuard =
                Arc::new(move |ctx: Ctx| g(ctx.with_state(state.clone())));
            erased
        });
        let lobby = self.lobby.map(|meta| def::LobbyParts {
            guard: lobby_guard,
            meta: meta.map(|(f, schema)| {
                let (state, room) = (state.clone(), room_params.clone());
                let erased: lobby::MetaFn = Arc::new(move |ctx: Ctx, args: Vec<Value>| {
                    let ctx = ctx.with_state(state.clone());
                    match room.parse::<A>(args, 0) {
                        Ok(args) => f(ctx, args),
                        Err(_) => Box::pin(async { Value::Null }),
                    }
                });
                (erased, schema)
            }),
        });
        RoomDef::new(def::Parts {
            module: module.to_owned(),
            name: name.to_owned(),
            data,
            actions,
            presence,
            cursors: self.cursors,
            position: self.position,
            on_join: erase_hook(self.on_join, &state),
            on_leave: erase_hook(self.on_leave, &state),
            grace: self.grace,
            listed_limit: self.listed_limit,
            awareness: self.awareness,
            lobby,
        })
    }
}
