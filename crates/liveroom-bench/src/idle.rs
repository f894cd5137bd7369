//! `idle`: server RSS per idle connection. Opens N sockets in batches (the listen backlog is
//! 4096) from several 127.0.0.x source addresses, lets them settle and compares the server's
//! RSS with its RSS before. liveroom sockets send `hello` (and optionally join a room); Sockudo
//! sockets wait for `connection_established`, Socket.IO sockets for their namespace's connect;
//! raw sockets just upgrade.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::procstat::{self, Window};
use crate::servers::{Kind, Target};
use crate::stats::{Counter, Metrics};
use crate::ws::{self, lr, pusher, sio, Ws};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// idle connections to open
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// connects in flight at once
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// 127.0.0.x source addresses to spread over
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// seconds to let the server settle before reading its RSS
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// liveroom: each connection also subscribes the data stream of one shared room
    #[arg(long, default_value_t = false)]
    pub subscribed: bool,
}

async fn open(t: Target, i: usize, o: &Opts, room: &str) -> Result<Ws> {
    let src = Some(ws::source_ip(i, o.sources));
    match t.kind {
        Kind::Liveroom => {
            let mut w = lr::connect(t.addr, Some(&format!("i{i}")), src, true).await?;
            if o.subscribed {
                lr::stream(&mut w, "collab/board/__data", json!([room])).await?;
            }
            Ok(w)
        }
        Kind::Raw => ws::connect(t.addr, "/?role=idle", src, true).await,
        Kind::Sockudo => Ok(pusher::connect(t.addr, src, true).await?.0),
        Kind::SocketIo => sio::connect(t.addr, src, true).await,
    }
}

pub async fn run(t: Target, o: &Opts) -> Result<Metrics> {
    let pid = t
        .pid
        .context("idle needs the server's pid (start it from the bench)")?;
    let room = format!("idle-{}", ws::run_tag());
    // Warm the server with a few connections so lazily-initialised state is in the baseline.
    let warm = ws::connect_many(8, 8, |i| {
        let room = room.clone();
        async move { open(t, 1_000_000 + i, o, &room).await }
    })
    .await?;
    for w in warm {
        ws::close(w).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procstat::sample(pid)?;
    eprintln!(
        "  idle[{}]: opening {} connections (RSS before {:.1} MiB)",
        t.kind.name(),
        o.conns,
        before.rss_kib as f64 / 1024.0
    );
    let t0 = std::time::Instant::now();
    let conns = ws::connect_many(o.conns, o.batch, |i| {
        let room = room.clone();
        async move {
            open(t, i, o, &room)
                .await
                .with_context(|| format!("connection {i}"))
        }
    })
    .await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    // Keep reading (pings, noops) like a live client would, with one small task per socket.
    let closed = Arc::new(Counter::default());
    let mut tasks = Vec::with_capacity(conns.len());
    for mut w in conns {
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            while ws::next_payload(&mut w).await.is_some() {}
            closed.add(1);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.settle)).await;
    let win = Window::start(Some(pid));
    tokio::time::sleep(Duration::from_secs_f64(o.settle.clamp(0.5, 2.0))).await;
    let after = procstat::sample(pid)?;
    let mut m = Metrics::default();
    let per_conn = (after.rss_kib as f64 - before.rss_kib as f64) / o.conns as f64;
    m.set(
        "rss_per_conn_kib",
        "server RSS per idle connection",
        per_conn,
        "KiB",
    );
    m.set(
        "rss_total_mib",
        &format!("server RSS with {} connections", o.conns),
        after.rss_kib as f64 / 1024.0,
        "MiB",
    );
    m.set(
        "rss_before_mib",
        "server RSS before",
        before.rss_kib as f64 / 1024.0,
        "MiB",
    );
    m.set(
        "connect_per_s",
        "connects/s (handshake included)",
        o.conns as f64 / connect_secs,
        "/s",
    );
    let mut w = Metrics::default();
    win.finish(&mut w);
    if let Some(c) = w.get("server_cpu") {
        m.set("idle_cpu", "server CPU while idle", c, "% core");
    }
    m.set(
        "closed_by_server",
        "connections closed by the server",
        closed.get() as f64,
        "",
    );
    if let Ok(g) = procstat::sample_self() {
        m.set("gen_rss", "generator RSS", g.rss_kib as f64 / 1024.0, "MiB");
    }
    m.note(format!(
        "{} connections from {} source addresses{}",
        o.conns,
        o.sources,
        if o.subscribed {
            ", each subscribed to one room"
        } else {
            ""
        }
    ));
    for t in &tasks {
        t.abort();
    }
    Ok(m)
}
