//! One connection's protocol state machine, independent of the transport.
//!
//! The server feeds it text frames in order ([`Session::message`]) and writes what appears in
//! its [`Outbox`]. Each call runs in two phases:
//! 1. in order, inline: resolve the path, parse args, run the guard, subscribe the socket and
//!    register presence. Doing this before the next frame is read is what makes the reconnect
//!    sequence of protocol.md section 2 and the batch roster rule of section 5 hold.
//! 2. concurrently, in a spawned task: the handler or the initial-data load, then the reply.
//!    A slow call never delays the frames after it.

use crate::app::{guard_error, BoxFuture, Entry, Live, Reply};
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::error::LiveError;
use crate::outbox::Outbox;
use crate::protocol::{self, Call, Frame, FrameError};
use crate::room::{RoomDef, RoomPart};
use bytes::BytesMut;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

/// The connection hooks: run a registry inside any WebSocket server.
///
/// ```no_run
/// # async fn example(live: liveroom::Live) {
/// let hooks = live.hooks();
/// let mut session = hooks.connect(None);          // after your upgrade
/// hooks.message(&mut session, r#"{"type":"hello","caps":["batch"]}"#).await; // each text frame
/// let mut drain = liveroom::outbox::Drain::default();
/// session.outbox().next(&mut drain).await;       // in your writer: send drain.messages(..)
/// hooks.close(session).await;                     // when the socket closes
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Hooks {
    live: Live,
    prefix: Option<String>,
}

impl Hooks {
    pub(crate) fn new(live: Live, prefix: Option<String>) -> Self {
        Hooks { live, prefix }
    }

    /// Opens a session for a connection whose upgrade produced `user`.
    pub fn connect(&self, user: Option<Value>) -> Session {
        Session::new(self.live.clone(), user, self.prefix.clone())
    }

    /// Handles one text frame.
    pub async fn message(&self, session: &mut Session, text: &str) {
        session.message(text).await
    }

    /// Unsubscribes the socket from `topic` (as a wire `unsubscribe` would).
    pub async fn unsubscribe(&self, session: &mut Session, topic: &str) {
        session.unsubscribe(topic).await
    }

    /// The socket closed: drop its subscriptions and start presence leaves.
    pub async fn close(&self, session: Session) {
        session.close().await
    }
}

/// One connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    live: Live,
    conn: Arc<Conn>,
    prefix: Option<String>,
    /// Topics this socket is subscribed to in the hub.
    subscribed: HashSet<Arc<str>>,
    /// Topics a stream call gave this socket: a wire `subscribe` may restore them.
    authorized: HashSet<Arc<str>>,
    /// Room data topics this socket is a presence member of.
    members: Vec<(Arc<str>, Arc<RoomDef>)>,
    /// Rooms where this socket moved a cursor without being a member (cursors-only): no
    /// presence leave removes that cursor, so closing or unsubscribing does.
    cursor_only: Vec<(Arc<str>, Arc<RoomDef>)>,
}

/// Phase 2 of a call: the reply body and, for streams, the topic to release.
type Pending = BoxFuture<Done>;

struct Done {
    id: Option<Value>,
    result: Reply,
    stream: Option<(Arc<str>, crate::stream::Merge)>,
}

impl Session {
    pub(crate) fn new(live: Live, user: Option<Value>, prefix: Option<String>) -> Self {
        let conn = Conn::new(user, live.limits().outbox_bytes);
        metrics::gauge!("liveroom_connections").increment(1.0);
        Session {
            live,
            conn,
            prefix,
            subscribed: HashSet::new(),
            authorized: HashSet::new(),
            members: Vec::new(),
            cursor_only: Vec::new(),
        }
    }

    /// Frames waiting to be written to this connection.
    pub fn outbox(&self) -> &Outbox {
        &self.conn.outbox
    }

    /// The connection (id, user, identity).
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            conn: self.conn.clone(),
            hub: self.live.hub().clone(),
        }
    }

    /// Handles one text frame. Errors are answered on the outbox; nothing here panics or closes
    /// the connection.
    pub async fn message(&mut self, text: &str) {
        self.settle().await;
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
        match &e.id {
            Some(id) => {
                self.conn
                    .outbox
                    .reply(protocol::reply(id, &Err(protocol::frame_error(e)), None))
            }
            None => self.conn.outbox.reply(protocol::error_frame(
                crate::error::code::INVALID_REQUEST,
                &e.message,
            )),
        }
    }

    async fn frame(&mut self, frame: Frame) {
        match frame {
            Frame::Hello { batch } => self.conn.outbox.set_batch(batch),
            Frame::Ignored => {}
            Frame::Subscribe { topic, r#ref } => {
                self.wire_subscribe(&topic, r#ref.as_ref());
            }
            Frame::SubscribeBatch { topics, r#ref } => {
                for topic in topics {
                    self.wire_subscribe(&topic, r#ref.as_ref());
                }
            }
            Frame::Unsubscribe { topic } => self.unsubscribe(&topic).await,
            Frame::Call(call) => {
                let pending = self.prepare(call).await;
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    let done = pending.await;
                    finish(&conn, done);
                });
            }
            Frame::Batch { calls, sequential } => {
                let mut pending = Vec::with_capacity(calls.len());
                for call in calls {
                    pending.push(match call {
                        Ok(call) => self.prepare(call).await,
                        Err(e) => {
                            let done = Done {
                                id: e.id.clone(),
                                result: Err(protocol::frame_error(&e)),
                                stream: None,
                            };
                            Box::pin(async move { done }) as Pending
                        }
                    });
                }
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    let done = if sequential {
                        let mut out = Vec::with_capacity(pending.len());
                        for p in pending {
                            out.push(p.await);
                        }
                        out
                    } else {
                        futures_util::future::join_all(pending).await
                    };
                    finish_batch(&conn, done);
                });
            }
        }
    }

    fn wire_subscribe(&mut self, topic: &str, r#ref: Option<&Value>) {
        if let Err(e) = protocol::validate_topic(topic) {
            metrics::counter!("liveroom_bad_frames_total").increment(1);
            let reason = match e {
                protocol::TopicError::Reserved => "RESERVED_TOPIC",
                _ => "INVALID_TOPIC",
            };
            self.conn
                .outbox
                .reply(protocol::subscribe_ack(topic, r#ref, Some(reason)));
            return;
        }
        let allowed = self.authorized.contains(topic)
            || self
                .live
                .inner
                .allow_subscribe
                .as_ref()
                .is_some_and(|f| f(&self.ctx(), topic));
        if !allowed {
            // Not (yet) authorised: ignored, as protocol.md section 2 allows. The stream call
            // that follows on reconnect subscribes it server-side.
            return;
        }
        self.subscribe(topic.into());
        self.conn
            .outbox
            .reply(protocol::subscribe_ack(topic, r#ref, None));
    }

    fn subscribe(&mut self, topic: Arc<str>) {
        if self.live.hub().subscribe(&topic, &self.conn) {
            self.subscribed.insert(topic.clone());
        }
        self.authorized.insert(topic);
    }

    /// Undoes the subscriptions of streams whose initial load failed: the socket leaves the
    /// topic, and a room member whose data load failed leaves the room (after the grace), so a
    /// failed load never leaves a ghost. The server calls this as soon as a load fails; it also
    /// runs before every frame.
    pub async fn settle(&mut self) {
        for topic in self.conn.take_failed() {
            self.unsubscribe(&topic).await;
        }
    }

    /// Unsubscribes the socket from `topic`; leaving a room's data topic ends its membership.
    pub async fn unsubscribe(&mut self, topic: &str) {
        if self.subscribed.remove(topic) {
            self.live.hub().unsubscribe(topic, self.conn.id);
        }
        if let Some(i) = self.members.iter().position(|(t, _)| &**t == topic) {
            let (topic, room) = self.members.swap_remove(i);
            room.leave(&topic, &self.conn).await;
        }
        if let Some(i) = self
            .cursor_only
            .iter()
            .position(|(t, room)| *room.cursors_topic(t) == *topic)
        {
            let (topic, room) = self.cursor_only.swap_remove(i);
            room.drop_cursor_unless_member(&topic, &self.conn);
        }
    }

    /// The socket closed: unsubscribe everything, end room memberships (their leave grace
    /// starts now).
    pub async fn close(mut self) {
        self.settle().await;
        for topic in self.subscribed.drain() {
            self.live.hub().unsubscribe(&topic, self.conn.id);
        }
        for (topic, room) in std::mem::take(&mut self.members) {
            room.leave(&topic, &self.conn).await;
        }
        for (topic, room) in std::mem::take(&mut self.cursor_only) {
            room.drop_cursor_unless_member(&topic, &self.conn);
        }
        self.conn.outbox.close(crate::ws::close::NORMAL);
    }

    /// Phase 1 of a call (see the module docs); returns phase 2.
    async fn prepare(&mut self, call: Call) -> Pending {
        let Call {
            path,
            id,
            args,
            stream,
        } = call;
        let label = if self.live.entry(&path).is_some() {
            path.clone()
        } else {
            "unknown".to_owned()
        };
        let started = Instant::now();
        let result = self.prepare_inner(&path, id.clone(), args, stream).await;
        let pending: Pending = match result {
            Ok(p) => p,
            Err(e) => Box::pin(async move {
                Done {
                    id,
                    result: Err(e),
                    stream: None,
                }
            }),
        };
        Box::pin(async move {
            let done = pending.await;
            metrics::counter!("liveroom_rpc_total", "path" => label.clone()).increment(1);
            metrics::histogram!("liveroom_rpc_duration_seconds", "path" => label.clone())
                .record(started.elapsed().as_secs_f64());
            if let Err(e) = &done.result {
                metrics::counter!("liveroom_rpc_errors_total", "path" => label, "code" => e.code().to_owned())
                    .increment(1);
            }
            done
        })
    }

    async fn prepare_inner(
        &mut self,
        path: &str,
        id: Option<Value>,
        args: Vec<Value>,
        stream: bool,
    ) -> Result<Pending, LiveError> {
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !path.starts_with(p.as_str()))
        {
            return Err(LiveError::not_found(format!("no such path `{path}`")));
        }
        let live = self.live.clone();
        let Some(entry) = live.entry(path) else {
            return Err(LiveError::not_found(format!("no such path `{path}`")));
        };
        let ctx = self.ctx();
        let is_stream = matches!(
            entry,
            Entry::Stream(_)
                | Entry::Room(_, RoomPart::Data | RoomPart::Presence | RoomPart::Cursors)
        );
        if stream != is_stream {
            return Err(LiveError::invalid(if is_stream {
                format!("`{path}` is a stream: call it with \"stream\":true")
            } else {
                format!("`{path}` is not a stream")
            }));
        }
        match entry {
            Entry::Rpc(def) => {
                let fut = (def.call)(ctx, args);
                Ok(Box::pin(async move {
                    Done {
                        id,
                        result: fut.await,
                        stream: None,
                    }
                }))
            }
            Entry::Stream(def) => {
                let prepared = (def.prepare)(ctx, args).await?;
                self.hold_and_subscribe(prepared.topic.clone());
                self.remote_ready(&prepared.topic).await;
                let merge = def.merge.clone();
                Ok(Box::pin(async move {
                    Done {
                        id,
                        result: prepared.load.await,
                        stream: Some((prepared.topic, merge)),
                    }
                }))
            }
            Entry::Room(room, part) => {
                let room = room.clone();
                self.prepare_room(room, part.clone(), ctx, id, args).await
            }
        }
    }

    async fn prepare_room(
        &mut self,
        room: Arc<RoomDef>,
        part: RoomPart,
        ctx: Ctx,
        id: Option<Value>,
        args: Vec<Value>,
    ) -> Result<Pending, LiveError> {
        if let RoomPart::Cursor = part {
            // Fire-and-forget, hot: no guard (it ran when the socket subscribed), only the
            // subscription check.
            let (topic, position) = room.cursor_args(&ctx, args)?;
            let member = self.members.iter().any(|(t, _)| *t == topic);
            if !member && !self.subscribed.contains(&*room.cursors_topic(&topic)) {
                return Err(LiveError::forbidden("not subscribed to this room"));
            }
            if !member && !self.cursor_only.iter().any(|(t, _)| *t == topic) {
                self.cursor_only.push((topic.clone(), room.clone()));
            }
            room.cursor_move(&topic, &self.conn, position);
            return Ok(Box::pin(async move {
                Done {
                    id,
                    result: crate::app::to_raw(()),
                    stream: None,
                }
            }));
        }
        let topic = room.topic(&ctx, &args)?;
        if let RoomPart::Action(name) = part {
            let fut = room.action(&name, ctx.clone(), topic, args);
            return Ok(Box::pin(async move {
                let result = match fut {
                    Ok(fut) => fut.await,
                    Err(e) => Err(e),
                };
                Done {
                    id,
                    result,
                    stream: None,
                }
            }));
        }
        room.guard(ctx.clone(), &args)
            .await
            .map_err(|e| guard_error(&ctx, e))?;
        let (sub_topic, merge, load): (Arc<str>, _, BoxFuture<Reply>) = match part {
            RoomPart::Data => {
                self.hold_and_subscribe(topic.clone());
                if !self.members.iter().any(|(t, _)| *t == topic) {
                    self.members.push((topic.clone(), room.clone()));
                    room.join(&topic, &ctx).await;
                }
                (topic, room.merge.clone(), room.init(ctx, args))
            }
            RoomPart::Presence => {
                let t = room.presence_topic(&topic);
                self.hold_and_subscribe(t.clone());
                (t, crate::stream::Merge::Presence, room.roster(topic))
            }
            RoomPart::Cursors => {
                let t = room.cursors_topic(&topic);
                self.hold_and_subscribe(t.clone());
                (
                    t,
                    crate::stream::Merge::Cursor,
                    room.cursor_snapshot(&topic),
                )
            }
            RoomPart::Action(_) | RoomPart::Cursor => unreachable!("handled above"),
        };
        self.remote_ready(&sub_topic).await;
        Ok(Box::pin(async move {
            Done {
                id,
                result: load.await,
                stream: Some((sub_topic, merge)),
            }
        }))
    }

    fn hold_and_subscribe(&mut self, topic: Arc<str>) {
        self.conn.outbox.hold(topic.clone());
        self.subscribe(topic);
    }

    /// In cluster mode, waits until other replicas' events of `topic` flow here, so the
    /// initial data loaded next cannot miss one.
    async fn remote_ready(&self, topic: &str) {
        self.live.hub().ready(topic).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("liveroom_connections").decrement(1.0);
    }
}

/// Queues the reply of one call (releasing its stream's held events).
fn finish(conn: &Conn, done: Done) {
    let Done { id, result, stream } = done;
    if let (Some((topic, _)), Err(_)) = (&stream, &result) {
        conn.stream_failed(topic.clone());
    }
    let Some(id) = id else {
        if let Some((topic, _)) = stream {
            conn.outbox.release(&[topic], None);
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "fire-and-forget call failed");
        }
        return;
    };
    let reply = match &stream {
        Some((topic, merge)) if result.is_ok() => {
            protocol::reply(&id, &result, Some(&merge.reply(topic)))
        }
        _ => protocol::reply(&id, &result, None),
    };
    match stream {
        Some((topic, _)) => conn.outbox.release(&[topic], Some(reply)),
        None => conn.outbox.reply(reply),
    }
}

/// Queues the single reply of a batch, after which the held events of its streams follow.
fn finish_batch(conn: &Conn, done: Vec<Done>) {
    let mut bodies = Vec::with_capacity(done.len());
    let mut topics = Vec::new();
    for d in &done {
        let Some(id) = &d.id else {
            continue;
        };
        let mut body = BytesMut::with_capacity(64);
        let stream = match &d.stream {
            Some((topic, merge)) if d.result.is_ok() => Some(merge.reply(topic)),
            _ => None,
        };
        protocol::reply_body(&mut body, id, &d.result, stream.as_ref());
        bodies.push(body);
    }
    for d in done {
        if let Some((topic, _)) = d.stream {
            if d.result.is_err() {
                conn.stream_failed(topic.clone());
            }
            topics.push(topic);
        }
    }
    conn.outbox
        .release(&topics, Some(protocol::batch_reply(&bodies)));
}
