//! The cluster-wide roster (protocol.md section 6) and its atomic transitions.
//!
//! Key layout (standalone Redis; the scripts touch keys derived from their arguments, so Redis
//! Cluster is not supported):
//! - `__live-presence:<topic>`: HASH, `c:<identity>` = cluster-wide count, `d:<identity>` =
//!   JSON presence data (written before the count is raised), `l:<identity>` = listed; `#n` =
//!   present identities, `#l` = listed ones, `#v` = the count's version (microseconds, bumped
//!   by every arrival and departure), `#o` = the waiting line's last place. Expires after 10
//!   minutes unused; replicas refresh the rooms they are in.
//! - `__live-presence-wait:<topic>`: ZSET, members with data beyond the listed limit, by join
//!   order (the first is promoted when a listed member leaves).
//! - `__live-owned:<replica>`: HASH, `<topic>\n<identity>` = what this replica added, so its
//!   contributions can be removed exactly when it dies.
//!
//! Every script that makes an identity arrive or depart goes through the same Lua helpers
//! (`LIB`), so the counters, the listing and the waiting line stay consistent whichever replica
//! (or reaper) does it. Promotions happen once a script's departures are all done, so a member
//! that leaves in the same script is never promoted on the way.

use super::breaker::{Redis, RedisDown};
use crate::presence_store::{Count, Joined, Left, PresenceStore, Roster, StoreFuture};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Prefix of the per-room presence hashes.
pub const PRESENCE_PREFIX: &str = "__live-presence:";
/// Prefix of the per-room waiting lines.
pub const WAIT_PREFIX: &str = "__live-presence-wait:";
/// Prefix of an open room's lobby record (`{"lobby","info"}`).
pub const ROOM_PREFIX: &str = "__live-room:";
/// Prefix of a lobby's set of open room topics.
pub const LOBBY_PREFIX: &str = "__live-lobby:";
/// Milliseconds an unused presence or ownership hash lives.
pub const TTL_MS: u64 = 600_000;

/// The key of a replica's ownership record.
pub fn owned_key(replica: &str) -> String {
    format!("__live-owned:{replica}")
}

/// An open room's record key, its lobby's set key, and the topic.
fn lobby_keys(lobby: &str, topic: &str) -> (String, String, String) {
    (
        format!("{ROOM_PREFIX}{topic}"),
        format!("{LOBBY_PREFIX}{lobby}"),
        topic.to_owned(),
    )
}

fn field(topic: &str, key: &str) -> String {
    format!("{topic}\n{key}")
}

/// Lua helpers shared by the scripts: `h` a room's hash, `w` its waiting line.
const LIB: &str = r"
local function bump(h)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = tonumber(redis.call('HGET', h, '#v') or '0')
  if now <= v then now = v + 1 end
  -- As digits: Lua would write a number this large in %.14g, losing its last digits.
  redis.call('HSET', h, '#v', string.format('%.0f', now))
end
local function place(h, w, key, limit)
  if tonumber(redis.call('HGET', h, '#l') or '0') < limit then
    redis.call('HSET', h, 'l:' .. key, 1)
    redis.call('HINCRBY', h, '#l', 1)
    return 1
  end
  redis.call('ZADD', w, redis.call('HINCRBY', h, '#o', 1), key)
  return 0
end
-- An identity present nowhere before: counted, and listed or queued if it has data.
local function arrive(h, w, key, limit)
  redis.call('HINCRBY', h, '#n', 1)
  bump(h)
  redis.call('HSET', h, '#max', limit)
  if redis.call('HEXISTS', h, 'd:' .. key) == 1 then return place(h, w, key, limit) end
  return 0
end
-- An identity gone everywhere: uncounted, its place freed. Returns whether it was listed.
local function depart(h, w, key)
  local was = redis.call('HDEL', h, 'l:' .. key)
  redis.call('HDEL', h, 'c:' .. key, 'd:' .. key)
  redis.call('ZREM', w, key)
  redis.call('HINCRBY', h, '#n', -1)
  bump(h)
  if was == 1 then redis.call('HINCRBY', h, '#l', -1) end
  return was
end
-- Lists the first waiting members while there is room; appends them to out as promotions.
local function refill(out, h, w, topic)
  local limit = tonumber(redis.call('HGET', h, '#max') or '1000')
  while tonumber(redis.call('HGET', h, '#l') or '0') < limit do
    local p = redis.call('ZPOPMIN', w)
    if #p == 0 then break end
    redis.call('HSET', h, 'l:' .. p[1], 1)
    redis.call('HINCRBY', h, '#l', 1)
    table.insert(out, 'promote'); table.insert(out, topic)
    table.insert(out, p[1]); table.insert(out, redis.call('HGET', h, 'd:' .. p[1]) or '')
  end
end
local function counted(h)
  return tonumber(redis.call('HGET', h, '#n') or '0'), tonumber(redis.call('HGET', h, '#v') or '0')
end
-- Appends a departure to out as (kind, topic, key, data).
local function departed(out, h, w, topic, key)
  local was = depart(h, w, key)
  table.insert(out, was == 1 and 'leave' or 'depart'); table.insert(out, topic)
  table.insert(out, key); table.insert(out, '')
end
-- Appends a room's promotions and count, once its departures are done (and drops an empty
-- room's keys).
local function settle(out, h, w, topic)
  refill(out, h, w, topic)
  local n, v = counted(h)
  table.insert(out, 'count'); table.insert(out, topic)
  table.insert(out, string.format('%.0f', n)); table.insert(out, string.format('%.0f', v))
  if n <= 0 then redis.call('DEL', h, w) end
end
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LIB}\n{body}"))
}

pub(crate) fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        // KEYS: hash, owned, wait. ARGV: key, data, owned field, ttl, limit.
        // Returns {first, listed, n, v}.
        join: script(
            r"
            local h, w, key, limit = KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[5])
            if ARGV[2] ~= '' then redis.call('HSET', h, 'd:' .. key, ARGV[2]) end
            local c = redis.call('HINCRBY', h, 'c:' .. key, 1)
            redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
            local listed = 0
            if c == 1 then
              listed = arrive(h, w, key, limit)
            elseif ARGV[2] ~= '' and redis.call('HEXISTS', h, 'l:' .. key) == 0
                and not redis.call('ZSCORE', w, key) then
              listed = place(h, w, key, limit)
            end
            redis.call('PEXPIRE', h, ARGV[4])
            redis.call('PEXPIRE', w, ARGV[4])
            redis.call('PEXPIRE', KEYS[2], ARGV[4])
            local n, v = counted(h)
            return {c == 1 and 1 or 0, listed, n, v}",
        ),
        // KEYS: hash, owned, wait. ARGV: key, owned field.
        // Returns transitions (kind, topic, key, data) with the room's count, or {} if it was
        // not the last leave.
        leave: script(
            r"
            local h, w, key = KEYS[1], KEYS[3], ARGV[1]
            local o = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
            if o <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
            if o < 0 then return {} end -- already reaped: not ours to remove again
            local c = redis.call('HINCRBY', h, 'c:' .. key, -1)
            if c > 0 then return {} end
            local out = {}
            departed(out, h, w, ARGV[3], key)
            settle(out, h, w, ARGV[3])
            return out",
        ),
        // KEYS: hash, wait. ARGV: key, data, limit. Returns 1 if the member is listed.
        update: script(
            r"
            local h, w, key = KEYS[1], KEYS[2], ARGV[1]
            if redis.call('HEXISTS', h, 'c:' .. key) == 0 then return 0 end
            redis.call('HSET', h, 'd:' .. key, ARGV[2])
            if redis.call('HEXISTS', h, 'l:' .. key) == 1 then return 1 end
            if redis.call('ZSCORE', w, key) then return 0 end
            return place(h, w, key, tonumber(ARGV[3]))",
        ),
        // KEYS: owned, lease, replicas. ARGV: replica id, hash prefix, wait prefix.
        reap: script(
            r"
            if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
            local owned = redis.call('HGETALL', KEYS[1])
            local out, topics = {}, {}
            for i = 1, #owned, 2 do
              local f, n = owned[i], tonumber(owned[i + 1])
              local sep = string.find(f, '\n', 1, true)
              local topic, key = string.sub(f, 1, sep - 1), string.sub(f, sep + 1)
              local h, w = ARGV[2] .. topic, ARGV[3] .. topic
              local c = redis.call('HINCRBY', h, 'c:' .. key, -n)
              if c <= 0 then
                departed(out, h, w, topic, key)
                topics[topic] = true
              end
            end
            for topic in pairs(topics) do settle(out, ARGV[2] .. topic, ARGV[3] .. topic, topic) end
            redis.call('DEL', KEYS[1])
            redis.call('SREM', KEYS[3], ARGV[1])
            return out",
        ),
        // KEYS: owned. ARGV: hash prefix, wait prefix, ttl, then (topic, key, n, data, limit)
        // per member.
        reassert: script(
            r"
            local prefix, wprefix, ttl = ARGV[1], ARGV[2], ARGV[3]
            local before, order, limits = {}, {}, {}
            local function touch(topic, key)
              local k = topic .. '\n' .. key
              if before[k] == nil then
                before[k] = tonumber(redis.call('HGET', prefix .. topic, 'c:' .. key) or '0')
                table.insert(order, {topic, key})
              end
            end
            local owned = redis.call('HGETALL', KEYS[1])
            for i = 1, #owned, 2 do
              local f, n = owned[i], tonumber(owned[i + 1])
              local sep = string.find(f, '\n', 1, true)
              local topic, key = string.sub(f, 1, sep - 1), string.sub(f, sep + 1)
              touch(topic, key)
              redis.call('HINCRBY', prefix .. topic, 'c:' .. key, -n)
            end
            redis.call('DEL', KEYS[1])
            for i = 4, #ARGV, 5 do
              local topic, key, n, data = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
              limits[topic] = tonumber(ARGV[i + 4])
              touch(topic, key)
              local h = prefix .. topic
              if data ~= '' then redis.call('HSET', h, 'd:' .. key, data) end
              redis.call('HINCRBY', h, 'c:' .. key, n)
              redis.call('HSET', KEYS[1], topic .. '\n' .. key, n)
              redis.call('PEXPIRE', h, ttl)
              redis.call('PEXPIRE', wprefix .. topic, ttl)
            end
            redis.call('PEXPIRE', KEYS[1], ttl)
            local out, topics = {}, {}
            for _, tk in ipairs(order) do
              local topic, key = tk[1], tk[2]
              local h, w = prefix .. topic, wprefix .. topic
              local b = before[topic .. '\n' .. key]
              local a = tonumber(redis.call('HGET', h, 'c:' .. key) or '0')
              if b <= 0 and a > 0 then
                local listed = arrive(h, w, key, limits[topic] or 1000)
                table.insert(out, listed == 1 and 'join' or 'arrive'); table.insert(out, topic)
                table.insert(out, key); table.insert(out, redis.call('HGET', h, 'd:' .. key) or '')
                topics[topic] = true
              elseif b > 0 and a <= 0 then
                departed(out, h, w, topic, key)
                topics[topic] = true
              elseif a <= 0 then
                redis.call('HDEL', h, 'c:' .. key, 'd:' .. key)
              end
            end
            for topic in pairs(topics) do settle(out, prefix .. topic, wprefix .. topic, topic) end
            return out",
        ),
    })
}

/// A cluster-wide presence change found by a script, for the replica that ran it to announce.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A listed member arrived or was promoted: announce `join` with its data.
    Listed {
        /// The room's data topic.
        topic: String,
        /// The identity.
        key: String,
        /// Its presence data.
        data: Value,
    },
    /// A member arrived counted only.
    Counted {
        /// The room's data topic.
        topic: String,
        /// The identity.
        key: String,
    },
    /// A member is gone everywhere (`listed`: announce `leave`).
    Gone {
        /// The room's data topic.
        topic: String,
        /// The identity.
        key: String,
        /// Whether it was listed.
        listed: bool,
    },
    /// The room's count after the changes.
    Count {
        /// The room's data topic.
        topic: String,
        /// Its count.
        count: Count,
    },
}

/// Decodes a script's flat (kind, topic, key, data) list.
pub(crate) fn transitions(flat: Vec<String>) -> Vec<Transition> {
    let mut out = Vec::with_capacity(flat.len() / 4);
    let mut it = flat.into_iter();
    while let (Some(kind), Some(topic), Some(a), Some(b)) =
        (it.next(), it.next(), it.next(), it.next())
    {
        out.push(match kind.as_str() {
            "join" | "promote" => match serde_json::from_str(&b) {
                Ok(data) => Transition::Listed {
                    topic,
                    key: a,
                    data,
                },
                Err(_) => Transition::Counted { topic, key: a },
            },
            "arrive" => Transition::Counted { topic, key: a },
            "leave" | "depart" => Transition::Gone {
                topic,
                key: a,
                listed: kind == "leave",
            },
            _ => Transition::Count {
                topic,
                count: Count {
                    total: a.parse().unwrap_or(0),
                    version: b.parse().unwrap_or(0),
                },
            },
        });
    }
    out
}

pub(crate) struct Scripts {
    pub join: redis::Script,
    pub leave: redis::Script,
    pub update: redis::Script,
    pub reap: redis::Script,
    pub reassert: redis::Script,
}

/// One of this replica's contributions: how many of its processes' transitions (0 or 1 today),
/// the member's data, and the room's listed limit.
#[derive(Debug, Clone)]
struct Contribution {
    n: i64,
    data: Option<Value>,
    limit: usize,
}

/// This replica's own contributions: (topic, identity) -> contribution.
type Contributions = HashMap<(String, String), Contribution>;

/// Presence counted in Redis (see the module docs). It also keeps this replica's own
/// contributions in memory: they are the truth it re-asserts after an outage, and the roster
/// it serves while Redis is unreachable.
pub struct RedisPresence {
    redis: Redis,
    replica: Arc<str>,
    local: Mutex<Contributions>,
    dirty: AtomicBool,
}

impl RedisPresence {
    pub(crate) fn new(redis: Redis, replica: Arc<str>) -> Self {
        RedisPresence {
            redis,
            replica,
            local: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Contributions> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a transition failed to reach Redis since the last re-assertion.
    pub fn dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Topics this replica has members in.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.local().keys().map(|(t, _)| t.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Replaces this replica's contributions in Redis with its in-memory truth, atomically.
    /// Returns the resulting cluster-wide transitions.
    pub async fn reassert(&self) -> Result<Vec<Transition>, RedisDown> {
        let entries: Vec<((String, String), Contribution)> = self
            .local()
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        let mut inv = scripts().reassert.key(owned_key(&self.replica));
        inv.arg(PRESENCE_PREFIX).arg(WAIT_PREFIX).arg(TTL_MS);
        for ((t, k), c) in &entries {
            let data = c.data.as_ref().map(Value::to_string).unwrap_or_default();
            inv.arg(t).arg(k).arg(c.n).arg(data).arg(c.limit);
        }
        self.dirty.store(false, Ordering::Relaxed);
        match self
            .redis
            .run(|mut c| async move { inv.invoke_async::<Vec<String>>(&mut c).await })
            .await
        {
            Ok(out) => Ok(transitions(out)),
            Err(e) => {
                self.dirty.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The cluster-wide roster of `topic`, from Redis only (no fallback to this replica's own
    /// members: a correction must never shrink a roster to the local view).
    pub async fn cluster_roster(&self, topic: &str) -> Result<Roster, RedisDown> {
        let hash = format!("{PRESENCE_PREFIX}{topic}");
        let all: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { redis::AsyncCommands::hgetall(&mut c, hash).await })
            .await?;
        let number = |f: &str| all.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut listed: Vec<(String, Value)> = all
            .keys()
            .filter_map(|f| {
                let key = f.strip_prefix("l:")?;
                let data = all.get(&format!("d:{key}"))?;
                Some((key.to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Roster {
            listed,
            count: Count {
                total: number("#n"),
                version: number("#v"),
            },
        })
    }

    /// Runs a script; with Redis down, `None`, and the replica re-asserts after the outage so
    /// the others hear of what it did meanwhile.
    async fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        inv: redis::ScriptInvocation<'static>,
    ) -> Option<T> {
        let ran = self
            .redis
            .run(|mut c| async move { inv.invoke_async::<T>(&mut c).await })
            .await;
        if ran.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        ran.ok()
    }

    /// Runs a pipeline of writes whose outcome nothing waits for (a failed lobby record heals
    /// on the next read or transition).
    async fn write(&self, p: redis::Pipeline) {
        let _ = self
            .redis
            .run(|mut c| async move { p.query_async::<()>(&mut c).await })
            .await;
    }

    /// Refreshes the expiry of the hashes this replica takes part in.
    pub async fn refresh_ttl(&self) {
        let topics = self.topics();
        let owned = owned_key(&self.replica);
        let _ = self
            .redis
            .run(|mut c| async move {
                let mut p = redis::pipe();
                for t in &topics {
                    p.pexpire(format!("{PRESENCE_PREFIX}{t}"), TTL_MS as i64)
                        .ignore();
                }
                p.pexpire(owned, TTL_MS as i64).ignore();
                p.query_async::<()>(&mut c).await
            })
            .await;
    }
}

impl PresenceStore for RedisPresence {
    fn join(
        &self,
        topic: &str,
        key: &str,
        data: Option<&Value>,
        limit: usize,
    ) -> StoreFuture<'_, Joined> {
        {
            let mut local = self.local();
            let e = local
                .entry((topic.to_owned(), key.to_owned()))
                .or_insert(Contribution {
                    n: 0,
                    data: None,
                    limit,
                });
            e.n += 1;
            e.data = data.cloned();
        }
        let mut inv = scripts().join.key(format!("{PRESENCE_PREFIX}{topic}"));
        inv.key(owned_key(&self.replica))
            .key(format!("{WAIT_PREFIX}{topic}"))
            .arg(key)
            .arg(data.map(Value::to_string).unwrap_or_default())
            .arg(field(topic, key))
            .arg(TTL_MS)
            .arg(limit);
        let has_data = data.is_some();
        Box::pin(async move {
            match self.run::<(u8, u8, u64, u64)>(inv).await {
                Some((first, listed, total, version)) => Joined {
                    first: first == 1,
                    listed: listed == 1,
                    count: Count { total, version },
                },
                // Served locally while Redis is down: announced as the first join.
                None => Joined {
                    first: true,
                    listed: has_data,
                    count: Count::default(),
                },
            }
        })
    }

    fn leave(&self, topic: &str, key: &str, _limit: usize) -> StoreFuture<'_, Left> {
        {
            let mut local = self.local();
            let k = (topic.to_owned(), key.to_owned());
            if let Some(e) = local.get_mut(&k) {
                e.n -= 1;
                if e.n <= 0 {
                    local.remove(&k);
                }
            }
        }
        let mut inv = scripts().leave.key(format!("{PRESENCE_PREFIX}{topic}"));
        inv.key(owned_key(&self.replica))
            .key(format!("{WAIT_PREFIX}{topic}"))
            .arg(key)
            .arg(field(topic, key))
            .arg(topic);
        Box::pin(async move {
            let Some(out) = self.run::<Vec<String>>(inv).await else {
                return Left {
                    last: true,
                    listed: true,
                    ..Left::default()
                };
            };
            let mut left = Left::default();
            for t in transitions(out) {
                match t {
                    Transition::Gone { listed, .. } => {
                        left.last = true;
                        left.listed = listed;
                    }
                    Transition::Listed { key, data, .. } => left.promoted.push((key, data)),
                    Transition::Count { count, .. } => left.count = count,
                    Transition::Counted { .. } => {}
                }
            }
            left
        })
    }

    fn update(&self, topic: &str, key: &str, data: &Value, limit: usize) -> StoreFuture<'_, bool> {
        if let Some(e) = self.local().get_mut(&(topic.to_owned(), key.to_owned())) {
            e.data = Some(data.clone());
        }
        let mut inv = scripts().update.key(format!("{PRESENCE_PREFIX}{topic}"));
        inv.key(format!("{WAIT_PREFIX}{topic}"))
            .arg(key)
            .arg(data.to_string())
            .arg(limit);
        Box::pin(async move { self.run::<u8>(inv).await.is_none_or(|l| l == 1) })
    }

    fn roster(&self, topic: &str) -> StoreFuture<'_, Roster> {
        let topic = topic.to_owned();
        Box::pin(async move {
            match self.cluster_roster(&topic).await {
                Ok(roster) => roster,
                Err(_) => {
                    let mut listed: Vec<(String, Value)> = self
                        .local()
                        .iter()
                        .filter(|((t, _), _)| *t == topic)
                        .filter_map(|((_, k), c)| Some((k.clone(), c.data.clone()?)))
                        .collect();
                    listed.sort_by(|a, b| a.0.cmp(&b.0));
                    let total = listed.len() as u64;
                    Roster {
                        listed,
                        count: Count { total, version: 0 },
                    }
                }
            }
        })
    }

    fn open_room(&self, lobby: &str, topic: &str, info: &Value) -> StoreFuture<'_, ()> {
        let record = serde_json::json!({ "lobby": lobby, "info": info }).to_string();
        let (room, set, topic) = lobby_keys(lobby, topic);
        let mut p = redis::pipe();
        p.set(&room, record).ignore().sadd(&set, topic).ignore();
        Box::pin(self.write(p))
    }

    fn close_room(&self, lobby: &str, topic: &str) -> StoreFuture<'_, ()> {
        let (room, set, topic) = lobby_keys(lobby, topic);
        let mut p = redis::pipe();
        p.del(&room).ignore().srem(&set, topic).ignore();
        Box::pin(self.write(p))
    }

    fn room_info(&self, topic: &str) -> StoreFuture<'_, Option<(String, Value)>> {
        let room = format!("{ROOM_PREFIX}{topic}");
        Box::pin(async move {
            let record: Option<String> = self
                .redis
                .run(|mut c| async move { redis::AsyncCommands::get(&mut c, room).await })
                .await
                .ok()?;
            let mut v: Value = serde_json::from_str(&record?).ok()?;
            Some((v["lobby"].as_str()?.to_owned(), v["info"].take()))
        })
    }

    fn rooms(&self, lobby: &str) -> StoreFuture<'_, Vec<(String, Value, Count)>> {
        let set = format!("{LOBBY_PREFIX}{lobby}");
        Box::pin(async move {
            let Ok(topics) =
                self.redis
                    .run(|mut c| {
                        let set = set.clone();
                        async move {
                            redis::AsyncCommands::smembers::<_, Vec<String>>(&mut c, set).await
                        }
                    })
                    .await
            else {
                return Vec::new();
            };
            if topics.is_empty() {
                return Vec::new();
            }
            // One round trip for every room's record and count.
            let keys = topics.clone();
            let Ok(rows) = self
                .redis
                .run(|mut c| async move {
                    let mut p = redis::pipe();
                    for t in &keys {
                        p.get(format!("{ROOM_PREFIX}{t}"));
                        p.cmd("HMGET")
                            .arg(format!("{PRESENCE_PREFIX}{t}"))
                            .arg("#n")
                            .arg("#v");
                    }
                    p.query_async::<Vec<(Option<String>, (Option<u64>, Option<u64>))>>(&mut c)
                        .await
                })
                .await
            else {
                return Vec::new();
            };
            let mut list = Vec::new();
            let mut stale = Vec::new();
            for (topic, (record, (n, v))) in topics.into_iter().zip(rows) {
                let info = record
                    .and_then(|r| serde_json::from_str::<Value>(&r).ok())
                    .map(|mut r| r["info"].take());
                match (info, n.unwrap_or(0)) {
                    (Some(info), total) if total > 0 => {
                        let count = Count {
                            total,
                            version: v.unwrap_or(0),
                        };
                        list.push((topic, info, count));
                    }
                    _ => stale.push(topic),
                }
            }
            if !stale.is_empty() {
                // Rooms nobody closed (every replica in them died at once): forget them.
                let mut p = redis::pipe();
                for t in &stale {
                    p.del(format!("{ROOM_PREFIX}{t}")).ignore();
                    p.srem(&set, t).ignore();
                }
                self.write(p).await;
            }
            list.sort_by(|a, b| a.0.cmp(&b.0));
            list
        })
    }
}
