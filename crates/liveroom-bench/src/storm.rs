//! `storm`: a reconnect storm. Two liveroom replicas share a private redis-server; `clients`
//! sockets on replica A are spread over `rooms` board rooms, each subscribed to its room's data
//! stream, while publishers on replica B keep events flowing. Replica A is killed (-9) and
//! started again on the same port; every client reconnects at once and calls its stream again
//! with the seq of the newest event it applied, as liveroom's JS client does.
//!
//! Reported, once with replay (the default) and once with `--replay-events 0`: the time until
//! every client is live again (its stream reply arrived), how many replies were replays and how
//! many loads replica A ran (`liveroom_full_loads_total`), replica A's CPU during the storm, and
//! the seq gaps clients saw afterwards (events lost: must be 0 with replay).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::servers::{self, Kind, Redis, ServerProc};
use crate::stats::{now_us, Hist, Metrics};
use crate::ws::{self, lr};
use crate::{http, procstat};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// reconnecting clients (on replica A)
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// rooms they are spread over
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// events per second published on replica B, over all rooms
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// loopback source addresses for the clients (per-address connection caps)
    #[arg(long, default_value_t = 20)]
    pub sources: usize,
    /// give up waiting for the clients after this many seconds
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// One client's state, shared with its task.
#[derive(Default)]
struct Client {
    /// Newest seq applied (from replies and events).
    last: AtomicU64,
    /// µs when its stream reply after the restart arrived (0: not yet).
    live_at: AtomicU64,
    /// That reply was a replay.
    replayed: AtomicBool,
    /// Events whose seq was not the one after the last applied.
    gaps: AtomicU64,
    /// Connected and answered at least once.
    ready: AtomicBool,
}

/// What one storm measured.
struct Outcome {
    live_all_ms: Option<f64>,
    recovery: Hist,
    replayed: usize,
    live: usize,
    loads: Option<f64>,
    cpu_s: Option<f64>,
    gaps: u64,
}

pub async fn run(bin: &Path, pin: Option<&str>, o: &Opts) -> Result<Metrics> {
    if !bin.exists() {
        return Ok(Metrics::skipped(format!("{} not built", bin.display())));
    }
    let mut m = Metrics::default();
    for (key, label, extra) in [
        ("replay", "with replay", vec![]),
        (
            "reload",
            "replay off",
            vec!["--replay-events".to_string(), "0".into()],
        ),
    ] {
        let out = match storm(bin, pin, o, &extra).await {
            Ok(out) => out,
            Err(e) => {
                m.note(format!("{label}: {e:#}"));
                continue;
            }
        };
        m.push(
            format!("{key}_live_all"),
            format!("{label}: every client live again after"),
            out.live_all_ms,
            "ms",
        );
        out.recovery.push_latency(
            &mut m,
            &format!("{key}_recovery"),
            &format!("{label}: recovery"),
        );
        m.set(
            &format!("{key}_replayed"),
            &format!("{label}: replies that were replays"),
            out.replayed as f64,
            "",
        );
        m.set(
            &format!("{key}_live"),
            &format!("{label}: clients live again"),
            out.live as f64,
            "",
        );
        m.push(
            format!("{key}_loads"),
            format!("{label}: loader calls on the restarted replica"),
            out.loads,
            "",
        );
        m.push(
            format!("{key}_cpu"),
            format!("{label}: restarted replica CPU until all live"),
            out.cpu_s,
            "s",
        );
        m.set(
            &format!("{key}_gaps"),
            &format!("{label}: seq gaps seen after"),
            out.gaps as f64,
            "",
        );
    }
    m.note(format!(
        "{} clients in {} rooms on replica A, {} events/s published on replica B; A is killed and restarted on its port",
        o.clients, o.rooms, o.rate
    ));
    Ok(m)
}

async fn replica(
    bin: &Path,
    port: u16,
    redis: &str,
    extra: &[String],
    pin: Option<&str>,
) -> Result<ServerProc> {
    let mut args = vec![
        "--bind".to_string(),
        format!("127.0.0.1:{port}"),
        "--redis-url".into(),
        redis.into(),
    ];
    args.extend(servers::UNLIMITED.iter().map(|a| a.to_string()));
    args.extend(extra.iter().cloned());
    servers::spawn_listening(Kind::Liveroom, bin, &args, pin, &[]).await
}

async fn storm(bin: &Path, pin: Option<&str>, o: &Opts, extra: &[String]) -> Result<Outcome> {
    let redis = Redis::start(pin).await?;
    let port = servers::free_port()?;
    let mut a = replica(bin, port, &redis.url(), extra, pin).await?;
    let b = replica(bin, servers::free_port()?, &redis.url(), extra, pin).await?;
    let addr = a.target.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let clients: Vec<Arc<Client>> = (0..o.clients).map(|_| Arc::default()).collect();
    for (i, c) in clients.iter().enumerate() {
        let room = format!("storm-{}", i % o.rooms);
        let src = ws::source_ip(i, o.sources);
        let (c, stop, restarted) = (c.clone(), stop.clone(), restarted.clone());
        tokio::spawn(async move {
            client(addr, src, i, room, c, stop, restarted).await;
        });
    }
    let ready = wait(Duration::from_secs_f64(o.timeout), || {
        clients.iter().all(|c| c.ready.load(Ordering::Relaxed))
    })
    .await;
    anyhow::ensure!(ready, "clients did not all connect");

    let publishing = tokio::spawn(publish(b.target.addr, o.rooms, o.rate, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    a.kill9().await;
    let killed = now_us();
    restarted.store(true, Ordering::Relaxed);
    let a2 = replica(bin, port, &redis.url(), extra, pin).await?;
    let cpu_before = a2.target.pid.and_then(|p| procstat::sample(p).ok());
    let all_live = wait(Duration::from_secs_f64(o.timeout), || {
        clients
            .iter()
            .all(|c| c.live_at.load(Ordering::Relaxed) > 0)
    })
    .await;
    let cpu_after = a2.target.pid.and_then(|p| procstat::sample(p).ok());
    // Events keep flowing a little longer: gaps would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = publishing.await;

    let recovery = Hist::new();
    let mut live_all = 0;
    for c in &clients {
        let at = c.live_at.load(Ordering::Relaxed);
        if at > 0 {
            recovery.record(at.saturating_sub(killed));
            live_all = live_all.max(at.saturating_sub(killed));
        }
    }
    let loads = http::get(addr, "/metrics")
        .await
        .ok()
        .map(|(_, body)| counter(&body, "liveroom_full_loads_total").unwrap_or(0.0));
    let _ = b;
    Ok(Outcome {
        live_all_ms: all_live.then_some(live_all as f64 / 1000.0),
        recovery,
        replayed: clients
            .iter()
            .filter(|c| c.replayed.load(Ordering::Relaxed))
            .count(),
        live: clients
            .iter()
            .filter(|c| c.live_at.load(Ordering::Relaxed) > 0)
            .count(),
        loads,
        cpu_s: match (cpu_before, cpu_after) {
            (Some(x), Some(y)) => Some(y.cpu_secs - x.cpu_secs),
            _ => None,
        },
        gaps: clients.iter().map(|c| c.gaps.load(Ordering::Relaxed)).sum(),
    })
}

/// Polls `done` every 10 ms until it holds (`true`) or `within` passes.
async fn wait(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The value of an unlabelled counter in a Prometheus text page.
fn counter(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Publishes `rate` events per second round-robin over the rooms, from four connections.
async fn publish(addr: SocketAddr, rooms: usize, rate: f64, stop: Arc<AtomicBool>) {
    let mut conns = Vec::new();
    for k in 0..4 {
        if let Ok(ws) = lr::connect(addr, Some(&format!("pub{k}")), None, false).await {
            conns.push(ws);
        }
    }
    if conns.is_empty() {
        return;
    }
    let every = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tick = tokio::time::interval(every);
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let room = format!("board:storm-{}", n % rooms);
        let frame = json!({"rpc":"test/publish","args":[room,"created",{"id":format!("e{n}"),"title":"x"}]});
        let k = n % conns.len();
        if ws::send_text(&mut conns[k], frame.to_string())
            .await
            .is_err()
        {
            return;
        }
        n += 1;
    }
}

/// One client: connect (again, as soon as it can after a close), call the room's data stream
/// with its newest seq, apply events.
async fn client(
    addr: SocketAddr,
    src: std::net::IpAddr,
    i: usize,
    room: String,
    me: Arc<Client>,
    stop: Arc<AtomicBool>,
    restarted: Arc<AtomicBool>,
) {
    let user = format!("s{i}");
    let topic = format!("board:{room}");
    let mut calls = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut ws) = lr::connect(addr, Some(&user), Some(src), true).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        calls += 1;
        let id = format!("d{calls}");
        let mut call = json!({"rpc":"collab/board/__data","id":id,"args":[room],"stream":true});
        let last = me.last.load(Ordering::Relaxed);
        if last > 0 {
            call["seq"] = last.into();
        }
        if ws::send_text(&mut ws, call.to_string()).await.is_err() {
            continue;
        }
        let after_restart = restarted.load(Ordering::Relaxed);
        while let Some(frame) = ws::next_payload(&mut ws).await {
            for env in ws::envelopes(&frame) {
                if let Some(reply) = lr::reply_for(&env, &id) {
                    on_reply(&me, reply, after_restart);
                } else if env["topic"] == topic.as_str() {
                    on_event(&me, &env);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

fn on_reply(me: &Client, reply: &Value, after_restart: bool) {
    if reply["ok"] != true {
        return;
    }
    let replay = reply["replay"] == true;
    let last = if replay {
        let mut last = me.last.load(Ordering::Relaxed);
        for e in reply["data"].as_array().into_iter().flatten() {
            last = check(me, last, e);
        }
        reply["seq"].as_u64().unwrap_or(last).max(last)
    } else {
        reply["seq"].as_u64().unwrap_or(0)
    };
    me.last.store(last, Ordering::Relaxed);
    me.ready.store(true, Ordering::Relaxed);
    if after_restart && me.live_at.load(Ordering::Relaxed) == 0 {
        me.replayed.store(replay, Ordering::Relaxed);
        me.live_at.store(now_us(), Ordering::Relaxed);
    }
}

fn on_event(me: &Client, env: &Value) {
    let last = me.last.load(Ordering::Relaxed);
    me.last.store(check(me, last, env), Ordering::Relaxed);
}

/// The newest seq after applying `env` on top of `last`, counting a gap if one shows.
fn check(me: &Client, last: u64, env: &Value) -> u64 {
    match env["seq"].as_u64() {
        Some(seq) if last > 0 && seq > last + 1 => {
            me.gaps.fetch_add(1, Ordering::Relaxed);
            seq
        }
        Some(seq) => seq.max(last),
        None => last,
    }
}
