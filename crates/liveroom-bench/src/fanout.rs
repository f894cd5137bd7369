//! `fanout`: N subscribers in one room, M publishers in a closed loop. Reports delivered
//! events/s and publish-to-receive latency (the payload carries `lrb@<µs>`).
//!
//! Flow control is the same for every server: a publisher only sends while fewer than `window`
//! publications are still undelivered to some subscriber, so queues stay bounded and the
//! figure is the sustainable delivery rate, not a queue-growth artefact.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use memchr::memmem;
use serde_json::json;
use tokio::sync::Notify;

use crate::http::HttpConn;
use crate::procstat::Window;
use crate::servers::{Kind, Target};
use crate::stats::{now_us, Counter, Hist, Metrics};
use crate::ws::{self, lr, pusher, sio, Ws};

/// How the liveroom publisher publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// room action `collab/board/__action/addCard` (subscribers: `collab/board/__data`)
    Action,
    /// rpc `test/publish` on topic `feed` (subscribers: stream `test/feed`)
    Publish,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// subscribers in the room
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// publishers (closed loop)
    #[arg(long, default_value_t = 4)]
    pub pubs: usize,
    /// measuring window, seconds
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// warm-up before measuring, seconds
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// publications allowed in flight (not yet delivered to every subscriber)
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// liveroom publish path
    #[arg(long, value_enum, default_value_t = Via::Action)]
    pub via: Via,
    /// number of 127.0.0.x source addresses to spread connections over
    #[arg(long, default_value_t = 1)]
    pub sources: usize,
    /// rooms the subscribers are spread over (round robin); each publication goes to one
    /// room, in turn
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// other processes whose CPU is measured over the window: the Redis nodes of a cluster run
    #[arg(skip)]
    pub watch: Vec<u32>,
    /// more processes measured the same way, reported apart (a cluster run's replicas)
    #[arg(skip)]
    pub watch_servers: Vec<u32>,
}

pub const MARK: &[u8] = b"lrb@";

/// Parses the decimal timestamp following a marker at `pos`.
fn ts_at(frame: &[u8], pos: usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut any = false;
    for &b in frame.get(pos + MARK.len()..)? {
        if b.is_ascii_digit() {
            v = v * 10 + (b - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

struct Shared {
    delivered: Counter,
    acked: Counter,
    errors: Counter,
    /// Deliveries that will never happen (refused publishes).
    forgiven: Counter,
    /// Deliveries due for what was sent (each publication: its room's subscribers).
    expected: Counter,
    /// Subscribers per room.
    per_room: Vec<u64>,
    /// The most subscribers a room has: one publication's worth in the window.
    n_subs: u64,
    /// publications allowed in flight (lowered to 1 for the low-load phase)
    window: AtomicU64,
    /// 0: not measuring, 1: saturated phase, 2: low-load phase
    phase: AtomicU8,
    stop: AtomicBool,
    waiting: AtomicU64,
    notify: Notify,
    hist: Hist,
    hist_low: Hist,
}

impl Shared {
    fn outstanding(&self) -> u64 {
        self.expected
            .get()
            .saturating_sub(self.delivered.get() + self.forgiven.get())
    }

    /// Whether one more publication would exceed the window.
    fn full(&self) -> bool {
        self.outstanding() + self.n_subs > self.window.load(Ordering::Relaxed) * self.n_subs
    }

    /// Blocks while too many publications are undelivered.
    async fn admit(&self) {
        while self.full() && !self.stop.load(Ordering::Relaxed) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.full() {
                let _ = tokio::time::timeout(Duration::from_millis(5), n).await;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn on_frame(&self, frame: &[u8], finder: &memmem::Finder) {
        let mut n = 0;
        let hist = match self.phase.load(Ordering::Relaxed) {
            1 => Some(&self.hist),
            2 => Some(&self.hist_low),
            _ => None,
        };
        let now = if hist.is_some() { now_us() } else { 0 };
        for pos in finder.find_iter(frame) {
            n += 1;
            if let Some(h) = hist {
                if let Some(ts) = ts_at(frame, pos) {
                    h.record(now.saturating_sub(ts));
                }
            }
        }
        if n > 0 {
            self.delivered.add(n);
            if self.waiting.load(Ordering::Relaxed) > 0 {
                self.notify.notify_waiters();
            }
        }
    }
}

/// Topic / channel names of one run.
struct Names {
    rooms: Vec<String>,
}

async fn subscriber(t: Target, i: usize, o: &Opts, names: &Names) -> Result<Ws> {
    let src = Some(ws::source_ip(i, o.sources));
    let room = &names.rooms[i % names.rooms.len()];
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(&format!("s{i}")), src, false).await?;
            match o.via {
                Via::Action => lr::stream(&mut w, "collab/board/__data", json!([room])).await?,
                Via::Publish => lr::stream(&mut w, "test/feed", json!([])).await?,
            };
            Ok(w)
        }
        Kind::Raw => ws::connect(t.addr, &format!("/?role=sub&room={room}"), src, false).await,
        Kind::SocketIo => {
            let mut w = sio::connect(t.addr, src, false).await?;
            sio::call(&mut w, 1, "join", &[json!(room)]).await?;
            Ok(w)
        }
        Kind::Sockudo => {
            let (mut w, _) = pusher::connect(t.addr, src, false).await?;
            ws::send_text(&mut w, pusher::subscribe_public(room)).await?;
            pusher::wait_subscribed(&mut w, room, |_| {}).await?;
            Ok(w)
        }
    }
}

enum Publisher {
    Ws(Box<Ws>),
    Http(HttpConn),
}

async fn publisher(t: Target, i: usize, o: &Opts) -> Result<Publisher> {
    let src = Some(ws::source_ip(i, o.sources));
    Ok(match t.kind {
        Kind::Liveroom => Publisher::Ws(Box::new(
            lr::connect(t.addr, Some(&format!("p{i}")), src, false).await?,
        )),
        Kind::Raw => Publisher::Ws(Box::new(
            ws::connect(t.addr, "/?role=pub", src, false).await?,
        )),
        Kind::SocketIo => Publisher::Ws(Box::new(sio::connect(t.addr, src, false).await?)),
        Kind::Sockudo => Publisher::Http(HttpConn::connect(t.addr).await?),
    })
}

/// One publish and its acknowledgement. Returns false when the server refused it.
async fn publish_once(
    kind: Kind,
    p: &mut Publisher,
    via: Via,
    room: &str,
    seq: u64,
    pub_id: usize,
) -> Result<bool> {
    let ts = now_us();
    let title = format!("lrb@{ts}");
    match (kind, p) {
        (Kind::Liveroom, Publisher::Ws(w)) => {
            let id = seq.to_string();
            let frame = match via {
                Via::Action => lr::call_frame(
                    &id,
                    "collab/board/__action/addCard",
                    json!([room, title]),
                    false,
                ),
                Via::Publish => lr::call_frame(
                    &id,
                    "test/publish",
                    json!(["feed", "created", {"id": format!("c{pub_id}-{seq}"), "title": title}]),
                    false,
                ),
            };
            ws::send_text(w, frame).await?;
            loop {
                let f = ws::next_payload_timeout(w, Duration::from_secs(30)).await?;
                for env in ws::envelopes(&f) {
                    if let Some(r) = lr::reply_for(&env, &id) {
                        return Ok(r.get("ok").and_then(|v| v.as_bool()) == Some(true));
                    }
                }
            }
        }
        (Kind::Raw, Publisher::Ws(w)) => {
            // The bytes of liveroom's envelope for the same card (its `by` and a seq of the
            // same width), so "liveroom / raw" compares the servers' work, not payload sizes.
            let seq_like = 1_765_000_000_000_000u64 + seq;
            let payload = format!(
                r#"P{room}|{{"topic":"board:{room}","event":"created","data":{{"id":"c{pub_id}-{seq}","title":"{title}","by":"p{pub_id}"}},"seq":{seq_like}}}"#
            );
            ws::send_text(w, payload).await?;
            loop {
                let f = ws::next_payload_timeout(w, Duration::from_secs(30)).await?;
                if &f[..] == b"A" {
                    return Ok(true);
                }
            }
        }
        (Kind::SocketIo, Publisher::Ws(w)) => {
            let card = json!({"id": format!("c{pub_id}-{seq}"), "title": title, "by": format!("p{pub_id}")});
            sio::call(w, seq, "pub", &[json!(room), card]).await?;
            Ok(true)
        }
        (Kind::Sockudo, Publisher::Http(h)) => {
            let data = json!({"id": format!("c{pub_id}-{seq}"), "title": title, "by": format!("p{pub_id}")}).to_string();
            let (path, body) = pusher::signed_event(room, "created", &data);
            let (status, body) = h
                .request("POST", &path, Some(("application/json", body.as_bytes())))
                .await?;
            if status != 200 {
                eprintln!(
                    "  sockudo REST: {status} {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                );
            }
            Ok(status == 200)
        }
        _ => unreachable!("publisher kind mismatch"),
    }
}

/// Runs the scenario: subscribers spread over `subs_on`, publishers over `pubs_on` (one target
/// each for a single server; several replicas for the cluster run).
pub async fn run(subs_on: &[Target], pubs_on: &[Target], o: &Opts) -> Result<Metrics> {
    let kind = pubs_on[0].kind;
    let rooms = o.rooms.max(1);
    if rooms > 1 && kind == Kind::Liveroom && o.via != Via::Action {
        anyhow::bail!("--rooms > 1 needs --via action");
    }
    let tag = ws::run_tag();
    let names = Arc::new(Names {
        rooms: (0..rooms)
            .map(|r| {
                if rooms == 1 {
                    format!("bench-{tag}")
                } else {
                    format!("bench-{tag}-{r}")
                }
            })
            .collect(),
    });
    let per_room: Vec<u64> = (0..rooms)
        .map(|r| (0..o.subs).filter(|i| i % rooms == r).count() as u64)
        .collect();
    let oa = Arc::new(o.clone());
    eprintln!(
        "  fanout[{}]: connecting {} subscribers, {} publishers",
        kind.name(),
        o.subs,
        o.pubs
    );
    let subs = ws::connect_many(o.subs, 100, |i| {
        let t = subs_on[i % subs_on.len()];
        let (oa, names) = (oa.clone(), names.clone());
        async move {
            subscriber(t, i, &oa, &names)
                .await
                .with_context(|| format!("subscriber {i}"))
        }
    })
    .await?;
    let pubs = ws::connect_many(o.pubs, 50, |i| {
        let t = pubs_on[i % pubs_on.len()];
        let oa = oa.clone();
        async move {
            publisher(t, i, &oa)
                .await
                .with_context(|| format!("publisher {i}"))
        }
    })
    .await?;

    let sh = Arc::new(Shared {
        delivered: Counter::default(),
        acked: Counter::default(),
        errors: Counter::default(),
        forgiven: Counter::default(),
        expected: Counter::default(),
        n_subs: per_room.iter().copied().max().unwrap_or(0),
        per_room,
        window: AtomicU64::new(o.window.max(1)),
        phase: AtomicU8::new(0),
        stop: AtomicBool::new(false),
        waiting: AtomicU64::new(0),
        notify: Notify::new(),
        hist: Hist::new(),
        hist_low: Hist::new(),
    });

    let mut sub_tasks = Vec::new();
    for w in subs {
        let sh = sh.clone();
        sub_tasks.push(tokio::spawn(async move {
            let finder = memmem::Finder::new(MARK);
            ws::fast_read(w, |f| sh.on_frame(f, &finder)).await;
        }));
    }
    let mut pub_tasks = Vec::new();
    for (i, mut p) in pubs.into_iter().enumerate() {
        let sh = sh.clone();
        let (names, via) = (names.clone(), o.via);
        pub_tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                sh.admit().await;
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                seq += 1;
                let r = (seq as usize + i) % names.rooms.len();
                let due = sh.per_room[r];
                sh.expected.add(due);
                match publish_once(kind, &mut p, via, &names.rooms[r], seq, i).await {
                    Ok(true) => sh.acked.add(1),
                    Ok(false) => {
                        // Refused: nothing will be delivered for it.
                        sh.errors.add(1);
                        sh.forgiven.add(due);
                    }
                    Err(e) => {
                        eprintln!("  publisher {i}: {e:#}");
                        sh.errors.add(1);
                        sh.forgiven.add(due);
                        break;
                    }
                }
            }
            p
        }));
    }

    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let win = Window::start(subs_on[0].pid.filter(|_| subs_on.len() == 1));
    let watched = crate::procstat::Group::start(&o.watch);
    let servers = crate::procstat::Group::start(&o.watch_servers);
    let (d0, a0, t0) = (
        sh.delivered.get(),
        sh.acked.get(),
        std::time::Instant::now(),
    );
    sh.phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
    let (d1, a1, dt) = (
        sh.delivered.get(),
        sh.acked.get(),
        t0.elapsed().as_secs_f64(),
    );
    let mut m = Metrics::default();
    let rate = (d1 - d0) as f64 / dt;
    m.set("delivered_per_s", "delivered events/s", rate, "/s");
    m.set(
        "publishes_per_s",
        "publishes/s",
        (a1 - a0) as f64 / dt,
        "/s",
    );
    sh.hist.push_latency(
        &mut m,
        "latency",
        &format!("publish→receive latency ({} in flight)", o.window),
    );
    win.finish(&mut m);
    if let Some(cpu) = servers.finish() {
        m.set("servers_cpu", "liveroom replicas' CPU (all)", cpu, "% core");
    }
    if let Some(cpu) = watched.finish() {
        m.set("watched_cpu", "redis CPU (all nodes)", cpu, "% core");
        if cpu > 1.0 {
            m.set(
                "delivered_per_watched_core_s",
                "delivered events per redis-core-second",
                rate / (cpu / 100.0),
                "/s",
            );
        }
    }
    if let Some(cpu) = m.get("server_cpu").filter(|c| *c > 1.0) {
        m.set(
            "delivered_per_core_s",
            "delivered events per server-core-second",
            rate / (cpu / 100.0),
            "/s",
        );
    }
    // Low load: one publication in flight, the latency of a single fan-out to everyone.
    sh.phase.store(0, Ordering::Relaxed);
    sh.window.store(1, Ordering::Relaxed);
    let t_drain = std::time::Instant::now();
    while sh.outstanding() > sh.n_subs && t_drain.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sh.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.duration.min(2.0) / 2.0)).await;
    sh.phase.store(0, Ordering::Relaxed);
    sh.hist_low
        .push_latency(&mut m, "low_latency", "latency, one publication in flight");
    sh.stop.store(true, Ordering::Relaxed);
    sh.notify.notify_waiters();
    let mut pubs_back = Vec::new();
    for t in pub_tasks {
        if let Ok(p) = t.await {
            pubs_back.push(p);
        }
    }
    // Drain: everything sent should arrive.
    let drain_start = std::time::Instant::now();
    while sh.outstanding() > 0 && drain_start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = sh.outstanding();
    m.set(
        "lost",
        "deliveries missing after 5 s drain",
        lost as f64,
        "",
    );
    m.set(
        "errors",
        "refused/failed publishes",
        sh.errors.get() as f64,
        "",
    );
    m.note(format!(
        "{} subscribers in {} room(s), {} publishers, window {} publications, {:.1} s measured",
        o.subs, rooms, o.pubs, o.window, o.duration
    ));
    if kind == Kind::Sockudo {
        m.note("REST publishes; Sockudo answers `connection: close`, so one TCP connection each");
    }
    for t in &sub_tasks {
        t.abort();
    }
    for p in pubs_back {
        if let Publisher::Ws(w) = p {
            ws::close(*w).await;
        }
    }
    Ok(m)
}

/// A small fan-out over 3 rooms against `t` that must deliver everything (the servers' tests).
#[cfg(test)]
pub(crate) async fn assert_small_run_delivers(t: Target) {
    let o = Opts {
        subs: 12,
        pubs: 2,
        duration: 0.3,
        warmup: 0.1,
        window: 8,
        via: Via::Action,
        sources: 2,
        rooms: 3,
        watch: Vec::new(),
        watch_servers: Vec::new(),
    };
    let m = run(&[t], &[t], &o).await.expect("fan-out runs");
    assert!(m.get("delivered_per_s").unwrap() > 0.0);
    assert_eq!(m.get("lost"), Some(0.0));
    assert_eq!(m.get("errors"), Some(0.0));
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_marker_timestamps() {
        let f = br#"{"data":{"title":"lrb@12345"}} {"title":"lrb@7\"}"#;
        let finder = memchr::memmem::Finder::new(super::MARK);
        let ts: Vec<u64> = finder
            .find_iter(f)
            .filter_map(|p| super::ts_at(f, p))
            .collect();
        assert_eq!(ts, vec![12345, 7]);
    }
}
