//! Delivery (docs/protocol.md, "Order" and "Delivery"): calls take effect in the order they
//! were sent, every event of a topic has the next seq, and a client that reconnects gets
//! exactly what it missed (`resume`, stream calls with `seq`) without a reload, or a reload
//! when the buffer no longer covers it.

mod common;

use common::*;
use liveroom_client::{Client, Resume};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Applies a crud event to `list` the way the client does.
fn apply(list: &mut Vec<Value>, event: &str, data: &Value) {
    let pos = list.iter().position(|x| x["id"] == data["id"]);
    match (event, pos) {
        ("created" | "updated", Some(i)) => list[i] = data.clone(),
        ("created", None) => list.push(data.clone()),
        ("deleted", Some(i)) => {
            list.swap_remove(i);
        }
        _ => {}
    }
}

fn sorted(mut list: Vec<Value>) -> Vec<Value> {
    list.sort_by_key(|v| v["id"].to_string());
    list
}

fn titles(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|c| c["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("a seq in {v}"))
}

/// Sends `call` with a fresh id without waiting; returns the id's reply receiver.
fn send_call(p: &Peer, mut call: Value) -> tokio::sync::oneshot::Receiver<Value> {
    let id = p.id();
    call["id"] = id.clone().into();
    let rx = p.expect_reply(&id);
    p.send(&call);
    rx
}

#[tokio::test]
async fn twenty_pipelined_actions_and_rpcs_take_effect_in_the_order_sent() {
    let (server, state) = serve().await;
    let mut ann = Peer::user(&server, "ann").await;
    enter_board(&ann, "o1").await;
    // Each call waits less than the one before it: run concurrently they would finish in
    // reverse.
    let replies: Vec<_> = (0..20u64)
        .map(|i| {
            let args = json!(["o1", format!("c{i}"), (20 - i) * 4]);
            send_call(
                &ann,
                json!({"rpc":"collab/board/__action/addCardAfter","args":args}),
            )
        })
        .collect();
    for rx in replies {
        assert_eq!(ann.reply(rx).await.unwrap()["ok"], true);
    }
    let expected: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let events = ann.take("board:o1", 20).await;
    let data: Vec<Value> = events.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(titles(&data), expected, "published in order");
    for pair in events.windows(2) {
        assert_eq!(seq_of(&pair[1]), seq_of(&pair[0]) + 1, "consecutive seqs");
    }
    let stored = state.cards.lock().unwrap()["o1"].clone();
    assert_eq!(titles(&stored), expected, "stored in order");

    let logs: Vec<_> = (0..10u64)
        .map(|i| {
            send_call(
                &ann,
                json!({"rpc":"test/log","args":[format!("l{i}"), (10 - i) * 5]}),
            )
        })
        .collect();
    for rx in logs {
        ann.reply(rx).await.unwrap();
    }
    let expected: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
    assert_eq!(*state.log.lock().unwrap(), expected);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_action_delays_only_that_sockets_later_actions_in_that_room() {
    let (server, _) = serve().await;
    let ann = Peer::user(&server, "ann").await;
    let bob = Peer::user(&server, "bob").await;
    for (p, board) in [(&ann, "s1"), (&ann, "s2"), (&bob, "s1")] {
        enter_board(p, board).await;
    }
    let action = |board: &str, title: &str, ms: u64| json!({"rpc":"collab/board/__action/addCardAfter","args":[board, title, ms]});
    let started = Instant::now();
    let slow = send_call(&ann, action("s1", "slow", 600));
    let after_slow = send_call(&ann, action("s1", "next", 0));
    let other_room = send_call(&ann, action("s2", "other", 0));
    let other_socket = send_call(&bob, action("s1", "bob", 0));
    let query = send_call(&ann, json!({"rpc":"test/slow","args":[0]}));
    for (rx, who) in [
        (other_room, "ann in s2"),
        (other_socket, "bob in s1"),
        (query, "a concurrent RPC"),
    ] {
        ann.reply(rx).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{who} waited for the slow action: {:?}",
            started.elapsed()
        );
    }
    ann.reply(after_slow).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "ran before the slow one ended"
    );
    assert_eq!(ann.reply(slow).await.unwrap()["ok"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_event_of_a_topic_has_the_next_seq_and_stream_replies_carry_the_current_one() {
    let (server, _) = serve().await;
    let mut a = Peer::guest(&server).await;
    let mut b = Peer::guest(&server).await;
    let first = a.stream("test/items", json!([])).await.unwrap();
    let s0 = seq_of(&first.raw);
    assert!(s0 > 1_700_000_000_000_000, "a time-based start: {s0}");
    b.stream("test/items", json!([])).await.unwrap();
    for i in 0..30 {
        server
            .live()
            .publish("items", "created", &json!({"id": format!("x{i}")}))
            .unwrap();
    }
    for p in [&mut a, &mut b] {
        let seqs: Vec<u64> = p.take("items", 30).await.iter().map(seq_of).collect();
        assert_eq!(seqs, (s0 + 1..=s0 + 30).collect::<Vec<_>>());
    }
    let later = a.stream("test/items", json!([])).await.unwrap();
    assert_eq!(seq_of(&later.raw), s0 + 30);
    // Cursors are state, not a log: no seq.
    let ann = Peer::user(&server, "ann").await;
    let entered = enter_board(&ann, "q1").await;
    assert!(entered.cursors.get("seq").is_none(), "{}", entered.cursors);
    assert!(entered.data.get("seq").is_some());
    server.shutdown().await.unwrap();
}

/// Ann on `board`, having seen `n` cards bob added; returns her client's resume state.
async fn ann_saw_cards(server: &liveroom::Running, bob: &Peer, board: &str, n: usize) -> Resume {
    let mut ann = Peer::user(server, "ann").await;
    enter_board(&ann, board).await;
    for i in 0..n {
        let args = json!([board, format!("seen{i}")]);
        bob.call("collab/board/__action/addCard", args)
            .await
            .unwrap();
    }
    ann.take(&format!("board:{board}"), n).await;
    let lost = ann.client.resume_state();
    ann.leave().await;
    lost
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_events_then_resumed() {
    let (server, state) = serve().await;
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "r1").await;
    let lost = ann_saw_cards(&server, &bob, "r1", 3).await;
    assert!(lost.session.is_some(), "a welcome was received");
    let last = lost.last_seen["board:r1"];
    for i in 0..4 {
        let args = json!(["r1", format!("missed{i}")]);
        bob.call("collab/board/__action/addCard", args)
            .await
            .unwrap();
    }
    let loads = state.loads.load(Ordering::Relaxed);

    let client = Client::resume(&url(&server, "user=ann"), &[], &lost)
        .await
        .unwrap();
    let mut ann = Peer::from(client);
    let replayed = ann.take_where("replayed or resumed", 5, |_| true).await;
    let (events, end) = replayed.split_at(4);
    assert_eq!(end[0], json!({"type":"resumed"}));
    let data: Vec<Value> = events.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(titles(&data), ["missed0", "missed1", "missed2", "missed3"]);
    let seqs: Vec<u64> = events.iter().map(seq_of).collect();
    assert_eq!(seqs, (last + 1..=last + 4).collect::<Vec<_>>());
    // The resumed topic may now be subscribed from the wire, and is live.
    ann.send(&json!({"type":"subscribe-batch","topics":["board:r1"],"ref":1}));
    ann.typed("subscribed").await;
    bob.call("collab/board/__action/addCard", json!(["r1", "live"]))
        .await
        .unwrap();
    let live = ann.take("board:r1", 1).await;
    assert_eq!(live[0]["data"]["title"], "live");
    assert_eq!(seq_of(&live[0]), last + 5);
    ann.quiet("board:r1", QUIET).await;
    assert_eq!(state.loads.load(Ordering::Relaxed), loads, "no loader ran");
    // A connection resumes once.
    ann.send(&lost.frame().unwrap());
    ann.send(&json!({"type":"subscribe","topic":"open:x","ref":3}));
    ann.typed("subscribed").await;
    assert!(
        ann.collect_all(QUIET).await.is_empty(),
        "a second resume is ignored"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_never_replays_a_topic_whose_guard_now_refuses() {
    let (server, _) = serve().await;
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "r2").await;
    let lost = ann_saw_cards(&server, &bob, "r2", 1).await;
    bob.call("collab/board/__action/addCard", json!(["r2", "secret"]))
        .await
        .unwrap();
    // Someone else (the guard refuses mallory) presents ann's session.
    let client = Client::resume(&url(&server, "user=mallory"), &[], &lost)
        .await
        .unwrap();
    let mut mallory = Peer::from(client);
    assert_eq!(mallory.typed("resumed").await, json!({"type":"resumed"}));
    mallory.send(&json!({"type":"subscribe","topic":"board:r2","ref":1}));
    mallory.quiet("board:r2", QUIET).await;
    // An unknown session replays nothing either.
    let forged = Resume {
        session: Some("0".repeat(32)),
        last_seen: lost.last_seen.clone(),
    };
    let client = Client::resume(&url(&server, "user=ann"), &[], &forged)
        .await
        .unwrap();
    let mut ann = Peer::from(client);
    ann.typed("resumed").await;
    ann.quiet("board:r2", QUIET).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_call_with_an_old_seq_replays_events_that_rebuild_the_full_load() {
    let (server, state) = serve().await;
    let first = Peer::guest(&server).await;
    let initial = first.stream("test/items", json!([])).await.unwrap();
    let seq = seq_of(&initial.raw);
    let publish =
        |event: &str, data: Value| first.call("test/publish", json!(["items", event, data]));
    publish("created", json!({"id":"a","v":1})).await.unwrap();
    publish("created", json!({"id":"b","v":1})).await.unwrap();
    publish("updated", json!({"id":"a","v":2})).await.unwrap();
    publish("deleted", json!({"id":"b"})).await.unwrap();
    publish("created", json!({"id":"c","v":1})).await.unwrap();
    let loads = state.loads.load(Ordering::Relaxed);

    let again = Peer::guest(&server).await;
    let replay = again
        .stream_since("test/items", json!([]), seq)
        .await
        .unwrap();
    assert_eq!(replay.raw["replay"], true, "{}", replay.raw);
    assert_eq!(replay.topic, "items");
    assert_eq!(state.loads.load(Ordering::Relaxed), loads, "no loader ran");
    let events = replay.data.as_array().unwrap();
    assert_eq!(events.len(), 5);
    let mut rebuilt = initial.data.as_array().unwrap().clone();
    for e in events {
        apply(&mut rebuilt, e["event"].as_str().unwrap(), &e["data"]);
    }
    assert_eq!(seq_of(&replay.raw), seq_of(events.last().unwrap()));
    let full = Peer::guest(&server).await;
    let full = full.stream("test/items", json!([])).await.unwrap();
    assert_eq!(
        sorted(rebuilt),
        sorted(full.data.as_array().unwrap().clone())
    );
    // Up to date: an empty replay.
    let current = again
        .stream_since("test/items", json!([]), seq_of(&full.raw))
        .await
        .unwrap();
    assert_eq!(
        (current.raw["replay"].clone(), current.data),
        (json!(true), json!([]))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_seq_older_than_the_buffer_gets_a_full_load_or_the_reload_marker() {
    let mut config = config();
    config.limits.replay_events = 4;
    let (app, state) = test_app();
    let server = start_with(app, config).await;
    let mut first = Peer::guest(&server).await;
    let seq = seq_of(&first.stream("test/items", json!([])).await.unwrap().raw);
    for i in 0..10 {
        let data = json!({"id": format!("i{i}")});
        first
            .call("test/publish", json!(["items", "created", data]))
            .await
            .unwrap();
    }
    first.take("items", 10).await;
    let lost = first.client.resume_state();
    let loads = state.loads.load(Ordering::Relaxed);

    let again = Peer::guest(&server).await;
    let reply = again
        .stream_since("test/items", json!([]), seq)
        .await
        .unwrap();
    assert_eq!(reply.raw["replay"], false, "a full load: {}", reply.raw);
    assert_eq!(reply.data.as_array().unwrap().len(), 10);
    assert_eq!(state.loads.load(Ordering::Relaxed), loads + 1);

    // A resume from the first seq: the buffer holds only the last 4.
    let mut old = lost.clone();
    old.last_seen.insert("items".into(), seq);
    let client = Client::resume(&url(&server, ""), &[], &old).await.unwrap();
    let mut p = Peer::from(client);
    let marker = p.take("items", 1).await.remove(0);
    assert_eq!(marker["data"], json!({"reqId":"liveroom","truncated":true}));
    p.typed("resumed").await;
    // Four back is still covered.
    old.last_seen
        .insert("items".into(), lost.last_seen["items"] - 4);
    let client = Client::resume(&url(&server, ""), &[], &old).await.unwrap();
    let mut p = Peer::from(client);
    assert_eq!(p.take("items", 4).await.len(), 4);
    p.typed("resumed").await;
    server.shutdown().await.unwrap();
}

/// What the unmodified svelte-realtime client does in a browser after its socket dropped
/// (client-protocol-notes.md section 6): `resume`, `subscribe-batch` of every topic, then per
/// stream a wire `unsubscribe`, the stream call with the seq of its last reply, and
/// `subscribe`.
#[tokio::test]
async fn the_unmodified_clients_reconnect_flow_recovers_without_a_load_or_duplicates() {
    let (server, state) = serve().await;
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "f1").await;
    let mut ann = Peer::user(&server, "ann").await;
    let page = enter_board(&ann, "f1").await;
    let stream_seq = seq_of(&page.data);
    let mut shown = page.data["data"].as_array().unwrap().clone();
    for i in 0..2 {
        let args = json!(["f1", format!("before{i}")]);
        bob.call("collab/board/__action/addCard", args)
            .await
            .unwrap();
    }
    for e in ann.take("board:f1", 2).await {
        apply(&mut shown, "created", &e["data"]);
    }
    let lost = ann.client.resume_state();
    ann.leave().await;
    for i in 0..3 {
        let args = json!(["f1", format!("missed{i}")]);
        bob.call("collab/board/__action/addCard", args)
            .await
            .unwrap();
    }
    let loads = state.loads.load(Ordering::Relaxed);

    let c = Client::connect(&url(&server, "user=ann")).await.unwrap();
    c.send(&lost.frame().unwrap());
    let topics = ["board:f1", "board:f1:presence", "board:f1:cursors"];
    c.send(&json!({"type":"subscribe-batch","topics":topics,"ref":1}));
    let mut ann = Peer::from(c);
    for e in ann.take("board:f1", 3).await {
        apply(&mut shown, "created", &e["data"]);
    }
    ann.typed("resumed").await;
    ann.send(&json!({"type":"unsubscribe","topic":"board:f1"}));
    let id = ann.id();
    let rx = ann.expect_reply(&id);
    ann.send(
        &json!({"rpc":"collab/board/__data","id":id,"args":["f1"],"stream":true,"seq":stream_seq}),
    );
    let reply = ann.reply(rx).await.unwrap();
    assert_eq!(reply["replay"], true, "{reply}");
    assert_eq!(
        reply["data"],
        json!([]),
        "what resume sent is not sent again"
    );
    ann.send(&json!({"type":"subscribe","topic":"board:f1","ref":2}));
    bob.call("collab/board/__action/addCard", json!(["f1", "after"]))
        .await
        .unwrap();
    let created = |f: &Value| f["topic"] == "board:f1" && f["event"] == "created";
    let after = ann.take_where("the live card", 1, created).await.remove(0);
    apply(&mut shown, "created", &after["data"]);
    let more = ann.collect("board:f1", QUIET).await;
    assert!(!more.iter().any(created), "nothing twice: {more:?}");
    assert_eq!(state.loads.load(Ordering::Relaxed), loads, "no loader ran");
    let stored = state.cards.lock().unwrap()["f1"].clone();
    assert_eq!(
        sorted(shown),
        sorted(stored),
        "the page shows exactly what is stored"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_resume_a_stream_call_with_seq_replays_since_its_reply() {
    let (server, state) = serve().await;
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "n1").await;
    let ann = Peer::user(&server, "ann").await;
    let page = enter_board(&ann, "n1").await;
    let seq = seq_of(&page.data);
    ann.leave().await;
    for i in 0..3 {
        let args = json!(["n1", format!("c{i}")]);
        bob.call("collab/board/__action/addCard", args)
            .await
            .unwrap();
    }
    let loads = state.loads.load(Ordering::Relaxed);
    // A Node client (no sessionStorage, so no resume) reconnects.
    let ann = Peer::user(&server, "ann").await;
    let replies = ann
        .batch(vec![
            json!({"rpc":"collab/board/__data","id":"d","args":["n1"],"stream":true,"seq":seq}),
        ])
        .await
        .unwrap();
    assert_eq!(replies[0]["replay"], true);
    let events = replies[0]["data"].as_array().unwrap();
    assert_eq!(
        titles(&events.iter().map(|e| e["data"].clone()).collect::<Vec<_>>()),
        ["c0", "c1", "c2"]
    );
    assert_eq!(state.loads.load(Ordering::Relaxed), loads);
    server.shutdown().await.unwrap();
}
