//! `presence`: join/leave churn in one room. Observers watch the roster; joiners arrive at a
//! fixed rate, each with a fresh identity, subscribe like a room page (data + presence in one
//! batch), stay `hold` seconds and close. Reports join-to-visible latency seen by every observer
//! and leave-to-visible latency (which includes the server's leave grace).
//! Sockudo: a presence channel; observers are members too (Pusher has no observer role).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::procstat::Window;
use crate::servers::{Kind, Target};
use crate::stats::{now_us, Counter, Hist, Metrics};
use crate::ws::{self, lr, pusher, Ws};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// observers watching the roster
    #[arg(long, default_value_t = 20)]
    pub observers: usize,
    /// joins per second
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// seconds of churn
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// seconds each joiner stays
    #[arg(long, default_value_t = 1.0)]
    pub hold: f64,
    /// seconds to wait for the last leaves after the churn (covers the server's leave grace)
    #[arg(long, default_value_t = 8.0)]
    pub leave_wait: f64,
}

#[derive(Default)]
struct State {
    /// identity -> (join sent µs, socket closed µs)
    times: Mutex<HashMap<String, (u64, u64)>>,
    join_hist: Hist,
    leave_hist: Hist,
    joins_seen: Counter,
    leaves_seen: Counter,
    joins_done: Counter,
    join_rtt: Hist,
    errors: Counter,
}

impl State {
    fn on_join(&self, key: &str) {
        let now = now_us();
        if let Some((sent, _)) = self.times.lock().unwrap().get(key) {
            self.join_hist.record(now.saturating_sub(*sent));
            self.joins_seen.add(1);
        }
    }
    fn on_leave(&self, key: &str) {
        let now = now_us();
        if let Some((_, closed)) = self.times.lock().unwrap().get(key) {
            if *closed > 0 {
                self.leave_hist.record(now.saturating_sub(*closed));
                self.leaves_seen.add(1);
            }
        }
    }
}

/// Liveroom presence envelope -> (event, key).
fn lr_presence(env: &Value) -> Option<(&str, &str)> {
    let topic = env.get("topic")?.as_str()?;
    if !topic.ends_with(":presence") {
        return None;
    }
    let ev = env.get("event")?.as_str()?;
    let key = env.get("data")?.get("key")?.as_str()?;
    Some((ev, key))
}

/// Pusher member event -> (event, user_id).
fn pusher_member(v: &Value) -> Option<(&'static str, String)> {
    let ev = match v.get("event")?.as_str()? {
        "pusher_internal:member_added" => "join",
        "pusher_internal:member_removed" => "leave",
        _ => return None,
    };
    let data = v.get("data")?;
    let data: Value = match data {
        Value::String(s) => serde_json::from_str(s).ok()?,
        d => d.clone(),
    };
    Some((ev, data.get("user_id")?.as_str()?.to_string()))
}

pub(crate) fn dispatch(kind: Kind, frame: &[u8], mut f: impl FnMut(&str, &str)) {
    match kind {
        Kind::Liveroom => {
            for env in ws::envelopes(frame) {
                if let Some((ev, key)) = lr_presence(&env) {
                    f(ev, key);
                }
            }
        }
        Kind::Sockudo => {
            if let Ok(v) = serde_json::from_slice::<Value>(frame) {
                if let Some((ev, key)) = pusher_member(&v) {
                    f(ev, &key);
                }
            }
        }
        Kind::Raw | Kind::SocketIo => {}
    }
}

/// An observer socket watching the roster of `room`.
pub(crate) async fn observer(t: Target, user: &str, room: &str) -> Result<Ws> {
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(user), None, false).await?;
            lr::stream(&mut w, "collab/board/__presence", json!([room])).await?;
            Ok(w)
        }
        Kind::Sockudo => {
            let (mut w, sid) = pusher::connect(t.addr, None, false).await?;
            let ch = format!("presence-{room}");
            ws::send_text(&mut w, pusher::subscribe_presence(&sid, &ch, user)).await?;
            pusher::wait_subscribed(&mut w, &ch, |_| {}).await?;
            Ok(w)
        }
        Kind::Raw | Kind::SocketIo => anyhow::bail!("{} has no presence", t.kind.name()),
    }
}

/// Connects a member and joins `room`; calls `sent()` just before the join goes out.
/// Returns the socket once the server confirmed the subscription.
pub(crate) async fn join(t: Target, user: &str, room: &str, sent: impl FnOnce()) -> Result<Ws> {
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(user), None, false).await?;
            let batch = json!({"batch": [
                {"rpc": "collab/board/__data", "id": "d", "args": [room], "stream": true},
                {"rpc": "collab/board/__presence", "id": "p", "args": [room], "stream": true},
            ]})
            .to_string();
            sent();
            ws::send_text(&mut w, batch).await?;
            lr::reply(&mut w, "d", "collab/board/__data", |_| {}).await?;
            Ok(w)
        }
        Kind::Sockudo => {
            let (mut w, sid) = pusher::connect(t.addr, None, false).await?;
            let ch = format!("presence-{room}");
            sent();
            ws::send_text(&mut w, pusher::subscribe_presence(&sid, &ch, user)).await?;
            pusher::wait_subscribed(&mut w, &ch, |_| {}).await?;
            Ok(w)
        }
        Kind::Raw | Kind::SocketIo => anyhow::bail!("{} has no presence", t.kind.name()),
    }
}

pub async fn run(t: Target, o: &Opts) -> Result<Metrics> {
    if matches!(t.kind, Kind::Raw | Kind::SocketIo) {
        return Ok(Metrics::skipped(format!(
            "no presence in {}",
            t.kind.name()
        )));
    }
    let room = format!("pres-{}", ws::run_tag());
    let st = Arc::new(State::default());
    eprintln!(
        "  presence[{}]: {} observers, {} joins/s for {:.0} s",
        t.kind.name(),
        o.observers,
        o.rate,
        o.duration
    );
    let obs = ws::connect_many(o.observers, 50, |i| {
        let room = room.clone();
        async move {
            observer(t, &format!("o{i}"), &room)
                .await
                .with_context(|| format!("observer {i}"))
        }
    })
    .await?;
    let mut obs_tasks = Vec::new();
    for mut w in obs {
        let st = st.clone();
        obs_tasks.push(tokio::spawn(async move {
            while let Some(f) = ws::next_payload(&mut w).await {
                dispatch(t.kind, &f, |ev, key| match ev {
                    "join" => st.on_join(key),
                    "leave" => st.on_leave(key),
                    _ => {}
                });
            }
        }));
    }

    let win = Window::start(t.pid);
    let total = (o.rate as f64 * o.duration) as u64;
    let period = Duration::from_secs_f64(1.0 / o.rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut joiners = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until(start + period * n as u32).await;
        let (st, room, hold) = (st.clone(), room.clone(), o.hold);
        joiners.push(tokio::spawn(async move {
            let key = format!("j{n}");
            let res = join(t, &key, &room, || {
                st.times.lock().unwrap().insert(key.clone(), (now_us(), 0));
            })
            .await;
            let mut w = match res {
                Ok(w) => w,
                Err(e) => {
                    if st.errors.get() < 3 {
                        eprintln!("  joiner {n}: {e:#}");
                    }
                    st.errors.add(1);
                    return;
                }
            };
            let sent = st.times.lock().unwrap().get(&key).map(|v| v.0).unwrap_or(0);
            st.join_rtt.record(now_us().saturating_sub(sent));
            st.joins_done.add(1);
            // Stay, reading (and discarding) what the room sends.
            let _ = tokio::time::timeout(Duration::from_secs_f64(hold), async {
                while ws::next_payload(&mut w).await.is_some() {}
            })
            .await;
            if let Some(v) = st.times.lock().unwrap().get_mut(&key) {
                v.1 = now_us();
            }
            ws::close(w).await;
        }));
    }
    let churn_secs = start.elapsed().as_secs_f64();
    for j in joiners {
        let _ = j.await;
    }
    let mut m = Metrics::default();
    m.set(
        "joins_per_s",
        "joins/s completed (each also leaves)",
        st.joins_done.get() as f64 / churn_secs.max(o.duration),
        "/s",
    );
    win.finish(&mut m);
    // Wait for the joins and leaves still in flight.
    let expect = st.joins_done.get() * o.observers as u64;
    let wait_start = std::time::Instant::now();
    while (st.leaves_seen.get() < expect || st.joins_seen.get() < expect)
        && wait_start.elapsed() < Duration::from_secs_f64(o.leave_wait)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    st.join_hist
        .push_latency(&mut m, "join_visible", "join→visible to observers");
    st.join_rtt
        .push_latency(&mut m, "join_rtt", "joiner subscribe round trip");
    st.leave_hist
        .push_latency(&mut m, "leave_visible", "close→leave visible (incl. grace)");
    m.set(
        "joins_missing",
        "join notifications missing",
        expect.saturating_sub(st.joins_seen.get()) as f64,
        "",
    );
    m.set(
        "leaves_missing",
        &format!("leave notifications missing after {:.0} s", o.leave_wait),
        expect.saturating_sub(st.leaves_seen.get()) as f64,
        "",
    );
    m.set("join_errors", "failed joins", st.errors.get() as f64, "");
    m.note(format!(
        "{} observers, {} joins/s, hold {:.1} s",
        o.observers, o.rate, o.hold
    ));
    match t.kind {
        Kind::Liveroom => m.note(
            "close→leave includes liveroom's leave grace (5 s unless --grace-ms), by design: \
             reloads and reconnects inside it do not flicker",
        ),
        _ => m.note("a cleanly closed Pusher member is removed at once (no grace)"),
    }
    for t in obs_tasks {
        t.abort();
    }
    Ok(m)
}
