//! [`Conn`]: what the server knows about one connection, shared by its session, the topic table
//! and every [`Ctx`](crate::Ctx) made for it.

use crate::outbox::Outbox;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

impl Limits {
    /// Default of [`Limits::outbox_bytes`]: 1 MiB.
    pub const OUTBOX_BYTES: usize = 1 << 20;
    /// Default of [`Limits::max_message`]: 1 MiB.
    pub const MAX_MESSAGE: usize = 1 << 20;
    /// Default of [`Limits::max_cursor_bytes`]: 1 KiB, plenty for coordinates and a little
    /// state, small enough that a room's tick stays small.
    pub const MAX_CURSOR_BYTES: usize = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            outbox_bytes: Self::OUTBOX_BYTES,
            max_message: Self::MAX_MESSAGE,
            max_cursor_bytes: Self::MAX_CURSOR_BYTES,
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
