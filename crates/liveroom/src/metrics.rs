//! The Prometheus exporter behind `GET /metrics`.
//!
//! Metric names (all prefixed `liveroom_`): `connections` (gauge), `rpc_total`,
//! `rpc_errors_total` and `rpc_duration_seconds` by `path`, `events_published_total`,
//! `events_delivered_total`, `frames_dropped_total`, `slow_consumer_disconnects_total`,
//! `bad_frames_total`, `cursor_moves_coalesced_total`, `silent_disconnects_total`; the refusals
//! of docs/security.md: `refused_connections_total{reason}`, `rate_limited_total{kind}`,
//! `overloaded_total`, `limited_total{kind}`, `oversized_payloads_total{kind}`,
//! `upgrade_timeouts_total`, `http_errors_total`; and the cluster's `redis_*` and `cluster_*`
//! series.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide exporter handle, installing the recorder on first use. If the application
/// installed another recorder first, `/metrics` renders this (empty) one instead.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples pile up until they are folded into buckets, which rendering
            // does; without a scraper that would be a leak of 8 bytes a call, so fold them
            // every few seconds anyway.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("liveroom-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("spawns the metrics upkeep thread");
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}
