//! RFC 6455 conformance over raw sockets: the opening handshake (section 4.2), framing
//! (section 5), the close handshake and its codes (sections 5.5.1 and 7.4), and the limits
//! (section 10.4). Each rule sends what a broken or hostile client would and checks the exact
//! answer; a well-behaved client on the same server keeps working throughout.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one upgrade request with `lines` as its headers (after `Host`) and returns the response
/// head.
async fn handshake(server: &liveroom::Running, method: &str, lines: &[&str]) -> String {
    let mut s = TcpStream::connect(server.addr()).await.expect("connects");
    let mut req = format!("{method} /ws HTTP/1.1\r\nHost: {}\r\n", server.addr());
    for l in lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("writes");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const VERSION: &str = "Sec-WebSocket-Version: 13";

#[tokio::test]
async fn the_opening_handshake_is_checked_to_the_letter() {
    let (server, _) = serve().await;
    // The RFC's own example is accepted with its accept key.
    let ok = handshake(&server, "GET", &[UPGRADE, CONNECTION, KEY, VERSION]).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{ok}");
    // A key that is not the base64 of 16 bytes: 400.
    for key in [
        "",
        "hello",
        "dGhlIHNhbXBsZSBub25jZSE=",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let key = format!("Sec-WebSocket-Key: {key}");
        let r = handshake(&server, "GET", &[UPGRADE, CONNECTION, &key, VERSION]).await;
        assert!(r.starts_with("HTTP/1.1 400"), "key {key:?}: {r}");
    }
    let r = handshake(&server, "GET", &[UPGRADE, CONNECTION, VERSION]).await;
    assert!(r.starts_with("HTTP/1.1 400"), "no key: {r}");
    // Another version: 426 naming the one we speak (section 4.4).
    for version in ["Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 14"] {
        let r = handshake(&server, "GET", &[UPGRADE, CONNECTION, KEY, version]).await;
        assert!(r.starts_with("HTTP/1.1 426"), "{version}: {r}");
        assert!(
            r.to_ascii_lowercase().contains("sec-websocket-version: 13"),
            "{r}"
        );
    }
    let r = handshake(&server, "GET", &[UPGRADE, CONNECTION, KEY]).await;
    assert!(r.starts_with("HTTP/1.1 426"), "no version: {r}");
    // Not an upgrade at all: 400 (a POST is not routed to the handler: 405).
    let r = handshake(&server, "GET", &[CONNECTION, KEY, VERSION]).await;
    assert!(r.starts_with("HTTP/1.1 400"), "no Upgrade: {r}");
    let r = handshake(&server, "GET", &[UPGRADE, KEY, VERSION]).await;
    assert!(r.starts_with("HTTP/1.1 400"), "no Connection: upgrade: {r}");
    let r = handshake(&server, "POST", &[UPGRADE, CONNECTION, KEY, VERSION]).await;
    assert!(r.starts_with("HTTP/1.1 405"), "POST: {r}");
    Peer::guest(&server).await.assert_alive().await;
    server.shutdown().await.unwrap();
}

/// Frames to send: (first byte, payload).
type Frames<'a> = &'a [(u8, &'a [u8])];

/// Opens a raw socket, sends `frames` and returns the close code the server answers with.
async fn close_code_after(server: &liveroom::Running, frames: Frames<'_>) -> Option<u16> {
    let mut ws = RawWs::connect(server, "").await;
    for (b0, payload) in frames {
        ws.send_frame(*b0, payload).await;
    }
    ws.until_close(WAIT).await.0
}

#[tokio::test]
async fn framing_rules_of_section_5() {
    let (server, _) = serve().await;
    let other = Peer::guest(&server).await;
    let cases: &[(&str, Frames, u16)] = &[
        ("RSV1 without an extension", &[(0xc1, b"{}")], 1002),
        ("RSV2", &[(0xa1, b"{}")], 1002),
        ("RSV3", &[(0x91, b"{}")], 1002),
        ("reserved data opcode 3", &[(0x83, b"")], 1002),
        ("reserved data opcode 7", &[(0x87, b"")], 1002),
        ("reserved control opcode 11", &[(0x8b, b"")], 1002),
        ("reserved control opcode 15", &[(0x8f, b"")], 1002),
        (
            "a continuation with nothing to continue",
            &[(0x80, b"x")],
            1002,
        ),
        (
            "a new text frame inside a fragmented message",
            &[(0x01, b"{"), (0x81, b"{}")],
            1002,
        ),
        ("a fragmented ping", &[(0x09, b"p")], 1002),
        ("a ping over 125 bytes", &[(0x89, &[b'p'; 126])], 1002),
        ("a close over 125 bytes", &[(0x88, &[0x03; 126])], 1002),
        (
            "invalid UTF-8 in a text frame",
            &[(0x81, &[0xce, 0xba, 0xff])],
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            &[(0x01, &[0xce]), (0x80, &[0xff])],
            1007,
        ),
    ];
    for (what, frames, code) in cases {
        assert_eq!(
            close_code_after(&server, frames).await,
            Some(*code),
            "{what}"
        );
    }
    // A valid UTF-8 character split across fragments is fine.
    let mut ws = RawWs::connect(&server, "").await;
    let text = r#"{"rpc":"test/echo","id":"κ","args":["κόσμε"]}"#.as_bytes();
    let split = text.iter().position(|&b| b == 0xce).unwrap() + 1;
    ws.send_frame(0x01, &text[..split]).await;
    ws.send_frame(0x80, &text[split..]).await;
    let Some(RawFrame::Text(reply)) = ws.read_frame(WAIT).await else {
        panic!("expected the reply");
    };
    assert!(reply.contains("κόσμε"), "{reply}");
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_close_handshake_of_sections_5_5_1_and_7_4() {
    let (server, _) = serve().await;
    // Valid codes are echoed; an empty close is answered with 1000.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999,
    ] {
        let got = close_code_after(&server, &[(0x88, &code.to_be_bytes())]).await;
        assert_eq!(got, Some(code), "close {code}");
    }
    assert_eq!(close_code_after(&server, &[(0x88, b"")]).await, Some(1000));
    let with_reason = [&1000u16.to_be_bytes()[..], "au revoir, κόσμε".as_bytes()].concat();
    assert_eq!(
        close_code_after(&server, &[(0x88, &with_reason)]).await,
        Some(1000)
    );
    // Codes that must never be sent, or are unassigned: 1002.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let got = close_code_after(&server, &[(0x88, &code.to_be_bytes())]).await;
        assert_eq!(got, Some(1002), "close {code}");
    }
    // A one-byte payload cannot hold a code: 1002. A reason that is not UTF-8: 1007.
    assert_eq!(
        close_code_after(&server, &[(0x88, &[0x03])]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_after(&server, &[(0x88, &[0x03, 0xe8, 0xff, 0xfe])]).await,
        Some(1007)
    );
    // Nothing after a close is read: a text frame sent after it gets no reply.
    let mut ws = RawWs::connect(&server, "").await;
    ws.send_frame(0x88, &1000u16.to_be_bytes()).await;
    ws.send_text(r#"{"rpc":"test/add","id":"late","args":[1,1]}"#)
        .await;
    assert_eq!(ws.until_close(WAIT).await, (Some(1000), 0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pings_pongs_and_limits() {
    let (server, _) = serve().await;
    let other = Peer::guest(&server).await;
    // A ping is answered with a pong carrying its payload; an unsolicited pong is ignored.
    let mut ws = RawWs::connect(&server, "").await;
    ws.send_frame(0x8a, b"unsolicited").await;
    ws.send_frame(0x89, b"hello").await;
    assert_eq!(ws.read_frame(WAIT).await, Some(RawFrame::Other(0x0a)));
    // A ping flood from a peer that never reads holds one pong, not one per ping.
    let mut flood = RawWs::connect(&server, "").await;
    let pings: Vec<u8> = (0..20_000)
        .flat_map(|_| {
            [
                0x89u8,
                0x80 | 4,
                1,
                2,
                3,
                4,
                b'p' ^ 1,
                b'i' ^ 2,
                b'n' ^ 3,
                b'g' ^ 4,
            ]
        })
        .collect();
    flood.stream.write_all(&pings).await.unwrap();
    other.assert_alive().await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the server read them all
    let mut pongs = 0;
    while let Some(RawFrame::Other(0x0a)) = flood.read_frame(Duration::from_millis(300)).await {
        pongs += 1;
    }
    assert!(
        pongs < 20_000,
        "{pongs} pongs: every ping got its own queued pong"
    );
    // A message fragmented into more than 1024 frames: 1008.
    let mut ws = RawWs::connect(&server, "").await;
    let mut frames = vec![0x01u8, 0x81, 0, 0, 0, 0, b' '];
    for _ in 0..1024 {
        frames.extend_from_slice(&[0x00, 0x81, 0, 0, 0, 0, b' ']);
    }
    frames.extend_from_slice(&[0x80, 0x81, 0, 0, 0, 0, b' ']);
    ws.stream.write_all(&frames).await.unwrap();
    assert_eq!(ws.until_close(WAIT).await.0, Some(1008));
    other.assert_alive().await;
    server.shutdown().await.unwrap();
}

/// The server pings a silent peer and closes it (1001) when it stays silent: half-open
/// connections do not stay forever. A client that answers pings, even one that sends nothing
/// else, stays connected.
#[tokio::test]
async fn silent_peers_are_pinged_then_closed() {
    let mut config = config();
    config.limits.ping_interval_ms = 200;
    config.limits.ping_timeout_ms = 300;
    let server = start_with(test_app().0, config).await;
    let mut answering = Peer::guest(&server).await; // its client answers pings by itself
    let mut silent = RawWs::connect(&server, "").await;
    let started = std::time::Instant::now();
    assert_eq!(
        silent.read_frame(WAIT).await,
        Some(RawFrame::Other(0x09)),
        "a ping"
    );
    let (code, _) = silent.until_close(WAIT).await;
    assert_eq!(code, Some(1001));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "closed before the timeout: {took:?}"
    );
    // Twice the whole timeout later, the peer that answers pings is still there.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    answering.assert_alive().await;
    assert!(answering.collect_all(Duration::ZERO).await.is_empty());
    server.shutdown().await.unwrap();
}
