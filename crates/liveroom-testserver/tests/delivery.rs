//! Delivery across replicas (docs/clustering.md, "Delivery"): seqs are cluster-wide, every
//! subscriber on every replica sees a topic's events in seq order without gaps, a client
//! resumes or replays on any replica, and events published while Redis is down end in a
//! reload marker everywhere instead of a silent gap.

mod common;

use common::*;
use liveroom_client::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn seqs(p: &Peer, topic: &str) -> Vec<u64> {
    p.events(topic, "created", None)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}

fn titles_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["data"]["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn seqs_are_cluster_wide_and_every_replica_delivers_them_in_order(redis: &dyn TestRedis) {
    let url = redis.url();
    let replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| Replica::start(n, Some(&url), 1000))
        .collect();
    let (board, topic) = ("sq", "board:sq");
    let mut peers = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        for j in 0..2 {
            let mut p = Peer::connect(r, &format!("u{i}{j}")).await;
            p.join(board).await;
            peers.push(p);
        }
    }
    // One publisher per replica, all at once.
    let mut tasks = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let url = r.ws(&format!("pub{i}"));
        tasks.push(tokio::spawn(async move {
            let mut p = Peer::connect_url(&url, &format!("pub{i}")).await;
            p.join(board).await;
            for k in 0..15 {
                p.add_card(board, &format!("p{i}-{k}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut orders = Vec::new();
    for p in &mut peers {
        let done = p
            .pump_until(Instant::now() + WAIT, |p| {
                p.count(topic, "created", None) >= 45
            })
            .await;
        assert!(
            done,
            "{} got {} events",
            p.user,
            p.count(topic, "created", None)
        );
        p.settle(Duration::from_millis(200)).await;
        let s = seqs(p, topic);
        assert_eq!(s.len(), 45, "{}: no duplicates", p.user);
        for w in s.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{}: in seq order, no gap: {s:?}", p.user);
        }
        let events: Vec<Value> = p
            .events(topic, "created", None)
            .into_iter()
            .cloned()
            .collect();
        orders.push((s[0], titles_of(&events)));
    }
    for (first, order) in &orders[1..] {
        assert_eq!(
            (first, order),
            (&orders[0].0, &orders[0].1),
            "one order everywhere"
        );
    }
}

async fn a_client_resumes_or_replays_on_another_replica(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 1000);
    let r2 = Replica::start("r2", Some(&url), 1000);
    let r3 = Replica::start("r3", Some(&url), 1000);
    let (board, topic) = ("rs", "board:rs");
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    let mut ann = Peer::connect(&r1, "ann").await;
    let initial = ann
        .client
        .stream(&format!("{ROOM}/__data"), json!([board]))
        .await
        .unwrap();
    let stream_seq = initial.raw["seq"].as_u64().expect("a seq");
    for i in 0..2 {
        bob.add_card(board, &format!("seen{i}")).await;
    }
    assert!(
        ann.pump_until(Instant::now() + WAIT, |p| p.count(topic, "created", None)
            == 2)
            .await
    );
    let lost = ann.client.resume_state();
    ann.close_and_wait().await;
    for i in 0..3 {
        bob.add_card(board, &format!("missed{i}")).await;
    }

    // Resume on r3: the three missed events, in order, then `resumed`.
    let c = Client::resume(&r3.ws("ann"), &[], &lost).await.unwrap();
    let mut ann = Peer::from_client(c, "ann");
    let mut frames = Vec::new();
    while let Some(f) = ann.client.next_within(WAIT).await {
        let resumed = f["type"] == "resumed";
        frames.push(f);
        if resumed {
            break;
        }
    }
    let (events, end) = frames.split_at(frames.len() - 1);
    assert_eq!(end, [json!({"type":"resumed"})]);
    assert_eq!(titles_of(events), ["missed0", "missed1", "missed2"]);
    let last = lost.last_seen[topic];
    let got: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, [last + 1, last + 2, last + 3]);

    // A stream call with the seq of the first reply, on r2: the five events since.
    let other = Peer::connect(&r2, "ann").await;
    let replay = other
        .client
        .stream_since(&format!("{ROOM}/__data"), json!([board]), stream_seq)
        .await
        .unwrap();
    assert_eq!(replay.raw["replay"], true, "{}", replay.raw);
    let events = replay.data.as_array().unwrap();
    assert_eq!(
        titles_of(events),
        ["seen0", "seen1", "missed0", "missed1", "missed2"]
    );
    assert_eq!(replay.raw["seq"], events[4]["seq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_redis_is_down_end_in_a_reload_marker_everywhere() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 1000);
    let r2 = Replica::start("r2", Some(&url), 1000);
    let (board, topic) = ("od", "board:od");
    let mut ann = Peer::connect(&r1, "ann").await;
    ann.join(board).await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    ann.add_card(board, "before").await;
    for p in [&mut ann, &mut bob] {
        assert!(
            p.pump_until(Instant::now() + WAIT, |p| p.count(topic, "created", None)
                == 1)
                .await
        );
    }

    redis.stop();
    ann.add_card(board, "offline").await;
    // r1's own subscribers still get it, without a seq.
    assert!(
        ann.pump_until(Instant::now() + WAIT, |p| p.count(topic, "created", None)
            == 2)
            .await
    );
    let offline = ann.events(topic, "created", None)[1].clone();
    assert_eq!(offline["data"]["title"], "offline");
    assert!(offline.get("seq").is_none(), "{offline}");
    redis.restart();

    // Once Redis is back, both replicas' subscribers get the reload marker.
    for p in [&mut ann, &mut bob] {
        let marked = p
            .pump_until(Instant::now() + Duration::from_secs(10), |p| {
                p.count(topic, "truncated", None) >= 1
            })
            .await;
        assert!(marked, "{} got no reload marker: {:?}", p.user, p.log);
        let marker = p.events(topic, "truncated", None)[0];
        assert_eq!(marker["data"], json!({"reqId":"liveroom","truncated":true}));
    }
    // Events flow again, with seqs.
    ann.add_card(board, "after").await;
    assert!(
        bob.pump_until(Instant::now() + WAIT, |p| p
            .events(topic, "created", None)
            .iter()
            .any(|e| e["data"]["title"] == "after" && e["seq"].is_u64()))
            .await
    );
}

/// The Redis buffer on its own: a replica that never had the topic serves a stream call from
/// it, with exactly the events after the caller's seq, or a full load once the buffer (4 events
/// here, trimmed in steps) no longer reaches back to that seq.
async fn a_fresh_replica_replays_from_the_redis_buffer_or_reloads(redis: &dyn TestRedis) {
    let url = redis.url();
    let small = |name| {
        let mut o = ReplicaOpts::new(Some(&url), 1000);
        o.env = vec![("LIVEROOM_REPLAY_EVENTS", "4".to_string())];
        Replica::start_with(name, o)
    };
    let (r1, r2, r3) = (small("r1"), small("r2"), small("r3"));
    let (board, topic) = ("rb", "board:rb");
    let mut bob = Peer::connect(&r1, "bob").await;
    bob.join(board).await;
    let mut ann = Peer::connect(&r2, "ann").await;
    let first = ann
        .client
        .stream(&format!("{ROOM}/__data"), json!([board]))
        .await
        .unwrap();
    let old_seq = first.raw["seq"].as_u64().expect("a seq");
    for i in 0..40 {
        bob.add_card(board, &format!("c{i}")).await;
    }
    assert!(
        ann.pump_until(Instant::now() + WAIT, |p| p.count(topic, "created", None)
            == 40)
            .await
    );
    let seqs: Vec<u64> = ann
        .events(topic, "created", None)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let carol = Peer::connect(&r3, "carol").await;
    let path = format!("{ROOM}/__data");
    // Two behind: replayed from Redis, with their seqs.
    let replay = carol
        .client
        .stream_since(&path, json!([board]), seqs[37])
        .await
        .unwrap();
    assert_eq!(replay.raw["replay"], true, "{}", replay.raw);
    let events = replay.data.as_array().unwrap();
    assert_eq!(titles_of(events), ["c38", "c39"]);
    let got: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, [seqs[38], seqs[39]]);
    // Forty behind: the buffer no longer reaches back, so the loader runs (the test server's
    // cards live in each process, so r3's loader answers its own, empty, list).
    let dave = Peer::connect(&r3, "dave").await;
    let reload = dave
        .client
        .stream_since(&path, json!([board]), old_seq)
        .await
        .unwrap();
    assert_ne!(reload.raw["replay"], true, "{}", reload.raw);
    assert!(reload.data.is_array(), "{}", reload.raw);
    assert_eq!(reload.raw["seq"], seqs[39]);
}

on_both!(
    seqs_are_cluster_wide_and_every_replica_delivers_them_in_order,
    a_client_resumes_or_replays_on_another_replica,
    a_fresh_replica_replays_from_the_redis_buffer_or_reloads,
);
