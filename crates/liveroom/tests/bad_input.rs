//! Bad input: every malformed frame gets an error answer (an RPC reply when the frame carried a
//! usable id, else an `{"type":"error"}` frame), and the connection stays usable. Framing
//! violations close the socket with the right code. Other connections never notice.

mod common;

use common::*;
use serde_json::{json, Value};

/// Sends `text` and expects an `{"type":"error","code":"INVALID_REQUEST"}` frame whose message
/// contains `needle`, then checks the connection still answers.
async fn expect_error_frame(p: &mut Peer, text: &str, needle: &str) {
    p.send_text(text);
    let e = p.typed("error").await;
    assert_eq!(e["code"], "INVALID_REQUEST", "for {text}: {e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "for {text}: `{msg}` lacks `{needle}`");
    p.assert_alive().await;
}

/// Sends `text` (carrying id `id`) and expects an RPC error reply with `code` whose message
/// contains `needle`.
async fn expect_reply_error(p: &mut Peer, id: &str, text: &str, code: &str, needle: &str) {
    let reply = p.reply_to_text(id, text).await;
    assert_eq!(reply["ok"], false, "for {text}: {reply}");
    assert_eq!(reply["code"], code, "for {text}: {reply}");
    let msg = reply["error"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "for {text}: `{msg}` lacks `{needle}`");
    p.assert_alive().await;
}

#[tokio::test]
async fn malformed_frames_get_error_frames() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let other = Peer::guest(&server).await;
    expect_error_frame(&mut p, "not json", "invalid JSON").await;
    expect_error_frame(&mut p, r#"{"rpc":"test/add","#, "invalid JSON").await;
    expect_error_frame(&mut p, "", "invalid JSON").await;
    expect_error_frame(&mut p, "[1,2]", "object").await;
    expect_error_frame(&mut p, "null", "object").await;
    expect_error_frame(&mut p, r#""rpc""#, "object").await;
    expect_error_frame(&mut p, r#"{"hello":1}"#, "unknown frame").await;
    expect_error_frame(&mut p, r#"{"type":5}"#, "type").await;
    expect_error_frame(&mut p, r#"{"type":"hello","caps":"batch"}"#, "caps").await;
    expect_error_frame(&mut p, r#"{"type":"subscribe"}"#, "topic").await;
    expect_error_frame(&mut p, r#"{"type":"subscribe","topic":5}"#, "topic").await;
    expect_error_frame(&mut p, r#"{"type":"unsubscribe","topic":[]}"#, "topic").await;
    expect_error_frame(
        &mut p,
        r#"{"type":"subscribe-batch","topics":"a"}"#,
        "topics",
    )
    .await;
    expect_error_frame(
        &mut p,
        r#"{"type":"subscribe-batch","topics":[1]}"#,
        "topics",
    )
    .await;
    let many: Vec<String> = (0..257).map(|i| format!("open:{i}")).collect();
    expect_error_frame(
        &mut p,
        &json!({"type":"subscribe-batch","topics":many}).to_string(),
        "max 256",
    )
    .await;
    // An id that is an object cannot be echoed: the error comes as an error frame.
    expect_error_frame(
        &mut p,
        r#"{"rpc":"test/add","id":{"x":1},"args":[1,2]}"#,
        "id",
    )
    .await;
    expect_error_frame(&mut p, r#"{"rpc":"test/add","id":[1],"args":[1,2]}"#, "id").await;
    // Fire-and-forget frames that are malformed are answered the same way.
    expect_error_frame(&mut p, r#"{"rpc":"bad","args":[]}"#, "invalid rpc path").await;
    expect_error_frame(&mut p, r#"{"batch":{}}"#, "batch").await;
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_calls_with_an_id_get_error_replies() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let other = Peer::guest(&server).await;
    let cases: &[(&str, &str, &str, &str)] = &[
        // args not an array
        (
            "a1",
            r#"{"rpc":"test/add","id":"a1","args":{"a":1}}"#,
            "INVALID_REQUEST",
            "args",
        ),
        (
            "a2",
            r#"{"rpc":"test/add","id":"a2","args":"1,2"}"#,
            "INVALID_REQUEST",
            "args",
        ),
        // rpc not a string
        (
            "a3",
            r#"{"rpc":5,"id":"a3","args":[]}"#,
            "INVALID_REQUEST",
            "rpc",
        ),
        ("a4", r#"{"rpc":null,"id":"a4"}"#, "INVALID_REQUEST", "rpc"),
        // stream not a boolean
        (
            "a5",
            r#"{"rpc":"test/items","id":"a5","stream":"yes"}"#,
            "INVALID_REQUEST",
            "stream",
        ),
        // invalid paths
        (
            "p1",
            r#"{"rpc":"single","id":"p1"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p2",
            r#"{"rpc":"a//b","id":"p2"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p3",
            r#"{"rpc":"/a/b","id":"p3"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p4",
            r#"{"rpc":"a/b/","id":"p4"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p5",
            r#"{"rpc":"a/b c","id":"p5"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p6",
            r#"{"rpc":"a/b.c","id":"p6"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "p7",
            r#"{"rpc":"a/é","id":"p7"}"#,
            "INVALID_REQUEST",
            "path",
        ),
        ("p8", r#"{"rpc":"","id":"p8"}"#, "INVALID_REQUEST", "path"),
        // unknown paths
        (
            "n1",
            r#"{"rpc":"nope/nothing","id":"n1"}"#,
            "NOT_FOUND",
            "nope/nothing",
        ),
        (
            "n2",
            r#"{"rpc":"test/add/extra","id":"n2"}"#,
            "NOT_FOUND",
            "",
        ),
        ("n3", r#"{"rpc":"TEST/ADD","id":"n3"}"#, "NOT_FOUND", ""),
        // wrong arg types and arity: VALIDATION naming the argument
        (
            "t1",
            r#"{"rpc":"test/add","id":"t1","args":[1]}"#,
            "VALIDATION",
            "argument `b`",
        ),
        (
            "t2",
            r#"{"rpc":"test/add","id":"t2","args":[1,"2"]}"#,
            "VALIDATION",
            "argument `b`",
        ),
        (
            "t3",
            r#"{"rpc":"test/add","id":"t3","args":[1,2,3]}"#,
            "VALIDATION",
            "argument 2",
        ),
        // stream flag mismatch
        (
            "s1",
            r#"{"rpc":"test/items","id":"s1","args":[]}"#,
            "INVALID_REQUEST",
            "stream",
        ),
        (
            "s2",
            r#"{"rpc":"test/add","id":"s2","args":[1,2],"stream":true}"#,
            "INVALID_REQUEST",
            "not a stream",
        ),
    ];
    for (id, text, code, needle) in cases {
        expect_reply_error(&mut p, id, text, code, needle).await;
    }
    let long = format!("a/{}", "b".repeat(300));
    expect_reply_error(
        &mut p,
        "long",
        &json!({"rpc": long, "id": "long"}).to_string(),
        "INVALID_REQUEST",
        "path",
    )
    .await;
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn nesting_limit() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    // 64 levels in total are fine: the frame object plus 63 arrays (`args` and 62 inside).
    let ok = format!(
        r#"{{"rpc":"test/echo","id":"deep","args":{}{}}}"#,
        "[".repeat(63),
        "]".repeat(63)
    );
    let reply = p.reply_to_text("deep", &ok).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let too_deep = format!(
        r#"{{"rpc":"test/echo","id":"deeper","args":{}{}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    expect_error_frame(&mut p, &too_deep, "deeper than 64").await;
    // Unbalanced and huge nesting never recurses: answered, connection fine.
    expect_error_frame(&mut p, &"[".repeat(100_000), "deeper than 64").await;
    expect_error_frame(&mut p, &"{\"a\":".repeat(10_000), "deeper than 64").await;
    // Brackets inside strings do not count.
    let in_string = format!(
        r#"{{"rpc":"test/echo","id":"s","args":["{}"]}}"#,
        "[{".repeat(200)
    );
    assert_eq!(p.reply_to_text("s", &in_string).await["ok"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_size_limit_and_bad_entries() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let call = |i: usize| json!({"rpc":"test/add","id":format!("b{i}"),"args":[i, 1]});
    let replies = p.batch((0..64).map(call).collect()).await.unwrap();
    assert_eq!(replies.len(), 64);
    assert!(replies.iter().all(|r| r["ok"] == true));
    let too_many: Vec<Value> = (0..65).map(call).collect();
    expect_error_frame(&mut p, &json!({ "batch": too_many }).to_string(), "max 64").await;
    // A bad entry fails alone; entries that are not objects have no id to answer.
    let replies = p
        .batch(vec![
            json!(1),
            json!({"rpc":"test/add","id":"good","args":[1,2]}),
            json!({"rpc":"test/add","id":"bad","args":"x"}),
            json!({"rpc":"a","id":"path"}),
        ])
        .await
        .unwrap();
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert_eq!(replies[0], json!({"id":"good","ok":true,"data":3}));
    assert_eq!(replies[1]["code"], "INVALID_REQUEST");
    assert_eq!(replies[2]["code"], "INVALID_REQUEST");
    // An empty batch still gets its (empty) reply.
    assert_eq!(p.batch(vec![]).await.unwrap(), Vec::<Value>::new());
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_frames_are_answered_and_ignored() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    p.send_binary(br#"{"rpc":"test/add","id":"x","args":[1,2]}"#.to_vec());
    let e = p.typed("error").await;
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");
    p.assert_alive().await;
    p.send_binary(vec![0xff; 10_000]);
    p.typed("error").await;
    p.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let (server, _) = serve().await;
    let mut p = Peer::guest(&server).await;
    let other = Peer::guest(&server).await;
    // Just under the limit is fine.
    let big = "x".repeat((1 << 20) - 100);
    let reply = p.reply_to(json!({"rpc":"test/echo","args":[big]})).await;
    assert_eq!(reply["ok"], true);
    let huge = "x".repeat((1 << 20) + 1);
    p.send_text(&json!({"rpc":"test/echo","id":"huge","args":[huge]}).to_string());
    assert_eq!(p.close_code().await, Some(1009));
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn framing_violations_close_with_their_codes() {
    let (server, _) = serve().await;
    let other = Peer::guest(&server).await;
    // Invalid UTF-8 in a text frame: 1007.
    let mut ws = RawWs::connect(&server, "").await;
    ws.send_frame(0x81, &[0xff, 0xfe, 0xfd]).await;
    assert_eq!(ws.until_close(WAIT).await.0, Some(1007));
    // An unmasked frame: 1002.
    let mut ws = RawWs::connect(&server, "").await;
    ws.stream
        .write_all(&[0x81, 0x02, b'{', b'}'])
        .await
        .unwrap();
    assert_eq!(ws.until_close(WAIT).await.0, Some(1002));
    // A continuation with nothing to continue: 1002.
    let mut ws = RawWs::connect(&server, "").await;
    ws.send_frame(0x80, b"x").await;
    assert_eq!(ws.until_close(WAIT).await.0, Some(1002));
    // An oversized fragmented message: 1009 once the fragments add up.
    let mut ws = RawWs::connect(&server, "").await;
    let chunk = vec![b' '; 512 * 1024];
    ws.send_frame(0x01, &chunk).await;
    ws.send_frame(0x00, &chunk).await;
    ws.send_frame(0x80, &chunk).await;
    assert_eq!(ws.until_close(WAIT).await.0, Some(1009));
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fragments_and_pings_over_a_raw_socket() {
    let (server, _) = serve().await;
    let mut ws = RawWs::connect(&server, "").await;
    let text = r#"{"rpc":"test/add","id":"f","args":[20,22]}"#;
    let (a, b) = text.split_at(10);
    ws.send_frame(0x01, a.as_bytes()).await; // first fragment
    ws.send_frame(0x89, b"hi").await; // a ping in between
    ws.send_frame(0x80, b.as_bytes()).await; // last fragment
    assert_eq!(ws.read_frame(WAIT).await, Some(RawFrame::Other(0x0a)));
    let Some(RawFrame::Text(reply)) = ws.read_frame(WAIT).await else {
        panic!("expected the reply");
    };
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["data"]["data"], 42);
    // A client close is answered with a close.
    ws.send_frame(0x88, &1000u16.to_be_bytes()).await;
    assert_eq!(ws.until_close(WAIT).await.0, Some(1000));
    server.shutdown().await.unwrap();
}

use tokio::io::AsyncWriteExt;
