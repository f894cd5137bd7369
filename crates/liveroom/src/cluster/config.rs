//! [`ClusterConfig`]: the Redis URL and the lease timings of cluster mode.

use std::time::Duration;

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`, or several `redis://host:port` nodes of a Redis Cluster separated
    /// by commas.
    pub url: String,
    /// How long a replica's lease lives without a heartbeat: the bound on ghost lifetime after
    /// a crash is about `lease + heartbeat`.
    pub lease: Duration,
    /// How often the lease is refreshed and dead replicas are looked for.
    pub heartbeat: Duration,
}

impl ClusterConfig {
    /// Defaults: lease 3 s, heartbeat 1 s (ghosts gone within ~4 s of a crash).
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            lease: Duration::from_millis(3000),
            heartbeat: Duration::from_millis(1000),
        }
    }

    /// Reads `LIVEROOM_LEASE_MS` and `LIVEROOM_HEARTBEAT_MS` over the defaults.
    pub fn from_env(url: impl Into<String>) -> Self {
        let mut c = Self::new(url);
        let ms = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = ms("LIVEROOM_LEASE_MS") {
            c.lease = Duration::from_millis(v.max(100));
        }
        if let Some(v) = ms("LIVEROOM_HEARTBEAT_MS") {
            c.heartbeat = Duration::from_millis(v.max(50));
        }
        c
    }
}
