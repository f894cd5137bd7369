//! Streams: a topic, an initial-data loader and a merge mode (protocol.md section 4).

use crate::args::{schema_of, Params, SchemaFn};
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{to_raw, Gate, InitFn, Reply};
use crate::merge::Merge;
use crate::replay::Replay;
use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// A stream declaration: where its events are published (the topic), what a new subscriber
/// gets first (the loader), and how the client merges events (the [`Merge`] mode).
///
/// `A` is the type of the stream's args, deserialized from the call's positional `args`: a
/// struct (its fields, in order, named in the manifest) or a tuple. `S` is the app's state
/// ([`App::with_state`](crate::App::with_state)). The loader's result type is the stream's data
/// type in the manifest and in generated TypeScript.
///
/// ```no_run
/// use liveroom::{App, Ctx, JsonSchema, LiveError, Merge, Stream};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, JsonSchema)]
/// struct Message { id: u64, text: String }
///
/// /// The args of `chat/room`: `["general"]`.
/// #[derive(Clone, Deserialize, JsonSchema)]
/// struct ChatRoom { room: String }
///
/// let app = App::new()
///     // A static topic: every subscriber shares "chat".
///     .stream("chat/messages", Stream::new("chat")
///         .init(|_ctx: Ctx, ()| async { Ok(vec![Message { id: 1, text: "hi".into() }]) })
///         .merge(Merge::crud("id").max(100)))
///     // A topic computed from the args: `["general"]` -> "room:general".
///     .stream("chat/room", Stream::with_topic(|_ctx, a: &ChatRoom| format!("room:{}", a.room))
///         .init(|_ctx, ChatRoom { room }| async move { Ok::<_, LiveError>(vec![room]) })
///         .merge(Merge::latest(50)));
/// ```
pub struct Stream<A = (), S = ()> {
    gate: Gate<A, S>,
    init: Option<InitFn<A, S>>,
    /// The schema of the initial data (what the store holds).
    data: SchemaFn,
    merge: Merge,
    replay: Option<Replay>,
}

impl<S: Clone + Send + Sync + 'static> Stream<(), S> {
    /// A stream with a fixed topic and no args.
    pub fn new(topic: impl Into<String>) -> Self {
        let topic: String = topic.into();
        Stream::with_topic(move |_, _: &()| topic.clone())
    }
}

impl<A, S> Stream<A, S>
where
    A: DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// A stream whose topic is computed from the context and the args (after the guard).
    ///
    /// The args type names the args in the manifest and generated clients: a struct's fields
    /// (positional on the wire, in field order), or a tuple's positions.
    pub fn with_topic(topic: impl Fn(&Ctx<S>, &A) -> String + Send + Sync + 'static) -> Self {
        Stream {
            gate: Gate::new(topic),
            init: None,
            data: schema_of::<Vec<Value>>,
            merge: Merge::crud("id"),
            replay: None,
        }
    }

    /// The loader of the initial data. Without one the initial value is `[]` (`null` for `set`).
    pub fn init<F, Fut, T>(self, init: F) -> Self
    where
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize + JsonSchema,
    {
        self.init_with_topic(move |ctx, _topic, args| init(ctx, args))
    }

    /// [`Stream::init`] for loaders that also need the resolved topic (a room's `init`).
    pub(crate) fn init_with_topic<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(Ctx<S>, Arc<str>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize + JsonSchema,
    {
        self.init = Some(Arc::new(move |ctx, topic, args| {
            let fut = init(ctx, topic, args);
            Box::pin(async move { to_raw(fut.await?) })
        }));
        self.data = schema_of::<T>;
        self
    }

    /// A guard run before anything else (the topic function included); an error denies the
    /// subscription.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.gate.set_guard(guard);
        self
    }

    /// The merge mode (default `crud` keyed by `id`).
    pub fn merge(mut self, merge: Merge) -> Self {
        self.merge = merge;
        self
    }

    /// How many of the topic's recent events are kept for clients that reconnect (default: the
    /// server-wide `--replay-*` settings). [`Replay::off`] makes every reconnect reload.
    ///
    /// ```
    /// use liveroom::{Replay, Stream};
    /// let feed: Stream = Stream::new("feed").replay(Replay::events(2_000));
    /// # let _ = feed;
    /// ```
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    pub(crate) fn erase(self, state: S) -> StreamDef {
        self.erase_sharing_gate(state).0
    }

    /// Erases the stream, also handing out its gate (a room's actions pass the same guard and
    /// topic as its data stream).
    pub(crate) fn erase_sharing_gate(self, state: S) -> (StreamDef, Arc<Gate<A, S>>) {
        let Stream {
            gate,
            init,
            data,
            merge,
            replay,
        } = self;
        let gate = Arc::new(gate);
        let empty = merge.empty();
        let shared = gate.clone();
        let params = Params::of::<A>();
        let p = params.clone();
        let prepare: PrepareFn = Arc::new(move |ctx: Ctx, args: Vec<Value>| {
            let (gate, init, empty) = (shared.clone(), init.clone(), empty.clone());
            let parsed = p.parse::<A>(args, 0);
            let ctx = ctx.with_state(state.clone());
            Box::pin(async move {
                let args = parsed?;
                let topic = gate.pass(&ctx, &args).await?;
                let load: Load = match init {
                    Some(init) => {
                        let t = topic.clone();
                        Box::new(move || init(ctx, t, args))
                    }
                    None => Box::new(move || Box::pin(async move { to_raw(empty) })),
                };
                Ok(Prepared { topic, load })
            })
        });
        let def = StreamDef {
            prepare,
            merge,
            params,
            data,
            replay,
        };
        (def, gate)
    }
}

/// Starts the initial load (nothing of the loader runs before it is called).
pub(crate) type Load = Box<dyn FnOnce() -> BoxFuture<'static, Reply> + Send>;

/// A stream call whose guard passed and whose topic is resolved; its loader has not run.
pub(crate) struct Prepared {
    pub topic: Arc<str>,
    load: Load,
}

impl Prepared {
    /// The loader, not started yet (a replay never starts it).
    pub fn into_load(self) -> Load {
        self.load
    }
}

type PrepareFn =
    Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<'static, Result<Prepared, LiveError>> + Send + Sync>;

/// A type-erased stream.
pub(crate) struct StreamDef {
    prepare: PrepareFn,
    pub merge: Merge,
    pub params: Params,
    /// The schema of the initial data.
    pub data: SchemaFn,
    /// Its own replay policy, if not the server's.
    pub replay: Option<Replay>,
}

impl StreamDef {
    /// Parses the args, runs the guard, then the topic function.
    pub fn prepare(
        &self,
        ctx: Ctx,
        args: Vec<Value>,
    ) -> BoxFuture<'static, Result<Prepared, LiveError>> {
        (self.prepare)(ctx, args)
    }
}
