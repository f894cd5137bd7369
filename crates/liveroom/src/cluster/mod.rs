//! Cluster mode: several replicas behind a load balancer behave as one server, through Redis.
//!
//! - [`keys`]: every key and channel name; a room's all carry its hash tag, so on a Redis
//!   Cluster a room lives in one slot.
//! - [`bus`]: events. Every publish goes to Redis pub/sub on the topic's channel (sharded on a
//!   Redis Cluster), pipelined; a replica subscribes only to the topics it has local
//!   subscribers for.
//! - [`sequence`]: the cluster-wide seq and replay buffer of each topic, assigned and appended
//!   by the same script that publishes, so every replica sees a topic's events in one order.
//! - [`presence`]: the cluster-wide roster in one HASH per room (protocol.md section 6), with
//!   atomic Lua transitions and a per-room record of what each replica added.
//! - [`lease`]: the replica's lease and heartbeat, the reaper that removes a dead replica's
//!   contributions (publishing `leave`), and re-assertion after an outage.
//! - [`breaker`]: the shared Redis connection (standalone or cluster) with a circuit breaker, so
//!   an outage never blocks or hammers anything; [`config`]: the settings.
//!
//! See docs/clustering.md for the key layout, guarantees and settings.

pub mod breaker;
pub mod bus;
pub mod config;
pub mod keys;
pub mod lease;
pub mod presence;
pub mod sequence;

pub use breaker::{ClusterError, Redis, RedisDown};
pub use config::ClusterConfig;

use crate::registry::App;
use std::sync::Arc;

/// Switches `app` to cluster mode with the Redis at `url` (settings from the environment,
/// see [`ClusterConfig::from_env`]). `url` may name a standalone Redis, any node of a Redis
/// Cluster, or several cluster nodes separated by commas. Only an invalid URL fails: if Redis is down, the replica
/// starts anyway, serves its own connections, and joins the cluster when Redis appears.
///
/// ```no_run
/// # async fn run(app: liveroom::App) -> Result<(), Box<dyn std::error::Error>> {
/// let app = liveroom::cluster::enable(app, "redis://127.0.0.1:6379").await?;
/// # Ok(()) }
/// ```
pub async fn enable<S: Clone + Send + Sync + 'static>(
    app: App<S>,
    url: &str,
) -> Result<App<S>, ClusterError> {
    enable_with(app, ClusterConfig::from_env(url)).await
}

/// [`enable`] with explicit settings.
pub async fn enable_with<S: Clone + Send + Sync + 'static>(
    app: App<S>,
    config: ClusterConfig,
) -> Result<App<S>, ClusterError> {
    let redis = Redis::new(&config)?;
    let redis_down = redis.down();
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
    let down = redis_down;
    Ok(app
        .presence_store(store)
        .on_build(move |live| {
            live.hub().set_bus(bus.clone());
            tokio::spawn(report_health(down.clone(), Arc::downgrade(live.hub())));
            bus.start(live.clone());
            cluster.start(live.clone());
        })
        .on_shutdown(move || {
            let c = on_shutdown.clone();
            Box::pin(async move { c.shutdown().await })
        }))
}

/// Passes the breaker's state on to the hub, whose server tells its clients (`degraded` /
/// `recovered` on `__realtime`). Ends with the hub.
async fn report_health(
    mut down: tokio::sync::watch::Receiver<bool>,
    hub: std::sync::Weak<crate::hub::Hub>,
) {
    loop {
        let Some(hub) = hub.upgrade() else { return };
        hub.set_degraded(*down.borrow_and_update());
        drop(hub);
        if down.changed().await.is_err() {
            return;
        }
    }
}
