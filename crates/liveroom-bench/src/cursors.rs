//! `cursors`: U users in one room each move their cursor at `hz`; O observers watch the
//! cursor stream. Reports server CPU, updates/s per observer, observer latency (now minus the
//! move's send time), how many moves the server coalesced, and how long after the last move
//! every observer shows every user's final position.
//!
//! liveroom: movers hold a data subscription (`collab/board/__data`) and send the fire-and-forget
//! `collab/board/__cursor`; observers subscribe `collab/board/__cursors`. With `--mesh` every
//! mover also subscribes the cursor stream (a real room page does).
//! Sockudo: everyone is a member of `presence-<room>` and moves are client events
//! (`client-cursor`), which reach every other member: Pusher is always a mesh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::Window;
use crate::servers::{Kind, Target};
use crate::stats::{now_us, Counter, Hist, Metrics};
use crate::ws::{self, lr, Ws};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// users moving their cursor
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// moves per second per user
    #[arg(long, default_value_t = 20.0)]
    pub hz: f64,
    /// observers (cursor stream only)
    #[arg(long, default_value_t = 5)]
    pub observers: usize,
    /// movers also receive everyone's cursors (always true for Sockudo)
    #[arg(long, default_value_t = false)]
    pub mesh: bool,
    /// measuring window, seconds
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// warm-up, seconds
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

const MARK: &[u8] = b"lrc@";

/// Cursor updates found in one frame: (user key, x, send time µs).
fn scan_updates(frame: &[u8]) -> Vec<(String, u64, u64)> {
    let unescaped;
    let f: &[u8] = if memmem::find(frame, br#"\""#).is_some() {
        unescaped = frame
            .windows(2)
            .filter(|w| !(w[0] == b'\\' && w[1] == b'"'))
            .map(|w| w[0])
            .chain(frame.last().copied())
            .collect::<Vec<u8>>();
        &unescaped
    } else {
        frame
    };
    let key_pat = br#""key":""#;
    let keys: Vec<usize> = memmem::find_iter(f, key_pat).collect();
    let mut out = Vec::new();
    for (n, &k) in keys.iter().enumerate() {
        let end = keys.get(n + 1).copied().unwrap_or(f.len());
        let seg = &f[k + key_pat.len()..end];
        let Some(q) = memchr::memchr(b'"', seg) else {
            continue;
        };
        let key = String::from_utf8_lossy(&seg[..q]).to_string();
        let (Some(xp), Some(tp)) = (memmem::find(seg, br#""x":"#), memmem::find(seg, MARK)) else {
            continue;
        };
        let num = |s: &[u8]| -> u64 {
            s.iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |a, b| a * 10 + (b - b'0') as u64)
        };
        out.push((key, num(&seg[xp + 4..]), num(&seg[tp + MARK.len()..])));
    }
    out
}

#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    moves: Counter,
    obs_updates: Counter,
    mesh_updates: Counter,
    hist: Hist,
    /// How old the position an observer showed was when the next one replaced it (now minus
    /// the shown move's send time): what a user sees of a cursor's staleness.
    stale: Hist,
    /// per observer: user key -> (latest x seen, its send time µs)
    views: Vec<Mutex<HashMap<String, (u64, u64)>>>,
    /// user key -> last x sent
    last_sent: Mutex<HashMap<String, u64>>,
}

fn move_frame(kind: Kind, room: &str, key: &str, x: u64, y: usize) -> String {
    let t = format!("lrc@{}", now_us());
    match kind {
        Kind::Liveroom => json!({"rpc": "collab/board/__cursor",
            "args": [room, {"x": x, "y": y, "t": t}]})
        .to_string(),
        _ => json!({"event": "client-cursor", "channel": format!("presence-{room}"),
            "data": {"key": key, "x": x, "y": y, "t": t}})
        .to_string(),
    }
}

async fn mover(t: Target, i: usize, room: &str, mesh: bool) -> Result<Ws> {
    let user = format!("u{i}");
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(&user), None, false).await?;
            let mut calls =
                vec![json!({"rpc":"collab/board/__data","id":"d","args":[room],"stream":true})];
            if mesh {
                calls.push(
                    json!({"rpc":"collab/board/__cursors","id":"c","args":[room],"stream":true}),
                );
            }
            ws::send_text(&mut w, json!({ "batch": calls }).to_string()).await?;
            lr::reply(&mut w, "d", "collab/board/__data", |_| {}).await?;
            Ok(w)
        }
        Kind::Sockudo => crate::presence::join(t, &user, room, || {}).await,
        Kind::Raw | Kind::SocketIo => anyhow::bail!("{} has no cursors", t.kind.name()),
    }
}

async fn observer(t: Target, i: usize, room: &str) -> Result<Ws> {
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(&format!("c{i}")), None, false).await?;
            lr::stream(&mut w, "collab/board/__cursors", json!([room])).await?;
            Ok(w)
        }
        _ => crate::presence::join(t, &format!("c{i}"), room, || {}).await,
    }
}

pub async fn run(t: Target, o: &Opts) -> Result<Metrics> {
    if matches!(t.kind, Kind::Raw | Kind::SocketIo) {
        return Ok(Metrics::skipped(format!("no cursors in {}", t.kind.name())));
    }
    let mesh = o.mesh || t.kind == Kind::Sockudo;
    let room = Arc::new(format!("cur-{}", ws::run_tag()));
    eprintln!(
        "  cursors[{}]: {} users at {} Hz, {} observers{}",
        t.kind.name(),
        o.users,
        o.hz,
        o.observers,
        if mesh { ", mesh" } else { "" }
    );
    let sh = Arc::new(Shared {
        views: (0..o.observers).map(|_| Mutex::default()).collect(),
        ..Default::default()
    });
    let observers = ws::connect_many(o.observers, 50, |i| {
        let room = room.clone();
        async move {
            observer(t, i, &room)
                .await
                .with_context(|| format!("observer {i}"))
        }
    })
    .await?;
    let movers = ws::connect_many(o.users, 100, |i| {
        let room = room.clone();
        async move {
            mover(t, i, &room, mesh)
                .await
                .with_context(|| format!("mover {i}"))
        }
    })
    .await?;

    let mut obs_tasks = Vec::new();
    for (i, mut w) in observers.into_iter().enumerate() {
        let sh = sh.clone();
        obs_tasks.push(tokio::spawn(async move {
            while let Some(f) = ws::next_payload(&mut w).await {
                let ups = scan_updates(&f);
                if ups.is_empty() {
                    continue;
                }
                let now = now_us();
                let measuring = sh.measuring.load(Ordering::Relaxed);
                let mut view = sh.views[i].lock().unwrap();
                for (key, x, ts) in ups {
                    let e = view.entry(key).or_insert((0, 0));
                    if measuring {
                        sh.hist.record(now.saturating_sub(ts));
                        sh.obs_updates.add(1);
                        if e.1 > 0 {
                            sh.stale.record(now.saturating_sub(e.1));
                        }
                    }
                    if x >= e.0 {
                        *e = (x, ts);
                    }
                }
            }
        }));
    }

    let period = Duration::from_secs_f64(1.0 / o.hz.max(0.1));
    let mut mover_tasks = Vec::new();
    for (i, w) in movers.into_iter().enumerate() {
        let (sh, room) = (sh.clone(), room.clone());
        let key = format!("u{i}");
        let phase = period.mul_f64(i as f64 / o.users.max(1) as f64);
        mover_tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = w.split();
            let sh2 = sh.clone();
            let reader = tokio::spawn(async move {
                let finder = memmem::Finder::new(MARK);
                while let Some(Ok(msg)) = rx.next().await {
                    if let Message::Text(_) | Message::Binary(_) = msg {
                        let n = finder.find_iter(&msg.into_data()).count() as u64;
                        if n > 0 && sh2.measuring.load(Ordering::Relaxed) {
                            sh2.mesh_updates.add(n);
                        }
                    }
                }
            });
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut x = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                x += 1;
                let f = move_frame(t.kind, &room, &key, x, i);
                if tx.send(Message::text(f)).await.is_err() {
                    break;
                }
                if sh.measuring.load(Ordering::Relaxed) {
                    sh.moves.add(1);
                }
            }
            sh.last_sent.lock().unwrap().insert(key, x);
            (tx, reader)
        }));
    }

    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let win = Window::start(t.pid);
    let t0 = std::time::Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
    sh.measuring.store(false, Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    let mut m = Metrics::default();
    win.finish(&mut m);
    let moves = sh.moves.get() as f64;
    let per_obs = sh.obs_updates.get() as f64 / o.observers.max(1) as f64;
    m.set("moves_per_s", "moves sent/s (all users)", moves / dt, "/s");
    m.set(
        "updates_per_obs_s",
        "updates/s received per observer",
        per_obs / dt,
        "/s",
    );
    sh.hist
        .push_latency(&mut m, "obs_latency", "move→observer latency");
    sh.stale.push_latency(
        &mut m,
        "staleness",
        "cursor staleness (shown position's age when replaced)",
    );
    if moves > 0.0 {
        m.set(
            "coalesced_pct",
            "moves coalesced by the server",
            (1.0 - per_obs / moves).max(0.0) * 100.0,
            "%",
        );
    }
    if mesh {
        m.set(
            "mesh_per_s",
            "updates/s delivered to movers (mesh)",
            sh.mesh_updates.get() as f64 / dt,
            "/s",
        );
    }

    // Stop moving; how long until every observer shows every final position?
    sh.stop.store(true, Ordering::Relaxed);
    let stop_at = std::time::Instant::now();
    let mut handles = Vec::new();
    for mt in mover_tasks {
        if let Ok(h) = mt.await {
            handles.push(h);
        }
    }
    let last = sh.last_sent.lock().unwrap().clone();
    let converged = loop {
        let ok = sh.views.iter().all(|v| {
            let v = v.lock().unwrap();
            last.iter().all(|(k, x)| v.get(k).map(|e| e.0) == Some(*x))
        });
        if ok {
            break Some(stop_at.elapsed().as_secs_f64() * 1000.0);
        }
        if stop_at.elapsed() > Duration::from_secs(3) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    m.push(
        "final_converge_ms",
        "all observers show final positions after last move",
        converged,
        "ms",
    );
    if converged.is_none() {
        let stale: usize = sh
            .views
            .iter()
            .map(|v| {
                let v = v.lock().unwrap();
                last.iter()
                    .filter(|(k, x)| v.get(*k).map(|e| e.0) != Some(**x))
                    .count()
            })
            .sum();
        m.note(format!(
            "{stale} (observer, user) final positions still stale after 3 s"
        ));
    }
    m.note(format!(
        "{} users at {} Hz, {} observers{}",
        o.users,
        o.hz,
        o.observers,
        if mesh {
            ", every mover also receives all cursors"
        } else {
            ""
        }
    ));
    for (_, reader) in &handles {
        reader.abort();
    }
    for t in obs_tasks {
        t.abort();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn scans_batched_and_escaped_updates() {
        let f = br#"{"type":"batch","events":[{"topic":"b:cursors","event":"update","data":{"key":"u1","x":5,"y":1,"t":"lrc@100"}},{"topic":"b:cursors","event":"remove","data":{"key":"u2"}},{"topic":"b:cursors","event":"update","data":{"key":"u3","x":7,"y":3,"t":"lrc@200"}}]}"#;
        let u = super::scan_updates(f);
        assert_eq!(u, vec![("u1".into(), 5, 100), ("u3".into(), 7, 200)]);
        let p = br#"{"event":"client-cursor","data":"{\"key\":\"u9\",\"x\":3,\"y\":0,\"t\":\"lrc@42\"}"}"#;
        assert_eq!(super::scan_updates(p), vec![("u9".into(), 3, 42)]);
    }
}
