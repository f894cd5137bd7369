//! The cluster-wide roster (protocol.md section 6) and its atomic transitions.
//!
//! Key layout (every key of a room in the room's hash slot, see [`super::keys`]):
//! - `__live-presence:{<topic>}`: HASH, `c:<identity>` = cluster-wide count, `d:<identity>` =
//!   JSON presence data (written before the count is raised), `l:<identity>` = listed; `#n` =
//!   present identities, `#l` = listed ones, `#v` = the count's version (microseconds, bumped
//!   by every arrival and departure), `#o` = the waiting line's last place. Expires after 10
//!   minutes unused; replicas refresh the rooms they are in.
//! - `__live-presence-wait:{<topic>}`: ZSET, members with data beyond the listed limit, by join
//!   order (the first is promoted when a listed member leaves).
//! - `__live-owned:{<topic>}`: HASH, `<replica>\n<identity>` = what that replica added, and
//!   `#e:<replica>` = the registration (epoch) under which it last wrote here, so a replica's
//!   contributions can be removed exactly when it dies, room by room.
//! - `__live-rooms-of:{<replica>}`: SET, the rooms a replica may have contributions in (written
//!   before its first join in a room), for the reaper.
//!
//! Every script touches one room's keys only, so it runs on the shard that owns the room. Every
//! script that makes an identity arrive or depart goes through the same Lua helpers (`LIB`), so
//! the counters, the listing and the waiting line stay consistent whichever replica (or reaper)
//! does it. Promotions happen once a script's departures are all done, so a member that leaves
//! in the same script is never promoted on the way.

use super::breaker::{Redis, RedisDown};
use super::keys;
use crate::presence_store::{Count, Joined, Left, PresenceStore, Roster, StoreFuture};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Milliseconds an unused presence or ownership hash lives.
pub const TTL_MS: u64 = 600_000;
/// Rooms re-asserted or reaped at once.
const CONCURRENT_ROOMS: usize = 32;

fn field(replica: &str, key: &str) -> String {
    format!("{replica}\n{key}")
}

/// `script` on a room's keys (hash, owned, wait), arguments to follow.
fn room_script(script: &'static redis::Script, topic: &str) -> redis::ScriptInvocation<'static> {
    let mut inv = script.key(keys::presence(topic));
    inv.key(keys::owned(topic)).key(keys::wait(topic));
    inv
}

fn epoch_field(replica: &str) -> String {
    format!("#e:{replica}")
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
        // KEYS: hash, owned, wait. ARGV: key, data, owned field, ttl, limit, epoch field,
        // epoch. Returns {first, listed, n, v}.
        join: script(
            r"
            local h, w, key, limit = KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[5])
            if ARGV[2] ~= '' then redis.call('HSET', h, 'd:' .. key, ARGV[2]) end
            local c = redis.call('HINCRBY', h, 'c:' .. key, 1)
            redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
            redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
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
        // KEYS: hash, owned, wait. ARGV: key, owned field, topic.
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
        // One room of a dead replica. KEYS: hash, owned, wait. ARGV: replica, its last known
        // epoch, topic. A replica that came back and wrote here since (a newer epoch) is left
        // alone: what it wrote is its truth.
        reap: script(
            r"
            local h, o, w, topic = KEYS[1], KEYS[2], KEYS[3], ARGV[3]
            local e = tonumber(redis.call('HGET', o, '#e:' .. ARGV[1]) or '0')
            if e > tonumber(ARGV[2]) then return {} end
            local mine = ARGV[1] .. '\n'
            local owned = redis.call('HGETALL', o)
            local out, any = {}, false
            for i = 1, #owned, 2 do
              local f = owned[i]
              if string.sub(f, 1, #mine) == mine then
                local key = string.sub(f, #mine + 1)
                redis.call('HDEL', o, f)
                local c = redis.call('HINCRBY', h, 'c:' .. key, -tonumber(owned[i + 1]))
                if c <= 0 then
                  departed(out, h, w, topic, key)
                  any = true
                end
              end
            end
            redis.call('HDEL', o, '#e:' .. ARGV[1])
            if any then settle(out, h, w, topic) end
            return out",
        ),
        // One room of this replica: replaces what it owns there with its in-memory truth.
        // KEYS: hash, owned, wait. ARGV: replica, epoch, ttl, topic, then (key, n, data, limit)
        // per member.
        reassert: script(
            r"
            local h, o, w, topic = KEYS[1], KEYS[2], KEYS[3], ARGV[4]
            local mine, ttl = ARGV[1] .. '\n', ARGV[3]
            local before, order, limit = {}, {}, 1000
            local function touch(key)
              if before[key] == nil then
                before[key] = tonumber(redis.call('HGET', h, 'c:' .. key) or '0')
                table.insert(order, key)
              end
            end
            local owned = redis.call('HGETALL', o)
            for i = 1, #owned, 2 do
              local f = owned[i]
              if string.sub(f, 1, #mine) == mine then
                local key = string.sub(f, #mine + 1)
                touch(key)
                redis.call('HINCRBY', h, 'c:' .. key, -tonumber(owned[i + 1]))
                redis.call('HDEL', o, f)
              end
            end
            for i = 5, #ARGV, 4 do
              local key, n, data = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
              limit = tonumber(ARGV[i + 3])
              touch(key)
              if data ~= '' then redis.call('HSET', h, 'd:' .. key, data) end
              redis.call('HINCRBY', h, 'c:' .. key, n)
              redis.call('HSET', o, mine .. key, n)
            end
            redis.call('HSET', o, '#e:' .. ARGV[1], ARGV[2])
            redis.call('PEXPIRE', h, ttl)
            redis.call('PEXPIRE', w, ttl)
            redis.call('PEXPIRE', o, ttl)
            local out, changed = {}, false
            for _, key in ipairs(order) do
              local b = before[key]
              local a = tonumber(redis.call('HGET', h, 'c:' .. key) or '0')
              if b <= 0 and a > 0 then
                local listed = arrive(h, w, key, limit)
                table.insert(out, listed == 1 and 'join' or 'arrive'); table.insert(out, topic)
                table.insert(out, key); table.insert(out, redis.call('HGET', h, 'd:' .. key) or '')
                changed = true
              elseif b > 0 and a <= 0 then
                departed(out, h, w, topic, key)
                changed = true
              elseif a <= 0 then
                redis.call('HDEL', h, 'c:' .. key, 'd:' .. key)
              end
            end
            if changed then settle(out, h, w, topic) end
            return out",
        ),
        // A dead replica's index, once its rooms are reaped. KEYS: lease, index. Returns 1 if
        // it was removed (0: the replica is back).
        forget: redis::Script::new(
            r"
            if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
            redis.call('DEL', KEYS[2])
            return 1",
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
    pub forget: redis::Script,
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
    /// The current registration (unix ms when it was made): written with every join and
    /// re-assertion, so a reaper that found an older registration dead leaves newer writes be.
    epoch: AtomicU64,
    local: Mutex<Contributions>,
    /// The rooms known to be in this replica's index. The lock is held across the `SADD` of a
    /// first join and across a trim, so neither can undo the other.
    indexed: tokio::sync::Mutex<HashSet<String>>,
    dirty: AtomicBool,
}

impl RedisPresence {
    pub(crate) fn new(redis: Redis, replica: Arc<str>) -> Self {
        RedisPresence {
            redis,
            replica,
            epoch: AtomicU64::new(0),
            local: Mutex::new(HashMap::new()),
            indexed: tokio::sync::Mutex::new(HashSet::new()),
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

    /// Asks for a re-assertion at the next heartbeat: Redis may have lost writes (a Redis
    /// Cluster failover promotes a replica that had not received the last ones).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The current registration epoch (see [`RedisPresence::set_epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Starts a new registration: what this replica writes from now on wins over a reaper
    /// that found an older one dead.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Topics this replica has members in.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.local().keys().map(|(t, _)| t.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Adds `topics` to this replica's index (before it writes there), unless known to be in it.
    async fn index(&self, topics: &[String]) -> Result<(), RedisDown> {
        let mut indexed = self.indexed.lock().await;
        let new: Vec<&String> = topics.iter().filter(|t| !indexed.contains(*t)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let key = keys::rooms_of(&self.replica);
        let members = new.clone();
        self.redis
            .run(|mut c| async move {
                redis::pipe()
                    .sadd(&key, members)
                    .ignore()
                    .pexpire(&key, TTL_MS as i64)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        indexed.extend(new.into_iter().cloned());
        Ok(())
    }

    /// Replaces this replica's contributions in Redis with its in-memory truth, room by room
    /// (every room of its index, and every room it has members in). Returns the resulting
    /// cluster-wide transitions; on an error, what the rooms that did answer changed, and the
    /// replica stays dirty (it tries again).
    pub async fn reassert(&self) -> Result<Vec<Transition>, (RedisDown, Vec<Transition>)> {
        self.dirty.store(false, Ordering::Relaxed);
        let mut by_room: HashMap<String, Vec<(String, Contribution)>> = HashMap::new();
        for ((t, k), c) in self.local().iter() {
            by_room
                .entry(t.clone())
                .or_default()
                .push((k.clone(), c.clone()));
        }
        let mut topics: Vec<String> = by_room.keys().cloned().collect();
        let failed = |e| {
            self.dirty.store(true, Ordering::Relaxed);
            Err((e, Vec::new()))
        };
        if let Err(e) = self.index(&topics).await {
            return failed(e);
        }
        let key = keys::rooms_of(&self.replica);
        let listed = self
            .redis
            .run(|mut c| async move {
                redis::AsyncCommands::smembers::<_, Vec<String>>(&mut c, key).await
            })
            .await;
        match listed {
            Ok(listed) => topics.extend(listed.into_iter().filter(|t| !by_room.contains_key(t))),
            Err(e) => return failed(e),
        }
        let epoch = self.epoch();
        let invocations = topics
            .into_iter()
            .map(|topic| {
                let mut inv = room_script(&scripts().reassert, &topic);
                inv.arg(&*self.replica).arg(epoch).arg(TTL_MS).arg(&topic);
                for (k, c) in by_room.remove(&topic).unwrap_or_default() {
                    let data = c.data.as_ref().map(Value::to_string).unwrap_or_default();
                    inv.arg(k).arg(c.n).arg(data).arg(c.limit);
                }
                inv
            })
            .collect();
        match self.per_room(invocations).await {
            (changes, None) => Ok(changes),
            (changes, Some(e)) => {
                self.dirty.store(true, Ordering::Relaxed);
                Err((e, changes))
            }
        }
    }

    /// Runs room scripts, a few rooms at a time; what they changed, and an error if any failed.
    async fn per_room(
        &self,
        mut invocations: Vec<redis::ScriptInvocation<'static>>,
    ) -> (Vec<Transition>, Option<RedisDown>) {
        let mut changes = Vec::new();
        let mut error = None;
        while !invocations.is_empty() {
            let n = invocations.len().min(CONCURRENT_ROOMS);
            let runs = futures_util::future::join_all(invocations.drain(..n).map(|inv| {
                self.redis
                    .run(|mut c| async move { inv.invoke_async::<Vec<String>>(&mut c).await })
            }))
            .await;
            for run in runs {
                match run {
                    Ok(out) => changes.extend(transitions(out)),
                    Err(e) => error = Some(e),
                }
            }
        }
        (changes, error)
    }

    /// Removes the contributions of `replica` (found dead, last registered at `epoch`), room
    /// by room, then its index. Returns what changed cluster-wide, and whether the replica is
    /// forgotten (`false`: it is back, or Redis failed: try again later).
    pub async fn reap(&self, replica: &str, epoch: u64) -> (Vec<Transition>, bool) {
        let index = keys::rooms_of(replica);
        let Ok(rooms) = self
            .redis
            .run(|mut c| async move {
                redis::AsyncCommands::smembers::<_, Vec<String>>(&mut c, index).await
            })
            .await
        else {
            return (Vec::new(), false);
        };
        let invocations = rooms
            .into_iter()
            .map(|topic| {
                let mut inv = room_script(&scripts().reap, &topic);
                inv.arg(replica).arg(epoch).arg(&topic);
                inv
            })
            .collect();
        let (changes, error) = self.per_room(invocations).await;
        if error.is_some() {
            return (changes, false);
        }
        let mut inv = scripts().forget.key(keys::lease(replica));
        inv.key(keys::rooms_of(replica));
        let forgot = self
            .redis
            .run(|mut c| async move { inv.invoke_async::<u8>(&mut c).await })
            .await;
        (changes, forgot.is_ok_and(|f| f == 1))
    }

    /// The cluster-wide roster of `topic`, from Redis only (no fallback to this replica's own
    /// members: a correction must never shrink a roster to the local view).
    pub async fn cluster_roster(&self, topic: &str) -> Result<Roster, RedisDown> {
        let hash = keys::presence(topic);
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

    /// Runs writes (each with its key) whose outcome nothing waits for (a failed lobby record
    /// heals on the next read or transition).
    async fn write(&self, cmds: Vec<(String, redis::Cmd)>) {
        let _ = self.redis.pipelines(cmds).await;
    }

    /// Refreshes the expiry of the keys of the rooms this replica takes part in and of its
    /// index, and takes the rooms it left out of the index.
    pub async fn refresh_ttl(&self) {
        let topics = self.topics();
        let ttl = TTL_MS as i64;
        let mut cmds = Vec::new();
        for t in &topics {
            for key in [keys::presence(t), keys::owned(t), keys::wait(t)] {
                let mut cmd = redis::cmd("PEXPIRE");
                cmd.arg(&key).arg(ttl);
                cmds.push((key, cmd));
            }
        }
        let _ = self.redis.pipelines(cmds).await;
        let mut indexed = self.indexed.lock().await;
        let stale: Vec<String> = {
            let local = self.local();
            let present: HashSet<&String> = local.keys().map(|(t, _)| t).collect();
            indexed
                .iter()
                .filter(|t| !present.contains(t))
                .cloned()
                .collect()
        };
        let key = keys::rooms_of(&self.replica);
        let trimmed = self
            .redis
            .run(|mut c| {
                let stale = stale.clone();
                async move {
                    let mut p = redis::pipe();
                    if !stale.is_empty() {
                        p.srem(&key, stale).ignore();
                    }
                    p.pexpire(&key, ttl).ignore();
                    p.query_async::<()>(&mut c).await
                }
            })
            .await;
        if trimmed.is_ok() {
            for t in &stale {
                indexed.remove(t);
            }
        }
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
        let mut inv = room_script(&scripts().join, topic);
        inv.arg(key)
            .arg(data.map(Value::to_string).unwrap_or_default())
            .arg(field(&self.replica, key))
            .arg(TTL_MS)
            .arg(limit)
            .arg(epoch_field(&self.replica))
            .arg(self.epoch());
        let has_data = data.is_some();
        let topic = [topic.to_owned()];
        Box::pin(async move {
            // The index first: a crash right after the join must find the room in it.
            let indexed = self.index(&topic).await;
            if indexed.is_err() {
                self.dirty.store(true, Ordering::Relaxed);
            }
            let joined = match indexed {
                Ok(()) => self.run::<(u8, u8, u64, u64)>(inv).await,
                Err(_) => None,
            };
            match joined {
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
        let mut inv = room_script(&scripts().leave, topic);
        inv.arg(key).arg(field(&self.replica, key)).arg(topic);
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
        let mut inv = scripts().update.key(keys::presence(topic));
        inv.key(keys::wait(topic))
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
        let (room, set) = (keys::room(topic), keys::lobby(lobby));
        let mut put = redis::cmd("SET");
        put.arg(&room).arg(record);
        let mut add = redis::cmd("SADD");
        add.arg(&set).arg(topic);
        Box::pin(self.write(vec![(room, put), (set, add)]))
    }

    fn close_room(&self, lobby: &str, topic: &str) -> StoreFuture<'_, ()> {
        let (room, set) = (keys::room(topic), keys::lobby(lobby));
        let mut del = redis::cmd("DEL");
        del.arg(&room);
        let mut rem = redis::cmd("SREM");
        rem.arg(&set).arg(topic);
        Box::pin(self.write(vec![(room, del), (set, rem)]))
    }

    fn room_info(&self, topic: &str) -> StoreFuture<'_, Option<(String, Value)>> {
        let room = keys::room(topic);
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
        let set = keys::lobby(lobby);
        Box::pin(async move {
            let members = set.clone();
            let Ok(topics) = self
                .redis
                .run(|mut c| async move {
                    redis::AsyncCommands::smembers::<_, Vec<String>>(&mut c, members).await
                })
                .await
            else {
                return Vec::new();
            };
            // One round trip (per shard) for every room's record and count.
            let mut cmds = Vec::with_capacity(topics.len() * 2);
            for t in &topics {
                let room = keys::room(t);
                let mut get = redis::cmd("GET");
                get.arg(&room);
                cmds.push((room, get));
                let hash = keys::presence(t);
                let mut counts = redis::cmd("HMGET");
                counts.arg(&hash).arg("#n").arg("#v");
                cmds.push((hash, counts));
            }
            let Ok(replies) = self.redis.pipelines(cmds).await else {
                return Vec::new();
            };
            let mut replies = replies.into_iter();
            let mut list = Vec::new();
            let mut stale = Vec::new();
            for topic in topics {
                let (Some(Ok(record)), Some(Ok(counts))) = (replies.next(), replies.next()) else {
                    continue; // that shard did not answer: the room is not known stale
                };
                let record: Option<String> = redis::from_redis_value(record).unwrap_or_default();
                let (n, v): (Option<u64>, Option<u64>) =
                    redis::from_redis_value(counts).unwrap_or_default();
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
                let mut cmds = Vec::new();
                for t in &stale {
                    let room = keys::room(t);
                    let mut del = redis::cmd("DEL");
                    del.arg(&room);
                    cmds.push((room, del));
                    let mut rem = redis::cmd("SREM");
                    rem.arg(&set).arg(t);
                    cmds.push((set.clone(), rem));
                }
                self.write(cmds).await;
            }
            list.sort_by(|a, b| a.0.cmp(&b.0));
            list
        })
    }
}
