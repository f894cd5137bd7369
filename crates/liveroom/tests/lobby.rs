//! The room list (lobby) of one process over real sockets: the first member opens a room (its
//! metadata computed once), counts follow joins and leaves (tabs count once, the leave grace
//! holds), the last leave closes it, and a late reader gets the open rooms.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

const GRACE: Duration = Duration::from_millis(200);
const LOBBY: &str = "lobby:collab/board";

/// The next lobby event, as `(event, data)`.
async fn next(p: &mut Peer) -> (String, Value) {
    let e = p
        .find("a lobby event", Duration::from_secs(5), |e| {
            e["topic"] == LOBBY
        })
        .await;
    (e["event"].as_str().unwrap().to_owned(), e["data"].clone())
}

#[tokio::test]
async fn rooms_open_count_and_close_with_their_members() {
    let (server, state) = serve_with(GRACE).await;
    let mut watcher = Peer::user(&server, "watcher").await;
    let list = watcher
        .stream("collab/board/__lobby", json!([]))
        .await
        .unwrap();
    assert_eq!(list.topic, LOBBY);
    assert_eq!(list.merge, "crud");
    assert_eq!(list.raw["key"], "room");
    assert_eq!(list.data, json!([]));

    // The first member opens the room: its entry, with the metadata, count 1.
    let alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let (event, entry) = next(&mut watcher).await;
    assert_eq!(event, "created");
    assert_eq!(entry["room"], "board:b1");
    assert_eq!(entry["args"], json!(["b1"]));
    assert_eq!(entry["meta"], json!({"title": "Board b1"}));
    assert_eq!(entry["count"], 1);
    let v1 = entry["version"].as_u64().unwrap();

    // A second member: the count goes up; alice's second tab changes nothing.
    let bob = Peer::user(&server, "bob").await;
    enter_board(&bob, "b1").await;
    let (event, entry) = next(&mut watcher).await;
    assert_eq!(
        (event.as_str(), entry["count"].clone()),
        ("created", json!(2))
    );
    assert!(entry["version"].as_u64().unwrap() > v1);
    assert_eq!(
        entry["meta"],
        json!({"title": "Board b1"}),
        "kept, not recomputed"
    );
    let tab = Peer::user(&server, "alice").await;
    enter_board(&tab, "b1").await;
    watcher.quiet(LOBBY, Duration::from_millis(150)).await;

    // Another room of the declaration is listed next to it.
    let carol = Peer::user(&server, "carol").await;
    enter_board(&carol, "b2").await;
    let (_, entry) = next(&mut watcher).await;
    assert_eq!(
        (entry["room"].clone(), entry["count"].clone()),
        (json!("board:b2"), json!(1))
    );

    // A late reader gets both, with their counts.
    let late = Peer::user(&server, "late").await;
    let list = late
        .stream("collab/board/__lobby", json!([]))
        .await
        .unwrap();
    let counts: Vec<(Value, Value)> = list
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["room"].clone(), e["count"].clone()))
        .collect();
    assert_eq!(
        counts,
        [(json!("board:b1"), json!(2)), (json!("board:b2"), json!(1))]
    );

    // Bob leaves: after his grace the count goes down.
    bob.leave().await;
    let (event, entry) = next(&mut watcher).await;
    assert_eq!(
        (event.as_str(), entry["count"].clone()),
        ("created", json!(1))
    );
    // Alice closes one tab: still 1 (no event); then the other: the room closes.
    tab.leave().await;
    watcher.quiet(LOBBY, GRACE * 2).await;
    alice.leave().await;
    let (event, entry) = next(&mut watcher).await;
    assert_eq!(event, "deleted");
    assert_eq!(entry, json!({"room": "board:b1"}));
    let list = late
        .stream("collab/board/__lobby", json!([]))
        .await
        .unwrap();
    assert_eq!(
        list.data.as_array().unwrap().len(),
        1,
        "only b2: {}",
        list.data
    );

    // Opened again: the metadata is computed again (once per open, three opens in all).
    let dave = Peer::user(&server, "dave").await;
    enter_board(&dave, "b1").await;
    let (event, entry) = next(&mut watcher).await;
    assert_eq!(
        (event.as_str(), entry["count"].clone()),
        ("created", json!(1))
    );
    assert_eq!(state.lobby_opens.load(Ordering::Relaxed), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_lobby_guard_refuses_and_rooms_without_a_lobby_have_none() {
    let (server, _) = serve_with(GRACE).await;
    let guest = Peer::guest(&server).await;
    let r = guest.stream("collab/board/__lobby", json!([])).await;
    assert_eq!(code_of(r.map(|s| s.data)), "UNAUTHENTICATED");
    let p = Peer::user(&server, "p").await;
    let r = p.stream("collab/pair/__lobby", json!([])).await;
    assert_eq!(code_of(r.map(|s| s.data)), "NOT_FOUND");
    server.shutdown().await.unwrap();
}
