//! Cursors: throttled with the latest position winning, snapshots for late joiners, removal
//! when a user leaves, and moves only from sockets in the room.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const GRACE: Duration = Duration::from_millis(250);

fn moved(p: &Peer, board: &str, x: i64, y: i64) {
    moved_to(p, board, &json!({"x": x, "y": y}));
}

fn moved_to(p: &Peer, board: &str, position: &serde_json::Value) {
    p.fire("collab/board/__cursor", json!([board, position]));
}

#[tokio::test]
async fn moves_are_throttled_and_the_latest_position_wins() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    for i in 0..20 {
        moved(&alice, "b1", i, 100 - i);
    }
    let latest = json!({"key":"alice","x":19,"y":81});
    let mut updates = Vec::new();
    while updates.last() != Some(&latest) {
        updates.push(bob.event("board:b1:cursors", "update").await);
    }
    assert!(updates.len() <= 3, "not throttled: {updates:?}");
    // Nothing after the latest position.
    bob.quiet("board:b1:cursors", Duration::from_millis(200))
        .await;
    // Moves spread over time each go out (trailing edge, not a one-off).
    moved(&alice, "b1", 500, 500);
    assert_eq!(
        bob.event("board:b1:cursors", "update").await,
        json!({"key":"alice","x":500,"y":500})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn late_joiner_gets_current_cursors_and_roster() {
    let (server, _) = serve_with(GRACE).await;
    let mut alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    moved(&alice, "b1", 1, 2);
    moved(&bob, "b1", 3, 4);
    moved(&alice, "b1", 5, 6);
    // Wait until the tick published both.
    let mut seen = 0;
    while seen < 2 {
        let u = alice.event("board:b1:cursors", "update").await;
        if u == json!({"key":"alice","x":5,"y":6}) || u == json!({"key":"bob","x":3,"y":4}) {
            seen += 1;
        }
    }
    let carol = Peer::user(&server, "carol").await;
    let c = enter_board(&carol, "b1").await;
    assert_eq!(c.roster_keys(), ["alice", "bob", "carol"]);
    let mut cursors = c.cursors["data"].as_array().unwrap().clone();
    cursors.sort_by_key(|c| c["key"].as_str().unwrap().to_owned());
    assert_eq!(
        cursors,
        [
            json!({"key":"alice","x":5,"y":6}),
            json!({"key":"bob","x":3,"y":4})
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_leaving_users_cursor_is_removed_after_the_grace() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    moved(&alice, "b1", 10, 20);
    bob.event("board:b1:cursors", "update").await;
    alice.leave().await;
    assert_eq!(
        bob.event("board:b1:presence", "leave").await,
        json!({"key":"alice"})
    );
    assert_eq!(
        bob.event("board:b1:cursors", "remove").await,
        json!({"key":"alice"})
    );
    let carol = Peer::user(&server, "carol").await;
    assert_eq!(enter_board(&carol, "b1").await.cursors["data"], json!([]));
    // A user who never moved leaves no `remove`.
    carol.leave().await;
    bob.event("board:b1:presence", "leave").await;
    bob.quiet("board:b1:cursors", Duration::from_millis(200))
        .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn moves_are_accepted_only_from_sockets_in_the_room() {
    let (server, _) = serve_with(GRACE).await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    // Not subscribed to the room at all: refused.
    let stranger = Peer::user(&server, "stranger").await;
    let r = stranger
        .reply_to(json!({"rpc":"collab/board/__cursor","args":["b1",{"x":1,"y":1}]}))
        .await;
    assert_eq!(r["code"], "FORBIDDEN");
    // In another room: refused for this one.
    enter_board(&stranger, "b2").await;
    moved(&stranger, "b1", 2, 2);
    bob.quiet("board:b1:cursors", Duration::from_millis(200))
        .await;
    // Malformed positions.
    for args in [
        json!(["b1"]),
        json!(["b1", 5]),
        json!(["b1", {"x": 1}, 3]),
        json!([{"x": 1}]),
    ] {
        let r = bob
            .reply_to(json!({"rpc":"collab/board/__cursor","args":args}))
            .await;
        assert_eq!(r["code"], "INVALID_REQUEST", "{args}: {r}");
    }
    // A position cannot claim another key; an acknowledged move answers null.
    let r = bob
        .reply_to(json!({"rpc":"collab/board/__cursor","args":["b1",{"key":"alice","x":7}]}))
        .await;
    assert_eq!(r, json!({"id": r["id"], "ok": true, "data": null}));
    assert_eq!(
        bob.event("board:b1:cursors", "update").await,
        json!({"key":"bob","x":7})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guests_cursors_use_their_guest_key() {
    let (server, _) = serve_with(GRACE).await;
    let mut g = Peer::guest(&server).await;
    let r = try_enter(&g, "collab/lobby", json!([])).await;
    let key = r[1]["data"][0]["key"].as_str().unwrap().to_owned();
    assert_eq!(r[2]["topic"], "lobby:cursors");
    g.fire("collab/lobby/__cursor", json!([{"x": 0.5, "y": 0.25}]));
    assert_eq!(
        g.event("lobby:cursors", "update").await,
        json!({"key": key, "x": 0.5, "y": 0.25})
    );
    server.shutdown().await.unwrap();
}

/// A cursors-only subscriber may move its cursor; with no presence membership, its cursor
/// goes when its socket does (or when it unsubscribes the cursors topic).
#[tokio::test]
async fn a_cursors_only_subscribers_cursor_goes_with_its_socket() {
    let (server, _) = serve_with(GRACE).await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    let watcher = Peer::user(&server, "watcher").await;
    watcher
        .stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    moved(&watcher, "b1", 1, 1);
    assert_eq!(
        bob.event("board:b1:cursors", "update").await["key"],
        "watcher"
    );
    watcher.leave().await;
    assert_eq!(
        bob.event("board:b1:cursors", "remove").await,
        json!({"key":"watcher"})
    );
    let carol = Peer::user(&server, "carol").await;
    assert_eq!(enter_board(&carol, "b1").await.cursors["data"], json!([]));

    // Unsubscribing the cursors topic does the same.
    let watcher = Peer::user(&server, "watcher").await;
    watcher
        .stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    moved(&watcher, "b1", 2, 2);
    bob.event("board:b1:cursors", "update").await;
    watcher.send(&json!({"type":"unsubscribe","topic":"board:b1:cursors"}));
    assert_eq!(
        bob.event("board:b1:cursors", "remove").await,
        json!({"key":"watcher"})
    );
    // A member's cursor is not removed by one of its cursors-only sockets leaving.
    moved(&bob, "b1", 3, 3);
    bob.event("board:b1:cursors", "update").await;
    let bob_watching = Peer::user(&server, "bob").await;
    bob_watching
        .stream("collab/board/__cursors", json!(["b1"]))
        .await
        .unwrap();
    moved(&bob_watching, "b1", 4, 4);
    bob.event("board:b1:cursors", "update").await;
    bob_watching.leave().await;
    bob.quiet("board:b1:cursors", Duration::from_millis(300))
        .await;
    server.shutdown().await.unwrap();
}

/// A cursor position is small: an oversized one (a hostile client's 900 KiB, or just over the
/// 1 KiB limit) is refused, and nobody in the room receives it or loses its connection.
#[tokio::test]
async fn oversized_cursor_positions_are_refused_and_never_broadcast() {
    let (server, _) = serve_with(GRACE).await;
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let mut bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    for pad in [1100, 900 * 1024] {
        let position = json!({"x": 1, "y": 2, "note": "n".repeat(pad)});
        let r = alice
            .reply_to(json!({"rpc":"collab/board/__cursor","args":["b1", position]}))
            .await;
        assert_eq!(r["code"], "INVALID_REQUEST", "{pad}: {}", r["error"]);
        assert!(r["error"].as_str().unwrap().contains("1024"), "{r}");
    }
    bob.quiet("board:b1:cursors", Duration::from_millis(200))
        .await;
    // Just under the limit goes out as usual.
    let fits = json!({"x": 3, "note": "n".repeat(900)});
    moved_to(&alice, "b1", &fits);
    assert_eq!(bob.event("board:b1:cursors", "update").await["x"], json!(3));
    alice.assert_alive().await;
    bob.assert_alive().await;
    server.shutdown().await.unwrap();
}
