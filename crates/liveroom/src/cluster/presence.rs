//! The cluster-wide roster (protocol.md section 6) and its atomic transitions.
//!
//! Key layout (standalone Redis; the scripts touch keys derived from their arguments, so Redis
//! Cluster is not supported):
//! - `__live-presence:<topic>`: HASH, `c:<identity>` = cluster-wide count, `d:<identity>` =
//!   JSON presence data (written before the count is raised). Expires after 10 minutes
//!   unused; replicas refresh the rooms they are in.
//! - `__live-owned:<replica>`: HASH, `<topic>\n<identity>` = what this replica added, so its
//!   contributions can be removed exactly when it dies.

use super::breaker::{Redis, RedisDown};
use crate::presence_store::{PresenceStore, StoreFuture};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Prefix of the per-room presence hashes.
pub const PRESENCE_PREFIX: &str = "__live-presence:";
/// Milliseconds an unused presence or ownership hash lives.
pub const TTL_MS: u64 = 600_000;

/// The key of a replica's ownership record.
pub fn owned_key(replica: &str) -> String {
    format!("__live-owned:{replica}")
}

fn field(topic: &str, key: &str) -> String {
    format!("{topic}\n{key}")
}

pub(crate) fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        join: redis::Script::new(
            r"
            if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'd:'..ARGV[1], ARGV[2]) end
            local c = redis.call('HINCRBY', KEYS[1], 'c:'..ARGV[1], 1)
            redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
            redis.call('PEXPIRE', KEYS[1], ARGV[4])
            redis.call('PEXPIRE', KEYS[2], ARGV[4])
            return c",
        ),
        leave: redis::Script::new(
            r"
            local o = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
            if o <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
            if o < 0 then return 0 end -- already reaped: not ours to remove again
            local c = redis.call('HINCRBY', KEYS[1], 'c:'..ARGV[1], -1)
            if c <= 0 then
              redis.call('HDEL', KEYS[1], 'c:'..ARGV[1], 'd:'..ARGV[1])
              if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
              return 1
            end
            return 0",
        ),
        reap: redis::Script::new(
            r"
            if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
            local owned = redis.call('HGETALL', KEYS[1])
            local gone = {}
            for i = 1, #owned, 2 do
              local f, n = owned[i], tonumber(owned[i + 1])
              local sep = string.find(f, '\n', 1, true)
              local topic, key = string.sub(f, 1, sep - 1), string.sub(f, sep + 1)
              local h = ARGV[2] .. topic
              local c = redis.call('HINCRBY', h, 'c:' .. key, -n)
              if c <= 0 then
                redis.call('HDEL', h, 'c:' .. key, 'd:' .. key)
                if redis.call('HLEN', h) == 0 then redis.call('DEL', h) end
                table.insert(gone, topic)
                table.insert(gone, key)
              end
            end
            redis.call('DEL', KEYS[1])
            redis.call('SREM', KEYS[3], ARGV[1])
            return gone",
        ),
        reassert: redis::Script::new(
            r"
            local prefix, ttl = ARGV[1], ARGV[2]
            local before, order = {}, {}
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
            for i = 3, #ARGV, 4 do
              local topic, key, n, data = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
              touch(topic, key)
              local h = prefix .. topic
              if data ~= '' then redis.call('HSET', h, 'd:' .. key, data) end
              redis.call('HINCRBY', h, 'c:' .. key, n)
              redis.call('HSET', KEYS[1], topic .. '\n' .. key, n)
              redis.call('PEXPIRE', h, ttl)
            end
            redis.call('PEXPIRE', KEYS[1], ttl)
            local out = {}
            for _, tk in ipairs(order) do
              local topic, key = tk[1], tk[2]
              local h = prefix .. topic
              local b = before[topic .. '\n' .. key]
              local a = tonumber(redis.call('HGET', h, 'c:' .. key) or '0')
              if a <= 0 then
                redis.call('HDEL', h, 'c:' .. key, 'd:' .. key)
                if redis.call('HLEN', h) == 0 then redis.call('DEL', h) end
              end
              if b <= 0 and a > 0 then
                table.insert(out, 'join'); table.insert(out, topic); table.insert(out, key)
              elseif b > 0 and a <= 0 then
                table.insert(out, 'leave'); table.insert(out, topic); table.insert(out, key)
              end
            end
            return out",
        ),
    })
}

pub(crate) struct Scripts {
    pub join: redis::Script,
    pub leave: redis::Script,
    pub reap: redis::Script,
    pub reassert: redis::Script,
}

/// This replica's own contributions: (topic, identity) -> (count, data).
type Contributions = HashMap<(String, String), (i64, Option<Value>)>;

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
    /// Returns the resulting cluster-wide transitions: `(is_join, topic, key, data)`.
    pub async fn reassert(&self) -> Result<Vec<(bool, String, String, Option<Value>)>, RedisDown> {
        let entries: Vec<(String, String, i64, Option<Value>)> = self
            .local()
            .iter()
            .map(|((t, k), (n, d))| (t.clone(), k.clone(), *n, d.clone()))
            .collect();
        let mut inv = scripts().reassert.key(owned_key(&self.replica));
        inv.arg(PRESENCE_PREFIX).arg(TTL_MS);
        for (t, k, n, d) in &entries {
            let data = d.as_ref().map(Value::to_string).unwrap_or_default();
            inv.arg(t).arg(k).arg(*n).arg(data);
        }
        self.dirty.store(false, Ordering::Relaxed);
        let out: Vec<String> = match self
            .redis
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
        {
            Ok(out) => out,
            Err(e) => {
                self.dirty.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let data: HashMap<(String, String), Option<Value>> = entries
            .into_iter()
            .map(|(t, k, _, d)| ((t, k), d))
            .collect();
        Ok(out
            .chunks_exact(3)
            .map(|c| {
                let d = data.get(&(c[1].clone(), c[2].clone())).cloned().flatten();
                (c[0] == "join", c[1].clone(), c[2].clone(), d)
            })
            .collect())
    }

    /// The cluster-wide roster of `topic`, from Redis only (no fallback to this replica's own
    /// members: a correction must never shrink a roster to the local view).
    pub async fn cluster_roster(&self, topic: &str) -> Result<Vec<(String, Value)>, RedisDown> {
        let hash = format!("{PRESENCE_PREFIX}{topic}");
        let all: HashMap<String, String> = self
            .redis
            .run(|mut c| async move { redis::AsyncCommands::hgetall(&mut c, hash).await })
            .await?;
        let mut list: Vec<(String, Value)> = all
            .iter()
            .filter_map(|(f, v)| {
                let key = f.strip_prefix("c:")?;
                if v.parse::<i64>().ok()? <= 0 {
                    return None;
                }
                let data = all.get(&format!("d:{key}"))?;
                Some((key.to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(list)
    }

    /// Runs a join or leave script: `true` if it was the first join or the last leave anywhere.
    /// With Redis down the replica serves locally, counts it as such, and re-asserts after the
    /// outage so the others hear of it.
    async fn transition(&self, inv: redis::ScriptInvocation<'static>) -> bool {
        let ran = self
            .redis
            .run(|mut c| async move { inv.invoke_async::<i64>(&mut c).await })
            .await;
        match ran {
            Ok(n) => n == 1,
            Err(_) => {
                self.dirty.store(true, Ordering::Relaxed);
                true
            }
        }
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
    fn join(&self, topic: &str, key: &str, data: Option<&Value>) -> StoreFuture<'_, bool> {
        {
            let mut local = self.local();
            let e = local
                .entry((topic.to_owned(), key.to_owned()))
                .or_insert((0, None));
            e.0 += 1;
            e.1 = data.cloned();
        }
        let mut inv = scripts().join.key(format!("{PRESENCE_PREFIX}{topic}"));
        inv.key(owned_key(&self.replica))
            .arg(key)
            .arg(data.map(Value::to_string).unwrap_or_default())
            .arg(field(topic, key))
            .arg(TTL_MS);
        Box::pin(self.transition(inv))
    }

    fn leave(&self, topic: &str, key: &str) -> StoreFuture<'_, bool> {
        {
            let mut local = self.local();
            let k = (topic.to_owned(), key.to_owned());
            if let Some(e) = local.get_mut(&k) {
                e.0 -= 1;
                if e.0 <= 0 {
                    local.remove(&k);
                }
            }
        }
        let mut inv = scripts().leave.key(format!("{PRESENCE_PREFIX}{topic}"));
        inv.key(owned_key(&self.replica))
            .arg(key)
            .arg(field(topic, key));
        Box::pin(self.transition(inv))
    }

    fn update(&self, topic: &str, key: &str, data: &Value) -> StoreFuture<'_, ()> {
        if let Some(e) = self.local().get_mut(&(topic.to_owned(), key.to_owned())) {
            e.1 = Some(data.clone());
        }
        let hash = format!("{PRESENCE_PREFIX}{topic}");
        let (field, value) = (format!("d:{key}"), data.to_string());
        Box::pin(async move {
            let set = self
                .redis
                .run(|mut c| async move {
                    redis::AsyncCommands::hset::<_, _, _, ()>(&mut c, hash, field, value).await
                })
                .await;
            if set.is_err() {
                self.dirty.store(true, Ordering::Relaxed);
            }
        })
    }

    fn roster(&self, topic: &str) -> StoreFuture<'_, Vec<(String, Value)>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            match self.cluster_roster(&topic).await {
                Ok(list) => list,
                Err(_) => {
                    let mut list: Vec<(String, Value)> = self
                        .local()
                        .iter()
                        .filter(|((t, _), _)| *t == topic)
                        .filter_map(|((_, k), (_, d))| Some((k.clone(), d.clone()?)))
                        .collect();
                    list.sort_by(|a, b| a.0.cmp(&b.0));
                    list
                }
            }
        })
    }
}
