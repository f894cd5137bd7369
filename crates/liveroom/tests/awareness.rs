//! Awareness and large rooms over real sockets: presence updates (client and server side),
//! their throttle and size cap, count mode above the listed limit, the per-observer cursor
//! budget, and `null` cursor positions.

mod common;

use common::*;
use liveroom_testserver::Options;
use serde_json::{json, Value};
use std::time::Duration;

const GRACE: Duration = Duration::from_millis(200);

async fn serve_opts(options: Options) -> liveroom::Running {
    let (app, _state) = liveroom_testserver::app(&options);
    start(app).await
}

/// The next presence `join` about `key` on board `b1` that `p` receives.
async fn join_of(p: &mut Peer, key: &str) -> Value {
    p.find("a join", WAIT, |e| {
        e["topic"] == "board:b1:presence" && e["event"] == "join" && e["data"]["key"] == key
    })
    .await["data"]
        .clone()
}

/// `__presence_update` for board `b`, fire-and-forget (no id).
fn update(p: &Peer, board: &str, state: Value) {
    p.fire("collab/board/__presence_update", json!([board, state]));
}

#[tokio::test]
async fn an_update_reaches_others_and_late_joiners_and_goes_with_its_socket() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::connect(&server, "user=alice&name=Alice").await;
    enter_board(&alice, "b1").await;
    let mut bob = Peer::connect(&server, "user=bob&name=Bob").await;
    enter_board(&bob, "b1").await;
    // A client cannot rename itself: the server's fields win.
    update(
        &alice,
        "b1",
        json!({"editing": "card-1", "name": "Mallory"}),
    );
    assert_eq!(
        join_of(&mut bob, "alice").await,
        json!({"key": "alice", "data": {"name": "Alice", "editing": "card-1"}}),
        "a join upsert, never a leave"
    );
    // A late joiner sees it in the roster.
    let carol = Peer::connect(&server, "user=carol&name=Carol").await;
    let c = enter_board(&carol, "b1").await;
    let roster = c.presence["data"].as_array().unwrap().clone();
    let a = roster.iter().find(|m| m["key"] == "alice").unwrap();
    assert_eq!(a["data"]["editing"], "card-1");
    // `null` clears it.
    update(&alice, "b1", Value::Null);
    assert_eq!(
        join_of(&mut bob, "alice").await,
        json!({"key": "alice", "data": {"name": "Alice"}})
    );
    // The socket that set it takes it along; alice stays (second tab) with her plain data.
    let tab2 = Peer::connect(&server, "user=alice&name=Alice").await;
    enter_board(&tab2, "b1").await;
    update(&alice, "b1", json!({"typing": true}));
    assert_eq!(join_of(&mut bob, "alice").await["data"]["typing"], true);
    alice.leave().await;
    assert_eq!(
        join_of(&mut bob, "alice").await,
        json!({"key": "alice", "data": {"name": "Alice"}})
    );
    let later = bob.collect("board:b1:presence", GRACE * 2).await;
    assert!(
        later.iter().all(|e| e["event"] != "leave"),
        "the other tab keeps her in: {later:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn updates_are_throttled_latest_wins_size_capped_and_members_only() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::connect(&server, "user=alice&name=Alice").await;
    enter_board(&alice, "b1").await;
    let mut obs = observe_board(&server, "b1").await;
    for i in 0..40 {
        update(&alice, "b1", json!({"editing": format!("c{i}")}));
    }
    let got = obs
        .collect("board:b1:presence", Duration::from_millis(400))
        .await;
    let joins: Vec<&Value> = got.iter().filter(|e| e["event"] == "join").collect();
    assert!(
        !joins.is_empty() && joins.len() <= 3,
        "40 updates in a burst reach an observer as at most a few (one per tick): {got:?}"
    );
    assert_eq!(
        joins.last().unwrap()["data"]["data"]["editing"],
        "c39",
        "latest wins"
    );
    // Over the cap: refused with a reason, nothing published.
    let big = json!({"editing": "x".repeat(20_000)});
    let r = alice
        .reply_to(
            json!({"rpc": "collab/board/__presence_update", "id": "big", "args": ["b1", big]}),
        )
        .await;
    assert_eq!(r["code"], "INVALID_REQUEST", "{r}");
    // Not the room's awareness type.
    let r = alice
        .reply_to(json!({"rpc": "collab/board/__presence_update", "id": "t", "args": ["b1", {"typing": "yes"}]}))
        .await;
    assert_eq!(r["code"], "INVALID_REQUEST", "{r}");
    // Only members: an observer cannot set state.
    let r = obs
        .reply_to(json!({"rpc": "collab/board/__presence_update", "id": "o", "args": ["b1", {"typing": true}]}))
        .await;
    assert_eq!(r["code"], "FORBIDDEN", "{r}");
    obs.quiet("board:b1:presence", Duration::from_millis(200))
        .await;
    alice.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn set_presence_from_an_action_upserts_for_everyone() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut obs = observe_board(&server, "b1").await;
    let r = alice
        .call("collab/board/__action/setStatus", json!(["b1", "away"]))
        .await;
    assert_eq!(r.unwrap(), json!(true));
    assert_eq!(
        obs.event("board:b1:presence", "join").await,
        json!({"key": "alice", "data": {"name": "alice", "status": "away"}})
    );
    // From a plain RPC too, naming the room's topic; a non-member changes nothing.
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    assert_eq!(
        bob.call("test/away", json!(["b1"])).await.unwrap(),
        json!(true)
    );
    // Bob's join goes out at once (a small room), his status as the upsert that follows.
    let away = obs
        .find("bob away", WAIT, |e| {
            e["topic"] == "board:b1:presence"
                && e["event"] == "join"
                && e["data"]["key"] == "bob"
                && e["data"]["data"]["status"] == "away"
        })
        .await;
    assert_eq!(
        away["data"],
        json!({"key": "bob", "data": {"name": "bob", "status": "away"}})
    );
    assert_eq!(
        bob.call("test/away", json!(["elsewhere"])).await.unwrap(),
        json!(false)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn above_the_listed_limit_members_are_counted_and_promoted_in_order() {
    let server = serve_opts(Options {
        grace: GRACE,
        presence_limit: 3,
        ..Options::default()
    })
    .await;
    let mut obs = observe_board(&server, "b1").await;
    obs.count("board:b1:presence", 0, WAIT).await; // the count follows the reply
    let mut members = Vec::new();
    for i in 0..5 {
        let p = Peer::user(&server, &format!("u{i}")).await;
        enter_board(&p, "b1").await;
        members.push(p);
    }
    obs.count("board:b1:presence", 5, WAIT).await;
    let joins = obs.take("board:b1:presence", 3).await;
    let listed: Vec<&str> = joins
        .iter()
        .map(|j| j["data"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["u0", "u1", "u2"], "the first three are listed");
    obs.quiet("board:b1:presence", Duration::from_millis(200))
        .await;
    // A late observer: three listed, five counted.
    let mut late = Peer::user(&server, "late").await;
    let r = late
        .stream("collab/board/__presence", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(keys(&r.data), ["u0", "u1", "u2"]);
    late.count("board:b1:presence", 5, WAIT).await;
    // A listed member leaves: the first waiting one takes its place.
    members.remove(1).leave().await;
    let leave = obs.event("board:b1:presence", "leave").await;
    assert_eq!(leave, json!({"key": "u1"}));
    let promoted = obs.event("board:b1:presence", "join").await;
    assert_eq!(promoted["key"], "u3");
    obs.count("board:b1:presence", 4, WAIT).await;
    // A waiting member leaving is only counted.
    members.pop().unwrap().leave().await; // u4
    obs.count("board:b1:presence", 3, WAIT).await;
    obs.quiet("board:b1:presence", Duration::from_millis(100))
        .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn count_events_are_shaped_for_the_unmodified_client() {
    // svelte-realtime 0.5.12's presence merge applies `join`, `leave` and `set`, ignores other
    // events, throws on non-object data and skips data with `reqId` (client-protocol-notes 4.2).
    let (server, _) = serve_with(GRACE).await;
    let mut obs = Peer::user(&server, "observer").await;
    obs.stream("collab/board/__presence", json!(["b1"]))
        .await
        .unwrap();
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline && seen.iter().all(|e: &Value| e["event"] != "count")
    {
        if let Some(frame) = obs.client.next_within(Duration::from_millis(200)).await {
            match frame["type"].as_str() {
                Some("batch") => seen.extend(frame["events"].as_array().unwrap().iter().cloned()),
                _ => seen.push(frame),
            }
        }
    }
    let count = seen
        .iter()
        .find(|e| e["event"] == "count")
        .expect("a count event");
    assert_eq!(count["topic"], "board:b1:presence");
    assert!(
        count["data"].is_object() && count["data"].get("reqId").is_none(),
        "{count}"
    );
    assert!(count["data"]["total"].is_u64() && count["data"]["version"].is_u64());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_null_position_removes_the_cursor() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    alice.send(&json!({"rpc": "collab/board/__cursor", "args": ["b1", {"x": 1, "y": 2}]}));
    assert_eq!(bob.event("board:b1:cursors", "update").await["x"], 1);
    alice.send(&json!({"rpc": "collab/board/__cursor", "args": ["b1", null]}));
    assert_eq!(
        bob.event("board:b1:cursors", "remove").await,
        json!({"key": "alice"})
    );
    let r = bob
        .stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(r.data, json!([]), "gone from the snapshot too");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_observer_gets_at_most_its_cursor_budget_and_every_cursor_keeps_moving() {
    // 60 movers, a budget of 200 positions/s at a 50 ms tick: 10 per tick, so every cursor is
    // refreshed within 6 ticks.
    let server = serve_opts(Options {
        grace: GRACE,
        cursor_budget: 200,
        ..Options::default()
    })
    .await;
    let mut obs = Peer::user(&server, "observer").await;
    obs.stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    let mut movers = Vec::new();
    for i in 0..60 {
        let p = Peer::user(&server, &format!("m{i}")).await;
        enter_board(&p, "b1").await;
        movers.push(p);
    }
    // Everyone moves every 10 ms for 600 ms.
    for round in 0..60 {
        for p in &movers {
            p.send(&json!({"rpc": "collab/board/__cursor", "args": ["b1", {"x": round, "y": 0}]}));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Frames, as received: count positions per frame (one frame per tick).
    let mut per_frame = Vec::new();
    let mut latest = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let Some(frame) = obs.client.next_within(Duration::from_millis(300)).await else {
            break;
        };
        let events: Vec<Value> = match frame["type"].as_str() {
            Some("batch") => frame["events"].as_array().unwrap().clone(),
            _ => vec![frame],
        };
        let updates: Vec<&Value> = events.iter().filter(|e| e["event"] == "update").collect();
        per_frame.push(updates.len());
        for u in updates {
            latest.insert(
                u["data"]["key"].as_str().unwrap().to_owned(),
                u["data"]["x"].clone(),
            );
        }
    }
    assert!(
        per_frame.iter().all(|&n| n <= 10),
        "at most 10 per tick: {per_frame:?}"
    );
    assert_eq!(latest.len(), 60, "every mover's cursor arrived");
    assert!(
        latest.values().all(|x| x == 59),
        "every cursor ends at its latest position: {latest:?}"
    );
    server.shutdown().await.unwrap();
}
