//! Cluster mode: several replicas behind a load balancer behave as one server, through Redis.
//!
//! - [`bus`]: events. Every publish goes to Redis pub/sub on channel `__live-bus:<topic>`,
//!   pipelined; a replica subscribes only to the topics it has local subscribers for, and
//!   skips its own echo.
//! - [`presence`]: the cluster-wide roster in one HASH per room (protocol.md section 6), with
//!   atomic Lua transitions and a per-replica record of what each replica added.
//! - [`lease`]: the replica's lease and heartbeat, the reaper that removes a dead replica's
//!   contributions (publishing `leave`), and re-assertion after an outage.
//! - [`Redis`]: the shared connection with a circuit breaker, so an outage never blocks or
//!   hammers anything.
//!
//! See docs/clustering.md for the key layout, guarantees and settings.

pub mod bus;
pub mod lease;
pub mod presence;

use crate::app::App;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Errors setting up cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL is invalid.
    #[error("invalid redis url: {0}")]
    Url(#[from] redis::RedisError),
}

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
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

/// Switches `app` to cluster mode with the Redis at `url` (settings from the environment,
/// see [`ClusterConfig::from_env`]). Only an invalid URL fails: if Redis is down, the replica
/// starts anyway, serves its own connections, and joins the cluster when Redis appears.
///
/// ```no_run
/// # async fn run(app: liveroom::App) -> Result<(), Box<dyn std::error::Error>> {
/// let app = liveroom::cluster::enable(app, "redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
pub async fn enable(app: App, url: &str) -> Result<App, ClusterError> {
    enable_with(app, ClusterConfig::from_env(url)).await
}

/// [`enable`] with explicit settings.
pub async fn enable_with(app: App, config: ClusterConfig) -> Result<App, ClusterError> {
    let redis = Redis::new(&config)?;
    let replica = lease::replica_id();
    let store = Arc::new(presence::RedisPresence::new(redis.clone(), replica.clone()));
    let bus = bus::RedisBus::new(redis.clone(), replica.clone(), &config);
    let cluster = Arc::new(lease::Cluster::new(
        config,
        redis,
        replica,
        store.clone(),
        bus.clone(),
    ));
    let on_shutdown = cluster.clone();
    Ok(app
        .presence_store(store)
        .on_build(move |live| {
            live.hub().set_bus(bus.clone());
            bus.start(live.clone());
            cluster.start(live.clone());
        })
        .on_shutdown(move || {
            let c = on_shutdown.clone();
            Box::pin(async move { c.shutdown().await })
        }))
}

/// The shared Redis connection with a circuit breaker.
///
/// Every command goes through [`Redis::run`]: while the breaker is open it fails at once
/// (nothing waits on a dead Redis); after a few consecutive failures it opens, for a delay that
/// grows up to 5 s; the heartbeat probes and closes it.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    failures: Arc<AtomicU32>,
    open_until: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
}

/// A Redis command failed, or was not tried because the breaker is open.
#[derive(Debug, thiserror::Error)]
pub enum RedisDown {
    /// The breaker is open.
    #[error("redis unavailable (circuit open)")]
    Open,
    /// The command failed.
    #[error("redis: {0}")]
    Failed(#[from] redis::RedisError),
    /// No answer in time.
    #[error("redis: timed out")]
    Timeout,
}

/// The URL's connection settings, with `TCP_NODELAY` on: redis-rs leaves Nagle's algorithm on
/// by default, which holds small pipelined writes back by up to a delayed-ACK period (~40 ms).
fn connection_info(url: &str) -> Result<redis::ConnectionInfo, redis::RedisError> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

impl Redis {
    fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        Ok(Redis {
            client: redis::Client::open(connection_info(&config.url)?)?,
            conn: Arc::new(Mutex::new(None)),
            failures: Arc::new(AtomicU32::new(0)),
            open_until: Arc::new(Mutex::new(None)),
            timeout: Duration::from_millis(1000),
        })
    }

    /// The client, for dedicated (pub/sub) connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Whether the breaker lets commands through.
    pub fn available(&self) -> bool {
        match *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(until) => Instant::now() >= until,
            None => true,
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisDown> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let fut = ConnectionManager::new_with_config(self.client.clone(), config);
        let c = tokio::time::timeout(self.timeout * 2, fut)
            .await
            .map_err(|_| RedisDown::Timeout)??;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the shared connection, through the breaker and with a timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.available() {
            return Err(RedisDown::Open);
        }
        let result = match self.connection().await {
            Ok(c) => match tokio::time::timeout(self.timeout, f(c)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RedisDown::Failed(e)),
                Err(_) => Err(RedisDown::Timeout),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn succeeded(&self) {
        if self.failures.swap(0, Ordering::Relaxed) > 0 {
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
            metrics::gauge!("liveroom_redis_up").set(1.0);
        }
    }

    fn failed(&self, e: &RedisDown) {
        metrics::counter!("liveroom_redis_errors_total").increment(1);
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            tracing::warn!(error = %e, "redis command failed");
        }
        if n >= 3 {
            let delay = Duration::from_millis((250u64 << (n - 3).min(5)).min(5000));
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + delay);
            metrics::gauge!("liveroom_redis_up").set(0.0);
            if n == 3 {
                tracing::error!("redis unavailable: circuit open, serving local connections only");
            }
        }
    }

    /// Whether the last command failed (the replica is serving locally only).
    pub fn degraded(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
    }
}
