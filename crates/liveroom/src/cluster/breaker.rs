//! [`Redis`]: the connection every cluster command shares, behind a circuit breaker, so an
//! outage never blocks or hammers anything; standalone Redis (or Sentinel) and Redis Cluster
//! behind one type.

use super::config::ClusterConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
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

/// Which kind of Redis the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One Redis (or a Sentinel-managed primary): every key on one node.
    Standalone,
    /// A Redis Cluster: keys spread over shards by hash slot, sharded pub/sub.
    Cluster,
}

/// A connection to either kind of Redis; commands and pipelines work on both, except that in
/// cluster mode a pipeline must stay within one hash slot (see [`Redis::pipelines`]).
#[derive(Clone)]
pub enum Conn {
    /// Standalone.
    Single(ConnectionManager),
    /// Redis Cluster: routes each command to the shard owning its slot, follows `MOVED`/`ASK`
    /// and refreshes the slot map after a failover.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
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
    /// The URL's nodes: one for standalone, one or more for Redis Cluster.
    nodes: Arc<[redis::ConnectionInfo]>,
    /// Known once a node answered (or at once when several nodes are given).
    mode: Arc<std::sync::OnceLock<Mode>>,
    conn: Arc<Mutex<Option<Conn>>>,
    failures: Arc<AtomicU32>,
    open_until: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
    /// The longest the breaker stays open before the next probe.
    max_open: Duration,
    /// `true` while the breaker is open (see [`Redis::down`]).
    down: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A Redis command failed, or was not tried because the breaker is open.
#[derive(Debug, Clone, thiserror::Error)]
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
        let nodes = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(connection_info)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no redis url",
            ))
            .into());
        }
        let mode = std::sync::OnceLock::new();
        if nodes.len() > 1 {
            let _ = mode.set(Mode::Cluster); // several nodes: only a cluster makes sense
        }
        Ok(Redis {
            nodes: nodes.into(),
            mode: Arc::new(mode),
            conn: Arc::new(Mutex::new(None)),
            failures: Arc::new(AtomicU32::new(0)),
            open_until: Arc::new(Mutex::new(None)),
            timeout: Duration::from_millis(1000),
            max_open: config.heartbeat,
            down: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    /// The kind of Redis, once known (after the first successful connection).
    pub fn mode(&self) -> Option<Mode> {
        self.mode.get().copied()
    }

    /// The kind of Redis: asks the first node (`INFO cluster`) the first time.
    pub async fn detect(&self) -> Result<Mode, RedisDown> {
        if let Some(m) = self.mode() {
            return Ok(m);
        }
        let client = redis::Client::open(self.nodes[0].clone())?;
        let probe = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut c)
                .await
        };
        let info = tokio::time::timeout(self.timeout, probe)
            .await
            .map_err(|_| RedisDown::Timeout)??;
        let mode = if info.contains("cluster_enabled:1") {
            Mode::Cluster
        } else {
            Mode::Standalone
        };
        Ok(*self.mode.get_or_init(|| mode))
    }

    /// A client for a dedicated standalone (pub/sub) connection.
    pub fn client(&self) -> Result<redis::Client, RedisDown> {
        Ok(redis::Client::open(self.nodes[0].clone())?)
    }

    /// A cluster client; with `push`, a RESP3 one whose pushes (sharded messages, disconnections)
    /// go to `push`, for the sharded subscriber.
    pub fn cluster_client(
        &self,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<redis::cluster::ClusterClient, RedisDown> {
        let mut b = redis::cluster::ClusterClientBuilder::new(self.nodes.iter().cloned())
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            // A failover takes a node timeout or two: the breaker, not long retries inside
            // one command, decides what waits.
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .tcp_settings(self.nodes[0].tcp_settings().clone());
        if let Some(tx) = push {
            b = b
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx);
        }
        Ok(b.build()?)
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

    async fn connection(&self) -> Result<Conn, RedisDown> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let c = match self.detect().await? {
            Mode::Standalone => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let fut = ConnectionManager::new_with_config(self.client()?, config);
                Conn::Single(
                    tokio::time::timeout(self.timeout * 2, fut)
                        .await
                        .map_err(|_| RedisDown::Timeout)??,
                )
            }
            Mode::Cluster => {
                let client = self.cluster_client(None)?;
                let fut = client.get_async_connection();
                Conn::Cluster(
                    tokio::time::timeout(self.timeout * 2, fut)
                        .await
                        .map_err(|_| RedisDown::Timeout)??,
                )
            }
        };
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmds` (each with the key that routes it) as pipelines: one in all on a standalone
    /// Redis; one per hash slot on a Redis Cluster, concurrently (a cluster pipeline must stay
    /// within one slot). The order of the commands of one slot is kept. Each command's reply
    /// comes back in the order of `cmds`; a pipeline that fails fails each of its commands
    /// (and only those). `Err` only when nothing was tried (the breaker is open).
    pub async fn pipelines(
        &self,
        cmds: Vec<(String, redis::Cmd)>,
    ) -> Result<Vec<Result<redis::Value, RedisDown>>, RedisDown> {
        use redis::cluster_routing::Slot;
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if !self.available() {
            return Err(RedisDown::Open);
        }
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let cluster = matches!(conn, Conn::Cluster(_));
        let total = cmds.len();
        let mut groups: Vec<(Option<Slot>, Vec<usize>, redis::Pipeline)> = Vec::new();
        for (i, (key, cmd)) in cmds.into_iter().enumerate() {
            let slot = cluster.then(|| Slot::for_key(&key));
            let g = match groups.iter().position(|(s, ..)| *s == slot) {
                Some(g) => g,
                None => {
                    groups.push((slot, Vec::new(), redis::pipe()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.add_command(cmd);
        }
        let replies = futures_util::future::join_all(groups.iter().map(|(_, _, p)| {
            let mut c = conn.clone();
            async move {
                match tokio::time::timeout(self.timeout, p.query_async::<Vec<redis::Value>>(&mut c))
                    .await
                {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(RedisDown::Failed(e)),
                    Err(_) => Err(RedisDown::Timeout),
                }
            }
        }))
        .await;
        let mut out: Vec<Option<Result<redis::Value, RedisDown>>> =
            (0..total).map(|_| None).collect();
        let mut failure = None;
        for ((_, idx, _), reply) in groups.iter().zip(replies) {
            match reply {
                Ok(values) => {
                    for (i, v) in idx.iter().zip(values) {
                        out[*i] = Some(Ok(v));
                    }
                }
                Err(e) => {
                    if !matches!(&e, RedisDown::Failed(r) if !unreachable(r)) {
                        failure.get_or_insert_with(|| e.clone());
                    }
                    for i in idx {
                        out[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        match &failure {
            None => self.succeeded(),
            Some(e) => self.failed(e),
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(RedisDown::Timeout)))
            .collect())
    }

    /// Runs `f` on the shared connection, through the breaker and with a timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisDown>
    where
        F: FnOnce(Conn) -> Fut,
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
