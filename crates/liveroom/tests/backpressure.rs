//! Slow consumers: a socket that stops reading is cut off with 1013 once its outbox is full,
//! while a fast subscriber of the same topic receives every event, in order.
//!
//! This binary holds only these tests: they read the process-wide metrics, one at a time, and
//! assert on what changed while they ran.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The tests of this binary read one process-wide counter: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The events of a frame: a `{"type":"batch"}` frame's, or the frame itself.
fn events_of(frame: Value) -> Vec<Value> {
    if frame["type"] == "batch" {
        frame["events"]
            .as_array()
            .expect("a batch has events")
            .clone()
    } else {
        vec![frame]
    }
}

/// Reads `fast`'s events until `received` reaches `published`: ids `received..published`, in
/// order, none missing.
async fn read_in_order(fast: &mut Peer, received: &mut u64, published: u64) {
    while *received < published {
        let f = fast
            .client
            .next_within(WAIT)
            .await
            .expect("fast gets events");
        for e in events_of(f) {
            assert_eq!(e["data"]["id"], *received, "in order, none missing");
            *received += 1;
        }
    }
}

#[tokio::test]
async fn slow_consumer_is_cut_off_with_1013_and_fast_one_gets_everything() {
    let _serial = SERIAL.lock().await;
    let config = config_with_outbox(64 * 1024);
    let server = start_with(test_app().0, config).await;
    let mut fast = Peer::guest(&server).await;
    fast.send(&json!({"type":"subscribe","topic":"open:flood","ref":1}));
    fast.typed("subscribed").await;

    let mut slow = RawWs::connect(&server, "").await;
    slow.send_text(r#"{"type":"subscribe","topic":"open:flood","ref":1}"#)
        .await;
    assert!(matches!(
        slow.read_frame(WAIT).await,
        Some(RawFrame::Text(t)) if t.contains("subscribed")
    ));
    // From here on `slow` reads nothing until the end of the test.

    let cuts_before = metric("liveroom_slow_consumer_disconnects_total");
    let drops_before = metric("liveroom_frames_dropped_total");
    let pad = "x".repeat(8 * 1024);
    let (mut published, mut received) = (0u64, 0u64);
    let mut cut = false;
    // Kernel socket buffers absorb a few MiB first; the cut comes after that.
    for round in 0..4_000u64 {
        for _ in 0..4 {
            server
                .live()
                .publish(
                    "open:flood",
                    "created",
                    &json!({"id": published, "pad": pad}),
                )
                .unwrap();
            published += 1;
        }
        // The fast client keeps up (and the test paces itself on it).
        read_in_order(&mut fast, &mut received, published).await;
        if round % 8 == 0 && metric("liveroom_slow_consumer_disconnects_total") > cuts_before {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the slow consumer was never cut off ({published} events)"
    );
    // A few more events after the cut still reach the fast client.
    for _ in 0..10 {
        server
            .live()
            .publish("open:flood", "created", &json!({"id": published}))
            .unwrap();
        published += 1;
    }
    read_in_order(&mut fast, &mut received, published).await;
    fast.assert_alive().await;

    // The slow client, reading again, finds the close frame after what was already on the wire.
    let (code, texts) = slow.until_close(Duration::from_secs(20)).await;
    assert_eq!(code, Some(1013), "after {texts} frames");
    assert!(
        (texts as u64) < published,
        "it missed events: it was cut off"
    );
    // And the server dropped it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.live().hub().subscribers("open:flood") != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow socket still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metric("liveroom_frames_dropped_total") > drops_before);
    server.shutdown().await.unwrap();
}

/// A peer that never reads again must not keep its connection (and its subscriptions or room
/// memberships) forever once it was cut off.
#[tokio::test]
async fn a_cut_off_peer_that_never_reads_is_dropped() {
    let _serial = SERIAL.lock().await;
    let config = config_with_outbox(64 * 1024);
    let server = start_with(test_app().0, config).await;
    let mut slow = RawWs::connect(&server, "").await;
    slow.send_text(r#"{"type":"subscribe","topic":"open:stall","ref":1}"#)
        .await;
    assert!(matches!(
        slow.read_frame(WAIT).await,
        Some(RawFrame::Text(_))
    ));
    let cuts_before = metric("liveroom_slow_consumer_disconnects_total");
    let pad = "y".repeat(16 * 1024);
    let mut n = 0;
    while metric("liveroom_slow_consumer_disconnects_total") == cuts_before {
        assert!(n < 100_000, "never cut off");
        // Small bursts, so that the writer fills the kernel buffers and blocks first.
        for _ in 0..2 {
            server
                .live()
                .publish("open:stall", "created", &json!({"id": n, "pad": pad}))
                .unwrap();
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.live().hub().subscribers("open:stall") != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a cut-off peer that never reads is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(slow);
    server.shutdown().await.unwrap();
}
