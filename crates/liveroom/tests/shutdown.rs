//! Graceful shutdown: every socket is closed with 1001, the server stops accepting, and room
//! presence is released at once instead of after the grace.

mod common;

use common::*;
use liveroom::{App, Ctx, Room};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let (server, _) = serve().await;
    let addr = server.addr();
    let mut idle = Peer::guest(&server).await;
    let mut subscribed = Peer::user(&server, "ann").await;
    subscribed.stream("test/items", json!([])).await.unwrap();
    let mut busy = Peer::guest(&server).await;
    busy.fire("test/slow", json!([5_000]));
    busy.assert_alive().await;

    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited for a slow call: {:?}",
        started.elapsed()
    );
    for p in [&mut idle, &mut subscribed, &mut busy] {
        assert_eq!(p.close_code().await, Some(1001));
    }
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_releases_presence_without_waiting_for_the_grace() {
    let (joins, leaves) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (j, l) = (joins.clone(), leaves.clone());
    let room = Room::new(|_ctx: &Ctx, (id,): &(String,)| format!("room:{id}"))
        .presence(|ctx| json!({ "id": ctx.identity() }))
        .grace(Duration::from_secs(60))
        .on_join(move |_, _| {
            j.fetch_add(1, Ordering::SeqCst);
        })
        .on_leave(move |_, _| {
            l.fetch_add(1, Ordering::SeqCst);
        });
    let server = start(with_auth(App::new().room("m", "r", room))).await;
    let gone = Peer::user(&server, "gone").await;
    gone.stream("m/r/__data", json!(["1"])).await.unwrap();
    let stays = Peer::user(&server, "stays").await;
    stays.stream("m/r/__data", json!(["1"])).await.unwrap();
    gone.leave().await; // inside its 60 s grace now
    assert_eq!(joins.load(Ordering::SeqCst), 2);
    assert_eq!(leaves.load(Ordering::SeqCst), 0);
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(leaves.load(Ordering::SeqCst), 2, "both left at shutdown");
    drop(stays);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_peer_that_never_reads() {
    let (server, _) = serve().await;
    let mut raw = RawWs::connect(&server, "").await;
    raw.send_text(r#"{"type":"subscribe","topic":"open:x","ref":1}"#)
        .await;
    assert!(raw.read_frame(WAIT).await.is_some());
    // Fill its socket buffers: the writer blocks.
    let pad = "z".repeat(32 * 1024);
    for i in 0..200 {
        server
            .live()
            .publish("open:x", "created", &json!({"id": i, "pad": pad}))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    server.shutdown().await.unwrap();
    // Bounded by the configured deadline (2 s in the tests' config), plus the stalled-write check.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(raw);
}
