//! `rpc`: round trips of `test/echo`. Phase 1: closed loop at concurrency C (C sockets, one call
//! in flight each): throughput and latency. Phase 2: open loop at a fixed rate (e.g. 1000
//! calls/s spread over K sockets). Sending is open loop (a separate reader takes the replies),
//! so a stalled server cannot slow the schedule down and hide queued calls; latency counts from
//! the moment each call was written, and the writer's lag behind its schedule (tokio timers
//! have 1 ms resolution) is reported separately.
//! The raw server's equivalent is its echo (`E<payload>`), Socket.IO's an event with an
//! acknowledgement; Sockudo has no RPC.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::Window;
use crate::servers::{Kind, Target};
use crate::stats::{now_us, Counter, Hist, Metrics};
use crate::ws::{self, lr, Ws};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// closed-loop concurrency (sockets with one call in flight each; 0 skips the phase)
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// fixed-rate phase: calls per second (0 skips the phase)
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// sockets sharing the fixed rate
    #[arg(long, default_value_t = 10)]
    pub rate_conns: usize,
    /// measuring window per phase, seconds
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// warm-up per phase, seconds
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

async fn open(t: Target, i: usize) -> Result<Ws> {
    match t.kind {
        Kind::Liveroom => lr::connect(t.addr, Some(&format!("r{i}")), None, false).await,
        Kind::Raw => ws::connect(t.addr, "/?role=pub", None, false).await,
        Kind::SocketIo => ws::sio::connect(t.addr, None, false).await,
        Kind::Sockudo => anyhow::bail!("Sockudo (Pusher protocol) has no RPC"),
    }
}

fn call_frame(kind: Kind, id: u64) -> String {
    match kind {
        Kind::Liveroom => format!(r#"{{"rpc":"test/echo","id":"{id}","args":["hello",{id}]}}"#),
        // An event with an acknowledgement, answered by the peer's `echo` handler.
        Kind::SocketIo => format!(r#"42{id}["echo",{{"id":"{id}","args":["hello",{id}]}}]"#),
        _ => format!(r#"E{{"id":"{id}","args":["hello",{id}]}}"#),
    }
}

/// The call id in a reply (`"id":"<n>"`, first occurrence) and whether it succeeded.
fn reply_id(f: &[u8]) -> Option<(u64, bool)> {
    let pos = memchr::memmem::find(f, br#""id":""#)? + 6;
    let mut v = 0u64;
    let mut any = false;
    for &b in &f[pos..] {
        if b.is_ascii_digit() {
            v = v * 10 + (b - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    let failed = memchr::memmem::find(f, br#""ok":false"#).is_some();
    any.then_some((v, !failed))
}

pub async fn run(t: Target, o: &Opts) -> Result<Metrics> {
    if t.kind == Kind::Sockudo {
        return Ok(Metrics::skipped("Pusher protocol has no RPC"));
    }
    let mut m = Metrics::default();
    if o.concurrency > 0 {
        closed_loop(t, o, &mut m).await?;
    }
    if o.rate > 0 {
        fixed_rate(t, o, &mut m).await?;
    }
    Ok(m)
}

async fn closed_loop(t: Target, o: &Opts, m: &mut Metrics) -> Result<()> {
    eprintln!(
        "  rpc[{}]: closed loop, concurrency {}",
        t.kind.name(),
        o.concurrency
    );
    let conns = ws::connect_many(o.concurrency, 100, |i| async move {
        open(t, i).await.with_context(|| format!("rpc socket {i}"))
    })
    .await?;
    let hist = Arc::new(Hist::new());
    let done = Arc::new(Counter::default());
    let errors = Arc::new(Counter::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for mut w in conns {
        let (hist, done, errors, measuring, stop) = (
            hist.clone(),
            done.clone(),
            errors.clone(),
            measuring.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let t0 = now_us();
                if ws::send_text(&mut w, call_frame(t.kind, id)).await.is_err() {
                    errors.add(1);
                    break;
                }
                loop {
                    let Ok(f) = ws::next_payload_timeout(&mut w, Duration::from_secs(30)).await
                    else {
                        errors.add(1);
                        return w;
                    };
                    if let Some((rid, ok)) = reply_id(&f) {
                        if rid == id {
                            if !ok {
                                errors.add(1);
                            }
                            break;
                        }
                    }
                }
                if measuring.load(Ordering::Relaxed) {
                    hist.record(now_us() - t0);
                    done.add(1);
                }
            }
            w
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let win = Window::start(t.pid);
    let t0 = std::time::Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    let n = done.get();
    m.set(
        "closed_per_s",
        &format!("closed-loop calls/s (C={})", o.concurrency),
        n as f64 / dt,
        "/s",
    );
    hist.push_latency(
        m,
        "closed",
        &format!("closed-loop RTT (C={})", o.concurrency),
    );
    let mut w = Metrics::default();
    win.finish(&mut w);
    copy_cpu(m, &w, "closed", "closed-loop", &["server", "gen", "other"]);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(w) = t.await {
            ws::close(w).await;
        }
    }
    m.set(
        "closed_errors",
        "closed-loop errors",
        errors.get() as f64,
        "",
    );
    Ok(())
}

async fn fixed_rate(t: Target, o: &Opts, m: &mut Metrics) -> Result<()> {
    let k = o.rate_conns.max(1);
    eprintln!(
        "  rpc[{}]: fixed rate {}/s over {k} sockets",
        t.kind.name(),
        o.rate
    );
    let conns = ws::connect_many(k, 50, |i| async move {
        open(t, 1000 + i)
            .await
            .with_context(|| format!("rpc socket {i}"))
    })
    .await?;
    let period_us = (k as f64 * 1e6 / o.rate as f64).max(1.0);
    let total = (o.warmup + o.duration) * 1e6 / period_us;
    let total = total as u64;
    let hist = Arc::new(Hist::new());
    let lag = Arc::new(Hist::new());
    let replies = Arc::new(Counter::default());
    let errors = Arc::new(Counter::default());
    let warm_until = now_us() + (o.warmup * 1e6) as u64;
    let mut tasks = Vec::new();
    for (c, w) in conns.into_iter().enumerate() {
        let (hist, replies, errors, lag) =
            (hist.clone(), replies.clone(), errors.clone(), lag.clone());
        let sent_at: Arc<Vec<AtomicU64>> =
            Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let sent_at2 = sent_at.clone();
        // Spread the sockets' phases over one period.
        let start = now_us() + 1000 + (c as f64 * period_us / k as f64) as u64;
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = w.split();
            let sched = move |id: u64| start + (id as f64 * period_us) as u64;
            let writer = async move {
                let base = tokio::time::Instant::now();
                let now0 = now_us();
                for id in 0..total {
                    let at = sched(id);
                    let wait = at.saturating_sub(now0);
                    tokio::time::sleep_until(base + Duration::from_micros(wait)).await;
                    let now = now_us();
                    sent_at2[id as usize].store(now, Ordering::Relaxed);
                    if at >= warm_until {
                        lag.record(now.saturating_sub(at));
                    }
                    if tx
                        .send(Message::text(call_frame(t.kind, id)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                tx
            };
            let reader = async move {
                let mut got = 0u64;
                while got < total {
                    let Ok(Some(Ok(msg))) =
                        tokio::time::timeout(Duration::from_secs(10), rx.next()).await
                    else {
                        break;
                    };
                    let data = msg.into_data();
                    if let Some((id, ok)) = reply_id(&data) {
                        got += 1;
                        replies.add(1);
                        if !ok {
                            errors.add(1);
                        }
                        let s = sched(id);
                        let sent = sent_at
                            .get(id as usize)
                            .map(|v| v.load(Ordering::Relaxed))
                            .unwrap_or(0);
                        if s >= warm_until && sent > 0 {
                            hist.record(now_us().saturating_sub(sent));
                        }
                    }
                }
                rx
            };
            let (tx, rx) = tokio::join!(writer, reader);
            if let Ok(w) = tx.reunite(rx) {
                ws::close(w).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let win = Window::start(t.pid);
    let r0 = replies.get();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
    let achieved = (replies.get() - r0) as f64 / t0.elapsed().as_secs_f64();
    let mut w = Metrics::default();
    win.finish(&mut w);
    for t in tasks {
        let _ = t.await;
    }
    m.set(
        "rate_achieved",
        &format!("fixed-rate replies/s (target {})", o.rate),
        achieved,
        "/s",
    );
    hist.push_latency(m, "rate", &format!("RTT at {} calls/s", o.rate));
    m.push(
        "rate_lag_p99",
        "fixed-rate send lag behind schedule p99",
        lag.quantile(0.99).map(|v| v as f64 / 1000.0),
        "ms",
    );
    copy_cpu(m, &w, "rate", "fixed-rate", &["server", "other"]);
    let missing = (total * k as u64).saturating_sub(replies.get());
    m.set(
        "rate_missing",
        "fixed-rate calls without reply",
        missing as f64,
        "",
    );
    m.set("rate_errors", "fixed-rate errors", errors.get() as f64, "");
    Ok(())
}

/// Copies the CPU figures of one measuring window (`server_cpu`, ...) into `m` as
/// `<key>_server_cpu` ("<label> server CPU"), and so on for each of `which`.
fn copy_cpu(m: &mut Metrics, window: &Metrics, key: &str, label: &str, which: &[&str]) {
    for who in which {
        if let Some(c) = window.get(&format!("{who}_cpu")) {
            let name = match *who {
                "gen" => "generator",
                "other" => "other processes'",
                other => other,
            };
            m.set(
                &format!("{key}_{who}_cpu"),
                &format!("{label} {name} CPU"),
                c,
                "% core",
            );
        }
    }
}

/// A short closed-loop and fixed-rate run against `t` that must answer every call (the
/// servers' tests).
#[cfg(test)]
pub(crate) async fn assert_small_run_answers(t: Target) {
    let o = Opts {
        concurrency: 2,
        rate: 200,
        rate_conns: 2,
        duration: 0.3,
        warmup: 0.1,
    };
    let m = run(t, &o).await.expect("round trips run");
    assert!(m.get("closed_per_s").unwrap() > 0.0);
    assert_eq!(m.get("rate_missing"), Some(0.0));
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_reply_ids() {
        let lr =
            br#"{"topic":"__rpc","event":"17","data":{"id":"17","ok":true,"data":["hello",17]}}"#;
        assert_eq!(super::reply_id(lr), Some((17, true)));
        assert_eq!(super::reply_id(br#"{"id":"5","args":[]}"#), Some((5, true)));
        let bad = br#"{"topic":"__rpc","event":"3","data":{"id":"3","ok":false,"code":"X"}}"#;
        assert_eq!(super::reply_id(bad), Some((3, false)));
    }
}
