//! The presence store seam: where presence counts live. [`MemoryPresence`] keeps them in this
//! process (zero config); the cluster module's Redis store shares them between replicas.
//!
//! The store sees only process-level transitions; the per-socket refcount and the leave grace
//! are the room's tracker's job, above this seam.
//!
//! ## Listed and counted members
//! Every present identity is *counted*. A member with presence data is also *listed* (in the
//! roster, announced by `join`) while fewer than the room's listed limit are; beyond it, it
//! *waits*, counted only, in join order. When a listed member leaves, the earliest waiting one
//! is promoted (announced by a `join`). A member without data is counted, never listed. So a
//! room of 10,000 costs each observer a roster of at most the limit, plus `count` events.

use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A boxed future returned by [`PresenceStore`] methods.
pub type StoreFuture<'a, T> = BoxFuture<'a, T>;

/// Changes what a member shows in a room from server code (`Ctx::set_presence`): the rooms
/// register one at build, below the layer that knows them.
pub(crate) trait Members: Send + Sync + 'static {
    /// Replaces `key`'s presence data in room `topic`; `false` if it is not a member here.
    fn set(&self, topic: &str, key: &str, data: Value) -> BoxFuture<'static, bool>;
}

/// How many identities are present in a room, and the version of that figure: it goes up with
/// every arrival and departure anywhere, so of two counts the higher version is the newer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Present identities, listed or not.
    pub total: u64,
    /// Bumped by every arrival and departure.
    pub version: u64,
}

/// What a [`PresenceStore::join`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    /// The identity was not present anywhere before (fire `on_join`).
    pub first: bool,
    /// The identity is listed now, and was not before (announce a `join`).
    pub listed: bool,
    /// The room's count after it.
    pub count: Count,
}

/// What a [`PresenceStore::leave`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Left {
    /// The identity is gone everywhere (fire `on_leave`).
    pub last: bool,
    /// It was listed (announce a `leave`).
    pub listed: bool,
    /// Waiting members listed in its place, with their data (announce a `join` each).
    pub promoted: Vec<(String, Value)>,
    /// The room's count after it.
    pub count: Count,
}

/// A room's roster: its listed members in join order, and its count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    /// `(key, data)` of every listed member.
    pub listed: Vec<(String, Value)>,
    /// Every present identity.
    pub count: Count,
}

/// Where presence counts live: in this process ([`MemoryPresence`]) or shared by replicas.
///
/// `join` is called when the first local socket of an identity subscribes, `leave` when the
/// last one is gone and its grace ran out. `limit` is the room's listed-member limit (see the
/// module docs). The futures borrow only the store: an implementation copies what it needs of
/// the arguments before it returns.
pub trait PresenceStore: Send + Sync + 'static {
    /// Counts `key` in `topic`; `data` (`None`: counted, not listed) is stored first.
    fn join(
        &self,
        topic: &str,
        key: &str,
        data: Option<&Value>,
        limit: usize,
    ) -> StoreFuture<'_, Joined>;
    /// Uncounts `key` in `topic`.
    fn leave(&self, topic: &str, key: &str, limit: usize) -> StoreFuture<'_, Left>;
    /// Replaces the presence data of a member that is already counted. Returns whether the
    /// member is listed (then its new data is announced as a `join`).
    fn update(&self, topic: &str, key: &str, data: &Value, limit: usize) -> StoreFuture<'_, bool>;
    /// The listed members of `topic` and its count.
    fn roster(&self, topic: &str) -> StoreFuture<'_, Roster>;

    /// Records that room `topic` of the lobby `lobby` (`<module>/<room>`) opened, with `info`
    /// (its args and metadata), for [`rooms`](Self::rooms) and [`room_info`](Self::room_info).
    /// The default keeps nothing (a store without lobbies).
    fn open_room(&self, _lobby: &str, _topic: &str, _info: &Value) -> StoreFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Forgets an open room (its last member left).
    fn close_room(&self, _lobby: &str, _topic: &str) -> StoreFuture<'_, ()> {
        Box::pin(async {})
    }
    /// The lobby and info of open room `topic`, if it has a lobby.
    fn room_info(&self, _topic: &str) -> StoreFuture<'_, Option<(String, Value)>> {
        Box::pin(async { None })
    }
    /// The open rooms of `lobby`: `(topic, info, count)` each, with members only.
    fn rooms(&self, _lobby: &str) -> StoreFuture<'_, Vec<(String, Value, Count)>> {
        Box::pin(async { Vec::new() })
    }
}

#[derive(Debug)]
struct Member {
    count: usize,
    data: Option<Value>,
    /// Its place in the waiting line, when it waits.
    waiting: Option<u64>,
    listed: bool,
}

/// One room: members, the waiting line (join order -> key) and the counters.
#[derive(Debug, Default)]
struct RoomState {
    members: HashMap<String, Member>,
    /// Listed keys in the order they were listed.
    listed: indexmap::IndexSet<String>,
    waiting: BTreeMap<u64, String>,
    next: u64,
    version: u64,
}

impl RoomState {
    fn count(&self) -> Count {
        Count {
            total: self.members.len() as u64,
            version: self.version,
        }
    }

    /// Lists `key` (which has data) if there is room, else puts it in the waiting line.
    fn place(&mut self, key: &str, limit: usize) -> bool {
        if self.listed.len() < limit {
            self.listed.insert(key.to_owned());
            if let Some(m) = self.members.get_mut(key) {
                m.listed = true;
            }
            true
        } else {
            self.next += 1;
            self.waiting.insert(self.next, key.to_owned());
            if let Some(m) = self.members.get_mut(key) {
                m.waiting = Some(self.next);
            }
            false
        }
    }

    /// Promotes waiting members while there is room.
    fn refill(&mut self, limit: usize) -> Vec<(String, Value)> {
        let mut promoted = Vec::new();
        while self.listed.len() < limit {
            let Some((_, key)) = self.waiting.pop_first() else {
                break;
            };
            let Some(m) = self.members.get_mut(&key) else {
                continue;
            };
            m.waiting = None;
            m.listed = true;
            promoted.push((key.clone(), m.data.clone().unwrap_or(Value::Null)));
            self.listed.insert(key);
        }
        promoted
    }
}

/// The zero-config store: counts in this process's memory. Empty rooms are dropped.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    rooms: Mutex<HashMap<String, RoomState>>,
    /// Open rooms with a lobby: topic -> (lobby, info).
    open: Mutex<HashMap<String, (String, Value)>>,
}

impl MemoryPresence {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomState>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Value)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PresenceStore for MemoryPresence {
    fn join(
        &self,
        topic: &str,
        key: &str,
        data: Option<&Value>,
        limit: usize,
    ) -> StoreFuture<'_, Joined> {
        let mut rooms = self.rooms();
        let room = rooms.entry(topic.to_owned()).or_default();
        let first = !room.members.contains_key(key);
        let m = room.members.entry(key.to_owned()).or_insert(Member {
            count: 0,
            data: None,
            waiting: None,
            listed: false,
        });
        m.count += 1;
        let placed = m.listed || m.waiting.is_some();
        if data.is_some() {
            m.data = data.cloned();
        }
        let listed = data.is_some() && !placed && room.place(key, limit);
        if first {
            room.version += 1;
        }
        let joined = Joined {
            first,
            listed,
            count: room.count(),
        };
        Box::pin(async move { joined })
    }

    fn leave(&self, topic: &str, key: &str, limit: usize) -> StoreFuture<'_, Left> {
        let mut rooms = self.rooms();
        let mut left = Left::default();
        if let Some(room) = rooms.get_mut(topic) {
            if let Some(m) = room.members.get_mut(key) {
                m.count = m.count.saturating_sub(1);
                if m.count == 0 {
                    let m = room.members.remove(key).expect("present");
                    if let Some(place) = m.waiting {
                        room.waiting.remove(&place);
                    }
                    left.last = true;
                    left.listed = room.listed.shift_remove(key);
                    room.version += 1;
                    left.promoted = room.refill(limit);
                }
            }
            left.count = room.count();
            if room.members.is_empty() {
                rooms.remove(topic);
            }
        }
        Box::pin(async move { left })
    }

    fn update(&self, topic: &str, key: &str, data: &Value, limit: usize) -> StoreFuture<'_, bool> {
        let mut rooms = self.rooms();
        let mut listed = false;
        if let Some(room) = rooms.get_mut(topic) {
            if let Some(m) = room.members.get_mut(key) {
                m.data = Some(data.clone());
                listed = m.listed || (m.waiting.is_none() && room.place(key, limit));
            }
        }
        Box::pin(async move { listed })
    }

    fn roster(&self, topic: &str) -> StoreFuture<'_, Roster> {
        let rooms = self.rooms();
        let roster = rooms
            .get(topic)
            .map(|room| Roster {
                listed: room
                    .listed
                    .iter()
                    .filter_map(|k| Some((k.clone(), room.members.get(k)?.data.clone()?)))
                    .collect(),
                count: room.count(),
            })
            .unwrap_or_default();
        Box::pin(async move { roster })
    }

    fn open_room(&self, lobby: &str, topic: &str, info: &Value) -> StoreFuture<'_, ()> {
        self.open_rooms()
            .insert(topic.to_owned(), (lobby.to_owned(), info.clone()));
        Box::pin(async {})
    }

    fn close_room(&self, _lobby: &str, topic: &str) -> StoreFuture<'_, ()> {
        self.open_rooms().remove(topic);
        Box::pin(async {})
    }

    fn room_info(&self, topic: &str) -> StoreFuture<'_, Option<(String, Value)>> {
        let info = self.open_rooms().get(topic).cloned();
        Box::pin(async move { info })
    }

    fn rooms(&self, lobby: &str) -> StoreFuture<'_, Vec<(String, Value, Count)>> {
        let open = self.open_rooms();
        let rooms = self.rooms();
        let mut list: Vec<(String, Value, Count)> = open
            .iter()
            .filter(|(_, (l, _))| l == lobby)
            .filter_map(|(topic, (_, info))| {
                let count = rooms.get(topic)?.count();
                Some((topic.clone(), info.clone(), count))
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Box::pin(async move { list })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn beyond_the_limit_members_wait_and_are_promoted_in_join_order() {
        let s = MemoryPresence::default();
        let d = json!({});
        for k in ["a", "b", "c", "d"] {
            let j = s.join("r", k, Some(&d), 2).await;
            assert!(j.first);
            assert_eq!(j.listed, k == "a" || k == "b", "{k}");
        }
        s.join("r", "ghost", None, 2).await; // counted, never listed
        let r = s.roster("r").await;
        assert_eq!(r.count.total, 5);
        let keys: Vec<&str> = r.listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        let left = s.leave("r", "a", 2).await;
        assert!(left.last && left.listed);
        assert_eq!(left.promoted, [("c".to_owned(), d.clone())]);
        assert_eq!(left.count.total, 4);
        // A waiting member that leaves frees nothing.
        let left = s.leave("r", "d", 2).await;
        assert!(left.last && !left.listed && left.promoted.is_empty());
        // The version only goes up.
        let v = s.roster("r").await.count.version;
        s.join("r", "e", Some(&d), 2).await;
        assert!(s.roster("r").await.count.version > v);
    }

    #[tokio::test]
    async fn a_second_socket_neither_counts_nor_lists_twice() {
        let s = MemoryPresence::default();
        let d = json!({"n": 1});
        assert!(s.join("r", "a", Some(&d), 10).await.listed);
        let again = s.join("r", "a", Some(&d), 10).await;
        assert!(!again.first && !again.listed);
        assert!(!s.leave("r", "a", 10).await.last);
        assert!(s.leave("r", "a", 10).await.last);
        assert_eq!(s.roster("r").await, Roster::default());
    }
}
