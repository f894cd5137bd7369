//! Getting a reconnecting client exactly what it missed (docs/protocol.md, "Delivery"):
//! - `resume`: the first frames of a new connection name the lost one's `welcome` id and the
//!   newest seq seen per topic; every topic whose stream guard passes again is replayed from the
//!   buffer, then `resumed` follows;
//! - a wire `subscribe` of a topic just resumed catches up from where the replay stopped;
//! - a stream call with `seq` answers `replay:true` with the missed events instead of loading.
//!
//! Where a buffer no longer covers a seq, a stream gets a full load, and a resume or catch-up
//! gets the reload marker, never a silent gap. Whatever a socket was given through a resume or
//! before it left a topic is not sent again by the stream replay that follows.

use super::reply::{Done, Pending, Streamed};
use super::subs::Subscriptions;
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::handler::Reply;
use crate::merge::Merge;
use crate::outbox::Release;
use crate::protocol;
use crate::registry::Entry;
use crate::registry::Live;
use crate::replay::{session_id, Coverage};
use crate::room::def::{presence_topic, RoomPart};
use crate::stream::Load;
use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A replay larger than this is not sent (the client drops messages over 1 MiB): the stream
/// reloads instead.
const MAX_REPLAY_BYTES: usize = 512 * 1024;

/// What is recorded of a stream call, to run its guard again on `resume`.
pub(super) fn stream_call(path: &str, args: &[Value]) -> Value {
    json!({ "path": path, "args": args })
}

/// The reload marker for `topic`: the client drops that stream's seq and loads it again.
fn truncated(topic: &str) -> Bytes {
    metrics::counter!("liveroom_replay_truncations_total").increment(1);
    protocol::truncated(topic)
}

/// The envelopes of a replay, if small enough to send.
fn frames(events: Vec<(u64, Bytes)>) -> Option<(Vec<Bytes>, u64)> {
    let size: usize = events.iter().map(|(_, f)| f.len() + 1).sum();
    if size > MAX_REPLAY_BYTES {
        return None;
    }
    let last = events.last().map_or(0, |(seq, _)| *seq);
    Some((events.into_iter().map(|(_, f)| f).collect(), last))
}

/// The envelopes as a JSON array: the `data` of a `replay:true` reply (each item's `event`,
/// `data` and `seq` are what the client applies; the `topic` they also carry is ignored).
fn as_data(frames: &[Bytes]) -> Reply {
    let mut buf = BytesMut::with_capacity(frames.iter().map(|f| f.len() + 1).sum::<usize>() + 2);
    protocol::put_array(&mut buf, frames.iter().map(|f| &f[..]));
    let text = String::from_utf8(buf.to_vec()).map_err(|_| crate::LiveError::internal())?;
    Ok(RawValue::from_string(text)?)
}

fn replayed(kind: &'static str, events: usize) {
    metrics::counter!("liveroom_replays_total", "kind" => kind).increment(1);
    metrics::counter!("liveroom_events_replayed_total").increment(events as u64);
}

/// What recovering needs of a session: borrowed from it for one frame.
pub(super) struct Recovery<'a> {
    pub live: &'a Live,
    pub conn: &'a Arc<Conn>,
    pub subs: &'a mut Subscriptions,
    /// The session's path prefix (room hooks): other paths are never re-authorized.
    pub prefix: Option<&'a str>,
}

impl Recovery<'_> {
    fn ctx(&self) -> Ctx {
        Ctx::new(self.conn.clone(), self.live.hub().clone())
    }

    /// Records which stream call gave this session `topic` (here, and in cluster mode in
    /// Redis), for a later `resume`.
    pub(super) fn record_stream(&self, topic: &str, call: &Value) {
        if self.live.hub().replay_of(topic).is_off() {
            return;
        }
        let session = session_id(self.conn.id);
        self.live.streams().record(&session, topic, call);
        if let Some(bus) = self.live.hub().bus() {
            bus.save_stream(&session, topic, call);
        }
    }

    /// Phase 2 of a stream call whose socket is subscribed to `topic` (events held): with
    /// `asked` (the client's seq, and what this socket last saw of the topic) a replay if the
    /// buffer covers it, else the full `load`, with the topic's seq read before it runs.
    pub(super) async fn answer(
        &mut self,
        id: Option<Value>,
        topic: Arc<str>,
        merge: Merge,
        asked: Option<(u64, Option<u64>)>,
        load: Load,
    ) -> Pending {
        let hub = self.live.hub().clone();
        if let Some((seq, seen)) = asked {
            let from = seen.map_or(seq, |s| s.max(seq));
            if let (Coverage::Covered(events), _) = hub.replay(&topic, from).await {
                if let Some((frames, last)) = frames(events) {
                    replayed("stream", frames.len());
                    let seq = if frames.is_empty() { from } else { last };
                    let stream = Streamed {
                        topic,
                        merge,
                        seq,
                        replay: Some(true),
                        through: seq,
                    };
                    let data = as_data(&frames);
                    return Done::stream(id, stream, Box::pin(async move { data }));
                }
            }
            metrics::counter!("liveroom_replay_truncations_total").increment(1);
        }
        metrics::counter!("liveroom_full_loads_total").increment(1);
        let seq = hub.current_seq(&topic).await;
        let stream = Streamed {
            topic,
            merge,
            seq,
            replay: asked.map(|_| false),
            through: 0,
        };
        Done::stream(id, stream, load())
    }

    /// `resume`: replays, for every topic of the lost connection `session` whose stream guard
    /// passes again for this one, the buffered events after the client's seq (or the reload
    /// marker), then `resumed`. Those topics may then be subscribed from the wire. Only the
    /// first `resume` of a connection is answered.
    pub(super) async fn resume(&mut self, session: &str, last_seen: Vec<(String, u64)>) {
        if !self.subs.first_resume() {
            return; // once per connection; later ones are ignored
        }
        let calls = self.stream_calls(session).await.unwrap_or_default();
        let max = self.live.limits().max_subscriptions;
        for (topic, seq) in last_seen {
            let Some(call) = calls.get(&topic) else {
                continue; // nothing known of it: its stream call reloads it
            };
            if self.subs.is_subscribed(&topic) || !self.reauthorize(&topic, call).await {
                continue;
            }
            let topic: Arc<str> = topic.into();
            self.subs.authorize(topic.clone(), max);
            match self.live.hub().replay(&topic, seq).await {
                (Coverage::Covered(events), head) => match frames(events) {
                    Some((frames, last)) => {
                        replayed("resume", frames.len());
                        let through = if frames.is_empty() {
                            head.max(seq)
                        } else {
                            last
                        };
                        for f in frames {
                            self.conn.outbox.reply(f);
                        }
                        self.subs.saw(topic, through, true);
                    }
                    None => self.conn.outbox.reply(truncated(&topic)),
                },
                (Coverage::Truncated, _) => self.conn.outbox.reply(truncated(&topic)),
            }
        }
        // Queued as replies, like the replayed events: in order, and before any event.
        self.conn
            .outbox
            .reply(Bytes::from_static(protocol::RESUMED));
    }

    /// A wire subscribe of a topic a `resume` replayed: subscribes it and sends what was
    /// published since that replay, before any later event. `false` if there was nothing to
    /// catch up (a plain wire subscribe gets live events from now on).
    pub(super) async fn catch_up(&mut self, topic: &str, r#ref: Option<&Value>) -> bool {
        let Some(after) = self.subs.take_resumed(topic) else {
            return false;
        };
        let topic: Arc<str> = topic.into();
        let max = self.live.limits().max_subscriptions;
        let ack = |reason| protocol::subscribe_ack(&topic, r#ref, reason);
        if self.subs.hold_and_subscribe(topic.clone(), max).is_err() {
            self.conn
                .outbox
                .reply(ack(Some(crate::error::code::RATE_LIMITED)));
            return true;
        }
        self.live.hub().ready(&topic).await;
        let release = match self.live.hub().replay(&topic, after).await {
            (Coverage::Covered(events), _) => frames(events).map(|(frames, last)| {
                replayed("subscribe", frames.len());
                Release {
                    topic: topic.clone(),
                    through: if frames.is_empty() { after } else { last },
                    replay: frames,
                }
            }),
            (Coverage::Truncated, _) => None,
        };
        let release = release.unwrap_or_else(|| Release {
            topic: topic.clone(),
            replay: vec![truncated(&topic)],
            through: 0,
        });
        self.conn.outbox.release(&[release], Some(ack(None)));
        true
    }

    /// The stream calls recorded for `session`: here, else (cluster mode) in Redis.
    async fn stream_calls(&self, session: &str) -> Option<HashMap<String, Value>> {
        if let Some(calls) = self.live.streams().get(session) {
            return Some(calls);
        }
        self.live.hub().bus()?.load_streams(session).await
    }

    /// Runs the gate (guard, then topic function) of the stream `call` recorded for `topic`
    /// with this connection's context: `true` if it passes and still gives `topic`.
    async fn reauthorize(&self, topic: &str, call: &Value) -> bool {
        let (Some(path), Some(args)) = (call["path"].as_str(), call["args"].as_array()) else {
            return false;
        };
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !path.starts_with(&**p))
        {
            return false;
        }
        let ctx = self.ctx();
        let resolved = match self.live.entry(path) {
            Some(Entry::Stream(def)) => def.prepare(ctx, args.clone()).await.ok().map(|p| p.topic),
            Some(Entry::Room(room, part @ (RoomPart::Data | RoomPart::Presence))) => {
                let args = room.room_args(args.clone());
                let data = room.data().prepare(ctx, args).await.ok().map(|p| p.topic);
                match part {
                    RoomPart::Presence => data.map(|t| presence_topic(&t)),
                    _ => data,
                }
            }
            _ => None,
        };
        resolved.is_some_and(|t| &*t == topic)
    }
}
