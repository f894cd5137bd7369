//! [`Conn`]: what the server knows about one connection, shared by its session, the topic table
//! and every [`Ctx`](crate::Ctx) made for it.

use crate::outbox::Outbox;
use crate::rate::RateLimit;
use crate::replay::Replay;
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
    /// Most calls of one connection running at once; more are answered `OVERLOADED`.
    #[arg(long, env = "LIVEROOM_MAX_IN_FLIGHT", default_value_t = Limits::MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// Most topics one connection is subscribed to; more are refused (`RATE_LIMITED`).
    #[arg(long, env = "LIVEROOM_MAX_SUBSCRIPTIONS", default_value_t = Limits::MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// Most rooms one connection is in at once; more are refused (`RATE_LIMITED`).
    #[arg(long, env = "LIVEROOM_MAX_ROOMS", default_value_t = Limits::MAX_ROOMS)]
    pub max_rooms: usize,
    /// Largest presence data of a member, in bytes of JSON; a larger one refuses the join
    /// (`INVALID_REQUEST`), is counted, and is never broadcast.
    #[arg(long, env = "LIVEROOM_MAX_PRESENCE_BYTES", default_value_t = Limits::MAX_PRESENCE_BYTES)]
    pub max_presence_bytes: usize,
    /// Calls (RPCs, stream loads, actions) per second per identity, sustained (0: no limit);
    /// beyond it calls are answered `RATE_LIMITED` with `retryAfter`.
    #[arg(long, env = "LIVEROOM_CALL_RATE", default_value_t = Limits::CALL_RATE)]
    pub call_rate: u32,
    /// Calls per identity let through at once before [`Limits::call_rate`] applies.
    #[arg(long, env = "LIVEROOM_CALL_BURST", default_value_t = Limits::CALL_BURST)]
    pub call_burst: u32,
    /// Cursor moves per second per identity, sustained (0: no limit); beyond it moves are
    /// dropped and counted.
    #[arg(long, env = "LIVEROOM_CURSOR_RATE", default_value_t = Limits::CURSOR_RATE)]
    pub cursor_rate: u32,
    /// Cursor moves per identity let through at once.
    #[arg(long, env = "LIVEROOM_CURSOR_BURST", default_value_t = Limits::CURSOR_BURST)]
    pub cursor_burst: u32,
    /// Answer calls to unknown paths exactly like a guard denial (`UNAUTHENTICATED` for guests,
    /// `FORBIDDEN` otherwise) instead of `NOT_FOUND`, so probing cannot map the paths.
    #[arg(long, env = "LIVEROOM_MASK_UNKNOWN_PATHS")]
    pub mask_unknown_paths: bool,
    /// Events kept per topic for replay after a reconnect (0: no seq and no replay; every
    /// reconnect reloads). Streams and rooms may set their own ([`Replay`]).
    #[arg(long, env = "LIVEROOM_REPLAY_EVENTS", default_value_t = Replay::EVENTS)]
    pub replay_events: u32,
    /// Age in milliseconds of the oldest event kept for replay; also how long a topic nobody
    /// subscribes to keeps its buffer.
    #[arg(long, env = "LIVEROOM_REPLAY_AGE_MS", default_value_t = Replay::AGE_MS)]
    pub replay_age_ms: u64,
    /// Bytes of envelopes kept per topic for replay.
    #[arg(long, env = "LIVEROOM_REPLAY_BYTES", default_value_t = Replay::BYTES)]
    pub replay_bytes: u32,
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
    /// Default of [`Limits::max_in_flight`]: 64, far above what a page keeps waiting.
    pub const MAX_IN_FLIGHT: u32 = 64;
    /// Default of [`Limits::max_subscriptions`]: 1024 (a room is three topics).
    pub const MAX_SUBSCRIPTIONS: usize = 1024;
    /// Default of [`Limits::max_rooms`]: 128.
    pub const MAX_ROOMS: usize = 128;
    /// Default of [`Limits::max_presence_bytes`]: 1 KiB, a name, a colour and an avatar URL.
    pub const MAX_PRESENCE_BYTES: usize = 1024;
    /// Default of [`Limits::call_rate`]: 100 per second per identity.
    pub const CALL_RATE: u32 = 100;
    /// Default of [`Limits::call_burst`]: 500, a dashboard's first load in several tabs.
    pub const CALL_BURST: u32 = 500;
    /// Default of [`Limits::cursor_rate`]: 120 per second per identity, two tabs at 60 Hz.
    pub const CURSOR_RATE: u32 = 120;
    /// Default of [`Limits::cursor_burst`]: 240.
    pub const CURSOR_BURST: u32 = 240;

    /// The default limit of calls per identity.
    pub fn calls(&self) -> RateLimit {
        RateLimit::per_second(self.call_rate).burst(self.call_burst)
    }

    /// The server-wide replay policy of topics.
    pub fn replay(&self) -> Replay {
        Replay::events(self.replay_events)
            .age(Duration::from_millis(self.replay_age_ms))
            .bytes(self.replay_bytes)
    }

    /// The limit of cursor moves per identity.
    pub fn cursor_moves(&self) -> RateLimit {
        RateLimit::per_second(self.cursor_rate).burst(self.cursor_burst)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            outbox_bytes: Self::OUTBOX_BYTES,
            max_message: Self::MAX_MESSAGE,
            max_cursor_bytes: Self::MAX_CURSOR_BYTES,
            ping_interval_ms: Self::PING_INTERVAL_MS,
            ping_timeout_ms: Self::PING_TIMEOUT_MS,
            max_in_flight: Self::MAX_IN_FLIGHT,
            max_subscriptions: Self::MAX_SUBSCRIPTIONS,
            max_rooms: Self::MAX_ROOMS,
            max_presence_bytes: Self::MAX_PRESENCE_BYTES,
            call_rate: Self::CALL_RATE,
            call_burst: Self::CALL_BURST,
            cursor_rate: Self::CURSOR_RATE,
            cursor_burst: Self::CURSOR_BURST,
            mask_unknown_paths: false,
            replay_events: Replay::EVENTS,
            replay_age_ms: Replay::AGE_MS,
            replay_bytes: Replay::BYTES,
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
    /// Calls running now (phase 2), bounded by [`Limits::max_in_flight`].
    in_flight: AtomicU32,
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
            in_flight: AtomicU32::new(0),
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

    /// Counts one more call running, unless `max` already are: the returned guard counts it
    /// down when dropped.
    pub(crate) fn start_call(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(self.clone()))
    }

    /// Whether the identity is a per-connection guest key.
    pub fn is_guest(&self) -> bool {
        self.identity.starts_with("__guest_")
    }
}

/// One call of a connection running; see [`Conn::start_call`].
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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
