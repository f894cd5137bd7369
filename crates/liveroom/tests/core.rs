//! Core protocol over real sockets: frame types, error codes, RPC, batches, subscriptions,
//! batch caps, the reconnect sequence, upgrade rejections, Origin, `/healthz` and the manifest
//! (`/metrics` has a binary of its own: metrics.rs).

mod common;

use common::*;
use liveroom::ServerConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn rpc_ok_reply_envelope_is_exact() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    p.send_text(r#"{"rpc":"test/add","id":"a1","args":[40,2]}"#);
    let frame = p.raw_frame(WAIT).await.expect("reply");
    assert_eq!(
        frame,
        json!({"topic":"__rpc","event":"a1","data":{"id":"a1","ok":true,"data":42}})
    );
    // A numeric id is echoed as a number in the body and as text in `event`.
    p.send_text(r#"{"rpc":"test/echo","id":7,"args":["x",{"y":[1]}]}"#);
    let frame = p.raw_frame(WAIT).await.expect("reply");
    assert_eq!(
        frame,
        json!({"topic":"__rpc","event":"7","data":{"id":7,"ok":true,"data":["x",{"y":[1]}]}})
    );
    // No `args` at all is an empty array.
    let whoami = p.call("test/whoami", json!([])).await.unwrap();
    assert_eq!(whoami["guest"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn app_error_codes_pass_through() {
    let (server, _) = serve().await;
    let p = Peer::guest(&server).await;
    for code in [
        "FORBIDDEN",
        "UNAUTHENTICATED",
        "NOT_FOUND",
        "RATE_LIMITED",
        "OVERLOADED",
        "VALIDATION",
        "MY_APP_CODE",
    ] {
        let reply = p
            .reply_to(json!({"rpc":"test/fail","args":[code, format!("because {code}")]}))
            .await;
        assert_eq!(reply["ok"], false);
        assert_eq!(reply["code"], code);
        assert_eq!(reply["error"], format!("because {code}"));
        assert!(reply.get("issues").is_none(), "{reply}");
    }
    // VALIDATION with issues.
    let reply = p.reply_to(json!({"rpc":"test/validate","args":[""]})).await;
    assert_eq!(reply["code"], "VALIDATION");
    assert_eq!(
        reply["issues"],
        json!([{"path":["title"],"message":"must not be empty"}])
    );
    assert_eq!(
        p.call("test/validate", json!(["ok"])).await.unwrap(),
        json!("ok")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn protocol_error_codes() {
    let (server, _) = serve().await;
    let p = Peer::guest(&server).await;
    // NOT_FOUND: no such path.
    assert_eq!(
        code_of(p.call("nope/nothing", json!([])).await),
        "NOT_FOUND"
    );
    // VALIDATION: wrong arity or types, with the path of the argument (its name: `test/add`
    // takes a struct `{a, b}`; its position for tuple args).
    let call = |rpc: &str, args: Value| json!({ "rpc": rpc, "args": args });
    let r = p.reply_to(call("test/add", json!([1]))).await;
    assert_eq!(r["code"], "VALIDATION");
    assert_eq!(
        r["issues"],
        json!([{"path":["b"],"message":"missing (takes 2 args)"}])
    );
    let r = p.reply_to(call("test/add", json!(["a", 2]))).await;
    assert_eq!(
        (&r["code"], &r["issues"][0]["path"]),
        (&json!("VALIDATION"), &json!(["a"]))
    );
    assert!(r["error"].as_str().unwrap().contains("argument `a`"), "{r}");
    let r = p.reply_to(call("test/slow", json!(["soon"]))).await;
    assert_eq!(
        (&r["code"], &r["issues"][0]["path"]),
        (&json!("VALIDATION"), &json!([0]))
    );
    let r = p
        .reply_to(call("test/publish", json!(["t", "created"])))
        .await;
    assert_eq!(r["issues"][0]["path"], json!(["data"]), "{r}");
    // INVALID_REQUEST: a bad path.
    assert_eq!(
        code_of(p.call("nopath", json!([])).await),
        "INVALID_REQUEST"
    );
    // UNAUTHENTICATED / FORBIDDEN from guards are covered in streams.rs and rooms.rs.
    // INTERNAL_ERROR never leaks the underlying text.
    let reply = p.reply_to(json!({"rpc":"test/leak","args":[]})).await;
    assert_eq!(reply["code"], "INTERNAL_ERROR");
    let text = reply.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("db.internal"),
        "leaked: {text}"
    );
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fire_and_forget_runs_and_gets_no_reply() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    p.send(&json!({"type":"subscribe","topic":"open:ff","ref":1}));
    p.typed("subscribed").await;
    p.fire("test/publish", json!(["open:ff", "ran", {"n": 1}]));
    assert_eq!(p.event("open:ff", "ran").await, json!({"n": 1}));
    // Failing fire-and-forget calls are silent too.
    p.fire("test/fail", json!(["FORBIDDEN", "no"]));
    p.fire("nope/nothing", json!([]));
    p.fire("test/add", json!(["wrong"]));
    p.send_text(r#"{"rpc":"test/slow","args":[10],"id":null}"#);
    let all = p.collect_all(Duration::from_millis(300)).await;
    assert!(all.is_empty(), "fire-and-forget got answers: {all:?}");
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_replies_once_and_runs_its_rpcs_in_order_beside_concurrent_ones() {
    let (server, state) = serve().await;
    let mut p = Peer::guest(&server).await;
    let started = Instant::now();
    let replies = p
        .batch(vec![
            json!({"rpc":"test/log","id":"slow","args":["slow", 300]}),
            json!({"rpc":"test/log","id":"fast","args":["fast", 0]}),
            json!({"rpc":"test/slow","id":"slow2","args":[300]}),
            json!({"rpc":"nope/x","id":"missing","args":[]}),
            json!({"rpc":"bad path","id":"bad","args":[]}),
            json!({"rpc":"test/add","args":[1, 2]}), // fire-and-forget: no entry
        ])
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(550),
        "the concurrent test/slow did not run beside the others: {elapsed:?}"
    );
    // Plain RPCs take effect in the order they were sent, however long each takes.
    assert_eq!(*state.log.lock().unwrap(), ["slow", "fast"]);
    let by_id = |id: &str| {
        replies
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no entry {id} in {replies:?}"))
            .clone()
    };
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(by_id("slow"), json!({"id":"slow","ok":true,"data":"slow"}));
    assert_eq!(by_id("fast"), json!({"id":"fast","ok":true,"data":"fast"}));
    assert_eq!(by_id("slow2")["data"], 300);
    assert_eq!(by_id("missing")["code"], "NOT_FOUND");
    assert_eq!(by_id("bad")["code"], "INVALID_REQUEST");
    // Exactly one reply frame for the whole batch, nothing per entry.
    let rest = p.collect_all(QUIET).await;
    assert!(rest.is_empty(), "extra frames: {rest:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sequential_batch_runs_in_order() {
    let (server, state) = serve().await;
    let mut p = Peer::guest(&server).await;
    let rx = p.expect_reply("__batch");
    p.send(&json!({"sequential": true, "batch": [
        {"rpc":"test/log","id":"1","args":["slow", 150]},
        {"rpc":"test/log","id":"2","args":["fast", 0]},
        {"rpc":"test/log","id":"3","args":["last", 20]},
    ]}));
    let reply = p.reply(rx).await.unwrap();
    assert_eq!(*state.log.lock().unwrap(), ["slow", "fast", "last"]);
    let ids: Vec<&Value> = reply["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!("1"), &json!("2"), &json!("3")]);
    assert!(p.collect_all(QUIET).await.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_caps_merge_events_into_one_frame() {
    let (server, _) = serve().await;
    let mut batching = Peer::connect_with(&server, "", &[], true).await;
    let mut plain = Peer::connect_with(&server, "", &[], false).await;
    for p in [&mut batching, &mut plain] {
        p.send(&json!({"type":"subscribe","topic":"open:b","ref":1}));
        p.typed("subscribed").await;
    }
    // Two events queued together (published back to back, no await in between).
    let live = server.live();
    live.publish("open:b", "created", &json!({"id": 1}))
        .unwrap();
    live.publish("open:b", "created", &json!({"id": 2}))
        .unwrap();
    let mut frame = batching.raw_frame(WAIT).await.expect("a frame");
    let seq = frame["events"][0]["seq"].as_u64().expect("a seq");
    assert_eq!(frame["events"][1]["seq"], seq + 1, "consecutive seqs");
    for e in frame["events"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seq");
    }
    assert_eq!(
        frame,
        json!({"type":"batch","events":[
            {"topic":"open:b","event":"created","data":{"id":1}},
            {"topic":"open:b","event":"created","data":{"id":2}},
        ]})
    );
    for id in [1, 2] {
        let frame = plain.raw_frame(WAIT).await.expect("a frame");
        assert_eq!(
            frame,
            json!({"topic":"open:b","event":"created","data":{"id":id},"seq":seq + id - 1})
        );
    }
    // A lone event is never wrapped.
    live.publish("open:b", "updated", &json!({"id": 3}))
        .unwrap();
    let frame = batching.raw_frame(WAIT).await.expect("a frame");
    assert_eq!(frame["event"], "updated");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribe_acks_denials_and_ignored_topics() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    p.send(&json!({"type":"subscribe","topic":"open:a","ref":1}));
    assert_eq!(
        p.typed("subscribed").await,
        json!({"type":"subscribed","topic":"open:a","ref":1})
    );
    p.send(&json!({"type":"subscribe-batch","topics":["open:b","open:c"],"ref":2}));
    for t in ["open:b", "open:c"] {
        assert_eq!(
            p.typed("subscribed").await,
            json!({"type":"subscribed","topic":t,"ref":2})
        );
    }
    // Without a ref, the ack has none.
    p.send(&json!({"type":"subscribe","topic":"open:d"}));
    assert_eq!(
        p.typed("subscribed").await,
        json!({"type":"subscribed","topic":"open:d"})
    );
    // Invalid and reserved topics are denied with a reason.
    p.send(&json!({"type":"subscribe","topic":"bad\"topic","ref":3}));
    assert_eq!(
        p.typed("subscribe-denied").await,
        json!({"type":"subscribe-denied","topic":"bad\"topic","ref":3,"reason":"INVALID_TOPIC"})
    );
    p.send(&json!({"type":"subscribe","topic":"__rpc","ref":4}));
    assert_eq!(
        p.typed("subscribe-denied").await,
        json!({"type":"subscribe-denied","topic":"__rpc","ref":4,"reason":"RESERVED_TOPIC"})
    );
    // A topic the socket is not authorised for is ignored: no ack, no events.
    p.send(&json!({"type":"subscribe","topic":"secret","ref":5}));
    p.send(&json!({"type":"subscribe-batch","topics":["secret2","open:e"],"ref":6}));
    assert_eq!(
        p.typed("subscribed").await,
        json!({"type":"subscribed","topic":"open:e","ref":6})
    );
    for t in ["secret", "secret2", "open:a", "open:e"] {
        server
            .live()
            .publish(t, "created", &json!({"t": t}))
            .unwrap();
    }
    let got = p.take_where("event", 2, |f| f["event"] == "created").await;
    let topics: Vec<&Value> = got.iter().map(|f| &f["topic"]).collect();
    assert_eq!(topics, [&json!("open:a"), &json!("open:e")], "{got:?}");
    let rest = p.collect_all(QUIET).await;
    assert!(rest.is_empty(), "{rest:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_reach_subscribers_only_and_unsubscribe_stops_them() {
    let (server, _) = serve().await;
    let mut a = Peer::guest(&server).await;
    let mut b = Peer::guest(&server).await;
    let mut c = Peer::guest(&server).await;
    let reply = a.stream("test/topic", json!(["x"])).await.unwrap();
    assert_eq!(reply.topic, "t:x");
    b.stream("test/topic", json!(["y"])).await.unwrap();
    c.stream("test/topic", json!(["x"])).await.unwrap();
    b.call("test/publish", json!(["t:x", "created", {"id": 1}]))
        .await
        .unwrap();
    assert_eq!(a.event("t:x", "created").await, json!({"id": 1}));
    assert_eq!(c.event("t:x", "created").await, json!({"id": 1}));
    b.quiet("t:x", QUIET).await;
    // Wire unsubscribe stops delivery to that socket only.
    a.send(&json!({"type":"unsubscribe","topic":"t:x"}));
    a.assert_alive().await; // frames of one socket are processed in order
    server
        .live()
        .publish("t:x", "created", &json!({"id": 2}))
        .unwrap();
    assert_eq!(c.event("t:x", "created").await, json!({"id": 2}));
    a.quiet("t:x", QUIET).await;
    // A wire subscribe restores a topic a stream call gave this socket.
    a.send(&json!({"type":"subscribe","topic":"t:x","ref":9}));
    a.typed("subscribed").await;
    server
        .live()
        .publish("t:x", "created", &json!({"id": 3}))
        .unwrap();
    assert_eq!(a.event("t:x", "created").await, json!({"id": 3}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ignored_frames_get_no_answer() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    for f in [
        json!({"type":"resume","lastSeq":3}),
        json!({"type":"reply","id":"x","data":1}),
        json!({"type":"something-new","x":[1]}),
        json!({"type":"hello"}),
    ] {
        p.send(&f);
    }
    assert!(p.collect_all(QUIET).await.is_empty());
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

/// protocol.md section 2: on reconnect the client sends `subscribe-batch` of its old topics,
/// then `unsubscribe` for each, then the stream RPC, then `subscribe`. The socket must end with
/// exactly one live subscription per topic.
#[tokio::test]
async fn reconnect_sequence_ends_with_one_subscription() {
    let (server, _) = serve().await;
    let mut old = Peer::guest(&server).await;
    old.stream("test/topic", json!(["r"])).await.unwrap();
    old.send(&json!({"type":"subscribe","topic":"open:r","ref":1}));
    old.typed("subscribed").await;
    old.leave().await;

    let mut p = Peer::guest(&server).await;
    p.send(&json!({"type":"subscribe-batch","topics":["t:r","open:r"],"ref":1}));
    p.send(&json!({"type":"unsubscribe","topic":"t:r"}));
    p.send(&json!({"type":"unsubscribe","topic":"open:r"}));
    let reply = p.stream("test/topic", json!(["r"])).await.unwrap();
    assert_eq!(reply.topic, "t:r");
    p.send(&json!({"type":"subscribe","topic":"t:r","ref":2}));
    p.send(&json!({"type":"subscribe","topic":"open:r","ref":3}));
    // `open:r` was acked by subscribe-batch (allow_subscribe), `t:r` only after the stream call.
    let acks = p.take_where("ack", 3, |f| f["type"] == "subscribed").await;
    let rest = p.collect_all(QUIET).await;
    assert!(rest.is_empty(), "{rest:?}");
    let acked: Vec<(&Value, &Value)> = acks.iter().map(|a| (&a["topic"], &a["ref"])).collect();
    assert_eq!(
        acked,
        [
            (&json!("open:r"), &json!(1)),
            (&json!("t:r"), &json!(2)),
            (&json!("open:r"), &json!(3))
        ],
        "{acks:?}"
    );
    for t in ["t:r", "open:r"] {
        server
            .live()
            .publish(t, "created", &json!({"id": 1}))
            .unwrap();
        p.take(t, 1).await;
        p.quiet(t, QUIET).await; // exactly one copy
    }
    assert_eq!(server.live().hub().subscribers("t:r"), 1);
    assert_eq!(server.live().hub().subscribers("open:r"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn upgrade_rejections_close_with_4401_and_4403() {
    let (server, _) = serve().await;
    let mut p = Peer::connect(&server, "reject=401").await;
    assert_eq!(p.close_code().await, Some(4401));
    let mut p = Peer::connect(&server, "reject=403").await;
    assert_eq!(p.close_code().await, Some(4403));
    // The user reaches ctx.
    let p = Peer::connect(&server, "user=ada&name=Ada").await;
    let me = p.call("test/whoami", json!([])).await.unwrap();
    assert_eq!(me["identity"], "ada");
    assert_eq!(me["user"]["name"], "Ada");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn origin_allow_list() {
    let (server, _) = serve().await;
    let same = format!("http://{}", server.addr());
    let mut evil =
        Peer::connect_with(&server, "", &[("Origin", "https://evil.example")], true).await;
    assert_eq!(evil.close_code().await, Some(1008));
    let ok = Peer::connect_with(&server, "", &[("Origin", &same)], true).await;
    ok.assert_alive().await;
    let none = Peer::guest(&server).await;
    none.assert_alive().await;
    server.shutdown().await.unwrap();

    let listed = ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..config()
    };
    let server = start_with(test_app().0, listed).await;
    let ok = Peer::connect_with(&server, "", &[("Origin", "https://app.example")], true).await;
    ok.assert_alive().await;
    // The list adds to the page's own origin, it does not replace it.
    let same = format!("http://{}", server.addr());
    let p = Peer::connect_with(&server, "", &[("Origin", &same)], true).await;
    p.assert_alive().await;
    let mut p = Peer::connect_with(&server, "", &[("Origin", "http://localhost:5173")], true).await;
    assert_eq!(p.close_code().await, Some(1008), "not in the list");
    // The close frame says why and how to allow it (the JS client shows it).
    let (code, reason) = close_of(&server, "http://localhost:5173").await;
    assert_eq!(code, 1008);
    assert_eq!(
        reason,
        "origin http://localhost:5173 is not allowed: add it to LIVEROOM_ALLOWED_ORIGINS"
    );
    Peer::guest(&server).await.assert_alive().await;
    server.shutdown().await.unwrap();

    let any = ServerConfig {
        allowed_origins: vec!["*".into()],
        ..config()
    };
    let server = start_with(test_app().0, any).await;
    let p = Peer::connect_with(&server, "", &[("Origin", "https://any.example")], true).await;
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn topic_validation() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let long_ok = format!("open:{}", "x".repeat(251));
    assert_eq!(long_ok.len(), 256);
    let cases = [
        (String::new(), Some("INVALID_TOPIC")),
        (format!("{long_ok}x"), Some("INVALID_TOPIC")),
        ("open:é".to_owned(), Some("INVALID_TOPIC")),
        ("open:a\nb".to_owned(), Some("INVALID_TOPIC")),
        ("open:a\u{7f}".to_owned(), Some("INVALID_TOPIC")),
        ("open:a\\b".to_owned(), Some("INVALID_TOPIC")),
        ("open:a\"b".to_owned(), Some("INVALID_TOPIC")),
        ("__anything".to_owned(), Some("RESERVED_TOPIC")),
        ("__rpc".to_owned(), Some("RESERVED_TOPIC")),
        (long_ok.clone(), None),
        ("open: ~!@#$%^&*()[]{}<>?/|'`".to_owned(), None),
    ];
    for (i, (topic, denied)) in cases.iter().enumerate() {
        p.send(&json!({"type":"subscribe","topic":topic,"ref":i}));
        let ack = p
            .find("ack", WAIT, |f| f["ref"] == i && f["type"].is_string())
            .await;
        match denied {
            Some(reason) => {
                assert_eq!(ack["type"], "subscribe-denied", "{topic:?}");
                assert_eq!(ack["reason"], *reason, "{topic:?}");
            }
            None => assert_eq!(ack["type"], "subscribed", "{topic:?}"),
        }
    }
    // A topic function that produces a reserved topic fails the call, without details.
    let reply = p.reply_to(stream_call("test/reserved", json!([]))).await;
    assert_eq!(reply["code"], "INTERNAL_ERROR");
    assert!(!reply.to_string().contains("__sneaky"));
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn healthz_and_manifest() {
    let (server, _) = serve().await;
    let (status, body) = http_get(&server, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, manifest) = http_get(&server, "/__live/manifest.json").await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        manifest["modules"]["test"]["streams"]["items"]["merge"],
        "crud"
    );
    server.shutdown().await.unwrap();
}

/// Opens a raw WebSocket with `origin` and returns the code and reason of the close frame the
/// server sends.
async fn close_of(server: &liveroom::Running, origin: &str) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut req = format!("ws://{}/ws", server.addr())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
