//! Cluster mode: several replicas sharing events and presence through Redis.

use crate::App;

/// Errors setting up cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(String),
}

/// Switches `app` to cluster mode with the Redis at `url`.
pub async fn enable(_app: App, url: &str) -> Result<App, ClusterError> {
    Err(ClusterError::Redis(format!(
        "cluster mode is not available yet ({url})"
    )))
}
