//! Every Redis key and channel of cluster mode, in one place (docs/clustering.md, "Keys").
//!
//! A room's keys and channels all carry the room's data topic as their hash tag, `{board:1}`
//! for the topics `board:1`, `board:1:presence` and `board:1:cursors`: on a Redis Cluster they
//! share one slot, so one shard owns the room, each Lua script touches one slot, and a sharded
//! message goes to that shard only. A standalone Redis ignores the braces.
//!
//! What belongs to a replica rather than to a room (its lease, its index of rooms) is tagged
//! with the replica's owner id instead; the few cluster-wide keys are single keys.

/// Suffixes of a room's topics that share the room's tag.
const ROOM_SUFFIXES: [&str; 2] = [":presence", ":cursors"];

/// `topic` split into the room's data topic (the tag) and what follows it.
fn split(topic: &str) -> (&str, &str) {
    for s in ROOM_SUFFIXES {
        if let Some(base) = topic.strip_suffix(s) {
            return (base, s);
        }
    }
    (topic, "")
}

/// `prefix` + `topic` with the room's tag: `board:1:presence` -> `<prefix>{board:1}:presence`.
pub fn tagged(prefix: &str, topic: &str) -> String {
    let (base, suffix) = split(topic);
    format!("{prefix}{{{base}}}{suffix}")
}

/// The topic of a [`tagged`] name, given without its prefix.
pub fn untag(name: &str) -> Option<String> {
    let inner = name.strip_prefix('{')?;
    for s in ROOM_SUFFIXES.iter().copied().chain([""]) {
        if let Some(base) = inner.strip_suffix(s).and_then(|b| b.strip_suffix('}')) {
            return Some(format!("{base}{s}"));
        }
    }
    None
}

/// Prefix of the event channels (`SPUBLISH` on a Redis Cluster, `PUBLISH` otherwise).
pub const CHANNEL_PREFIX: &str = "__live-bus:";

/// The event channel of `topic`.
pub fn channel(topic: &str) -> String {
    tagged(CHANNEL_PREFIX, topic)
}

/// The topic of an event channel.
pub fn channel_topic(channel: &str) -> Option<String> {
    untag(channel.strip_prefix(CHANNEL_PREFIX)?)
}

/// The control channel every replica subscribes to (see `bus::RESYNC_CHANNEL`).
pub const RESYNC_CHANNEL: &str = "__live-ctl:resync";

/// A topic's newest seq.
pub fn seq(topic: &str) -> String {
    tagged("__live-seq:", topic)
}

/// A topic's replay buffer.
pub fn buffer(topic: &str) -> String {
    tagged("__live-buf:", topic)
}

/// A session's stream calls (topic -> call), for `resume` on any replica.
pub fn session(session: &str) -> String {
    format!("__live-session:{session}")
}

/// A room's cursor positions (`<identity>` -> position JSON), by cursor topic.
pub fn cursors(cursor_topic: &str) -> String {
    tagged("__live-cursors:", cursor_topic)
}

/// A room's roster hash, by data topic.
pub fn presence(topic: &str) -> String {
    tagged("__live-presence:", topic)
}

/// A room's waiting line (members beyond the listed limit).
pub fn wait(topic: &str) -> String {
    tagged("__live-presence-wait:", topic)
}

/// A room's ownership record: `<owner>\n<identity>` = what that replica added.
pub fn owned(topic: &str) -> String {
    tagged("__live-owned:", topic)
}

/// An open room's lobby record (`{"lobby","info"}`).
pub fn room(topic: &str) -> String {
    tagged("__live-room:", topic)
}

/// A lobby's set of open room topics.
pub fn lobby(lobby: &str) -> String {
    format!("__live-lobby:{lobby}")
}

/// HASH of the registered replicas: id -> epoch of its current registration.
pub const REPLICAS: &str = "__live-replica-epochs";

/// A replica's lease.
pub fn lease(replica: &str) -> String {
    format!("__live-replica:{{{replica}}}")
}

/// A replica's index of the rooms it may have members in, for the reaper.
pub fn rooms_of(replica: &str) -> String {
    format!("__live-rooms-of:{{{replica}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn a_rooms_keys_and_channels_share_one_slot() {
        let t = "board:b1";
        let names = [
            presence(t),
            wait(t),
            owned(t),
            room(t),
            seq(t),
            buffer(t),
            channel(t),
            seq(&format!("{t}:presence")),
            buffer(&format!("{t}:presence")),
            channel(&format!("{t}:presence")),
            seq(&format!("{t}:cursors")),
            channel(&format!("{t}:cursors")),
            cursors(&format!("{t}:cursors")),
        ];
        let slot = Slot::for_key(&names[0]);
        for n in &names {
            assert_eq!(Slot::for_key(n), slot, "{n}");
        }
        assert_eq!(presence(t), "__live-presence:{board:b1}");
        assert_ne!(Slot::for_key(presence("board:b2")), slot);
        assert_eq!(Slot::for_key(lease("x")), Slot::for_key(rooms_of("x")));
    }

    #[test]
    fn channels_name_their_topic() {
        for t in [
            "board:1",
            "board:1:presence",
            "board:1:cursors",
            "a}b",
            "x:presence:y",
        ] {
            assert_eq!(channel_topic(&channel(t)).as_deref(), Some(t), "{t}");
        }
        assert_eq!(channel_topic("__live-bus:plain"), None);
    }
}
