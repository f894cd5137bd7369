//! `cluster`: three liveroom replicas sharing a private redis-server (started here on a free
//! port with a temp dir, never the shared 6379), or a private Redis Cluster (`--shards`).
//! Reports cross-replica fan-out, presence convergence across replicas, and the ghost lifetime
//! after `kill -9` of a replica (time until the survivors publish `leave` for the dead
//! replica's members). `shards` runs it on Redis Clusters of several sizes in one run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::servers::{self, Kind, Redis, RedisCluster, ServerProc, Target};
use crate::stats::{now_us, Hist, Metrics};
use crate::ws::{self, lr};
use crate::{fanout, presence};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// fan-out subscribers (spread over replicas 2 and 3; publishers on replica 1)
    #[arg(long, default_value_t = 300)]
    pub subs: usize,
    /// fan-out publishers
    #[arg(long, default_value_t = 2)]
    pub pubs: usize,
    /// fan-out measuring window, seconds
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// fan-out publications in flight (not yet delivered to every subscriber)
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// presence convergence samples (one join each, rotating over replicas)
    #[arg(long, default_value_t = 20)]
    pub joins: usize,
    /// members on the replica that gets killed
    #[arg(long, default_value_t = 20)]
    pub ghosts: usize,
    /// give up waiting for ghosts to be removed after this many seconds
    #[arg(long, default_value_t = 30.0)]
    pub ghost_timeout: f64,
    /// extra arguments for every replica
    #[arg(long, allow_hyphen_values = true)]
    pub replica_arg: Vec<String>,
    /// 0: one standalone redis-server; n: a Redis Cluster of n primaries
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// rooms the fan-out's subscribers are spread over (and so, on a cluster, the shards)
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
}

/// The Redis a run uses.
enum Backend {
    Single(Redis),
    Cluster(RedisCluster),
}

impl Backend {
    fn url(&self) -> String {
        match self {
            Backend::Single(r) => r.url(),
            Backend::Cluster(c) => c.url(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Single(r) => r.pid().into_iter().collect(),
            Backend::Cluster(c) => c.nodes.iter().filter_map(Redis::pid).collect(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::Single(r) => format!("redis :{}", r.port),
            Backend::Cluster(c) => format!("redis cluster of {} shard(s)", c.nodes.len()),
        }
    }
}

/// (identity, observer) -> µs when seen.
#[derive(Default)]
struct Seen {
    joins: Mutex<HashMap<(String, usize), u64>>,
    leaves: Mutex<HashMap<(String, usize), u64>>,
}

impl Seen {
    /// Time at which every observer in `obs` saw `key` in `map`, if all did.
    fn all_seen(
        map: &Mutex<HashMap<(String, usize), u64>>,
        key: &str,
        obs: &[usize],
    ) -> Option<u64> {
        let m = map.lock().unwrap();
        let mut last = 0;
        for &o in obs {
            last = last.max(*m.get(&(key.to_string(), o))?);
        }
        Some(last)
    }
}

pub async fn run(bin: &Path, pin: Option<&str>, o: &Opts) -> Result<Metrics> {
    if !bin.exists() {
        return Ok(Metrics::skipped(format!("{} not built", bin.display())));
    }
    if !servers::supports_flag(bin, "--redis-url").await {
        return Ok(Metrics::skipped(
            "liveroom-testserver has no --redis-url option yet",
        ));
    }
    let started = if o.shards == 0 {
        Redis::start(pin).await.map(Backend::Single)
    } else {
        RedisCluster::start(o.shards, pin)
            .await
            .map(Backend::Cluster)
    };
    let redis = match started {
        Ok(r) => r,
        Err(e) => return Ok(Metrics::skipped(format!("redis-server: {e:#}"))),
    };
    let mut args = vec!["--redis-url".to_string(), redis.url()];
    args.extend(o.replica_arg.iter().cloned());
    let mut reps: Vec<ServerProc> = Vec::new();
    for _ in 0..3 {
        match servers::spawn_liveroom(bin, &args, pin).await {
            Ok(p) => reps.push(p),
            Err(e) => {
                return Ok(Metrics::skipped(format!(
                    "replica with --redis-url did not start: {e:#}"
                )))
            }
        }
    }
    let t: Vec<Target> = reps.iter().map(|r| r.target).collect();
    eprintln!(
        "  cluster: 3 replicas {} {} {}, {}",
        t[0].addr,
        t[1].addr,
        t[2].addr,
        redis.describe()
    );

    // Does an event published on replica 1 reach a subscriber on replica 2?
    if let Err(e) = bus_check(t[0], t[1]).await {
        return Ok(Metrics::skipped(format!(
            "cross-replica delivery not working: {e:#}"
        )));
    }

    let mut m = Metrics::default();
    // 1. Cross-replica fan-out.
    let fo = fanout::Opts {
        subs: o.subs,
        pubs: o.pubs,
        duration: o.duration,
        warmup: (o.duration / 2.0).min(1.0),
        window: o.window,
        via: fanout::Via::Action,
        sources: 1,
        rooms: o.rooms,
        watch: redis.pids(),
        watch_servers: t.iter().filter_map(|t| t.pid).collect(),
    };
    match fanout::run(&[t[1], t[2]], &[t[0]], &fo).await {
        Ok(f) => {
            for key in [
                "delivered_per_s",
                "publishes_per_s",
                "servers_cpu",
                "watched_cpu",
                "delivered_per_watched_core_s",
                "latency_p50",
                "latency_p99",
                "latency_max",
                "lost",
            ] {
                if let Some(it) = f.items.iter().find(|i| i.key == key) {
                    m.push(
                        format!("x_{key}"),
                        format!("cross-replica {}", it.label),
                        it.value,
                        it.unit,
                    );
                }
            }
        }
        Err(e) => m.note(format!("cross-replica fan-out failed: {e:#}")),
    }
    for (cpu, key, label) in [
        (
            "x_servers_cpu",
            "servers_us_per_publish",
            "replicas' CPU per publication (all three)",
        ),
        (
            "x_watched_cpu",
            "redis_us_per_publish",
            "redis CPU per publication (all nodes)",
        ),
    ] {
        if let (Some(cpu), Some(publishes)) = (m.get(cpu), m.get("x_publishes_per_s")) {
            if publishes > 0.0 {
                m.set(key, label, cpu / 100.0 / publishes * 1e6, "µs");
            }
        }
    }

    // 2. Presence convergence and 3. ghosts share observers: two per replica.
    let room = format!("cl-{}", ws::run_tag());
    let seen = Arc::new(Seen::default());
    let mut obs_tasks = Vec::new();
    let mut obs_on: Vec<usize> = Vec::new(); // observer index -> replica
    for (r, tr) in t.iter().enumerate() {
        for k in 0..2 {
            let idx = obs_on.len();
            obs_on.push(r);
            let mut w = presence::observer(*tr, &format!("o{r}{k}"), &room).await?;
            let seen = seen.clone();
            obs_tasks.push(tokio::spawn(async move {
                while let Some(f) = ws::next_payload(&mut w).await {
                    let now = now_us();
                    presence::dispatch(Kind::Liveroom, &f, |ev, key| {
                        let map = if ev == "join" {
                            &seen.joins
                        } else if ev == "leave" {
                            &seen.leaves
                        } else {
                            return;
                        };
                        map.lock()
                            .unwrap()
                            .entry((key.to_string(), idx))
                            .or_insert(now);
                    });
                }
            }));
        }
    }
    let all_obs: Vec<usize> = (0..obs_on.len()).collect();
    let conv = Hist::new();
    let mut missed = 0;
    let mut keep = Vec::new();
    for j in 0..o.joins {
        let key = format!("cj{j}");
        let mut sent = 0;
        let w = presence::join(t[j % 3], &key, &room, || sent = now_us()).await?;
        keep.push(w);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = Seen::all_seen(&seen.joins, &key, &all_obs) {
                conv.record(at.saturating_sub(sent));
                break;
            }
            if std::time::Instant::now() > deadline {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    conv.push_latency(
        &mut m,
        "converge",
        "presence join visible on all 3 replicas",
    );
    m.set(
        "converge_missed",
        "joins not visible everywhere within 5 s",
        missed as f64,
        "",
    );
    for w in keep {
        ws::close(w).await;
    }

    // 3. Ghosts: members on replica 3, then kill -9 it.
    let mut ghosts = Vec::new();
    for g in 0..o.ghosts {
        ghosts.push(presence::join(t[2], &format!("g{g}"), &room, || {}).await?);
    }
    let survivors: Vec<usize> = all_obs
        .iter()
        .copied()
        .filter(|i| obs_on[*i] != 2)
        .collect();
    let keys: Vec<String> = (0..o.ghosts).map(|g| format!("g{g}")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !keys
        .iter()
        .all(|k| Seen::all_seen(&seen.joins, k, &survivors).is_some())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("  cluster: kill -9 replica 3 with {} members", o.ghosts);
    let killed_at = now_us();
    reps[2].kill9().await;
    drop(ghosts);
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(o.ghost_timeout);
    let lifetime = loop {
        let times: Option<Vec<u64>> = keys
            .iter()
            .map(|k| Seen::all_seen(&seen.leaves, k, &survivors))
            .collect();
        if let Some(times) = times {
            break Some(times.into_iter().max().unwrap_or(killed_at) - killed_at);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    m.push(
        "ghost_lifetime_ms",
        "ghost lifetime after kill -9 (last leave seen)",
        lifetime.map(|us| us as f64 / 1000.0),
        "ms",
    );
    if lifetime.is_none() {
        let left = keys
            .iter()
            .filter(|k| Seen::all_seen(&seen.leaves, k, &survivors).is_none())
            .count();
        m.note(format!(
            "{left} of {} ghosts still present after {:.0} s",
            o.ghosts, o.ghost_timeout
        ));
    }
    // A fresh roster from replica 1 must not list them either.
    if let Ok(mut w) = lr::connect(t[0].addr, Some("check"), None, false).await {
        if let Ok(roster) = lr::stream(&mut w, "collab/board/__presence", json!([room])).await {
            let n = roster
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|e| {
                            e.get("key")
                                .and_then(|k| k.as_str())
                                .is_some_and(|k| k.starts_with('g'))
                        })
                        .count()
                })
                .unwrap_or(0);
            m.set(
                "ghosts_in_roster",
                "ghosts in a fresh roster afterwards",
                n as f64,
                "",
            );
        }
        ws::close(w).await;
    }
    m.note(format!(
        "3 replicas + {}; fan-out {} subs in {} room(s) on replicas 2-3, {} publishers on replica 1",
        redis.describe(),
        o.subs,
        o.rooms,
        o.pubs
    ));
    for t in obs_tasks {
        t.abort();
    }
    drop(reps);
    drop(redis);
    Ok(m)
}

async fn bus_check(a: Target, b: Target) -> Result<()> {
    let mut sub = lr::connect(b.addr, Some("bus-sub"), None, false).await?;
    lr::stream(&mut sub, "test/feed", json!([])).await?;
    let mut p = lr::connect(a.addr, Some("bus-pub"), None, false).await?;
    lr::call(
        &mut p,
        "1",
        "test/publish",
        json!(["feed", "created", {"id": "bus", "title": "lrb@0"}]),
        false,
        |_| {},
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let f = ws::next_payload_timeout(&mut sub, left)
            .await
            .map_err(|e| anyhow::anyhow!("no event from replica 1 on replica 2 ({e})"))?;
        if memchr::memmem::find(&f, b"lrb@0").is_some() {
            break;
        }
    }
    ws::close(sub).await;
    ws::close(p).await;
    Ok(())
}

/// `shards`: [`run`] on a Redis Cluster of each size in `sizes`, one after another in one run,
/// with the fan-out's rooms spread over the shards; figures keyed `s<n>_<key>`, and the ratio
/// of each size's delivery rate to the first's.
pub async fn shards(bin: &Path, pin: Option<&str>, o: &Opts, sizes: &[usize]) -> Result<Metrics> {
    let mut all = Metrics::default();
    let mut first: Option<f64> = None;
    for &n in sizes {
        let run_o = Opts {
            shards: n.max(1),
            ..o.clone()
        };
        eprintln!("  shards: {n} shard(s)");
        let m = run(bin, pin, &run_o).await?;
        if let Some(reason) = &m.skipped {
            return Ok(Metrics::skipped(reason.clone()));
        }
        for it in &m.items {
            all.push(
                format!("s{n}_{}", it.key),
                format!("{n} shard(s): {}", it.label),
                it.value,
                it.unit,
            );
        }
        if let Some(rate) = m.get("x_delivered_per_s") {
            match first {
                None => first = Some(rate),
                Some(base) => all.set(
                    &format!("s{n}_vs_first"),
                    &format!("{n} shard(s): delivery rate vs {} shard(s)", sizes[0]),
                    rate / base,
                    "x",
                ),
            }
        }
        all.notes.extend(m.notes);
    }
    Ok(all)
}
