//! [`Redis`]: the connection every cluster command shares, behind a circuit breaker, so an
//! outage never blocks or hammers anything.

use super::config::ClusterConfig;
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

/// The shared Redis connection with a circuit breaker.
///
/// Every command goes through [`Redis::run`]: while the breaker is open it fails at once
/// (nothing waits on a dead Redis); after a few consecutive failures it opens, for a delay that
/// grows up to one heartbeat; the heartbeat probes and closes it. The cap keeps recovery within
/// a heartbeat or two of Redis coming back (the convergence bound of docs/clustering.md), and
/// one probe per heartbeat does not hammer a Redis that is down.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    failures: Arc<AtomicU32>,
    open_until: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
    /// The longest the breaker stays open before the next probe.
    max_open: Duration,
    /// `true` while the breaker is open (see [`Redis::down`]).
    down: Arc<tokio::sync::watch::Sender<bool>>,
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

/// Whether `e` means Redis could not be reached (as opposed to an error reply from it).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl Redis {
    pub(crate) fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        Ok(Redis {
            client: redis::Client::open(connection_info(&config.url)?)?,
            conn: Arc::new(Mutex::new(None)),
            failures: Arc::new(AtomicU32::new(0)),
            open_until: Arc::new(Mutex::new(None)),
            timeout: Duration::from_millis(1000),
            max_open: config.heartbeat,
            down: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    /// The client, for dedicated (pub/sub) connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Whether Redis is given up on for now, as a watch: `true` from the moment the breaker
    /// opens until a command succeeds again (the probes in between do not flap it).
    pub fn down(&self) -> tokio::sync::watch::Receiver<bool> {
        self.down.subscribe()
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
            // An error reply (NOSCRIPT before a script is loaded, say) is Redis answering: it
            // must not keep the breaker open, or the retry that would load the script is
            // refused by the breaker it re-opened.
            Ok(_) => self.succeeded(),
            Err(RedisDown::Failed(e)) if !unreachable(e) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn succeeded(&self) {
        let failures = self.failures.swap(0, Ordering::Relaxed);
        if failures > 0 {
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
            metrics::gauge!("liveroom_redis_up").set(1.0);
            if failures >= 3 {
                tracing::info!("redis reachable again: circuit closed");
                self.down.send_replace(false);
            }
        }
    }

    fn failed(&self, e: &RedisDown) {
        metrics::counter!("liveroom_redis_errors_total").increment(1);
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            tracing::warn!(error = %e, "redis command failed");
        }
        if n >= 3 {
            // The next probe builds a fresh connection, so a connection whose own reconnects
            // gave up cannot keep the breaker open once Redis is back.
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let delay = Duration::from_millis(250u64 << (n - 3).min(5)).min(self.max_open);
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + delay);
            metrics::gauge!("liveroom_redis_up").set(0.0);
            if n == 3 {
                tracing::error!("redis unavailable: circuit open, serving local connections only");
                self.down.send_replace(true);
            }
        }
    }
}
