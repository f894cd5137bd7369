//! Rooms: the seed example end to end, actions (multi-argument topics, errors, guards), room
//! isolation, and guards failing with plain errors.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const GRACE: Duration = Duration::from_millis(250);

#[tokio::test]
async fn seed_board_end_to_end() {
    let (server, state) = serve_with(GRACE).await;
    let mut alice = Peer::connect(&server, "user=alice&name=Alice").await;
    let a = enter_board(&alice, "b1").await;
    // The three stream replies of a room page.
    assert_eq!(a.data["data"], json!([]));
    assert_eq!(a.data["topic"], "board:b1");
    assert_eq!(a.data["merge"], "crud");
    assert_eq!(a.data["key"], "id");
    assert_eq!(a.presence["topic"], "board:b1:presence");
    assert_eq!(a.presence["merge"], "presence");
    assert_eq!(a.cursors["topic"], "board:b1:cursors");
    assert_eq!(a.cursors["merge"], "cursor");
    assert_eq!(a.cursors["data"], json!([]));

    let mut bob = Peer::connect(&server, "user=bob&name=Bob").await;
    enter_board(&bob, "b1").await;
    alice.event("board:b1:presence", "join").await;

    // An action: its reply, and `created` for every member (the caller included).
    let card = alice
        .call("collab/board/__action/addCard", json!(["b1", "Hello"]))
        .await
        .unwrap();
    assert_eq!(card["title"], "Hello");
    assert_eq!(card["by"], "alice");
    assert_eq!(bob.event("board:b1", "created").await, card);
    assert_eq!(alice.event("board:b1", "created").await, card);

    // A late joiner's initial data has the card.
    let carol = Peer::user(&server, "carol").await;
    let c = enter_board(&carol, "b1").await;
    assert_eq!(c.data["data"], json!([card]));
    assert_eq!(c.roster_keys(), ["alice", "bob", "carol"]);
    assert_eq!(state.cards.lock().unwrap()["b1"].len(), 1);

    // App errors of actions pass through.
    let failed = bob.call("collab/board/__action/fail", json!(["b1"])).await;
    assert_eq!(code_of(failed), "BOOM");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn multi_argument_rooms_route_actions_and_pass_every_arg() {
    let (server, _) = serve_with(GRACE).await;
    let mut xy = Peer::user(&server, "u1").await;
    let r = try_enter(&xy, "collab/pair", json!(["x", "y"])).await;
    assert_eq!(r[0]["topic"], "pair:x:y");
    assert_eq!(r[1]["topic"], "pair:x:y:presence");
    assert_eq!(r[2]["code"], "NOT_FOUND", "pair has no cursors: {}", r[2]);
    let mut xz = Peer::user(&server, "u2").await;
    try_enter(&xz, "collab/pair", json!(["x", "z"])).await;

    let note = xz
        .call("collab/pair/__action/note", json!(["x", "y", "hello"]))
        .await
        .unwrap();
    assert_eq!(
        note,
        json!({"id":note["id"],"a":"x","b":"y","text":"hello","topic":"pair:x:y"})
    );
    assert_eq!(xy.event("pair:x:y", "created").await, note);
    xz.quiet("pair:x:y", QUIET).await;
    xz.quiet("pair:x:z", Duration::ZERO).await;
    // Presence of the two rooms is separate too.
    let roster = xy
        .stream("collab/pair/__presence", json!(["x", "y"]))
        .await
        .unwrap();
    assert_eq!(keys(&roster.data), ["u1"]);

    // Too few args for the room, or for the action, or a wrong one: VALIDATION naming the
    // argument, nothing published.
    for (args, path) in [
        (json!(["x"]), "b"),
        (json!(["x", "y"]), "text"),
        (json!(["x", 2, "t"]), "b"),
        (json!(["x", "y", 1]), "text"),
    ] {
        let r = xy
            .reply_to(json!({"rpc":"collab/pair/__action/note","args":args}))
            .await;
        assert_eq!(r["code"], "VALIDATION", "{args}: {r}");
        assert_eq!(r["issues"][0]["path"], json!([path]), "{args}: {r}");
    }
    let r = xy
        .reply_to(json!({"rpc":"collab/pair/__action/note","args":["x","y","t","extra"]}))
        .await;
    assert_eq!(r["issues"][0]["path"], json!([3]), "{r}");
    let r = xy
        .stream("collab/pair/__data", json!(["x"]))
        .await
        .map(|r| r.data);
    assert_eq!(code_of(r), "VALIDATION");
    xy.quiet("pair:x:y", QUIET).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rooms_with_different_args_are_isolated() {
    let (server, _) = serve_with(GRACE).await;
    let mut in_b1 = Peer::user(&server, "alice").await;
    enter_board(&in_b1, "b1").await;
    let mut in_b2 = Peer::user(&server, "bob").await;
    let e = enter_board(&in_b2, "b2").await;
    assert_eq!(e.roster_keys(), ["bob"], "b1's member is not in b2");
    let card = in_b2
        .call("collab/board/__action/addCard", json!(["b2", "only b2"]))
        .await
        .unwrap();
    assert_eq!(in_b2.event("board:b2", "created").await, card);
    in_b2.fire("collab/board/__cursor", json!(["b2", {"x": 1, "y": 1}]));
    in_b2.event("board:b2:cursors", "update").await;
    let leaked = in_b1.collect_all(Duration::from_millis(300)).await;
    assert!(leaked.is_empty(), "b1 saw {leaked:?}");
    let late = Peer::user(&server, "carol").await;
    assert_eq!(enter_board(&late, "b1").await.data["data"], json!([]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_and_malformed_actions() {
    let (server, _) = serve_with(GRACE).await;
    let mut alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let r = alice
        .call("collab/board/__action/nope", json!(["b1"]))
        .await;
    assert_eq!(code_of(r), "NOT_FOUND");
    let r = alice
        .call("collab/nope/__action/addCard", json!(["b1", "x"]))
        .await;
    assert_eq!(code_of(r), "NOT_FOUND");
    let r = alice
        .call("collab/board/__action/addCard", json!(["b1", 5]))
        .await;
    assert_eq!(code_of(r), "VALIDATION");
    let r = alice
        .call("collab/board/__action/addCard", json!(["b1"]))
        .await;
    assert_eq!(code_of(r), "VALIDATION");
    // Room streams must be called as streams, actions as plain calls.
    let r = alice.call("collab/board/__data", json!(["b1"])).await;
    assert_eq!(code_of(r), "INVALID_REQUEST");
    let r = alice
        .stream("collab/board/__action/addCard", json!(["b1", "x"]))
        .await
        .map(|r| r.data);
    assert_eq!(code_of(r), "INVALID_REQUEST");
    alice.quiet("board:b1", QUIET).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guards_run_before_actions() {
    let (server, state) = serve_with(GRACE).await;
    let mut alice = Peer::user(&server, "alice").await;
    enter_board(&alice, "b1").await;
    let guest = Peer::guest(&server).await;
    let r = guest
        .call("collab/board/__action/addCard", json!(["b1", "spam"]))
        .await;
    assert_eq!(code_of(r), "UNAUTHENTICATED");
    alice.quiet("board:b1", QUIET).await;
    assert!(state.cards.lock().unwrap().get("b1").is_none());
    // An action does not need a data subscription, only the guard.
    let dave = Peer::user(&server, "dave").await;
    dave.call(
        "collab/board/__action/addCard",
        json!(["b1", "from outside"]),
    )
    .await
    .unwrap();
    assert_eq!(alice.event("board:b1", "created").await["by"], "dave");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guard_failing_with_a_plain_error() {
    let (server, _) = serve_with(GRACE).await;
    let guest = Peer::guest(&server).await;
    let user = Peer::user(&server, "alice").await;
    for (p, code) in [(&guest, "UNAUTHENTICATED"), (&user, "FORBIDDEN")] {
        let r = &try_enter(p, "collab/vault", json!(["v"])).await[0]; // __data
        assert_eq!(r["code"], code, "{r}");
        assert!(!r.to_string().contains("backend"), "leaked: {r}");
        let r = p.call("collab/vault/__action/open", json!(["v"])).await;
        assert_eq!(code_of(r), code);
    }
    assert_eq!(server.live().hub().subscribers("vault:v"), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn manifest_describes_rooms() {
    let (server, _) = serve_with(GRACE).await;
    let (status, body) = http_get(&server, "/__live/manifest.json").await;
    assert_eq!(status, 200);
    let m: Value = serde_json::from_str(&body).unwrap();
    let board = &m["modules"]["collab"]["rooms"]["board"];
    assert_eq!(board["topicArgs"], 1);
    assert_eq!(board["presence"], true);
    assert_eq!(board["cursors"], true);
    assert_eq!(board["merge"], "crud");
    assert_eq!(
        board["actions"]["addCard"]["args"],
        json!(["boardId", "title"])
    );
    assert_eq!(m["modules"]["collab"]["rooms"]["pair"]["topicArgs"], 2);
    assert!(m["modules"].get("collab/board").is_none(), "{m}");
    server.shutdown().await.unwrap();
}

/// The guard is the first thing a room call runs: a caller it refuses never reaches the topic
/// function (which may assume valid args), on any part of the room.
#[tokio::test]
async fn the_guard_runs_before_the_topic_function() {
    use liveroom::{App, Ctx, LiveError, Room, RoomCtx};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let topics = Arc::new(AtomicUsize::new(0));
    let seen = topics.clone();
    let room = Room::new(move |_ctx: &Ctx, (id,): &(String,)| {
        assert!(
            !id.contains(':'),
            "topic function saw args the guard refuses: {id}"
        );
        seen.fetch_add(1, Ordering::SeqCst);
        format!("g:{id}")
    })
    .presence(|_ctx| json!({}))
    .cursors(true)
    .guard(|_ctx, (id,): (String,)| async move {
        if id.contains(':') {
            return Err(LiveError::validation("id", "no colons"));
        }
        Ok(())
    })
    .action("poke", |ctx: RoomCtx, _: (String,), (): ()| async move {
        Ok(ctx.topic().to_owned())
    });
    let server = start(with_auth(App::new().room("m", "g", room))).await;
    let p = Peer::user(&server, "ann").await;
    for r in try_enter(&p, "m/g", json!(["a:b"])).await {
        assert_eq!(r["code"], "VALIDATION", "{r}");
    }
    let r = p.call("m/g/__action/poke", json!(["a:b"])).await;
    assert_eq!(code_of(r), "VALIDATION");
    let r = p
        .reply_to(json!({"rpc":"m/g/__cursor","args":["a:b",{"x":1}]}))
        .await;
    assert_eq!(r["code"], "FORBIDDEN", "a room never entered: {r}");
    assert_eq!(topics.load(Ordering::SeqCst), 0);
    // Let in: the topic function runs once per call that passed the gate.
    let e = try_enter(&p, "m/g", json!(["ok"])).await;
    assert_eq!(e[0]["topic"], "g:ok");
    let poked = p.call("m/g/__action/poke", json!(["ok"])).await.unwrap();
    assert_eq!(poked, "g:ok");
    assert_eq!(topics.load(Ordering::SeqCst), 4);
    server.shutdown().await.unwrap();
}
