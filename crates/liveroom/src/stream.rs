//! Streams: a topic, an initial-data loader and a merge mode (protocol.md section 4).

use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{args_from, erase_init, to_raw, Gate, InitFn, Reply};
use crate::merge::Merge;
use crate::replay::Replay;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// A stream declaration: where its events are published (the topic), what a new subscriber
/// gets first (the loader), and how the client merges events (the [`Merge`] mode).
///
/// `A` is the type of the stream's args, deserialized from the call's `args` array (a tuple
/// for positional args).
///
/// ```no_run
/// use liveroom::{App, Ctx, LiveError, Merge, Stream};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Message { id: u64, text: String }
///
/// let app = App::new()
///     // A static topic: every subscriber shares "chat".
///     .stream("chat/messages", Stream::new("chat")
///         .init(|_ctx: Ctx, ()| async { Ok(vec![Message { id: 1, text: "hi".into() }]) })
///         .merge(Merge::crud("id").max(100)))
///     // A topic computed from the args: `["general"]` -> "room:general".
///     .stream("chat/room", Stream::with_topic(|_ctx, (room,): &(String,)| format!("room:{room}"))
///         .init(|_ctx, (room,): (String,)| async move { Ok::<_, LiveError>(vec![room]) })
///         .merge(Merge::latest(50)));
/// ```
pub struct Stream<A = ()> {
    gate: Gate<A>,
    init: Option<InitFn<A>>,
    merge: Merge,
    arg_names: Vec<String>,
    replay: Option<Replay>,
}

impl Stream<()> {
    /// A stream with a fixed topic and no args.
    pub fn new(topic: impl Into<String>) -> Self {
        let topic: String = topic.into();
        Stream::with_topic(move |_, _: &()| topic.clone())
    }
}

impl<A> Stream<A>
where
    A: DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A stream whose topic is computed from the context and the args (after the guard).
    pub fn with_topic(topic: impl Fn(&Ctx, &A) -> String + Send + Sync + 'static) -> Self {
        Stream {
            gate: Gate::new(topic),
            init: None,
            merge: Merge::crud("id"),
            arg_names: Vec::new(),
            replay: None,
        }
    }

    /// The loader of the initial data. Without one the initial value is `[]` (`null` for `set`).
    pub fn init<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize,
    {
        self.init = Some(erase_init(init));
        self
    }

    /// A guard run before anything else (the topic function included); an error denies the
    /// subscription.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
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
    /// let feed = Stream::new("feed").replay(Replay::events(2_000));
    /// # let _ = feed;
    /// ```
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Names of the args, for the manifest and generated client code.
    pub fn args<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.arg_names = names.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn erase(self) -> StreamDef {
        self.erase_sharing_gate().0
    }

    /// Erases the stream, also handing out its gate (a room's actions pass the same guard and
    /// topic as its data stream).
    pub(crate) fn erase_sharing_gate(self) -> (StreamDef, Arc<Gate<A>>) {
        let Stream {
            gate,
            init,
            merge,
            arg_names,
            replay,
        } = self;
        let gate = Arc::new(gate);
        let empty = merge.empty();
        let shared = gate.clone();
        let prepare: PrepareFn = Arc::new(move |ctx: Ctx, args: Vec<Value>| {
            let (gate, init, empty) = (shared.clone(), init.clone(), empty.clone());
            Box::pin(async move {
                let args: A = args_from(args)?;
                let topic = gate.pass(&ctx, &args).await?;
                let load: Load = match init {
                    Some(init) => Box::new(move || init(ctx, args)),
                    None => Box::new(move || Box::pin(async move { to_raw(empty) })),
                };
                Ok(Prepared { topic, load })
            })
        });
        let def = StreamDef {
            prepare,
            merge,
            arg_names,
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
    pub arg_names: Vec<String>,
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
