//! Room presence over real sockets: rosters, tabs, the leave grace, reloads, guard denials,
//! observers, guests, unlisted members and the join/leave hooks.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_millis(250);
/// Longer than the grace: what "never" means when watching for a leave.
const PAST_GRACE: Duration = Duration::from_millis(600);

#[tokio::test]
async fn two_users_see_each_other_and_the_joiner_sees_itself() {
    let (server, _) = serve_with(GRACE).await;
    let mut alice = Peer::connect(&server, "user=alice&name=Alice").await;
    let a = enter_board(&alice, "b1").await;
    assert_eq!(
        a.presence["data"],
        json!([{"key":"alice","data":{"name":"Alice"}}])
    );
    assert_eq!(a.presence["topic"], "board:b1:presence");
    assert_eq!(a.presence["merge"], "presence");
    let bob = Peer::connect(&server, "user=bob&name=Bob").await;
    let b = enter_board(&bob, "b1").await;
    assert_eq!(b.roster_keys(), ["alice", "bob"]);
    assert_eq!(
        alice.event("board:b1:presence", "join").await,
        json!({"key":"bob","data":{"name":"Bob"}})
    );
    // Whatever the order in the batch, the roster includes the caller.
    let carol = Peer::user(&server, "carol").await;
    let id = carol.id();
    let replies = carol
        .batch(vec![
            json!({"rpc":"collab/board/__presence","id":format!("{id}p"),"args":["b1"],"stream":true}),
            json!({"rpc":"collab/board/__data","id":format!("{id}d"),"args":["b1"],"stream":true}),
        ])
        .await
        .unwrap();
    assert_eq!(keys(&replies[0]["data"]), ["alice", "bob", "carol"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_tabs_one_join_and_one_leave_after_the_grace() {
    let (server, state) = serve_with(GRACE).await;
    let mut obs = observe_board(&server, "b1").await;
    let tab1 = Peer::user(&server, "alice").await;
    enter_board(&tab1, "b1").await;
    assert_eq!(obs.event("board:b1:presence", "join").await["key"], "alice");
    let tab2 = Peer::user(&server, "alice").await;
    let e = enter_board(&tab2, "b1").await;
    assert_eq!(e.roster_keys(), ["alice"], "listed once");
    obs.quiet("board:b1:presence", QUIET).await; // no second join

    tab1.leave().await;
    obs.quiet("board:b1:presence", PAST_GRACE).await; // one tab left: no leave

    tab2.leave().await;
    let closed = Instant::now();
    assert_eq!(
        obs.event("board:b1:presence", "leave").await,
        json!({"key":"alice"})
    );
    let waited = closed.elapsed();
    assert!(
        waited >= GRACE - Duration::from_millis(20),
        "left after {waited:?}"
    );
    assert_eq!((state.joins_of("alice"), state.leaves_of("alice")), (1, 1));
    obs.quiet("board:b1:presence", QUIET).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reload_inside_the_grace_produces_neither_leave_nor_join() {
    let (server, state) = serve_with(GRACE).await;
    let mut obs = observe_board(&server, "b1").await;
    let tab = Peer::user(&server, "alice").await;
    enter_board(&tab, "b1").await;
    obs.event("board:b1:presence", "join").await;

    // A reload: the socket closes, a new one enters again well inside the grace.
    tab.leave().await;
    let tab = Peer::user(&server, "alice").await;
    let e = enter_board(&tab, "b1").await;
    assert_eq!(e.roster_keys(), ["alice"]);
    obs.quiet("board:b1:presence", PAST_GRACE).await;

    // Same on one socket: wire unsubscribe of the data topic, then the stream call again.
    tab.send(&json!({"type":"unsubscribe","topic":"board:b1"}));
    tab.stream("collab/board/__data", json!(["b1"]))
        .await
        .unwrap();
    obs.quiet("board:b1:presence", PAST_GRACE).await;
    assert_eq!((state.joins_of("alice"), state.leaves_of("alice")), (1, 0));

    // The reconnect sequence of protocol.md section 2 inside the grace: no flicker either.
    tab.leave().await;
    let tab = Peer::user(&server, "alice").await;
    tab.send(&json!({"type":"subscribe-batch","topics":["board:b1","board:b1:presence","board:b1:cursors"],"ref":1}));
    for t in ["board:b1", "board:b1:presence", "board:b1:cursors"] {
        tab.send(&json!({"type":"unsubscribe","topic":t}));
    }
    enter_board(&tab, "b1").await;
    for t in ["board:b1", "board:b1:presence", "board:b1:cursors"] {
        tab.send(&json!({"type":"subscribe","topic":t}));
    }
    obs.quiet("board:b1:presence", PAST_GRACE).await;
    assert_eq!((state.joins_of("alice"), state.leaves_of("alice")), (1, 0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wire_unsubscribe_of_the_data_topic_ends_membership() {
    let (server, state) = serve_with(GRACE).await;
    let mut obs = observe_board(&server, "b1").await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    obs.event("board:b1:presence", "join").await;
    // Unsubscribing presence or cursors does not end membership.
    alice.send(&json!({"type":"unsubscribe","topic":"board:b1:presence"}));
    alice.send(&json!({"type":"unsubscribe","topic":"board:b1:cursors"}));
    obs.quiet("board:b1:presence", PAST_GRACE).await;
    alice.send(&json!({"type":"unsubscribe","topic":"board:b1"}));
    assert_eq!(
        obs.event("board:b1:presence", "leave").await,
        json!({"key":"alice"})
    );
    assert_eq!(state.leaves_of("alice"), 1);
    // Entering again later is a new join.
    enter_board(&alice, "b1").await;
    assert_eq!(obs.event("board:b1:presence", "join").await["key"], "alice");
    assert_eq!(state.joins_of("alice"), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guard_denial_returns_the_code_and_nobody_sees_a_join() {
    let (server, state) = serve_with(GRACE).await;
    let mut member = Peer::user(&server, "alice").await;
    enter_board(&member, "b1").await;
    let mut obs = observe_board(&server, "b1").await;

    let mallory = Peer::user(&server, "mallory").await;
    for r in try_enter(&mallory, "collab/board", json!(["b1"])).await {
        assert_eq!(r["code"], "FORBIDDEN", "{r}");
        assert_eq!(r["error"], "banned");
    }
    let guest = Peer::guest(&server).await;
    for r in try_enter(&guest, "collab/board", json!(["b1"])).await {
        assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
        assert_eq!(r["error"], "Sign in first");
    }
    // Denied actions publish nothing either.
    let denied = mallory
        .call("collab/board/__action/addCard", json!(["b1", "spam"]))
        .await;
    assert_eq!(code_of(denied), "FORBIDDEN");
    // Denied sockets are not subscribed: the member's card does not reach them.
    member
        .call("collab/board/__action/addCard", json!(["b1", "hi"]))
        .await
        .unwrap();
    member.event("board:b1", "created").await;

    for p in [&mut obs, &mut member] {
        let got = p.collect("board:b1:presence", PAST_GRACE).await;
        assert!(got.is_empty(), "saw {got:?}");
    }
    let mut mallory = mallory;
    let mut guest = guest;
    for p in [&mut mallory, &mut guest] {
        assert!(p.collect_all(QUIET).await.is_empty());
    }
    let roster = obs
        .stream("collab/board/__presence", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(keys(&roster.data), ["alice"]);
    assert_eq!(state.joins_of("mallory"), 0);
    assert_eq!(server.live().hub().subscribers("board:b1"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn observers_are_not_members() {
    let (server, state) = serve_with(GRACE).await;
    let mut alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let watcher = Peer::user(&server, "watcher").await;
    let roster = watcher
        .stream("collab/board/__presence", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(keys(&roster.data), ["alice"]);
    let cursors = watcher
        .stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(cursors.merge, "cursor");
    alice.quiet("board:b1:presence", QUIET).await;
    assert_eq!(state.joins_of("watcher"), 0);
    // Its close produces nothing either.
    watcher.leave().await;
    alice.quiet("board:b1:presence", PAST_GRACE).await;
    assert_eq!(state.leaves_of("watcher"), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn hooks_fire_once_per_actual_join_and_leave() {
    let (server, state) = serve_with(GRACE).await;
    let mut obs = observe_board(&server, "b1").await;
    let a1 = Peer::user(&server, "alice").await;
    let a2 = Peer::user(&server, "alice").await;
    let b1 = Peer::user(&server, "bob").await;
    for p in [&a1, &a2, &b1] {
        enter_board(p, "b1").await;
    }
    // Also in a second room: a separate membership.
    enter_board(&a1, "b2").await;
    let joins = obs.take("board:b1:presence", 2).await;
    assert!(joins.iter().all(|j| j["event"] == "join"), "{joins:?}");
    obs.quiet("board:b1:presence", QUIET).await;
    assert_eq!(state.joins_of("alice"), 2); // b1 and b2
    assert_eq!(state.joins_of("bob"), 1);
    for p in [a1, a2, b1] {
        p.leave().await;
    }
    let leaves = obs.take("board:b1:presence", 2).await;
    assert!(leaves.iter().all(|l| l["event"] == "leave"), "{leaves:?}");
    obs.quiet("board:b1:presence", PAST_GRACE).await;
    let mut log = state.leaves.lock().unwrap().clone();
    log.sort();
    assert_eq!(
        log,
        [
            ("board:b1".to_owned(), "alice".to_owned()),
            ("board:b1".to_owned(), "bob".to_owned()),
            ("board:b2".to_owned(), "alice".to_owned()),
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn null_presence_counts_but_is_not_listed() {
    let (server, state) = serve_with(GRACE).await;
    let mut obs = observe_board(&server, "b1").await;
    let ghost = Peer::connect(&server, "user=ghost&hidden=1").await;
    let e = enter_board(&ghost, "b1").await;
    assert_eq!(
        e.presence["data"],
        json!([]),
        "not listed, not even to itself"
    );
    obs.quiet("board:b1:presence", QUIET).await; // no join
    assert_eq!(state.joins_of("ghost"), 1, "but counted");
    // A second tab does not count again; the leave is silent but real.
    let tab2 = Peer::connect(&server, "user=ghost&hidden=1").await;
    enter_board(&tab2, "b1").await;
    ghost.leave().await;
    tab2.leave().await;
    obs.quiet("board:b1:presence", PAST_GRACE).await;
    assert_eq!((state.joins_of("ghost"), state.leaves_of("ghost")), (1, 1));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guests_get_per_connection_keys() {
    let (server, _) = serve_with(GRACE).await;
    let mut g1 = Peer::guest(&server).await;
    let r1 = try_enter(&g1, "collab/lobby", json!([])).await;
    let key1 = r1[1]["data"][0]["key"].as_str().unwrap().to_owned();
    assert!(key1.starts_with("__guest_"), "{key1}");
    assert_eq!(r1[1]["data"][0]["data"], json!({"guest": true}));
    let g2 = Peer::guest(&server).await;
    let r2 = try_enter(&g2, "collab/lobby", json!([])).await;
    let roster = &r2[1]["data"];
    assert_eq!(roster.as_array().unwrap().len(), 2, "{roster}");
    let join = g1.event("lobby:presence", "join").await;
    let key2 = join["key"].as_str().unwrap();
    assert!(key2.starts_with("__guest_") && key2 != key1, "{key2}");
    // A user in the same room is listed under its id.
    let u = Peer::user(&server, "dora").await;
    try_enter(&u, "collab/lobby", json!([])).await;
    assert_eq!(
        g1.event("lobby:presence", "join").await,
        json!({"key":"dora","data":{"guest":false}})
    );
    g2.leave().await;
    assert_eq!(
        g1.event("lobby:presence", "leave").await,
        json!({"key": key2})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn identity_keys_follow_the_protocol_rules() {
    use liveroom::{App, Ctx, Room};
    let room = Room::new(|_ctx: &Ctx, (): &()| "ids".to_owned())
        .presence(|_ctx| json!({}))
        .grace(GRACE);
    let app = App::new().room("m", "ids", room).authenticate(
        |req: liveroom::UpgradeRequest| async move {
            Ok(Some(match req.query("as") {
                Some("id") => json!({"id": 42, "user_id": "no", "userId": "no"}),
                Some("user_id") => json!({"user_id": "u_7", "userId": "no"}),
                Some("userId") => json!({"userId": "camel"}),
                _ => json!({"name": "no identity field"}),
            }))
        },
    );
    let server = start(app).await;
    let mut peers = Vec::new();
    for q in ["as=id", "as=user_id", "as=userId", "as=none"] {
        let p = Peer::connect(&server, q).await;
        let r = p.stream("m/ids/__data", json!([])).await.unwrap();
        assert_eq!(r.topic, "ids");
        peers.push(p);
    }
    let roster = peers[0]
        .stream("m/ids/__presence", json!([]))
        .await
        .unwrap();
    let k = keys(&roster.data);
    assert_eq!(k.len(), 4, "{k:?}");
    assert_eq!(
        (k[0].as_str(), k[2].as_str(), k[3].as_str()),
        ("42", "camel", "u_7")
    );
    assert!(
        k[1].starts_with("__guest_"),
        "a user without id is a guest: {k:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_data_load_leaves_no_ghost() {
    let (server, _) = serve_with(GRACE).await;
    let mut observer = observe_board(&server, "broken").await;
    let alice = Peer::user(&server, "alice").await;
    let replies = try_enter(&alice, "collab/board", json!(["broken"])).await;
    assert_eq!(replies[0]["code"], "INTERNAL_ERROR", "{}", replies[0]);
    // Subscribed and counted before the load ran, so a join went out; the failed load undoes
    // the membership, and the leave follows after the grace.
    observer.event("board:broken:presence", "join").await;
    assert_eq!(
        observer.event("board:broken:presence", "leave").await,
        json!({"key": "alice"})
    );
    alice.assert_alive().await;
}
