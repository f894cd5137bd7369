//! [`App`], the registry builder, and [`Live`], the built registry that serves connections.

use crate::auth::{AuthFn, Reject, UpgradeRequest};
use crate::ctx::Ctx;
use crate::error::{code, LiveError};
use crate::hub::Hub;
use crate::room::presence::{MemoryPresence, PresenceStore};
use crate::room::{Room, RoomArgs, RoomDef, RoomPart};
use crate::session::Session;
use crate::stream::{Stream, StreamDef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type BuildHook = Box<dyn FnOnce(&Live) + Send>;
type ShutdownHook = Arc<dyn Fn() -> BoxFuture<()> + Send + Sync>;
pub(crate) type Reply = Result<Box<RawValue>, LiveError>;
type RpcFn = Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<Reply> + Send + Sync>;
type SubscribeFilter = Arc<dyn Fn(&Ctx, &str) -> bool + Send + Sync>;

/// Deserializes a call's `args` array into the handler's argument type.
pub(crate) fn args_from<A: DeserializeOwned>(args: Vec<Value>) -> Result<A, LiveError> {
    // serde reads `()` from `null`, not from `[]`: an empty args list means "no args".
    if args.is_empty() {
        if let Ok(a) = serde_json::from_value(Value::Null) {
            return Ok(a);
        }
    }
    serde_json::from_value(Value::Array(args))
        .map_err(|e| LiveError::invalid(format!("invalid args: {e}")))
}

/// Serializes a handler's result once, into the bytes that go on the wire.
pub(crate) fn to_raw<T: Serialize>(value: T) -> Reply {
    serde_json::value::to_raw_value(&value).map_err(|e| {
        tracing::error!(error = %e, "result does not serialize");
        LiveError::internal()
    })
}

/// Type-erases an initial-data loader: its result is serialized once, for the wire.
pub(crate) fn erase_init<A, F, Fut, T>(
    init: F,
) -> Arc<dyn Fn(Ctx, A) -> BoxFuture<Reply> + Send + Sync>
where
    F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
    T: Serialize,
{
    Arc::new(move |ctx, args| {
        let fut = init(ctx, args);
        Box::pin(async move { to_raw(fut.await?) })
    })
}

/// A guard that failed with a plain (non-`LiveError`) error: `UNAUTHENTICATED` without a user
/// identity, else `FORBIDDEN` (protocol.md section 3).
pub(crate) fn guard_error(ctx: &Ctx, e: LiveError) -> LiveError {
    if e.code() != code::INTERNAL_ERROR {
        return e;
    }
    if ctx.is_guest() {
        LiveError::unauthenticated("Sign in required")
    } else {
        LiveError::forbidden("Forbidden")
    }
}

pub(crate) struct RpcDef {
    pub call: RpcFn,
    pub arg_names: Vec<String>,
}

/// What a path resolves to.
pub(crate) enum Entry {
    Rpc(RpcDef),
    Stream(StreamDef),
    Room(Arc<RoomDef>, RoomPart),
}

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most unsent bytes queued for one connection before it is cut off with 1013.
    pub outbox_bytes: usize,
    /// Largest client message accepted; larger ones close the socket with 1009.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            outbox_bytes: 1 << 20,
            max_message: 1 << 20,
        }
    }
}

/// The registry builder: RPCs, streams and rooms at paths, plus the upgrade hook.
///
/// Build it once at startup, then serve it with [`Server`](crate::Server), or drive it from
/// your own WebSocket server through [`Live::hooks`].
///
/// ```no_run
/// use liveroom::{App, Ctx, LiveError, Server};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = App::new()
///     .rpc("math/add", |_ctx: Ctx, (a, b): (i64, i64)| async move { Ok::<_, LiveError>(a + b) });
/// Server::new(app).bind("127.0.0.1:3000").run().await
/// # }
/// ```
pub struct App {
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
    /// An empty registry.
    pub fn new() -> Self {
        App {
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

    /// Registers an RPC at `path` (e.g. `"chat/send"`). The call's `args` array is
    /// deserialized into `A` (a tuple for positional args); wrong arity or types answer
    /// `INVALID_REQUEST` without calling the handler.
    ///
    /// # Panics
    /// If `path` is not a valid RPC path or is already registered.
    pub fn rpc<A, R, F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let call: RpcFn = Arc::new(move |ctx, args| {
            let parsed = args_from::<A>(args);
            let handler = handler.clone();
            Box::pin(async move { to_raw(handler(ctx, parsed?).await?) })
        });
        self.insert(
            path.to_owned(),
            Entry::Rpc(RpcDef {
                call,
                arg_names: Vec::new(),
            }),
        );
        self
    }

    /// Names the args of the RPC or stream at `path`, for the manifest and generated clients
    /// (`.rpc("boards/create", ..).arg_names("boards/create", ["name"])`).
    ///
    /// # Panics
    /// If no RPC or stream is registered at `path`.
    pub fn arg_names<S: Into<String>>(
        mut self,
        path: &str,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        let names = names.into_iter().map(Into::into).collect();
        match self.entries.get_mut(path) {
            Some(Entry::Rpc(def)) => def.arg_names = names,
            Some(Entry::Stream(def)) => def.arg_names = names,
            _ => panic!("no RPC or stream at `{path}`"),
        }
        self
    }

    /// Registers a [`Stream`] at `path`.
    ///
    /// # Panics
    /// If `path` is not a valid RPC path or is already registered.
    pub fn stream<A>(mut self, path: &str, stream: Stream<A>) -> Self
    where
        A: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.insert(path.to_owned(), Entry::Stream(stream.erase()));
        self
    }

    /// Registers a [`Room`] named `name` in `module`: its paths are
    /// `<module>/<name>/__data`, `__presence`, `__cursors`, `__action/<action>` and `__cursor`.
    ///
    /// # Panics
    /// If the paths are invalid or already registered.
    pub fn room<A: RoomArgs>(mut self, module: &str, name: &str, room: Room<A>) -> Self {
        let def = Arc::new(room.erase(module, name));
        for (suffix, part) in def.parts() {
            self.insert(
                format!("{module}/{name}/{suffix}"),
                Entry::Room(def.clone(), part),
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
        filter: impl Fn(&Ctx, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.allow_subscribe = Some(Arc::new(filter));
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
    pub fn on_shutdown(mut self, hook: impl Fn() -> BoxFuture<()> + Send + Sync + 'static) -> Self {
        self.on_shutdown.push(Arc::new(hook));
        self
    }

    /// Per-connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Finishes the registry.
    pub fn build(self) -> Live {
        let hub = Arc::new(Hub::default());
        let presence = self
            .presence
            .unwrap_or_else(|| Arc::new(MemoryPresence::default()));
        for room in &self.rooms {
            room.attach(hub.clone(), presence.clone());
        }
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
            }),
        };
        for hook in self.on_build {
            hook(&live);
        }
        live
    }
}

pub(crate) struct Inner {
    pub entries: HashMap<String, Entry>,
    pub rooms: Vec<Arc<RoomDef>>,
    pub hub: Arc<Hub>,
    pub auth: Option<AuthFn>,
    pub allow_subscribe: Option<SubscribeFilter>,
    pub presence: Arc<dyn PresenceStore>,
    pub limits: Limits,
    pub on_shutdown: Vec<ShutdownHook>,
}

/// A built registry: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Live {
    pub(crate) inner: Arc<Inner>,
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

    /// The connection hooks: everything needed to run this registry inside your own WebSocket
    /// server (see `examples/custom_server.rs`).
    pub fn hooks(&self) -> crate::session::Hooks {
        crate::session::Hooks::new(self.clone(), None)
    }

    /// Hooks restricted to one room's paths: calls to other paths answer `NOT_FOUND`.
    pub fn room_hooks(&self, module: &str, name: &str) -> crate::session::Hooks {
        crate::session::Hooks::new(self.clone(), Some(format!("{module}/{name}/")))
    }

    /// Opens a session for `user` (what the server does after a successful upgrade).
    pub fn connect(&self, user: Option<Value>) -> Session {
        Session::new(self.clone(), user, None)
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
        for room in &self.inner.rooms {
            if let Some(table) = room.cursor_table() {
                table.mirror(topic, event, data);
            }
        }
    }

    /// Describes the registry for code generators (served at `/__live/manifest.json`).
    pub fn manifest(&self) -> Value {
        let mut modules: BTreeMap<String, Value> = BTreeMap::new();
        let module_of = |path: &str| -> (String, String) {
            let (m, n) = path.rsplit_once('/').unwrap_or(("", path));
            (m.to_owned(), n.to_owned())
        };
        let mut paths: Vec<&String> = self.inner.entries.keys().collect();
        paths.sort();
        for path in paths {
            let (m, n) = module_of(path);
            let module = modules
                .entry(m.clone())
                .or_insert_with(|| json!({ "rooms": {}, "streams": {}, "rpcs": {} }));
            match &self.inner.entries[path] {
                Entry::Rpc(def) => {
                    module["rpcs"][n] = json!({ "args": def.arg_names });
                }
                Entry::Stream(def) => {
                    let mut d = def.merge.describe();
                    d["args"] = json!(def.arg_names);
                    module["streams"][n] = d;
                }
                Entry::Room(..) => {}
            }
        }
        for room in &self.inner.rooms {
            let module = modules
                .entry(room.module.clone())
                .or_insert_with(|| json!({ "rooms": {}, "streams": {}, "rpcs": {} }));
            module["rooms"][&room.name] = room.describe();
        }
        // Room paths live under "<module>/<room>", which would otherwise show up as modules.
        for room in &self.inner.rooms {
            let prefix = format!("{}/{}", room.module, room.name);
            modules.retain(|k, _| *k != prefix && !k.starts_with(&format!("{prefix}/")));
        }
        json!({ "version": 1, "modules": modules })
    }

    pub(crate) fn entry(&self, path: &str) -> Option<&Entry> {
        self.inner.entries.get(path)
    }
}
