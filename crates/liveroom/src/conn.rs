//! [`Conn`]: what the server knows about one connection, shared by its session, the topic table
//! and every [`Ctx`](crate::Ctx) made for it.

use crate::outbox::Outbox;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Limits applied to every connection, as flags and environment variables (flattened into
/// [`ServerConfig`](crate::ServerConfig)).
///
/// ```
/// let limits = liveroom::Limits { outbox_bytes: 256 * 1024, ..Default::default() };
/// assert_eq!(limits.max_message, liveroom::Limits::default().max_message);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Most unsent bytes per connection before a slow consumer is cut off (1013).
    #[arg(long, env = "LIVEROOM_OUTBOX_BYTES", default_value_t = Limits::OUTBOX_BYTES)]
    pub outbox_bytes: usize,
    /// Largest client message accepted; larger ones close the socket with 1009.
    #[arg(long, env = "LIVEROOM_MAX_MESSAGE", default_value_t = Limits::MAX_MESSAGE)]
    pub max_message: usize,
    /// Largest cursor position accepted, in bytes of JSON; larger moves are refused
    /// (`INVALID_REQUEST`), counted, and never broadcast.
    #[arg(long, env = "LIVEROOM_MAX_CURSOR_BYTES", default_value_t = Limits::MAX_CURSOR_BYTES)]
    pub max_cursor_bytes: usize,
    /// After this many milliseconds without a byte from the peer, the server pings it (0: never,
    /// and never time a peer out).
    #[arg(long, env = "LIVEROOM_PING_INTERVAL_MS", default_value_t = Limits::PING_INTERVAL_MS)]
    pub ping_interval_ms: u64,
    /// A peer that stays silent this many milliseconds more after the ping is closed (1001):
    /// half-open TCP connections do not stay forever.
    #[arg(long, env = "LIVEROOM_PING_TIMEOUT_MS", default_value_t = Limits::PING_TIMEOUT_MS)]
    pub ping_timeout_ms: u64,
}

impl Limits {
    /// Default of [`Limits::outbox_bytes`]: 1 MiB.
    pub const OUTBOX_BYTES: usize = 1 << 20;
    /// Default of [`Limits::max_message`]: 1 MiB.
    pub const MAX_MESSAGE: usize = 1 << 20;
    /// Default of [`Limits::max_cursor_bytes`]: 1 KiB, plenty for coordinates and a little
    /// state, small enough that a room's tick stays small.
    pub const MAX_CURSOR_BYTES: usize = 1024;
    /// Default of [`Limits::ping_interval_ms`]: 30 s.
    pub const PING_INTERVAL_MS: u64 = 30_000;
    /// Default of [`Limits::ping_timeout_ms`]: 30 s.
    pub const PING_TIMEOUT_MS: u64 = 30_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            outbox_bytes: Self::OUTBOX_BYTES,
            max_message: Self::MAX_MESSAGE,
            max_cursor_bytes: Self::MAX_CURSOR_BYTES,
            ping_interval_ms: Self::PING_INTERVAL_MS,
            ping_timeout_ms: Self::PING_TIMEOUT_MS,
        }
    }
}

/// One connection: its id, user, identity key and outbound queue.
#[derive(Debug)]
pub struct Conn {
    /// Process-unique connection id.
    pub id: u64,
    /// The user returned by the upgrade hook (`None` for guests).
    pub user: Option<Value>,
    /// Identity key: `user.id`, else `user.user_id`, else `user.userId`, else `__guest_<n>`.
    pub identity: Arc<str>,
    /// Outbound frames.
    pub outbox: Outbox,
    /// Topics whose stream load failed after the socket was subscribed: the session undoes
    /// those subscriptions (and room memberships) as soon as it can.
    failed: Mutex<Vec<Arc<str>>>,
    failed_notify: Notify,
    /// When the peer last sent anything, in milliseconds since [`epoch`], wrapping (a `u32`
    /// keeps `Conn` small; silences are compared with wrapping arithmetic).
    heard: AtomicU32,
    /// When the server last wrote to the peer, likewise.
    wrote: AtomicU32,
}

/// The instant connection times are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since(at: &AtomicU32) -> Duration {
    Duration::from_millis(now_ms().wrapping_sub(at.load(Ordering::Relaxed)).into())
}

fn now_ms() -> u32 {
    epoch().elapsed().as_millis() as u32 // wraps every 49 days; see `silent_for`
}

impl Conn {
    /// A new connection for `user` whose outbox holds at most `limit` bytes.
    pub fn new(user: Option<Value>, limit: usize) -> Arc<Conn> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let identity = identity_of(user.as_ref()).unwrap_or_else(|| format!("__guest_{id}"));
        Arc::new(Conn {
            id,
            user,
            identity: identity.into(),
            outbox: Outbox::new(limit),
            failed: Mutex::new(Vec::new()),
            failed_notify: Notify::new(),
            heard: AtomicU32::new(now_ms()),
            wrote: AtomicU32::new(now_ms()),
        })
    }

    /// A stream subscribed on `topic` failed to load: undo it.
    pub(crate) fn stream_failed(&self, topic: Arc<str>) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(topic);
        self.failed_notify.notify_one();
    }

    /// Takes the topics to undo.
    pub(crate) fn take_failed(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves when a stream load failed (the session's `settle` then undoes it).
    pub async fn stream_failure(&self) {
        self.failed_notify.notified().await;
    }

    /// The peer sent something (any frame, a pong included).
    pub fn heard(&self) {
        self.heard.store(now_ms(), Ordering::Relaxed);
    }

    /// How long the peer has been silent.
    pub fn silent_for(&self) -> Duration {
        since(&self.heard)
    }

    /// The server wrote to the peer.
    pub(crate) fn wrote(&self) {
        self.wrote.store(now_ms(), Ordering::Relaxed);
    }

    /// How long the server has written nothing to the peer.
    pub(crate) fn quiet_for(&self) -> Duration {
        since(&self.wrote)
    }

    /// Whether the identity is a per-connection guest key.
    pub fn is_guest(&self) -> bool {
        self.identity.starts_with("__guest_")
    }
}

/// The identity key rules of protocol.md section 5.
///
/// ```
/// use serde_json::json;
/// assert_eq!(liveroom::conn::identity_of(Some(&json!({"id": 7}))), Some("7".to_string()));
/// assert_eq!(liveroom::conn::identity_of(Some(&json!({"userId": "u"}))), Some("u".to_string()));
/// assert_eq!(liveroom::conn::identity_of(Some(&json!({"name": "x"}))), None);
/// ```
pub fn identity_of(user: Option<&Value>) -> Option<String> {
    let user = user?;
    ["id", "user_id", "userId"]
        .iter()
        .find_map(|k| match user.get(k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
}
