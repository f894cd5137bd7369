//! Rate limits: [`RateLimit`], a token bucket's shape, and the sharded table of buckets the
//! session (calls and cursor moves, per identity) and the upgrade (per remote address) draw
//! from.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; a request takes one or is
//! refused with the time until one is back. Buckets that refilled completely are forgotten,
//! so the table only holds the identities that were busy recently.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The shape of a token bucket: a sustained rate and a burst.
///
/// ```
/// use liveroom::RateLimit;
/// let actions = RateLimit::per_second(5).burst(20); // 5/s sustained, 20 at once
/// assert_eq!(actions.rate(), 5.0);
/// assert_eq!(actions.capacity(), 20.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
}

impl RateLimit {
    /// `n` per second, with a burst of `n`.
    pub const fn per_second(n: u32) -> Self {
        RateLimit {
            per_second: n as f64,
            burst: n as f64,
        }
    }

    /// Lets up to `n` through at once (at least 1).
    pub const fn burst(self, n: u32) -> Self {
        RateLimit {
            burst: if n == 0 { 1.0 } else { n as f64 },
            ..self
        }
    }

    /// The sustained rate, per second.
    pub fn rate(&self) -> f64 {
        self.per_second
    }

    /// The burst.
    pub fn capacity(&self) -> f64 {
        self.burst
    }

    /// Whether this limit lets everything through (a rate of 0 means no limit).
    pub fn is_unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

/// A limit with a bucket of its own: an override set with [`App::rate_limit`],
/// [`Room::rate_limit`] or [`Room::action_rate_limit`]. Calls under one scope share a bucket
/// per identity.
///
/// [`App::rate_limit`]: crate::App::rate_limit
/// [`Room::rate_limit`]: crate::Room::rate_limit
/// [`Room::action_rate_limit`]: crate::Room::action_rate_limit
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scoped {
    pub scope: u32,
    pub limit: RateLimit,
}

/// The scope of the default call limit ([`Limits::calls`](crate::Limits::calls)).
pub(crate) const CALLS: u32 = 0;
/// The scope of cursor moves ([`Limits::cursor_moves`](crate::Limits::cursor_moves)).
pub(crate) const CURSORS: u32 = 1;

impl Scoped {
    /// `limit` under a scope no other override shares.
    pub fn new(limit: RateLimit) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(CURSORS + 1);
        Scoped {
            scope: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            limit,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The limit it was last drawn under (a sweep judges each bucket by its own).
    limit: RateLimit,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + earned).min(self.limit.burst);
        self.at = now;
    }

    fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        self.limit = limit;
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / limit.per_second;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }
}

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    /// Forget full buckets when the shard grows past this.
    sweep_at: usize,
}

const SHARDS: usize = 16;
const MIN_SWEEP: usize = 1024;

/// Token buckets by key (an identity, a remote address, with a scope).
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    shards: Vec<Mutex<Shard<K>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Takes one token from `key`'s bucket, or says how long until one is back.
    pub fn take(&self, key: &K, limit: RateLimit) -> Result<(), Duration> {
        if limit.is_unlimited() {
            return Ok(());
        }
        let now = Instant::now();
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = shard.buckets.get_mut(key) {
            return bucket.take(limit, now);
        }
        if shard.buckets.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        let mut bucket = Bucket {
            tokens: limit.burst,
            at: now,
            limit,
        };
        let taken = bucket.take(limit, now);
        shard.buckets.insert(key.clone(), bucket);
        taken
    }

    /// How many buckets are held (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().buckets.len())
            .sum()
    }
}

impl<K: Hash + Eq> Shard<K> {
    /// Forgets the buckets that are full again: taking from them anew starts full anyway.
    fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, b| {
            b.refill(now);
            b.tokens < b.limit.burst
        });
        self.sweep_at = (self.buckets.len() * 2).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_lets_the_burst_through_then_the_rate() {
        let buckets = Buckets::<&str>::default();
        let limit = RateLimit::per_second(10).burst(3);
        for _ in 0..3 {
            assert!(buckets.take(&"u", limit).is_ok());
        }
        let wait = buckets.take(&"u", limit).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // Another key has its own bucket.
        assert!(buckets.take(&"v", limit).is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(buckets.take(&"u", limit).is_ok());
        assert!(buckets.take(&"u", limit).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_forgotten() {
        let buckets = Buckets::<u32>::default();
        let limit = RateLimit::per_second(100).burst(2);
        for key in 0..(SHARDS * MIN_SWEEP * 2) as u32 {
            buckets.take(&key, limit).unwrap();
        }
        let held = buckets.len();
        tokio::time::advance(Duration::from_secs(1)).await;
        for key in 1_000_000..1_000_000 + (SHARDS * MIN_SWEEP * 2) as u32 {
            buckets.take(&key, limit).unwrap();
        }
        // The refilled first half was swept while the second half went in.
        assert!(
            buckets.len() < held + SHARDS * MIN_SWEEP,
            "{}",
            buckets.len()
        );
    }

    #[test]
    fn a_zero_rate_is_unlimited() {
        let buckets = Buckets::<u8>::default();
        for _ in 0..1000 {
            assert!(buckets.take(&1, RateLimit::per_second(0)).is_ok());
        }
    }
}
