//! Every limit of docs/security.md, one at a time, against a real server: what the client that
//! crosses it sees, and that the others do not notice.

mod common;

use common::*;
use liveroom::{App, Ctx, Limits, LiveError, RateLimit, Room, RoomCtx, ServerConfig};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn with_limits(limits: Limits) -> ServerConfig {
    ServerConfig { limits, ..config() }
}

async fn serve_config(config: ServerConfig) -> liveroom::Running {
    start_with(test_app().0, config).await
}

/// Reads until EOF or reset; how long that took, or `None` if it did not happen in `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The status code of the HTTP response head in `text`.
fn status_of(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_at_the_header_timeout() {
    let server = serve_config(ServerConfig {
        header_timeout_ms: 400,
        ..config()
    })
    .await;
    // One byte every 100 ms: never a whole head.
    let mut slow = tcp_from(&server, LOCALHOST).await;
    let dribble = async {
        for b in b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), dribble).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "cut off after {took:?}"
    );
    // A connection that sends nothing at all is cut off too.
    let mut silent = tcp_from(&server, LOCALHOST).await;
    let took = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(350)),
        "{took:?}"
    );
    // The server still answers.
    assert_eq!(http_get(&server, "/healthz").await.0, 200);
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let server = serve_config(config()).await;
    let mut s = tcp_from(&server, LOCALHOST).await;
    let big = "a".repeat(20 * 1024);
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Big: {big}\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 431);
    // A head under the limit is upgraded.
    let ok = RawWs::try_connect(tcp_from(&server, LOCALHOST).await, &server, "").await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_total() {
    let server = serve_config(ServerConfig {
        max_connections_per_ip: 3,
        max_connections: 5,
        ..config()
    })
    .await;
    let attacker = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawWs::connect_from(&server, "", attacker).await);
    }
    // The fourth from that address is refused before HTTP, with 429.
    let refused = RawWs::try_connect(tcp_from(&server, attacker).await, &server, "").await;
    assert_eq!(status_of(&refused.err().expect("refused")), 429);
    // Another address still gets in, up to the total of 5.
    let victim = Peer::user(&server, "victim").await;
    victim.assert_alive().await;
    let _other = RawWs::connect_from(&server, "", [127, 0, 0, 3]).await;
    let refused = RawWs::try_connect(tcp_from(&server, [127, 0, 0, 4]).await, &server, "").await;
    assert_eq!(status_of(&refused.err().expect("refused")), 503);
    // Closing frees the slots.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        match RawWs::try_connect(tcp_from(&server, attacker).await, &server, "").await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(head) => panic!("slots not freed: {head}"),
        }
    }
    victim.assert_alive().await;
}

#[tokio::test]
async fn an_upgrade_flood_from_one_address_is_closed_with_4429() {
    let server = serve_config(ServerConfig {
        upgrade_rate: 1,
        upgrade_burst: 3,
        ..config()
    })
    .await;
    let attacker = [127, 0, 0, 2];
    for _ in 0..3 {
        let mut ws = RawWs::connect_from(&server, "", attacker).await;
        ws.send_text(r#"{"rpc":"test/add","id":"a","args":[1,1]}"#)
            .await;
        assert!(matches!(ws.read_frame(WAIT).await, Some(RawFrame::Text(_))));
    }
    let mut flooded = RawWs::connect_from(&server, "", attacker).await;
    assert_eq!(flooded.until_close(WAIT).await.0, Some(4429));
    // Other addresses have their own budget.
    Peer::user(&server, "victim").await.assert_alive().await;
}

#[tokio::test]
async fn a_hanging_upgrade_hook_gets_504() {
    let app = App::new()
        .authenticate(|req: liveroom::UpgradeRequest| async move {
            if req.query("hang").is_some() {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(None)
        })
        .rpc(
            "t/ok",
            |_: Ctx, (): ()| async move { Ok::<_, LiveError>(1) },
        );
    let server = start_with(
        app,
        ServerConfig {
            upgrade_timeout_ms: 300,
            ..config()
        },
    )
    .await;
    let started = Instant::now();
    let refused = RawWs::try_connect(tcp_from(&server, LOCALHOST).await, &server, "hang=1").await;
    assert_eq!(status_of(&refused.err().expect("refused")), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    let p = Peer::guest(&server).await;
    assert_eq!(p.call("t/ok", json!([])).await.unwrap(), json!(1));
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_are_overloaded() {
    let server = serve_config(with_limits(Limits {
        max_in_flight: 2,
        ..Limits::default()
    }))
    .await;
    let p = Peer::user(&server, "u").await;
    let slow = [p.id(), p.id()];
    let rxs: Vec<_> = slow.iter().map(|id| p.expect_reply(id)).collect();
    for id in &slow {
        p.send(&json!({"rpc": "test/slow", "id": id, "args": [400]}));
    }
    let third = p.reply_to(json!({"rpc": "test/add", "args": [1, 2]})).await;
    assert_eq!(third["code"], "OVERLOADED", "{third}");
    for rx in rxs {
        assert_eq!(p.reply(rx).await.unwrap()["ok"], true);
    }
    // Once they are done, calls run again; another connection never noticed.
    p.assert_alive().await;
}

#[tokio::test]
async fn calls_beyond_the_rate_are_rate_limited_per_identity_with_a_retry_hint() {
    let server = serve_config(with_limits(Limits {
        call_rate: 5,
        call_burst: 3,
        ..Limits::default()
    }))
    .await;
    let eve = Peer::user(&server, "eve").await;
    let eve_tab = Peer::user(&server, "eve").await;
    for _ in 0..3 {
        eve.assert_alive().await;
    }
    // Both tabs of one identity share the bucket.
    let r = eve_tab
        .reply_to(json!({"rpc": "test/add", "args": [1, 2]}))
        .await;
    assert_eq!(r["code"], "RATE_LIMITED", "{r}");
    let wait = r["retryAfter"].as_u64().expect("retryAfter in ms");
    assert!((1..=200).contains(&wait), "{r}");
    // Another identity has its own.
    Peer::user(&server, "victim").await.assert_alive().await;
    // After the hint, the call goes through.
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    eve.assert_alive().await;
}

/// A room whose actions share 2 per identity, except `note` which has its own 1, and an RPC
/// with its own limit.
fn limited_app() -> App {
    let room = Room::new(|_: &Ctx, (id,): &(String,)| format!("r:{id}"))
        .init(|_, (_id,): (String,)| async move { Ok::<_, LiveError>(Vec::<Value>::new()) })
        .action("a", |_: RoomCtx, (_id,): (String,), (): ()| async move {
            Ok::<_, LiveError>("a")
        })
        .action("b", |_: RoomCtx, (_id,): (String,), (): ()| async move {
            Ok::<_, LiveError>("b")
        })
        .action("note", |_: RoomCtx, (_id,): (String,), (): ()| async move {
            Ok::<_, LiveError>("note")
        })
        .rate_limit(RateLimit::per_second(1).burst(2))
        .action_rate_limit("note", RateLimit::per_second(1).burst(1));
    with_auth(
        App::new()
            .room("m", "room", room)
            .rpc(
                "m/mail",
                |_: Ctx, (): ()| async move { Ok::<_, LiveError>(1) },
            )
            .rate_limit("m/mail", RateLimit::per_second(1).burst(1))
            .rpc(
                "m/free",
                |_: Ctx, (): ()| async move { Ok::<_, LiveError>(2) },
            ),
    )
}

#[tokio::test]
async fn rooms_actions_and_rpcs_can_override_the_rate() {
    let server = start(limited_app()).await;
    let p = Peer::user(&server, "u").await;
    let code = |r: Result<Value, liveroom_client::Error>| match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().unwrap_or("?").to_owned(),
    };
    // `a` and `b` share the room's bucket of 2.
    assert_eq!(code(p.call("m/room/__action/a", json!(["1"])).await), "ok");
    assert_eq!(code(p.call("m/room/__action/b", json!(["1"])).await), "ok");
    assert_eq!(
        code(p.call("m/room/__action/a", json!(["1"])).await),
        "RATE_LIMITED"
    );
    // `note` has a bucket of its own.
    assert_eq!(
        code(p.call("m/room/__action/note", json!(["1"])).await),
        "ok"
    );
    assert_eq!(
        code(p.call("m/room/__action/note", json!(["1"])).await),
        "RATE_LIMITED"
    );
    // So has `m/mail`; `m/free` uses the default, untouched by all of the above.
    assert_eq!(code(p.call("m/mail", json!([])).await), "ok");
    assert_eq!(code(p.call("m/mail", json!([])).await), "RATE_LIMITED");
    for _ in 0..10 {
        assert_eq!(code(p.call("m/free", json!([])).await), "ok");
    }
}

#[tokio::test]
async fn cursor_moves_beyond_the_rate_are_dropped() {
    let server = serve_config(with_limits(Limits {
        cursor_rate: 1,
        cursor_burst: 2,
        ..Limits::default()
    }))
    .await;
    let p = Peer::user(&server, "alice").await;
    enter_board(&p, "c").await;
    let mv = |x: u32| json!({"rpc": "collab/board/__cursor", "args": ["c", {"x": x}]});
    assert_eq!(p.reply_to(mv(1)).await["ok"], true);
    assert_eq!(p.reply_to(mv(2)).await["ok"], true);
    let r = p.reply_to(mv(3)).await;
    assert_eq!(r["code"], "RATE_LIMITED", "{r}");
    // Calls are a separate bucket.
    p.assert_alive().await;
}

#[tokio::test]
async fn subscriptions_and_rooms_per_connection_are_capped() {
    let server = serve_config(with_limits(Limits {
        max_subscriptions: 4,
        max_rooms: 1,
        ..Limits::default()
    }))
    .await;
    let mut p = Peer::user(&server, "u").await;
    // One room (3 topics) fits; a second room does not.
    enter_board(&p, "one").await;
    let second = try_enter(&p, "collab/board", json!(["two"])).await;
    for r in &second {
        assert_eq!(r["code"], "RATE_LIMITED", "{r}");
    }
    // Wire subscribes: one more topic fits, then they are denied.
    p.send(&json!({"type": "subscribe", "topic": "open:1", "ref": 1}));
    p.send(&json!({"type": "subscribe", "topic": "open:2", "ref": 2}));
    let acks = p
        .take_where("acks", 2, |f: &Value| {
            f["type"] == "subscribed" || f["type"] == "subscribe-denied"
        })
        .await;
    assert_eq!(acks[0]["type"], "subscribed", "{acks:?}");
    assert_eq!(acks[1]["type"], "subscribe-denied", "{acks:?}");
    assert_eq!(acks[1]["reason"], "RATE_LIMITED", "{acks:?}");
    // Unsubscribing makes room again.
    p.send(&json!({"type": "unsubscribe", "topic": "open:1"}));
    p.send(&json!({"type": "subscribe", "topic": "open:2", "ref": 3}));
    let ack = p
        .take_where("ack", 1, |f: &Value| {
            f["type"] == "subscribed" || f["type"] == "subscribe-denied"
        })
        .await;
    assert_eq!(ack[0]["type"], "subscribed", "{ack:?}");
    p.assert_alive().await;
}

#[tokio::test]
async fn oversized_presence_data_refuses_the_join_and_is_never_broadcast() {
    let (server, _state) = serve().await;
    let mut watcher = observe_board(&server, "p").await;
    let big = "n".repeat(2000);
    let p = Peer::connect(&server, &format!("user=big&name={big}")).await;
    let replies = try_enter(&p, "collab/board", json!(["p"])).await;
    assert_eq!(replies[0]["code"], "INVALID_REQUEST", "{}", replies[0]);
    assert!(replies[0]["error"]
        .as_str()
        .unwrap()
        .contains("presence data"));
    watcher.quiet("board:p:presence", QUIET).await;
    // A normal member joins and is seen.
    let ok = Peer::user(&server, "small").await;
    enter_board(&ok, "p").await;
    let join = watcher.event("board:p:presence", "join").await;
    assert_eq!(join["key"], "small");
}

#[tokio::test]
async fn unknown_paths_can_answer_like_a_guard_denial() {
    let server = serve_config(with_limits(Limits {
        mask_unknown_paths: true,
        ..Limits::default()
    }))
    .await;
    let guest = Peer::guest(&server).await;
    let user = Peer::user(&server, "u").await;
    for (p, code) in [(&guest, "UNAUTHENTICATED"), (&user, "FORBIDDEN")] {
        let unknown = p.reply_to(json!({"rpc": "no/such", "args": []})).await;
        let wrong_kind = p
            .reply_to(json!({"rpc": "test/add", "args": [1, 2], "stream": true}))
            .await;
        for r in [&unknown, &wrong_kind] {
            assert_eq!(r["code"], code, "{r}");
        }
        assert_eq!(unknown["error"], wrong_kind["error"]);
    }
    // Without the option, NOT_FOUND.
    let server = serve_config(config()).await;
    let p = Peer::guest(&server).await;
    let r = p.reply_to(json!({"rpc": "no/such", "args": []})).await;
    assert_eq!(r["code"], "NOT_FOUND");
}
