//! One connection's protocol state machine, independent of the transport.
//!
//! The server feeds it text frames in order ([`Session::message`]) and writes what appears in
//! its [`Outbox`]. Each call runs in two phases:
//! 1. in order, inline: resolve the path, parse the args, pass the gate (the guard, then the
//!    topic function) of a stream or room, subscribe the socket and register presence. Doing
//!    this before the next frame is read is what makes the reconnect sequence of protocol.md
//!    section 2 and the batch roster rule of section 5 hold.
//! 2. concurrently: the RPC or action handler (an action's guard runs here, first) or the
//!    initial-data load, then the reply. It is polled once inline, so a refusal or a handler
//!    that never waits is answered without a task; whatever has to wait goes on in a spawned
//!    task. RPCs and each room's actions wait in their lane for the calls sent before them
//!    (`lanes`); nothing else waits, so a slow call never delays the frames after it.
//!
//! Between the two, every call is admitted: the identity's rate limit (its path's own, or the
//! default; cursor moves have theirs) and the connection's calls in flight.
//!
//! - `subs`: what the socket is subscribed to, which rooms it is in, what it last saw;
//! - `lanes`: the order of RPCs and actions;
//! - `resume`: `welcome`/`resume`, stream replays and catch-ups from the replay buffers;
//! - `reply`: phase 2's result and how replies are queued.

mod lanes;
mod reply;
mod resume;
mod subs;

use crate::conn::{Conn, InFlight};
use crate::ctx::Ctx;
use crate::error::{code, LiveError};
use crate::merge::Merge;
use crate::outbox::Outbox;
use crate::protocol::{self, Call, Frame, FrameError, TopicError};
use crate::rate;
use crate::registry::{Entry, Live};
use crate::room::def::{cursors_topic, presence_topic, RoomDef, RoomPart};
use crate::stream::Load;
use lanes::Lanes;
use reply::{finish, finish_batch, refused, timed, Done, Pending};
use serde_json::Value;
use std::sync::Arc;
use std::task::Poll;
use subs::{room_key, Subscriptions};

/// The connection hooks: run a registry inside any WebSocket server.
///
/// ```no_run
/// # async fn example(live: liveroom::Live) {
/// let hooks = live.hooks();
/// let mut session = hooks.connect(None);          // after your upgrade
/// hooks.message(&mut session, r#"{"type":"hello","caps":["batch"]}"#).await; // each text frame
/// let mut drain = liveroom::outbox::Drain::default();
/// session.outbox().next(&mut drain).await;       // in your writer: send drain.messages(..)
/// hooks.close(session);                           // when the socket closes
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Hooks {
    live: Live,
    prefix: Option<String>,
}

impl Hooks {
    /// Opens a session for a connection whose upgrade produced `user`; its `welcome` is the
    /// first frame queued.
    pub fn connect(&self, user: Option<Value>) -> Session {
        Session::new(self.live.clone(), user, self.prefix.clone()).welcomed()
    }

    /// Handles one text frame.
    pub async fn message(&self, session: &mut Session, text: &str) {
        session.message(text).await
    }

    /// Unsubscribes the socket from `topic` (as a wire `unsubscribe` would).
    pub fn unsubscribe(&self, session: &mut Session, topic: &str) {
        session.unsubscribe(topic)
    }

    /// The socket closed: drop its subscriptions and start presence leaves.
    pub fn close(&self, session: Session) {
        session.close()
    }
}

impl Live {
    /// The connection hooks: everything needed to run this registry inside your own WebSocket
    /// server (see `examples/custom_server.rs`).
    pub fn hooks(&self) -> Hooks {
        Hooks {
            live: self.clone(),
            prefix: None,
        }
    }

    /// Hooks restricted to one room's paths: calls to other paths answer `NOT_FOUND`.
    pub fn room_hooks(&self, module: &str, name: &str) -> Hooks {
        Hooks {
            live: self.clone(),
            prefix: Some(format!("{module}/{name}/")),
        }
    }

    /// Opens a session for `user`, its `welcome` queued first (what a server does after a
    /// successful upgrade).
    pub fn connect(&self, user: Option<Value>) -> Session {
        Session::new(self.clone(), user, None).welcomed()
    }

    /// Opens a session whose `welcome` the caller writes itself ([`Session::welcome`]): the
    /// built-in server does, so an idle connection keeps no queue buffers for it.
    pub(crate) fn open(&self, user: Option<Value>) -> Session {
        Session::new(self.clone(), user, None)
    }
}

/// One connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    live: Live,
    conn: Arc<Conn>,
    prefix: Option<String>,
    subs: Subscriptions,
    lanes: Lanes,
}

impl Session {
    fn new(live: Live, user: Option<Value>, prefix: Option<String>) -> Self {
        let conn = Conn::new(user, live.limits().outbox_bytes);
        metrics::gauge!("liveroom_connections").increment(1.0);
        let subs = Subscriptions::new(live.hub().clone(), conn.clone());
        Session {
            live,
            conn,
            prefix,
            subs,
            lanes: Lanes::default(),
        }
    }

    /// The `welcome` frame this connection starts with (`None` when replay is off). The server
    /// writes it straight to the socket; [`Hooks::connect`] and [`Live::connect`] queue it.
    pub fn welcome(&self) -> Option<bytes::Bytes> {
        if self.live.limits().replay().is_off() {
            return None;
        }
        Some(protocol::welcome(&crate::replay::session_id(self.conn.id)))
    }

    /// A session whose `welcome` is queued in its outbox (for custom servers).
    fn welcomed(self) -> Self {
        if let Some(w) = self.welcome() {
            self.conn.outbox.reply(w);
        }
        self
    }

    /// Frames waiting to be written to this connection.
    pub fn outbox(&self) -> &Outbox {
        &self.conn.outbox
    }

    /// The connection (id, user, identity).
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    fn recovery(&mut self) -> resume::Recovery<'_> {
        resume::Recovery {
            live: &self.live,
            conn: &self.conn,
            subs: &mut self.subs,
            prefix: self.prefix.as_deref(),
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(self.conn.clone(), self.live.hub().clone())
    }

    /// Handles one text frame. Errors are answered on the outbox; nothing here panics or closes
    /// the connection.
    pub async fn message(&mut self, text: &str) {
        self.settle();
        match protocol::decode(text) {
            Ok(frame) => self.frame(frame).await,
            Err(e) => self.bad_frame(&e),
        }
    }

    /// A binary frame: liveroom only speaks JSON text.
    pub fn binary(&mut self) {
        self.bad_frame(&FrameError {
            id: None,
            message: "binary frames are not supported; send JSON text frames".into(),
        });
    }

    fn bad_frame(&self, e: &FrameError) {
        metrics::counter!("liveroom_bad_frames_total").increment(1);
        let frame = match &e.id {
            Some(id) => protocol::reply(id, &Err(e.to_error()), None),
            None => protocol::error_frame(code::INVALID_REQUEST, &e.message),
        };
        self.conn.outbox.reply(frame);
    }

    async fn frame(&mut self, frame: Frame) {
        match frame {
            Frame::Hello { batch } => self.conn.outbox.set_batch(batch),
            Frame::Ignored => {}
            Frame::Resume { session, last_seen } => {
                self.recovery().resume(&session, last_seen).await
            }
            Frame::Subscribe { topic, r#ref } => self.wire_subscribe(&topic, r#ref.as_ref()).await,
            Frame::SubscribeBatch { topics, r#ref } => {
                for topic in topics {
                    self.wire_subscribe(&topic, r#ref.as_ref()).await;
                }
            }
            Frame::Unsubscribe { topic } => self.unsubscribe(&topic),
            Frame::Call(call) => {
                let mut pending = self.prepare(call).await;
                // Answered at once (a refusal, a cursor move, a handler that never waits):
                // reply inline. A spawn per refused call would let a flood pile up tasks
                // faster than they run.
                if let Poll::Ready(done) = futures_util::poll!(&mut pending) {
                    return finish(&self.conn, done);
                }
                let conn = self.conn.clone();
                tokio::spawn(async move { finish(&conn, pending.await) });
            }
            Frame::Batch { calls, sequential } => {
                let mut pending = Vec::with_capacity(calls.len());
                for call in calls {
                    pending.push(match call {
                        Ok(call) => self.prepare(call).await,
                        Err(e) => Done::now(e.id.clone(), Err(e.to_error())),
                    });
                }
                let mut all = Box::pin(async move {
                    if sequential {
                        let mut out = Vec::with_capacity(pending.len());
                        for p in pending {
                            out.push(p.await);
                        }
                        out
                    } else {
                        futures_util::future::join_all(pending).await
                    }
                });
                // As for single calls: what is answered at once is answered inline.
                if let Poll::Ready(done) = futures_util::poll!(&mut all) {
                    return finish_batch(&self.conn, done);
                }
                let conn = self.conn.clone();
                tokio::spawn(async move { finish_batch(&conn, all.await) });
            }
        }
    }

    async fn wire_subscribe(&mut self, topic: &str, r#ref: Option<&Value>) {
        if let Err(e) = protocol::validate_topic(topic) {
            metrics::counter!("liveroom_bad_frames_total").increment(1);
            let reason = match e {
                TopicError::Reserved => "RESERVED_TOPIC",
                _ => "INVALID_TOPIC",
            };
            let ack = protocol::subscribe_ack(topic, r#ref, Some(reason));
            self.conn.outbox.reply(ack);
            return;
        }
        if !self.subs.authorized(topic) && !self.live.may_subscribe(&self.ctx(), topic) {
            // Not (yet) authorised: ignored, as protocol.md section 2 allows. The stream call
            // that follows on reconnect subscribes it server-side.
            return;
        }
        if self.recovery().catch_up(topic, r#ref).await {
            return;
        }
        let max = self.live.limits().max_subscriptions;
        let reason = match self.subs.subscribe(topic.into(), max) {
            Ok(()) => None,
            Err(_) => Some(code::RATE_LIMITED),
        };
        let ack = protocol::subscribe_ack(topic, r#ref, reason);
        self.conn.outbox.reply(ack);
    }

    /// Undoes the subscriptions of streams whose initial load failed: the socket leaves the
    /// topic, and a room member whose data load failed leaves the room (after the grace), so a
    /// failed load never leaves a ghost. The server calls this as soon as a load fails; it also
    /// runs before every frame.
    pub fn settle(&mut self) {
        for topic in self.conn.take_failed() {
            self.unsubscribe(&topic);
        }
    }

    /// Unsubscribes the socket from `topic`; leaving a room's data topic ends its membership.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.subs.unsubscribe(topic);
    }

    /// The socket closed: unsubscribe everything, end room memberships (their leave grace
    /// starts now).
    pub fn close(mut self) {
        self.settle();
        self.subs.close();
        let keep = self.live.hub().default_replay().idle();
        self.live
            .streams()
            .closed(&crate::replay::session_id(self.conn.id), keep);
        self.conn.outbox.close(crate::close::NORMAL);
    }

    /// Phase 1 of a call (see the module docs); returns phase 2.
    async fn prepare(&mut self, call: Call) -> Pending {
        let entry = self.live.entry(&call.path);
        let label = if entry.is_some() {
            call.path.clone()
        } else {
            "unknown".to_owned()
        };
        let running = match self.admit(entry) {
            Ok(running) => running,
            Err(e) => return refused(label, call.id, e),
        };
        let lane = lane_of(entry, &call.args);
        let id = call.id.clone();
        let pending = match self.resolve(call).await {
            Ok(pending) => pending,
            Err(e) => Done::now(id, Err(e)),
        };
        let pending = match lane {
            Some(lane) => self.lanes.queue(lane, pending),
            None => pending,
        };
        timed(label, pending, running)
    }

    /// The per-identity rate limit and the per-connection in-flight limit. Cursor moves only
    /// draw from their own bucket: they are answered at once.
    fn admit(&self, entry: Option<&Entry>) -> Result<Option<InFlight>, LiveError> {
        let limits = self.live.limits();
        let (scope, limit, kind) = match entry {
            Some(Entry::Room(_, RoomPart::Cursor)) => {
                (rate::CURSORS, limits.cursor_moves(), "cursor")
            }
            Some(Entry::Room(_, RoomPart::Update)) => {
                (rate::CURSORS, limits.cursor_moves(), "presence")
            }
            Some(entry) => match entry.rate() {
                Some(scoped) => (scoped.scope, scoped.limit, "call"),
                None => (rate::CALLS, limits.calls(), "call"),
            },
            None => (rate::CALLS, limits.calls(), "call"),
        };
        if let Err(wait) = self.live.take_token(scope, &self.conn.identity, limit) {
            metrics::counter!("liveroom_rate_limited_total", "kind" => kind).increment(1);
            return Err(LiveError::rate_limited(
                format!("too many calls; retry in {} ms", wait.as_millis().max(1)),
                wait,
            ));
        }
        if kind != "call" {
            return Ok(None);
        }
        match self.conn.start_call(limits.max_in_flight) {
            Some(running) => Ok(Some(running)),
            None => {
                metrics::counter!("liveroom_overloaded_total").increment(1);
                Err(LiveError::overloaded(format!(
                    "{} calls of this connection are already running",
                    limits.max_in_flight
                )))
            }
        }
    }

    /// What a call to a path that does not exist (or is called the wrong way) gets: `NOT_FOUND`
    /// or `INVALID_REQUEST`, or with [`Limits::mask_unknown_paths`] the same answer as a guard
    /// denial ([`Ctx::deny`]).
    fn unknown(&self, error: LiveError) -> LiveError {
        if self.live.limits().mask_unknown_paths {
            self.ctx().deny()
        } else {
            error
        }
    }

    async fn resolve(&mut self, call: Call) -> Result<Pending, LiveError> {
        let Call {
            path,
            id,
            args,
            stream,
            seq,
        } = call;
        let path = path.as_str();
        let outside = self
            .prefix
            .as_ref()
            .is_some_and(|p| !path.starts_with(&**p));
        let live = self.live.clone();
        let Some(entry) = live.entry(path).filter(|_| !outside) else {
            return Err(self.unknown(LiveError::not_found(format!("no such path `{path}`"))));
        };
        let is_stream = matches!(
            entry,
            Entry::Stream(_)
                | Entry::Room(
                    _,
                    RoomPart::Data | RoomPart::Presence | RoomPart::Cursors | RoomPart::Lobby
                )
        );
        if stream != is_stream {
            return Err(self.unknown(LiveError::invalid(if is_stream {
                format!("`{path}` is a stream: call it with \"stream\":true")
            } else {
                format!("`{path}` is not a stream")
            })));
        }
        let ctx = self.ctx();
        let max = self.live.limits().max_subscriptions;
        match entry {
            Entry::Rpc(def) => Ok(Done::call(id, (def.call)(ctx, args))),
            Entry::Action { call, .. } => Ok(Done::call(id, call(ctx, args))),
            Entry::Stream(def) => {
                let recorded = resume::stream_call(path, &args);
                let prepared = def.prepare(ctx, args).await?;
                let topic = prepared.topic.clone();
                let seen = self.subs.take_seen(&topic);
                self.subs.hold_and_subscribe(topic.clone(), max)?;
                if let Some(replay) = def.replay {
                    self.live.hub().set_replay(&topic, replay);
                }
                self.recovery().record_stream(&topic, &recorded);
                self.remote_ready(&topic).await;
                let load = prepared.into_load();
                let asked = seq.map(|s| (s, seen));
                Ok(self
                    .recovery()
                    .answer(id, topic, def.merge.clone(), asked, load)
                    .await)
            }
            Entry::Room(room, RoomPart::Cursor) => {
                self.cursor_move(room, args)?;
                Ok(Done::now(id, crate::handler::to_raw(())))
            }
            Entry::Room(room, RoomPart::Update) => {
                self.presence_update(room, args).await?;
                Ok(Done::now(id, crate::handler::to_raw(())))
            }
            Entry::Room(room, RoomPart::Lobby) => {
                // The room's guard needs room args, which a lobby has none of: its own runs.
                room.lobby_gate(ctx).await?;
                let lobby = room.lobby().ok_or_else(LiveError::internal)?.clone();
                let topic = lobby.topic().clone();
                self.subs.hold_and_subscribe(topic.clone(), max)?;
                self.recovery()
                    .record_stream(&topic, &resume::stream_call(path, &args));
                self.remote_ready(&topic).await;
                Ok(self
                    .recovery()
                    .answer(id, topic, Merge::crud("room"), None, now(lobby.list()))
                    .await)
            }
            Entry::Room(room, part) => {
                let recorded = resume::stream_call(path, &args);
                self.room_stream(room, *part, ctx, id, args, seq, recorded)
                    .await
            }
        }
    }

    /// A room's data, presence or cursors stream: the room's gate first (its guard, then its
    /// topic function), then the subscription, then the load (or, for the data stream of a
    /// client that holds `seq`, the replay).
    #[allow(clippy::too_many_arguments)]
    async fn room_stream(
        &mut self,
        room: &Arc<RoomDef>,
        part: RoomPart,
        ctx: Ctx,
        id: Option<Value>,
        args: Vec<Value>,
        seq: Option<u64>,
        recorded: Value,
    ) -> Result<Pending, LiveError> {
        let limits = self.live.limits();
        let args = room.room_args(args);
        let key = room_key(room, &args);
        // The lobby entry of a room this join opens names its args.
        let room_args = if part == RoomPart::Data && room.lobby().is_some() {
            args.clone()
        } else {
            Vec::new()
        };
        let prepared = room.data().prepare(ctx.clone(), args).await?;
        let topic = prepared.topic.clone();
        // A member's presence data is checked before anything changes, so a refused join
        // leaves no trace.
        let joining = part == RoomPart::Data && !self.subs.is_member(&topic);
        let presence = if joining {
            Some(self.presence_of(room, &ctx)?)
        } else {
            None
        };
        self.subs.enter(key, topic.clone(), limits.max_rooms)?;
        let max = limits.max_subscriptions;
        let hub = self.live.hub().clone();
        // Only the data stream replays: a roster is small and always read whole (corrections
        // of it are not in the buffer), and cursors are state, not a log.
        let (sub_topic, merge, load, seq) = match part {
            RoomPart::Data => {
                let seen = self.subs.take_seen(&topic);
                self.subs.hold_and_subscribe(topic.clone(), max)?;
                if let Some(replay) = room.data().replay {
                    hub.set_replay(&topic, replay);
                }
                if let Some(data) = presence {
                    self.subs.add_member(&topic, room);
                    room.join(&topic, &ctx, data, &room_args).await;
                }
                let merge = room.data().merge.clone();
                (topic, merge, prepared.into_load(), seq.map(|s| (s, seen)))
            }
            RoomPart::Presence => {
                let t = presence_topic(&topic);
                self.subs.hold_and_subscribe(t.clone(), max)?;
                let roster = room.roster(topic, self.conn.clone());
                (t, Merge::Presence, now(roster), None)
            }
            // `__cursor`, `__presence_update` and `__lobby` never get here: `resolve` answered.
            RoomPart::Cursors | RoomPart::Cursor | RoomPart::Update | RoomPart::Lobby => {
                let t = cursors_topic(&topic);
                self.subs.hold_and_subscribe(t.clone(), max)?;
                hub.set_replay(&t, crate::Replay::off());
                let snapshot = room.cursor_snapshot(&topic);
                (t, Merge::Cursor, now(snapshot), None)
            }
        };
        if part != RoomPart::Cursors {
            self.recovery().record_stream(&sub_topic, &recorded);
        }
        self.remote_ready(&sub_topic).await;
        Ok(self
            .recovery()
            .answer(id, sub_topic, merge, seq, load)
            .await)
    }

    /// What others will see of this member, refused when larger than
    /// [`Limits::max_presence_bytes`].
    fn presence_of(&self, room: &RoomDef, ctx: &Ctx) -> Result<Option<Value>, LiveError> {
        let data = room.presence_of(ctx);
        let (size, max) = (
            data.as_ref().map_or(0, crate::protocol::json_len),
            self.live.limits().max_presence_bytes,
        );
        if size > max {
            metrics::counter!("liveroom_oversized_payloads_total", "kind" => "presence")
                .increment(1);
            return Err(LiveError::invalid(format!(
                "presence data is {size} bytes of JSON, more than the {max} allowed"
            )));
        }
        Ok(data)
    }

    /// `__cursor`, fire-and-forget and hot: only from a socket that entered the room (its gate
    /// ran then) and is a member or a cursors subscriber.
    fn cursor_move(&mut self, room: &Arc<RoomDef>, args: Vec<Value>) -> Result<(), LiveError> {
        let (args, position) = room.cursor_args(args)?;
        let topic = self.subs.entered(&room_key(room, &args)).cloned();
        let Some(topic) = topic.filter(|t| self.subs.may_move_cursor(t, room)) else {
            return Err(LiveError::forbidden("not subscribed to this room"));
        };
        let (size, max) = (
            crate::protocol::json_len(&position),
            self.live.limits().max_cursor_bytes,
        );
        if size > max {
            metrics::counter!("liveroom_oversized_payloads_total", "kind" => "cursor").increment(1);
            return Err(LiveError::invalid(format!(
                "cursor position is {size} bytes of JSON, more than the {max} allowed"
            )));
        }
        room.cursor_move(&topic, &self.conn, position);
        Ok(())
    }

    /// `__presence_update`, fire-and-forget: only from a member of the room (its gate ran when
    /// it entered). `null` clears the socket's state.
    async fn presence_update(
        &mut self,
        room: &Arc<RoomDef>,
        args: Vec<Value>,
    ) -> Result<(), LiveError> {
        let (args, state) = room.update_args(args)?;
        let topic = self.subs.entered(&room_key(room, &args)).cloned();
        let Some(topic) = topic.filter(|t| self.subs.is_member(t)) else {
            return Err(LiveError::forbidden("not a member of this room"));
        };
        let max = self.live.limits().max_presence_bytes;
        if let Err(size) = room.update_presence(&topic, &self.conn, state, max).await {
            metrics::counter!("liveroom_oversized_payloads_total", "kind" => "presence")
                .increment(1);
            return Err(LiveError::invalid(format!(
                "presence data would be {size} bytes of JSON, more than the {max} allowed"
            )));
        }
        Ok(())
    }

    /// In cluster mode, waits until other replicas' events of `topic` flow here, so the
    /// initial data loaded next cannot miss one.
    async fn remote_ready(&self, topic: &str) {
        self.live.hub().ready(topic).await;
    }
}

/// A load that is already a future.
fn now(load: futures_util::future::BoxFuture<'static, crate::handler::Reply>) -> Load {
    Box::new(move || load)
}

/// The lane a call waits in (see `lanes`): a room's actions share one per room (its path and
/// room args), a connection's RPCs share another, unless registered as concurrent.
fn lane_of(entry: Option<&Entry>, args: &[Value]) -> Option<String> {
    match entry? {
        Entry::Rpc(def) if !def.concurrent => Some(String::new()),
        Entry::Action { room, .. } => {
            let n = room.topic_args().min(args.len());
            Some(room_key(room, &args[..n]))
        }
        _ => None,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("liveroom_connections").decrement(1.0);
    }
}
