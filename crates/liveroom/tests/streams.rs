//! Streams: reply shapes per merge mode, guards and failing loaders, and the ordering rule of
//! protocol.md section 4 (the reply is queued before any later event on its topic, and events
//! published while the initial data loads are already in it).

mod common;

use common::*;
use liveroom::{App, Ctx, LiveError, Merge, Stream};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn stream_reply_shapes() {
    let (server, _) = serve().await;
    let p = Peer::guest(&server).await;
    // Every reply also carries the topic's current seq (see tests/delivery.rs).
    let reply = |call| async {
        let mut r = p.reply_to(call).await;
        assert!(r["seq"].as_u64().is_some(), "a seq: {r}");
        r.as_object_mut().unwrap().remove("seq");
        r
    };
    let recent = reply(stream_call("test/recent", json!([]))).await;
    let id = recent["id"].clone();
    assert_eq!(
        recent,
        json!({"id":id,"ok":true,"data":[],"topic":"recent","merge":"crud","key":"id","max":10,"prepend":true})
    );
    let feed = reply(stream_call("test/feed", json!([]))).await;
    let id = feed["id"].clone();
    assert_eq!(
        feed,
        json!({"id":id,"ok":true,"data":[],"topic":"feed","merge":"latest","max":5})
    );
    let value = reply(stream_call("test/value", json!([]))).await;
    let id = value["id"].clone();
    assert_eq!(
        value,
        json!({"id":id,"ok":true,"data":{"n":0},"topic":"value","merge":"set"})
    );
    let topic = p.stream("test/topic", json!(["a b"])).await.unwrap();
    assert_eq!(
        (topic.topic.as_str(), topic.merge.as_str()),
        ("t:a b", "crud")
    );
    assert_eq!(topic.raw["key"], "id");
    assert!(topic.raw.get("prepend").is_none() && topic.raw.get("max").is_none());
    // Stream args are validated like RPC args.
    assert_eq!(
        code_of(p.stream("test/topic", json!([1])).await.map(|r| r.data)),
        "VALIDATION"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn guarded_and_failing_streams_do_not_subscribe() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let denied = p.stream("test/denied", json!([])).await.map(|r| r.data);
    assert_eq!(code_of(denied), "FORBIDDEN");
    let broken = p.reply_to(stream_call("test/broken", json!([]))).await;
    assert_eq!(broken["code"], "INTERNAL_ERROR");
    assert!(!broken.to_string().contains("hunter2"), "{broken}");
    assert!(
        broken.get("topic").is_none(),
        "no topic on errors: {broken}"
    );
    // A denied stream's topic cannot be subscribed from the wire afterwards either.
    p.send(&json!({"type":"subscribe","topic":"denied","ref":1}));
    server
        .live()
        .publish("denied", "created", &json!({"id": 1}))
        .unwrap();
    assert!(p.collect_all(QUIET).await.is_empty());
    assert_eq!(server.live().hub().subscribers("denied"), 0);
    server.shutdown().await.unwrap();
}

/// A stream whose loader reports that it started, then waits for the test's go-ahead before
/// reading the "database".
struct Gated {
    db: Arc<Mutex<Vec<Value>>>,
    started: mpsc::UnboundedReceiver<()>,
    go: Arc<Notify>,
}

fn gated_app() -> (App, Gated) {
    let db: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (tx, started) = mpsc::unbounded_channel();
    let go = Arc::new(Notify::new());
    let (db2, go2) = (db.clone(), go.clone());
    let app = App::new().stream(
        "slow/items",
        Stream::new("slow").init(move |_ctx: Ctx, ()| {
            let (db, go, tx) = (db2.clone(), go2.clone(), tx.clone());
            async move {
                let _ = tx.send(());
                go.notified().await;
                Ok::<_, LiveError>(db.lock().unwrap().clone())
            }
        }),
    );
    let app = app.stream("fast/items", Stream::new("fast").merge(Merge::crud("id")));
    (app, Gated { db, started, go })
}

/// Writes to the "database" and publishes, as an app's mutation would.
fn mutate(server: &liveroom::Running, db: &Mutex<Vec<Value>>, event: &str, item: Value) {
    crud_apply(&mut db.lock().unwrap(), event, &item);
    server.live().publish("slow", event, &item).unwrap();
}

#[tokio::test]
async fn reply_is_queued_before_events_published_while_loading() {
    let (app, mut g) = gated_app();
    let server = start(app).await;
    mutate(&server, &g.db, "created", json!({"id": 1, "v": "a"}));
    let mut p = Peer::guest(&server).await;
    p.send(&json!({"rpc":"slow/items","id":"s","args":[],"stream":true}));
    g.started.recv().await.expect("loader started");
    // The socket is already subscribed: these are published while the loader runs.
    mutate(&server, &g.db, "created", json!({"id": 2, "v": "b"}));
    mutate(&server, &g.db, "updated", json!({"id": 1, "v": "a2"}));
    g.go.notify_one();
    let frames = p.take_where("frame", 3, |_| true).await;
    assert!(p.collect_all(QUIET).await.is_empty(), "more than 3 frames");
    assert_eq!(
        frames[0]["topic"], "__rpc",
        "the reply comes first: {frames:?}"
    );
    let reply = &frames[0]["data"];
    assert_eq!(reply["topic"], "slow");
    // Initial data already holds what was published during the load...
    let mut list: Vec<Value> = reply["data"].as_array().unwrap().clone();
    assert_eq!(
        list,
        [json!({"id": 1, "v": "a2"}), json!({"id": 2, "v": "b"})]
    );
    // ...and re-applying the events that follow keeps it consistent with the database.
    for f in &frames[1..] {
        assert_eq!(f["topic"], "slow");
        crud_apply(&mut list, f["event"].as_str().unwrap(), &f["data"]);
    }
    assert_eq!(list, *g.db.lock().unwrap());
    // Later events flow normally.
    mutate(&server, &g.db, "deleted", json!({"id": 2}));
    assert_eq!(p.event("slow", "deleted").await, json!({"id": 2}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_reply_is_queued_before_held_events() {
    let (app, mut g) = gated_app();
    let server = start(app).await;
    let mut p = Peer::connect_with(&server, "", &[], false).await;
    p.send(&json!({"batch":[
        {"rpc":"slow/items","id":"s","args":[],"stream":true},
        {"rpc":"fast/items","id":"f","args":[],"stream":true},
    ]}));
    g.started.recv().await.expect("loader started");
    mutate(&server, &g.db, "created", json!({"id": 7}));
    server
        .live()
        .publish("fast", "created", &json!({"id": 8}))
        .unwrap();
    // Nothing may arrive before the batch reply, not even the fast stream's event.
    assert!(p.collect_all(Duration::from_millis(150)).await.is_empty());
    g.go.notify_one();
    let frames = p.take_where("frame", 3, |_| true).await;
    assert!(p.collect_all(QUIET).await.is_empty(), "more than 3 frames");
    assert_eq!(frames[0]["event"], "__batch");
    let entries = frames[0]["data"]["batch"].as_array().unwrap();
    let slow = entries.iter().find(|e| e["id"] == "s").unwrap();
    assert_eq!(slow["data"], json!([{"id": 7}]));
    let events: Vec<(&Value, &Value)> = frames[1..]
        .iter()
        .map(|f| (&f["topic"], &f["data"]))
        .collect();
    assert!(
        events.contains(&(&json!("slow"), &json!({"id": 7}))),
        "{frames:?}"
    );
    assert!(
        events.contains(&(&json!("fast"), &json!({"id": 8}))),
        "{frames:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_stream_does_not_delay_later_calls() {
    let (app, mut g) = gated_app();
    let server = start(with_auth(
        app.rpc("test/add", |_ctx: Ctx, (a, b): (i64, i64)| async move {
            Ok(a + b)
        }),
    ))
    .await;
    let mut p = Peer::guest(&server).await;
    p.send(&json!({"rpc":"slow/items","id":"s","args":[],"stream":true}));
    g.started.recv().await.unwrap();
    p.assert_alive().await; // answered while the stream is still loading
    g.go.notify_one();
    let reply = p.find("stream reply", WAIT, |f| f["event"] == "s").await;
    assert_eq!(reply["data"]["ok"], true);
    server.shutdown().await.unwrap();
}
