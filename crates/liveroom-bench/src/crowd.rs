//! `crowd`: M members join one room within D seconds while O observers watch its presence.
//! Reports the time until every observer shows the right count and listed roster, the frames
//! and bytes every socket received, the server's CPU and the members' join round trip.
//!
//! liveroom: members subscribe data + presence like a room page; observers subscribe presence
//! only. Above the room's listed limit (`--limit`, the server's, default 1,000) members are
//! counted, not listed: an observer has converged when its newest `count` is M and its roster
//! lists `min(M, limit)`.
//! Sockudo: everyone is a member of `presence-<room>` (Pusher has no observer role), so an
//! observer has converged when its roster holds all M members.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::presence;
use crate::procstat::Window;
use crate::servers::{Kind, Target};
use crate::stats::{now_us, Counter, Hist, Metrics};
use crate::ws::{self, Ws};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// members joining the room
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// observers watching its presence
    #[arg(long, default_value_t = 100)]
    pub observers: usize,
    /// seconds over which the members join
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// the server's listed-member limit (liveroom)
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// seconds to wait for convergence after the last join
    #[arg(long, default_value_t = 30.0)]
    pub settle: f64,
    /// then every member updates its awareness state this often (liveroom; 0: no update phase)
    #[arg(long, default_value_t = 0.0)]
    pub update_hz: f64,
    /// seconds of the update phase
    #[arg(long, default_value_t = 10.0)]
    pub update_secs: f64,
}

/// The update phase: members send while `on`; observers time what they see.
#[derive(Default)]
struct Updates {
    on: AtomicBool,
    sent: Counter,
    seen: Counter,
    latency: Hist,
}

/// What one observer shows.
#[derive(Default)]
struct View {
    roster: HashSet<String>,
    /// Newest count: (total, version).
    count: Option<(u64, u64)>,
}

#[derive(Default)]
struct Traffic {
    frames: Counter,
    bytes: Counter,
}

impl Traffic {
    fn add(&self, frame: &[u8]) {
        self.frames.add(1);
        self.bytes.add(frame.len() as u64);
    }
}

/// Applies one liveroom frame to `view`; awareness updates stamped `t<µs>` are timed into
/// `updates`.
fn apply_lr(view: &mut View, frame: &[u8], updates: Option<&Updates>) {
    for env in ws::envelopes(frame) {
        let (Some(event), Some(data)) = (env["event"].as_str(), env.get("data")) else {
            continue;
        };
        match event {
            "join" => {
                if let Some(k) = data["key"].as_str() {
                    view.roster.insert(k.to_owned());
                }
                let stamp = data["data"]["editing"]
                    .as_str()
                    .and_then(|e| e.strip_prefix('t'));
                if let (Some(u), Some(sent)) = (updates, stamp.and_then(|s| s.parse::<u64>().ok()))
                {
                    u.seen.add(1);
                    u.latency.record(now_us().saturating_sub(sent));
                }
            }
            "leave" => {
                if let Some(k) = data["key"].as_str() {
                    view.roster.remove(k);
                }
            }
            "set" => {
                view.roster = data
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| Some(m["key"].as_str()?.to_owned()))
                    .collect();
            }
            "count" => {
                let (total, version) = (data["total"].as_u64(), data["version"].as_u64());
                if let (Some(total), Some(version)) = (total, version) {
                    if view.count.is_none_or(|(_, v)| v <= version) {
                        view.count = Some((total, version));
                    }
                }
            }
            _ => {}
        }
    }
}

pub async fn run(t: Target, o: &Opts) -> Result<Metrics> {
    if matches!(t.kind, Kind::Raw | Kind::SocketIo) {
        return Ok(Metrics::skipped(format!(
            "no presence in {}",
            t.kind.name()
        )));
    }
    let room = format!("crowd-{}", ws::run_tag());
    eprintln!(
        "  crowd[{}]: {} members join within {:.0} s, {} observers",
        t.kind.name(),
        o.members,
        o.duration,
        o.observers
    );
    let views: Arc<Vec<Mutex<View>>> = Arc::new(
        (0..o.observers)
            .map(|_| Mutex::new(View::default()))
            .collect(),
    );
    let (obs_traffic, member_traffic) =
        (Arc::new(Traffic::default()), Arc::new(Traffic::default()));
    let updates = Arc::new(Updates::default());
    let obs = ws::connect_many(o.observers, 50, |i| {
        let room = room.clone();
        async move {
            presence::observer(t, &format!("o{i}"), &room)
                .await
                .with_context(|| format!("observer {i}"))
        }
    })
    .await?;
    let mut tasks = Vec::new();
    for (i, mut w) in obs.into_iter().enumerate() {
        let (views, traffic, updates) = (views.clone(), obs_traffic.clone(), updates.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(f) = ws::next_payload(&mut w).await {
                traffic.add(&f);
                let mut view = views[i].lock().unwrap();
                match t.kind {
                    Kind::Liveroom => apply_lr(&mut view, &f, Some(&updates)),
                    _ => presence::dispatch(t.kind, &f, |ev, key| {
                        if key.starts_with('m') {
                            match ev {
                                "join" => view.roster.insert(key.to_owned()),
                                _ => view.roster.remove(key),
                            };
                        }
                    }),
                }
            }
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (join_rtt, errors) = (Arc::new(Hist::default()), Arc::new(Counter::default()));
    let win = Window::start(t.pid);
    let period = Duration::from_secs_f64(o.duration / o.members.max(1) as f64);
    let start = tokio::time::Instant::now();
    let t0 = now_us();
    let mut members = Vec::with_capacity(o.members);
    for n in 0..o.members {
        tokio::time::sleep_until(start + period * n as u32).await;
        let (room, stop, updates) = (room.clone(), stop.clone(), updates.clone());
        let (join_rtt, errors, traffic) =
            (join_rtt.clone(), errors.clone(), member_traffic.clone());
        let every = Duration::from_secs_f64(1.0 / o.update_hz.max(0.01));
        let phase = every.mul_f64(n as f64 / o.members.max(1) as f64);
        members.push(tokio::spawn(async move {
            let sent = now_us();
            let w: Ws = match presence::join(t, &format!("m{n}"), &room, || {}).await {
                Ok(w) => w,
                Err(e) => {
                    if errors.get() < 3 {
                        eprintln!("  member {n}: {e:#}");
                    }
                    errors.add(1);
                    return;
                }
            };
            join_rtt.record(now_us().saturating_sub(sent));
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::Message;
            let (mut tx, mut rx) = w.split();
            let reader = tokio::spawn(async move {
                while let Some(Ok(msg)) = rx.next().await {
                    if let Message::Text(_) | Message::Binary(_) = msg {
                        traffic.add(&msg.into_data());
                    }
                }
            });
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if !updates.on.load(Ordering::Relaxed) {
                    continue;
                }
                let f = serde_json::json!({
                    "rpc": "collab/board/__presence_update",
                    "args": [room, {"editing": format!("t{}", now_us())}],
                });
                if tx.send(Message::text(f.to_string())).await.is_err() {
                    break;
                }
                updates.sent.add(1);
            }
            let _ = tx.close().await;
            reader.abort();
        }));
    }
    let joined_at = now_us();
    // Converged: every observer shows the right count and roster.
    let want_listed = match t.kind {
        Kind::Liveroom => o.members.min(o.limit),
        _ => o.members,
    };
    let converged = |views: &[Mutex<View>]| {
        views.iter().all(|v| {
            let v = v.lock().unwrap();
            let counted = t.kind != Kind::Liveroom
                || v.count.map(|(total, _)| total) == Some(o.members as u64);
            counted && v.roster.len() == want_listed
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(o.settle);
    let mut done_at = None;
    while std::time::Instant::now() < deadline {
        if converged(&views) {
            done_at = Some(now_us());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut m = Metrics::default();
    win.finish(&mut m);
    let wrong = views
        .iter()
        .filter(|v| {
            let v = v.lock().unwrap();
            v.roster.len() != want_listed
                || (t.kind == Kind::Liveroom && v.count.map(|(c, _)| c) != Some(o.members as u64))
        })
        .count();
    match done_at {
        Some(at) => {
            m.set(
                "converged_s",
                "first join → every observer right",
                (at - t0) as f64 / 1e6,
                "s",
            );
            m.set(
                "after_last_s",
                "last join sent → every observer right",
                at.saturating_sub(joined_at) as f64 / 1e6,
                "s",
            );
        }
        None => m.note(format!(
            "did not converge within {:.0} s after the last join",
            o.settle
        )),
    }
    m.set(
        "observers_wrong",
        "observers not converged",
        wrong as f64,
        "",
    );
    m.set(
        "obs_frames",
        "frames per observer",
        obs_traffic.frames.get() as f64 / o.observers.max(1) as f64,
        "",
    );
    m.set(
        "obs_kib",
        "KiB per observer",
        obs_traffic.bytes.get() as f64 / 1024.0 / o.observers.max(1) as f64,
        "KiB",
    );
    m.set(
        "member_frames",
        "frames to all members",
        member_traffic.frames.get() as f64,
        "",
    );
    m.set(
        "member_mib",
        "MiB to all members",
        member_traffic.bytes.get() as f64 / 1024.0 / 1024.0,
        "MiB",
    );
    join_rtt.push_latency(&mut m, "join_rtt", "member join round trip");
    m.set("join_errors", "failed joins", errors.get() as f64, "");
    if o.update_hz > 0.0 && t.kind == Kind::Liveroom {
        let win = Window::start(t.pid);
        updates.on.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(o.update_secs)).await;
        updates.on.store(false, Ordering::Relaxed);
        let mut u = Metrics::default();
        win.finish(&mut u);
        tokio::time::sleep(Duration::from_millis(500)).await; // the last ones in flight
        if let Some(cpu) = u.get("server_cpu") {
            m.set(
                "update_cpu",
                "server CPU during the update phase",
                cpu,
                "% core",
            );
        }
        m.set(
            "updates_sent",
            "awareness updates sent per second",
            updates.sent.get() as f64 / o.update_secs,
            "/s",
        );
        m.set(
            "updates_seen",
            "updates seen per observer per second (after coalescing)",
            updates.seen.get() as f64 / o.observers.max(1) as f64 / o.update_secs,
            "/s",
        );
        updates
            .latency
            .push_latency(&mut m, "update", "update sent → seen by observers");
    }
    m.note(format!(
        "{} members within {:.0} s, {} observers, listed limit {}",
        o.members, o.duration, o.observers, o.limit
    ));
    stop.store(true, Ordering::Relaxed);
    for j in members {
        let _ = j.await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_count_wins_and_joins_list() {
        let mut v = View::default();
        let frame = br#"{"type":"batch","events":[
            {"topic":"b:presence","event":"join","data":{"key":"m1","data":{}}},
            {"topic":"b:presence","event":"count","data":{"total":5,"version":9}}]}"#;
        apply_lr(&mut v, frame, None);
        apply_lr(
            &mut v,
            br#"{"topic":"b:presence","event":"count","data":{"total":4,"version":3}}"#,
            None,
        );
        assert_eq!(v.count, Some((5, 9)));
        assert!(v.roster.contains("m1"));
    }
}
