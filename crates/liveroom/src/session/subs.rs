//! What one socket is subscribed to, which topics it may (re)subscribe from the wire, and which
//! rooms it entered or is a member of.

use crate::conn::Conn;
use crate::error::{code, LiveError};
use crate::hub::Hub;
use crate::room::def::{cursors_topic, presence_topic, RoomDef};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most topics whose last seen seq a socket remembers.
const SEEN: usize = 1024;

#[derive(Debug)]
pub(super) struct Subscriptions {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    /// Topics this socket is subscribed to in the hub.
    subscribed: HashSet<Arc<str>>,
    /// Topics a stream call gave this socket: a wire `subscribe` may restore them.
    authorized: HashSet<Arc<str>>,
    /// Rooms whose gate (guard, then topic) this socket passed, by room path and args, with the
    /// topic they resolved to. `__cursor` moves find their room here: the hot path runs neither
    /// the guard nor the topic function again.
    entered: HashMap<String, Arc<str>>,
    /// Room data topics this socket is a presence member of.
    members: Vec<(Arc<str>, Arc<RoomDef>)>,
    /// Rooms where this socket moved a cursor without being a member (cursors-only): no
    /// presence leave removes that cursor, so closing or unsubscribing does.
    cursor_only: Vec<(Arc<str>, Arc<RoomDef>)>,
    /// What the socket saw of topics it is not subscribed to; boxed on first use, since every
    /// idle connection holds one of these.
    recent: Option<Box<Recent>>,
}

#[derive(Debug, Default)]
struct Recent {
    /// Per topic not subscribed now, the newest seq this socket was given (when it left the
    /// topic, or by a `resume`: then `true`): a stream replay, or after a resume a wire
    /// subscribe, starts after it, so nothing is sent twice.
    seen: HashMap<Arc<str>, (u64, bool)>,
    /// A `resume` was handled: a connection resumes once (each costs a lookup and a guard run
    /// per topic, which a hostile client must not repeat at will).
    resumed: bool,
}

/// The key of a room entered with `args` in [`Subscriptions::entered`].
pub(super) fn room_key(room: &RoomDef, args: &[Value]) -> String {
    // Built in one buffer: this runs on every `__cursor` move.
    let mut key = Vec::with_capacity(room.module().len() + room.name().len() + 32);
    key.extend_from_slice(room.module().as_bytes());
    key.push(b'/');
    key.extend_from_slice(room.name().as_bytes());
    let _ = serde_json::to_writer(&mut key, args); // a `Value` always serializes
    String::from_utf8(key).unwrap_or_default()
}

impl Subscriptions {
    pub fn new(hub: Arc<Hub>, conn: Arc<Conn>) -> Self {
        Subscriptions {
            hub,
            conn,
            subscribed: HashSet::new(),
            authorized: HashSet::new(),
            entered: HashMap::new(),
            members: Vec::new(),
            cursor_only: Vec::new(),
            recent: None,
        }
    }

    /// Whether the socket is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.subscribed.contains(topic)
    }

    /// Lets a wire `subscribe` restore `topic` (a `resume` passed its stream's guard again).
    pub fn authorize(&mut self, topic: Arc<str>, max: usize) {
        if self.authorized.len() >= max.saturating_mul(2) {
            let subscribed = &self.subscribed;
            self.authorized.retain(|t| subscribed.contains(t));
        }
        self.authorized.insert(topic);
    }

    /// Records that the socket was given `topic`'s events up to `seq` (`resumed`: by a
    /// `resume`).
    pub fn saw(&mut self, topic: Arc<str>, seq: u64, resumed: bool) {
        let seen = &mut self.recent.get_or_insert_with(Default::default).seen;
        if seen.len() >= SEEN {
            seen.clear(); // only an optimisation: without a mark, a replay resends a little
        }
        seen.insert(topic, (seq, resumed));
    }

    /// The newest seq of `topic` the socket was given while it is not subscribed, forgotten.
    pub fn take_seen(&mut self, topic: &str) -> Option<u64> {
        let seen = &mut self.recent.as_mut()?.seen;
        seen.remove(topic).map(|(seq, _)| seq)
    }

    /// Like [`take_seen`](Self::take_seen), for a mark a `resume` left only.
    pub fn take_resumed(&mut self, topic: &str) -> Option<u64> {
        match self.recent.as_ref()?.seen.get(topic) {
            Some((_, true)) => self.take_seen(topic),
            _ => None,
        }
    }

    /// Marks the connection as resumed; `false` if it already was (a connection resumes once:
    /// each costs a lookup and a guard run per topic, which a client must not repeat at will).
    pub fn first_resume(&mut self) -> bool {
        let recent = self.recent.get_or_insert_with(Default::default);
        !std::mem::replace(&mut recent.resumed, true)
    }

    /// Whether a stream call gave this socket `topic`.
    pub fn authorized(&self, topic: &str) -> bool {
        self.authorized.contains(topic)
    }

    /// Subscribes the socket to `topic` (again, if it was) and authorizes it, unless it already
    /// holds `max` other subscriptions.
    pub fn subscribe(&mut self, topic: Arc<str>, max: usize) -> Result<(), LiveError> {
        self.room_for(&topic, max)?;
        if let Some(recent) = &mut self.recent {
            recent.seen.remove(&topic); // callers that use the mark took it before
        }
        if self.hub.subscribe(&topic, &self.conn) {
            self.subscribed.insert(topic.clone());
        }
        // Past the bound, what was given and given up since is forgotten: a stream call gives
        // it again.
        self.authorize(topic, max);
        Ok(())
    }

    /// Subscribes a stream call's topic, holding its events until the stream's reply is out.
    pub fn hold_and_subscribe(&mut self, topic: Arc<str>, max: usize) -> Result<(), LiveError> {
        self.room_for(&topic, max)?;
        self.conn.outbox.hold(topic.clone());
        self.subscribe(topic, max)
    }

    /// Whether `topic` fits in this socket's `max` subscriptions.
    fn room_for(&self, topic: &str, max: usize) -> Result<(), LiveError> {
        if self.subscribed.len() < max || self.subscribed.contains(topic) {
            return Ok(());
        }
        metrics::counter!("liveroom_limited_total", "kind" => "subscriptions").increment(1);
        Err(LiveError::new(
            code::RATE_LIMITED,
            format!("this connection already holds {max} subscriptions"),
        ))
    }

    /// Records that the room at `key` passed its gate and resolved to `topic`, unless the
    /// socket is in `max` other rooms.
    pub fn enter(&mut self, key: String, topic: Arc<str>, max: usize) -> Result<(), LiveError> {
        if !self.entered.contains_key(&key) && self.entered.len() >= max {
            metrics::counter!("liveroom_limited_total", "kind" => "rooms").increment(1);
            return Err(LiveError::new(
                code::RATE_LIMITED,
                format!("this connection is already in {max} rooms"),
            ));
        }
        self.entered.insert(key, topic);
        Ok(())
    }

    /// The topic of the room at `key`, if this socket entered it.
    pub fn entered(&self, key: &str) -> Option<&Arc<str>> {
        self.entered.get(key)
    }

    /// Makes the socket a member of room `topic`. `false` if it already was.
    pub fn add_member(&mut self, topic: &Arc<str>, room: &Arc<RoomDef>) -> bool {
        if self.is_member(topic) {
            return false;
        }
        self.members.push((topic.clone(), room.clone()));
        true
    }

    /// Whether the socket is a presence member of room `topic`.
    pub fn is_member(&self, topic: &str) -> bool {
        self.members.iter().any(|(t, _)| &**t == topic)
    }

    /// Whether the socket may move its cursor in room `topic`: it is a member or subscribed to
    /// the room's cursors. A cursors-only mover is remembered, so its cursor goes with it.
    pub fn may_move_cursor(&mut self, topic: &Arc<str>, room: &Arc<RoomDef>) -> bool {
        if self.is_member(topic) {
            return true;
        }
        if !self.subscribed.contains(&*cursors_topic(topic)) {
            return false;
        }
        if !self.cursor_only.iter().any(|(t, _)| t == topic) {
            self.cursor_only.push((topic.clone(), room.clone()));
        }
        true
    }

    /// Unsubscribes the socket from `topic`; leaving a room's data topic ends its membership,
    /// leaving its cursors topic removes a cursors-only mover's cursor.
    pub fn unsubscribe(&mut self, topic: &str) {
        if let Some(topic) = self.subscribed.take(topic) {
            if let Some(seq) = self
                .hub
                .unsubscribe(&topic, self.conn.id)
                .filter(|s| *s > 0)
            {
                self.saw(topic.clone(), seq, false);
            }
            // A room none of whose streams the socket holds any more is left: entering it
            // again runs its gate again.
            let subscribed = &self.subscribed;
            self.entered.retain(|_, t| {
                subscribed.contains(t)
                    || subscribed.contains(&*presence_topic(t))
                    || subscribed.contains(&*cursors_topic(t))
            });
        }
        if let Some(i) = self.members.iter().position(|(t, _)| &**t == topic) {
            let (topic, room) = self.members.swap_remove(i);
            room.leave(&topic, &self.conn);
        }
        if let Some(i) = self
            .cursor_only
            .iter()
            .position(|(t, _)| *cursors_topic(t) == *topic)
        {
            let (topic, room) = self.cursor_only.swap_remove(i);
            room.drop_cursor_unless_member(&topic, &self.conn);
        }
    }

    /// The socket closed: unsubscribe everything, end room memberships (their leave grace
    /// starts now) and remove cursors-only movers' cursors.
    pub fn close(&mut self) {
        for topic in self.subscribed.drain() {
            self.hub.unsubscribe(&topic, self.conn.id);
        }
        for (topic, room) in std::mem::take(&mut self.members) {
            room.leave(&topic, &self.conn);
        }
        for (topic, room) in std::mem::take(&mut self.cursor_only) {
            room.drop_cursor_unless_member(&topic, &self.conn);
        }
    }
}
