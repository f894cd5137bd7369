//! [`App`], the registry builder, and [`Live`], the built registry that serves connections.
//!
//! The registry maps paths to what they resolve to (`Entry`): an RPC, a stream, one of a
//! room's streams, or a room action. Layers above extend [`Live`] where they need to: the
//! manifest (`manifest.rs`) and the connection hooks (`session`).

use crate::args::{Params, SchemaFn};
use crate::auth::{AuthFn, Reject, UpgradeRequest};
use crate::conn::Limits;
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::handler::{erase_call, CallFn};
use crate::hub::Hub;
use crate::presence_store::{MemoryPresence, PresenceStore};
use crate::rate::{Buckets, RateLimit, Scoped};
use crate::replay::StreamCalls;
use crate::room::def::{RoomDef, RoomPart};
use crate::room::{Room, RoomArgs};
use crate::stream::{Stream, StreamDef};
use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

type BuildHook = Box<dyn FnOnce(&Live) + Send>;
type ShutdownHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;
type SubscribeFilter = Arc<dyn Fn(&Ctx, &str) -> bool + Send + Sync>;

pub(crate) struct RpcDef {
    pub call: CallFn,
    pub params: Params,
    /// The schema of its result.
    pub result: SchemaFn,
    pub rate: Option<Scoped>,
    /// Runs at once instead of after the connection's earlier RPCs ([`App::concurrent`]).
    pub concurrent: bool,
}

/// What a path resolves to.
pub(crate) enum Entry {
    Rpc(RpcDef),
    Stream(StreamDef),
    /// One of a room's streams, or its `__cursor`.
    Room(Arc<RoomDef>, RoomPart),
    /// A room action: a call whose guard and topic are its room's, and its rate limit if not
    /// the default.
    Action {
        call: CallFn,
        rate: Option<Scoped>,
        room: Arc<RoomDef>,
    },
}

impl Entry {
    /// The rate limit calls to this entry draw from: an override, or the default scope
    /// (`None`).
    pub(crate) fn rate(&self) -> Option<Scoped> {
        match self {
            Entry::Rpc(def) => def.rate,
            Entry::Action { rate, .. } => *rate,
            Entry::Stream(_) | Entry::Room(..) => None,
        }
    }
}

/// The registry builder: RPCs, streams and rooms at paths, plus the upgrade hook.
///
/// Build it once at startup, then serve it with [`Server`](crate::Server), or drive it from
/// your own WebSocket server through [`Live::hooks`]. `S` is the shared state every handler
/// gets through [`Ctx::state`] ([`App::with_state`]; `()` for [`App::new`]).
///
/// ```no_run
/// use liveroom::{App, Ctx, JsonSchema, LiveError, Server};
/// use serde::Deserialize;
///
/// /// The args of `math/add`, in order: `[2, 3]`.
/// #[derive(Deserialize, JsonSchema)]
/// struct Add { a: i64, b: i64 }
///
/// # async fn run() -> std::io::Result<()> {
/// let app = App::new()
///     .rpc("math/add", |_ctx: Ctx, Add { a, b }| async move { Ok::<_, LiveError>(a + b) });
/// Server::new(app).bind("127.0.0.1:3000").run().await
/// # }
/// ```
pub struct App<S = ()> {
    state: S,
    entries: HashMap<String, Entry>,
    rooms: Vec<Arc<RoomDef>>,
    auth: Option<AuthFn>,
    allow_subscribe: Option<SubscribeFilter>,
    presence: Option<Arc<dyn PresenceStore>>,
    limits: Limits,
    on_build: Vec<BuildHook>,
    on_shutdown: Vec<ShutdownHook>,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// An empty registry without shared state.
    pub fn new() -> Self {
        App::with_state(())
    }
}

impl<S: Clone + Send + Sync + 'static> App<S> {
    /// An empty registry whose handlers, loaders, guards and topic functions all get `state`
    /// through [`Ctx::state`] (a database pool, a client, your own `Arc`): declared once, no
    /// clones captured by each closure.
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError};
    /// use std::sync::Arc;
    ///
    /// struct Db { name: String }
    ///
    /// let app = App::with_state(Arc::new(Db { name: "main".into() }))
    ///     .rpc("db/name", |ctx: Ctx<Arc<Db>>, ()| async move {
    ///         Ok::<_, LiveError>(ctx.state().name.clone())
    ///     });
    /// # let _ = app;
    /// ```
    pub fn with_state(state: S) -> Self {
        App {
            state,
            entries: HashMap::new(),
            rooms: Vec::new(),
            auth: None,
            allow_subscribe: None,
            presence: None,
            limits: Limits::default(),
            on_build: Vec::new(),
            on_shutdown: Vec::new(),
        }
    }

    fn insert(&mut self, path: String, entry: Entry) {
        assert!(
            crate::protocol::valid_path(&path),
            "invalid path `{path}`: segments of [A-Za-z0-9_-] separated by `/`, at least two"
        );
        assert!(
            self.entries.insert(path.clone(), entry).is_none(),
            "path `{path}` registered twice"
        );
    }

    /// Registers an RPC at `path` (e.g. `"chat/send"`). The call's positional `args` are
    /// deserialized into `A`: a struct whose fields, in order, are the args (and name them in
    /// the manifest and generated clients), or a tuple. A wrong arg is answered `VALIDATION`
    /// with an issue whose path names it, without calling the handler. `R`'s schema is the
    /// result type of generated clients.
    ///
    /// # Panics
    /// If `path` is not a valid RPC path or is already registered.
    pub fn rpc<A, R, F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema,
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
    {
        let erased = erase_call(self.state.clone(), handler);
        let rpc = RpcDef {
            call: erased.call,
            params: erased.params,
            result: erased.result,
            rate: None,
            concurrent: false,
        };
        self.insert(path.to_owned(), Entry::Rpc(rpc));
        self
    }

    /// Limits calls of the RPC at `path` per identity, with a bucket of its own, instead of
    /// the server-wide [`Limits::calls`]. Beyond it a call is answered `RATE_LIMITED` with
    /// `retryAfter`, without running. (Room actions: [`Room::rate_limit`].)
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError, RateLimit};
    /// App::new()
    ///     .rpc("mail/send", |_: Ctx, (to,): (String,)| async move { Ok::<_, LiveError>(to) })
    ///     .rate_limit("mail/send", RateLimit::per_second(1).burst(5));
    /// ```
    ///
    /// # Panics
    /// If no RPC is registered at `path`.
    pub fn rate_limit(mut self, path: &str, limit: RateLimit) -> Self {
        match self.entries.get_mut(path) {
            Some(Entry::Rpc(def)) => def.rate = Some(Scoped::new(limit)),
            _ => panic!("rate_limit(\"{path}\", ..): no RPC at `{path}`"),
        }
        self
    }

    /// Lets calls of the RPC at `path` run as soon as they arrive, beside the connection's
    /// other calls. By default a connection's RPCs run one after another, in the order they were
    /// sent (docs/protocol.md, "Order"); a read-only query that may be slow (a search, a report)
    /// should not hold up the calls behind it.
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError};
    /// App::new()
    ///     .rpc("cards/search", |_: Ctx, (q,): (String,)| async move { Ok::<_, LiveError>(vec![q]) })
    ///     .concurrent("cards/search");
    /// ```
    ///
    /// # Panics
    /// If no RPC is registered at `path`.
    pub fn concurrent(mut self, path: &str) -> Self {
        match self.entries.get_mut(path) {
            Some(Entry::Rpc(def)) => def.concurrent = true,
            _ => panic!("concurrent(\"{path}\"): no RPC at `{path}`"),
        }
        self
    }

    /// Registers a [`Stream`] at `path`.
    ///
    /// # Panics
    /// If `path` is not a valid RPC path or is already registered.
    pub fn stream<A>(mut self, path: &str, stream: Stream<A, S>) -> Self
    where
        A: DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static,
    {
        let def = stream.erase(self.state.clone());
        self.insert(path.to_owned(), Entry::Stream(def));
        self
    }

    /// Registers a [`Room`] named `name` in `module`: its paths are
    /// `<module>/<name>/__data`, `__presence`, `__cursors`, `__action/<action>` and `__cursor`.
    ///
    /// # Panics
    /// If the paths are invalid or already registered.
    pub fn room<A: RoomArgs>(mut self, module: &str, name: &str, room: Room<A, S>) -> Self {
        let def = Arc::new(room.erase(module, name, self.state.clone()));
        for (suffix, part) in def.parts() {
            self.insert(
                format!("{module}/{name}/{suffix}"),
                Entry::Room(def.clone(), part),
            );
        }
        for (action, a) in def.actions() {
            self.insert(
                format!("{module}/{name}/__action/{action}"),
                Entry::Action {
                    call: a.call.clone(),
                    rate: a.rate,
                    room: def.clone(),
                },
            );
        }
        self.rooms.push(def);
        self
    }

    /// The upgrade hook: sees headers, cookies, query and remote address, and returns the user
    /// (`Ok(Some(json))`), a guest (`Ok(None)`), or a [`Reject`] (the socket is accepted and
    /// closed at once with 4401 or 4403).
    ///
    /// ```no_run
    /// use liveroom::{App, Reject, UpgradeRequest};
    /// use serde_json::json;
    ///
    /// App::new().authenticate(|req: UpgradeRequest| async move {
    ///     match req.cookie("session") {
    ///         Some(token) if token.starts_with("u:") => Ok(Some(json!({ "id": &token[2..] }))),
    ///         Some(_) => Err(Reject::Unauthenticated),
    ///         None => Ok(None),
    ///     }
    /// });
    /// ```
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, Reject>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Lets clients subscribe with a wire `subscribe` frame to topics no stream gave them, when
    /// `filter` returns `true`. By default a wire subscribe only (re)subscribes topics the
    /// socket was given by a stream call, so guards cannot be bypassed.
    pub fn allow_subscribe(
        mut self,
        filter: impl Fn(&Ctx<S>, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let state = self.state.clone();
        self.allow_subscribe = Some(Arc::new(move |ctx: &Ctx, topic: &str| {
            filter(&ctx.clone().with_state(state.clone()), topic)
        }));
        self
    }

    /// Replaces the in-memory presence store (the cluster module installs the Redis one).
    pub fn presence_store(mut self, store: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(store);
        self
    }

    /// Runs `hook` with the built registry (e.g. to start background tasks that publish).
    pub fn on_build(mut self, hook: impl FnOnce(&Live) + Send + 'static) -> Self {
        self.on_build.push(Box::new(hook));
        self
    }

    /// Runs `hook` at graceful shutdown, after presence was released.
    pub fn on_shutdown(
        mut self,
        hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.on_shutdown.push(Arc::new(hook));
        self
    }

    pub(crate) fn entries(&self) -> &HashMap<String, Entry> {
        &self.entries
    }

    pub(crate) fn rooms(&self) -> &[Arc<RoomDef>] {
        &self.rooms
    }

    /// Per-connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Finishes the registry.
    pub fn build(self) -> Live {
        let hub = Arc::new(Hub::new(self.limits.replay()));
        let presence = self
            .presence
            .unwrap_or_else(|| Arc::new(MemoryPresence::default()));
        for room in &self.rooms {
            room.attach(hub.clone(), presence.clone());
        }
        hub.set_members(Arc::new(RoomMembers(self.rooms.clone())));
        let live = Live {
            inner: Arc::new(Inner {
                entries: self.entries,
                rooms: self.rooms,
                hub,
                auth: self.auth,
                allow_subscribe: self.allow_subscribe,
                presence,
                limits: self.limits,
                on_shutdown: self.on_shutdown,
                buckets: Buckets::default(),
                streams: StreamCalls::default(),
            }),
        };
        for hook in self.on_build {
            hook(&live);
        }
        live
    }
}

/// The rooms' presence, for `Ctx::set_presence`: the room whose tracker has the member.
struct RoomMembers(Vec<Arc<RoomDef>>);

impl crate::presence_store::Members for RoomMembers {
    fn set(
        &self,
        topic: &str,
        key: &str,
        data: Value,
    ) -> futures_util::future::BoxFuture<'static, bool> {
        let (topic, key): (Arc<str>, Arc<str>) = (topic.into(), key.into());
        let tracker = self
            .0
            .iter()
            .map(|r| r.tracker().clone())
            .find(|t| t.is_member(&topic, &key));
        Box::pin(async move {
            match tracker {
                Some(t) => t.set_base(&topic, &key, data).await,
                None => false,
            }
        })
    }
}

struct Inner {
    entries: HashMap<String, Entry>,
    rooms: Vec<Arc<RoomDef>>,
    hub: Arc<Hub>,
    auth: Option<AuthFn>,
    allow_subscribe: Option<SubscribeFilter>,
    presence: Arc<dyn PresenceStore>,
    limits: Limits,
    on_shutdown: Vec<ShutdownHook>,
    /// Rate limit buckets by scope and identity.
    buckets: Buckets<(u32, Arc<str>)>,
    /// The stream calls of each session, for `resume`.
    streams: StreamCalls,
}

/// A built registry: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("paths", &self.inner.entries.len())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The topic table (publish from outside a handler with [`Live::publish`]).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// The presence store in use.
    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.inner.presence
    }

    /// A cluster transition (a reap, a re-assertion) changed room `topic`'s count: its lobby,
    /// if it has one, publishes the change.
    pub(crate) fn lobby_count(&self, topic: &str, count: crate::presence_store::Count) {
        let topic: Arc<str> = topic.into();
        let lobbies: Vec<_> = self
            .inner
            .rooms
            .iter()
            .filter_map(|r| r.lobby().cloned())
            .collect();
        let store = self.presence().clone();
        tokio::spawn(async move {
            if let Some(lobby) = lobbies.iter().find(|l| l.knows(&topic)) {
                return lobby.restore(&topic, count).await;
            }
            // Opened on another replica: the store says which declaration it belongs to.
            let Some((name, _)) = store.room_info(&topic).await else {
                return; // not a room with a lobby
            };
            if let Some(lobby) = lobbies.iter().find(|l| l.name() == name) {
                lobby.changed(&topic, count).await;
            }
        });
    }

    /// Per-connection limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Publishes `event` with `data` on `topic` from outside any call (a background job, a
    /// webhook).
    pub fn publish(
        &self,
        topic: &str,
        event: &str,
        data: &impl Serialize,
    ) -> Result<(), LiveError> {
        self.inner.hub.publish_value(topic, event, data)
    }

    /// Runs the upgrade hook. Without one, every connection is a guest.
    pub async fn authenticate(&self, req: UpgradeRequest) -> Result<Option<Value>, Reject> {
        match &self.inner.auth {
            Some(hook) => hook(req).await,
            None => Ok(None),
        }
    }

    /// Leaves every room promptly (graceful shutdown): presence `leave` events go out now
    /// instead of after the grace.
    pub async fn release_presence(&self) {
        for room in &self.inner.rooms {
            room.flush_leaves().await;
        }
        for hook in &self.inner.on_shutdown {
            hook().await;
        }
    }

    /// Applies a cursor event that another replica published, so `__cursors` snapshots here
    /// include remote cursors.
    pub(crate) fn mirror_cursor(&self, cursor_topic: &str, event: &str, data: &Value) {
        let Some(topic) = cursor_topic.strip_suffix(":cursors") else {
            return;
        };
        // One table takes it (else its ticks would deliver it twice): the one that has the
        // room, or the first with cursors.
        let tables: Vec<_> = self
            .inner
            .rooms
            .iter()
            .filter_map(|r| r.cursor_table())
            .collect();
        let table = tables.iter().find(|t| t.knows(topic)).or(tables.first());
        if let Some(table) = table {
            table.mirror(topic, event, data);
        }
    }

    pub(crate) fn entry(&self, path: &str) -> Option<&Entry> {
        self.inner.entries.get(path)
    }

    pub(crate) fn entries(&self) -> &HashMap<String, Entry> {
        &self.inner.entries
    }

    pub(crate) fn rooms(&self) -> &[Arc<RoomDef>] {
        &self.inner.rooms
    }

    /// Takes one token of `identity`'s bucket in `scope`.
    pub(crate) fn take_token(
        &self,
        scope: u32,
        identity: &Arc<str>,
        limit: RateLimit,
    ) -> Result<(), std::time::Duration> {
        self.inner.buckets.take(&(scope, identity.clone()), limit)
    }

    /// The stream calls recorded for resuming `session`, by topic.
    pub(crate) fn streams(&self) -> &StreamCalls {
        &self.inner.streams
    }

    /// Whether [`App::allow_subscribe`] lets `ctx` subscribe to `topic` from the wire.
    pub(crate) fn may_subscribe(&self, ctx: &Ctx, topic: &str) -> bool {
        self.inner
            .allow_subscribe
            .as_ref()
            .is_some_and(|f| f(ctx, topic))
    }
}
