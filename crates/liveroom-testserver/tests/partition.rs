//! One replica cut off from Redis while the others keep it: users join, leave and hop between
//! replicas during the cut, and afterwards every long-lived presence observer on every replica
//! must converge to the true roster without reconnecting (docs/clustering.md, "Convergence").
//!
//! Replica A reaches Redis through a proxy the test controls; B and C connect directly. Each
//! schedule is random but seeded, so a failure names the seed that reproduces it. A partition
//! starts with replies lost (commands run in Redis, their answers never arrive, so A cannot tell
//! what happened) and then cuts every connection; one partition lasts longer than the lease, so
//! the others also reap A meanwhile.

mod common;

use common::proxy::{Link, Proxy};
use common::{fresh_roster, Peer, RedisServer, Replica, TestRedis};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const BOARD: &str = "part";
const GRACE_MS: u64 = 1000;
/// The lease and heartbeat of the test server's defaults.
const LEASE_MS: u64 = 3000;
/// The bound docs/clustering.md states: grace + lease + 2 s after the partition heals.
const BOUND: Duration = Duration::from_millis(GRACE_MS + LEASE_MS + 2000);
const USERS: usize = 12;

/// A small deterministic generator (xorshift64*), so a schedule is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// What the test did and when, for the failure message.
struct Step {
    at_ms: u128,
    what: String,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>6} ms {}", self.at_ms, self.what)
    }
}

async fn run(seed: u64) {
    let redis = RedisServer::start();
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let replicas = [
        Replica::start_with("a", opts(&proxy.url())),
        Replica::start_with("b", opts(&redis.url())),
        Replica::start_with("c", opts(&redis.url())),
    ];
    let mut observers = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let mut o = Peer::connect(r, &format!("observer{i}")).await;
        o.observe(BOARD).await;
        observers.push(o);
    }
    let mut rng = Rng(seed | 1);
    // user -> (replica index, socket) of its live sockets; the truth is who has one.
    let mut sockets: BTreeMap<String, Vec<(usize, Peer)>> = BTreeMap::new();
    let mut steps = Vec::new();
    let started = Instant::now();
    // Two partitions of A: a short one, and one longer than the lease (A gets reaped).
    let schedule = [
        (1_000, Link::RepliesLost),
        (1_700, Link::Cut),
        (3_700, Link::Open),
        (5_000, Link::RepliesLost),
        (5_600, Link::Cut),
        (10_000, Link::Open),
    ];
    let mut next_link = 0;
    let end_ms = 10_000;
    while started.elapsed().as_millis() < end_ms {
        if let Some((at, link)) = schedule.get(next_link) {
            if started.elapsed().as_millis() >= *at {
                proxy.set(*link);
                steps.push(Step {
                    at_ms: started.elapsed().as_millis(),
                    what: format!("link {link:?}"),
                });
                next_link += 1;
            }
        }
        let user = format!("u{}", rng.below(USERS));
        let live = sockets.entry(user.clone()).or_default();
        let what = match (live.len(), rng.below(3)) {
            (0, _) | (_, 0) if live.len() < 2 => {
                // Join (a first tab, or a second one) on a random replica.
                let r = rng.below(replicas.len());
                let mut p = Peer::connect(&replicas[r], &user).await;
                p.join(BOARD).await;
                live.push((r, p));
                format!("{user} joins on {}", replicas[r].name)
            }
            (_, 1) => {
                // Hop: open on another replica, then close the old socket (inside the grace).
                let (from, mut old) = live.remove(0);
                let to = (from + 1 + rng.below(replicas.len() - 1)) % replicas.len();
                let mut p = Peer::connect(&replicas[to], &user).await;
                p.join(BOARD).await;
                old.close();
                live.push((to, p));
                format!(
                    "{user} hops {} -> {}",
                    replicas[from].name, replicas[to].name
                )
            }
            _ => {
                let (r, mut p) = live.remove(rng.below(live.len()));
                p.close();
                format!("{user} leaves {}", replicas[r].name)
            }
        };
        steps.push(Step {
            at_ms: started.elapsed().as_millis(),
            what,
        });
        tokio::time::sleep(Duration::from_millis(40 + rng.below(120) as u64)).await;
    }
    proxy.set(Link::Open);
    let healed = Instant::now();
    let truth: BTreeSet<String> = sockets
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(u, _)| u.clone())
        .collect();
    let want: Vec<String> = truth.iter().cloned().collect();

    // Every long-lived observer converges, within the bound, without reconnecting.
    for (i, o) in observers.iter_mut().enumerate() {
        let left = BOUND.saturating_sub(healed.elapsed());
        let ok = o
            .wait_roster(&want.iter().map(String::as_str).collect::<Vec<_>>(), left)
            .await;
        assert!(
            ok,
            "seed {seed}: the observer on {} (closed: {}) still sees {:?}, the truth is \
             {want:?}, {:?} after the heal; steps: {steps:#?}",
            replicas[i].name,
            o.closed,
            o.keys(),
            healed.elapsed()
        );
    }
    let converged = healed.elapsed();
    // ... and stays there, and Redis and fresh subscribers agree.
    for o in &mut observers {
        o.settle(Duration::from_millis(1500)).await;
        assert_eq!(
            o.keys(),
            want,
            "seed {seed}: a roster moved after converging"
        );
    }
    assert_eq!(
        redis.counts(BOARD).keys().cloned().collect::<Vec<_>>(),
        want,
        "seed {seed}: the Redis hash"
    );
    for r in &replicas {
        let fresh = fresh_roster(r, BOARD).await;
        assert_eq!(fresh, want, "seed {seed}: a fresh roster on {}", r.name);
    }
    eprintln!(
        "seed {seed}: {} users present, observers converged {converged:?} after the heal",
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rosters_converge_after_a_partition_seed_1() {
    run(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rosters_converge_after_a_partition_seed_2() {
    run(0x5eed_2026).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rosters_converge_after_a_partition_seed_3() {
    run(0xdead_beef).await;
}

/// A replica on `url` that logs at info (the breaker and the resyncs show in a failure's log).
fn opts(url: &str) -> common::ReplicaOpts<'_> {
    let mut o = common::ReplicaOpts::new(Some(url), GRACE_MS);
    o.env.push(("RUST_LOG", "info".into()));
    o
}
