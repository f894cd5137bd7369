//! Rooms: one declaration bundling a data stream, presence, cursors, a guard and actions under
//! a topic computed from the room's args (protocol.md section 5).
//!
//! - [`Room`] (here) is the builder; register it with [`App::room`](crate::App::room). Its data
//!   part is a [`Stream`]: the room's guard and topic are that stream's, and every other part
//!   (presence, cursors, actions) passes the same gate first.
//! - `def` is the erased room with its runtime state, what the session talks to.
//! - [`presence`] is the per-process tracker (refcount + leave grace) over the
//!   [`PresenceStore`](crate::presence_store::PresenceStore).
//! - [`cursors`] holds the per-room cursor tables and their ticker.

pub mod cursors;
pub(crate) mod def;
pub mod presence;

pub use cursors::Cursors;
pub use presence::PresenceEvent;

use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{args_from, to_raw, CallFn, Reply};
use crate::merge::Merge;
use crate::rate::{RateLimit, Scoped};
use crate::stream::Stream;
use def::{Action, PresenceFn, RoomDef};
use futures_util::future::BoxFuture;
use presence::PresenceHook;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
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

/// An action with its args split: room args first, the action's own args after.
type ActionFn<A> = Arc<dyn Fn(RoomCtx, A, Vec<Value>) -> BoxFuture<'static, Reply> + Send + Sync>;

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
    data: Stream<A>,
    presence: Option<PresenceFn>,
    cursors: Cursors,
    actions: BTreeMap<String, (ActionFn<A>, Vec<String>)>,
    /// Rate limits: one for all actions, and per action.
    rate: Option<Scoped>,
    action_rates: BTreeMap<String, Scoped>,
    on_join: Option<PresenceHook>,
    on_leave: Option<PresenceHook>,
    grace: Duration,
}

/// The default leave grace of a room ([`Room::grace`]): 5 s, long enough for a reload.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

impl<A: RoomArgs> Room<A> {
    /// A room whose data topic is `topic(ctx, room_args)`. The topic function runs only for
    /// callers the [guard](Room::guard) let in.
    pub fn new(topic: impl Fn(&Ctx, &A) -> String + Send + Sync + 'static) -> Self {
        Room {
            data: Stream::with_topic(topic),
            presence: None,
            cursors: false.into(),
            actions: BTreeMap::new(),
            rate: None,
            action_rates: BTreeMap::new(),
            on_join: None,
            on_leave: None,
            grace: DEFAULT_GRACE,
        }
    }

    /// Loads the data stream's initial value.
    pub fn init<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize,
    {
        self.data = self.data.init(init);
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

    /// Runs first on every room subscription (data, presence, cursors) and every action,
    /// before the topic function and anything else. An error denies: the caller is not
    /// subscribed and never appears in any roster.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.data = self.data.guard(guard);
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
    ///
    /// # Panics
    /// If no action `name` was added before.
    pub fn action_args<S: Into<String>>(
        mut self,
        name: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        let Some((_, n)) = self.actions.get_mut(name) else {
            panic!("action_args(\"{name}\", ..): no action `{name}` was added before");
        };
        *n = names.into_iter().map(Into::into).collect();
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

    /// Names of the room args, for the manifest and generated clients.
    pub fn args<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.data = self.data.args(names);
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
        let (data, gate) = self.data.erase_sharing_gate();
        let count = A::COUNT;
        let actions = self
            .actions
            .into_iter()
            .map(|(action_name, (f, arg_names))| {
                let gate = gate.clone();
                let call: CallFn = Arc::new(move |ctx: Ctx, mut args: Vec<Value>| {
                    let (gate, f) = (gate.clone(), f.clone());
                    Box::pin(async move {
                        let own = def::split_room_args(&mut args, count)?;
                        let room_args: A = args_from(args)?;
                        let topic = gate.pass(&ctx, &room_args).await?;
                        f(RoomCtx { ctx, topic }, room_args, own).await
                    })
                });
                let rate = self.action_rates.get(&action_name).copied().or(self.rate);
                (
                    action_name,
                    Action {
                        call,
                        arg_names,
                        rate,
                    },
                )
            })
            .collect();
        RoomDef::new(def::Parts {
            module: module.to_owned(),
            name: name.to_owned(),
            topic_args: count,
            data,
            actions,
            presence: self.presence,
            cursors: self.cursors,
            on_join: self.on_join,
            on_leave: self.on_leave,
            grace: self.grace,
        })
    }
}
