//! The seed room served by `examples/custom_server.rs`: a tokio-tungstenite server that drives
//! liveroom only through the connection hooks.

mod common;
#[path = "../examples/custom_server.rs"]
#[allow(dead_code)]
mod custom_server;

use common::*;
use liveroom_client::Client;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const GRACE: Duration = Duration::from_millis(250);

async fn start_custom() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let live = custom_server::app(GRACE).build();
    tokio::spawn(custom_server::serve(listener, live));
    addr
}

async fn connect(addr: SocketAddr, query: &str) -> Peer {
    Peer::from(
        Client::connect(&format!("ws://{addr}/?{query}"))
            .await
            .expect("connects"),
    )
}

#[tokio::test]
async fn seed_room_through_the_hooks() {
    let addr = start_custom().await;
    let mut alice = connect(addr, "user=alice&name=Alice").await;
    let a = enter_board(&alice, "b1").await;
    assert_eq!(a.data["topic"], "board:b1");
    assert_eq!(
        a.presence["data"],
        json!([{"key":"alice","data":{"name":"Alice"}}])
    );
    let mut bob = connect(addr, "user=bob&name=Bob").await;
    let b = enter_board(&bob, "b1").await;
    assert_eq!(b.roster_keys(), ["alice", "bob"]);
    assert_eq!(
        alice.event("board:b1:presence", "join").await,
        json!({"key":"bob","data":{"name":"Bob"}})
    );

    let card = bob
        .call("collab/board/__action/addCard", json!(["b1", "Hello"]))
        .await
        .unwrap();
    assert_eq!(card["title"], "Hello");
    assert_eq!(alice.event("board:b1", "created").await, card);
    assert_eq!(bob.event("board:b1", "created").await, card);

    bob.fire("collab/board/__cursor", json!(["b1", {"x": 3, "y": 4}]));
    assert_eq!(
        alice.event("board:b1:cursors", "update").await,
        json!({"key":"bob","x":3,"y":4})
    );

    // room_hooks: only this room's paths exist.
    let r = alice.call("collab/other/__data", json!(["b1"])).await;
    assert_eq!(code_of(r), "NOT_FOUND");
    let r = alice.call("test/add", json!([1, 2])).await;
    assert_eq!(code_of(r), "NOT_FOUND");
    // The guard runs.
    let guest = connect(addr, "").await;
    let r = guest
        .stream("collab/board/__data", json!(["b1"]))
        .await
        .map(|r| r.data);
    assert_eq!(code_of(r), "UNAUTHENTICATED");

    // A late joiner gets the card, the roster and bob's cursor.
    let carol = connect(addr, "user=carol").await;
    let c = enter_board(&carol, "b1").await;
    assert_eq!(c.data["data"], json!([card]));
    assert_eq!(c.roster_keys(), ["alice", "bob", "carol"]);
    assert_eq!(c.cursors["data"], json!([{"key":"bob","x":3,"y":4}]));

    // The unsubscribe hook ends bob's membership; alice sees the leave after the grace, then
    // the removal of his cursor.
    bob.send(&json!({"type":"unsubscribe","topic":"board:b1"}));
    assert_eq!(
        alice.event("board:b1:presence", "leave").await,
        json!({"key":"bob"})
    );
    assert_eq!(
        alice.event("board:b1:cursors", "remove").await,
        json!({"key":"bob"})
    );
    // The close hook: carol's socket ends, her leave follows.
    carol.leave().await;
    assert_eq!(
        alice.event("board:b1:presence", "leave").await,
        json!({"key":"carol"})
    );
}

#[tokio::test]
async fn batch_caps_and_plain_clients_through_the_hooks() {
    let addr = start_custom().await;
    let mut batching = Peer::from(
        Client::connect_with(&format!("ws://{addr}/?user=a"), &[], true)
            .await
            .unwrap(),
    );
    let mut plain = Peer::from(
        Client::connect_with(&format!("ws://{addr}/?user=b"), &[], false)
            .await
            .unwrap(),
    );
    enter_board(&batching, "b2").await;
    enter_board(&plain, "b2").await;
    batching.event("board:b2:presence", "join").await;
    let writer = connect(addr, "user=w").await;
    // An action publishing on the room is one event; two actions in one batch call queue two.
    writer
        .batch(vec![
            json!({"rpc":"collab/board/__action/addCard","id":"1","args":["b2","one"]}),
            json!({"rpc":"collab/board/__action/addCard","id":"2","args":["b2","two"]}),
        ])
        .await
        .unwrap();
    for p in [&mut batching, &mut plain] {
        p.take("board:b2", 2).await;
        p.quiet("board:b2", QUIET).await;
    }
    // Binary frames are answered with an error, the connection stays usable.
    plain.send_binary(vec![1, 2, 3]);
    assert_eq!(plain.typed("error").await["code"], "INVALID_REQUEST");
    enter_board(&plain, "b3").await;
}
