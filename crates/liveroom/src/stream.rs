//! Streams: a topic, an initial-data loader and a merge mode (protocol.md section 4).

use crate::app::{args_from, to_raw, BoxFuture, Reply};
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::protocol::StreamReply;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// How the client merges live events into a stream's value.
///
/// ```
/// use liveroom::Merge;
/// let newest_first = Merge::crud("id").prepend().max(100);
/// let chat = Merge::latest(50);
/// # let _ = (newest_first, chat);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// Keyed list: `created` upserts, `updated` replaces, `deleted` removes.
    Crud {
        /// Key field of the items.
        key: String,
        /// New items go first.
        prepend: bool,
        /// Cap on the list length.
        max: Option<usize>,
    },
    /// Every event appends; keeps the last `max`.
    Latest {
        /// How many to keep.
        max: usize,
    },
    /// Every event replaces the value.
    Set,
    /// Presence roster: `join` upserts by `.key`, `leave` removes.
    Presence,
    /// Cursor positions: `update` upserts by `.key`, `remove` removes.
    Cursor,
}

impl Merge {
    /// `crud` keyed by `key`.
    pub fn crud(key: impl Into<String>) -> Self {
        Merge::Crud {
            key: key.into(),
            prepend: false,
            max: None,
        }
    }

    /// `latest`, keeping the last `max` events.
    pub fn latest(max: usize) -> Self {
        Merge::Latest { max }
    }

    /// `set`.
    pub fn set() -> Self {
        Merge::Set
    }

    /// For `crud`: new items go first. No effect on other modes.
    pub fn prepend(mut self) -> Self {
        if let Merge::Crud { prepend, .. } = &mut self {
            *prepend = true;
        }
        self
    }

    /// For `crud` and `latest`: cap the length.
    pub fn max(mut self, n: usize) -> Self {
        match &mut self {
            Merge::Crud { max, .. } => *max = Some(n),
            Merge::Latest { max } => *max = n,
            _ => {}
        }
        self
    }

    /// The wire name of the mode.
    pub fn name(&self) -> &'static str {
        match self {
            Merge::Crud { .. } => "crud",
            Merge::Latest { .. } => "latest",
            Merge::Set => "set",
            Merge::Presence => "presence",
            Merge::Cursor => "cursor",
        }
    }

    /// The options echoed in a stream reply.
    pub(crate) fn reply<'a>(&'a self, topic: &'a str) -> StreamReply<'a> {
        let (key, max, prepend) = match self {
            Merge::Crud { key, prepend, max } => (Some(key.as_str()), *max, *prepend),
            Merge::Latest { max } => (None, Some(*max), false),
            _ => (None, None, false),
        };
        StreamReply {
            topic,
            merge: self.name(),
            key,
            max,
            prepend,
        }
    }

    /// The manifest description of the mode.
    pub(crate) fn describe(&self) -> Value {
        let r = self.reply("");
        let mut v = serde_json::json!({ "merge": r.merge });
        if let Some(k) = r.key {
            v["key"] = k.into();
        }
        if let Some(m) = r.max {
            v["max"] = m.into();
        }
        if r.prepend {
            v["prepend"] = true.into();
        }
        v
    }

    /// Initial value when a stream has no loader.
    fn empty(&self) -> Value {
        match self {
            Merge::Set => Value::Null,
            _ => Value::Array(Vec::new()),
        }
    }
}

type TopicFn<A> = Arc<dyn Fn(&Ctx, &A) -> String + Send + Sync>;
type InitFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<Reply> + Send + Sync>;
type GuardFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<Result<(), LiveError>> + Send + Sync>;

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
    pub(crate) topic: TopicFn<A>,
    pub(crate) init: Option<InitFn<A>>,
    pub(crate) guard: Option<GuardFn<A>>,
    pub(crate) merge: Merge,
    pub(crate) arg_names: Vec<String>,
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
    /// A stream whose topic is computed from the context and the args.
    pub fn with_topic(topic: impl Fn(&Ctx, &A) -> String + Send + Sync + 'static) -> Self {
        Stream {
            topic: Arc::new(topic),
            init: None,
            guard: None,
            merge: Merge::crud("id"),
            arg_names: Vec::new(),
        }
    }

    /// The loader of the initial data. Without one the initial value is `[]` (`null` for `set`).
    pub fn init<F, Fut, T>(mut self, init: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
        T: Serialize,
    {
        self.init = Some(crate::app::erase_init(init));
        self
    }

    /// A guard run before the socket is subscribed; an error denies the subscription.
    pub fn guard<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.guard = Some(Arc::new(move |ctx, args| Box::pin(guard(ctx, args))));
        self
    }

    /// The merge mode (default `crud` keyed by `id`).
    pub fn merge(mut self, merge: Merge) -> Self {
        self.merge = merge;
        self
    }

    /// Names of the args, for the manifest and generated client code.
    pub fn args<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.arg_names = names.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn erase(self) -> StreamDef {
        let Stream {
            topic,
            init,
            guard,
            merge,
            arg_names,
        } = self;
        let empty = merge.empty();
        let prepare: PrepareFn = Arc::new(move |ctx: Ctx, args: Vec<Value>| {
            let (topic, init, guard, empty) =
                (topic.clone(), init.clone(), guard.clone(), empty.clone());
            Box::pin(async move {
                let args: A = args_from(args)?;
                if let Some(guard) = &guard {
                    guard(ctx.clone(), args.clone())
                        .await
                        .map_err(|e| crate::app::guard_error(&ctx, e))?;
                }
                let topic = checked_topic(topic(&ctx, &args))?;
                let load: BoxFuture<Reply> = match init {
                    Some(init) => init(ctx, args),
                    None => Box::pin(async move { to_raw(empty) }),
                };
                Ok(Prepared { topic, load })
            })
        });
        StreamDef {
            prepare,
            merge,
            arg_names,
        }
    }
}

/// A topic produced by app code must follow the same rules as a client's.
pub(crate) fn checked_topic(topic: String) -> Result<Arc<str>, LiveError> {
    match crate::protocol::validate_topic(&topic) {
        Ok(()) => Ok(topic.into()),
        Err(e) => {
            tracing::error!(topic, error = %e, "topic function produced an invalid topic");
            Err(LiveError::internal())
        }
    }
}

/// A stream call after its guard ran and its topic resolved; `load` has not been polled.
pub(crate) struct Prepared {
    pub topic: Arc<str>,
    pub load: BoxFuture<Reply>,
}

pub(crate) type PrepareFn =
    Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<Result<Prepared, LiveError>> + Send + Sync>;

/// A type-erased stream.
pub(crate) struct StreamDef {
    pub prepare: PrepareFn,
    pub merge: Merge,
    pub arg_names: Vec<String>,
}
