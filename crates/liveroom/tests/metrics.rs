//! `/metrics`: every documented series counts what this test made happen.
//!
//! The recorder is process-wide, so this binary holds only this test, which compares each
//! series before and after its own actions: samples of other tests cannot make it pass.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn every_series_counts_what_happened() {
    let config = config_with_outbox(4 * 1024);
    let server = start_with(test_app().0, config).await;
    // A series' samples before and after, by the start of its line.
    let series = [
        "liveroom_connections",
        r#"liveroom_rpc_total{path="test/add""#,
        r#"liveroom_rpc_duration_seconds_count{path="test/add""#,
        r#"liveroom_rpc_errors_total{path="test/fail",code="FORBIDDEN""#,
        r#"liveroom_rpc_total{path="unknown""#,
        "liveroom_events_published_total",
        "liveroom_events_delivered_total",
        "liveroom_frames_dropped_total",
        "liveroom_slow_consumer_disconnects_total",
        "liveroom_bad_frames_total",
        "liveroom_cursor_moves_coalesced_total",
    ];
    let before: Vec<u64> = series.iter().map(|s| metric(s)).collect();

    let mut p = Peer::guest(&server).await;
    p.stream("collab/lobby/__data", json!([])).await.unwrap();
    p.stream("test/feed", json!([])).await.unwrap();
    p.call("test/add", json!([1, 1])).await.unwrap();
    let _ = p.call("test/fail", json!(["FORBIDDEN", "no"])).await;
    let _ = p.call("nope/random123", json!([])).await;
    // Two moves in one throttle interval: coalesced.
    p.fire("collab/lobby/__cursor", json!([{"x": 1}]));
    p.fire("collab/lobby/__cursor", json!([{"x": 2}]));
    p.send_text("not json");
    p.call("test/publish", json!(["feed", "message", {"n": 1}]))
        .await
        .unwrap();
    p.event("feed", "message").await;
    // A burst larger than the outbox, published without yielding: cut off, then dropped.
    let mut victim = Peer::guest(&server).await;
    victim.stream("test/items", json!([])).await.unwrap();
    for i in 0..20 {
        let item = json!({"id": i, "pad": "p".repeat(500)});
        server.live().publish("items", "created", &item).unwrap();
    }
    assert_eq!(victim.close_code().await, Some(1013));
    p.assert_alive().await; // one more test/add

    let (status, body) = http_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    let grew: Vec<(&str, u64)> = series
        .iter()
        .zip(&before)
        .map(|(s, b)| (*s, metric(s).saturating_sub(*b)))
        .collect();
    let at_least = [1, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1];
    for ((name, grew), min) in grew.iter().zip(at_least) {
        assert!(
            *grew >= min,
            "{name} grew by {grew}, expected {min}+: {grew:?}"
        );
        assert!(
            body.contains(name.split('{').next().unwrap()),
            "{name} missing:\n{body}"
        );
    }
    // Unknown paths share one label instead of one series each.
    assert!(!body.contains("random123"), "{body}");
    server.shutdown().await.unwrap();
}
