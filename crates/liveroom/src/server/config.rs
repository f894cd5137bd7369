//! [`ServerConfig`]: every server setting, as a flag and an environment variable, each default
//! written once.

use crate::conn::Limits;
use std::path::PathBuf;

/// Server settings, as flags and environment variables. Flatten it into your own clap
/// parser with `#[command(flatten)]`.
///
/// ```
/// use liveroom::ServerConfig;
/// let config = ServerConfig { bind: "127.0.0.1:0".into(), ..ServerConfig::default() };
/// assert_eq!(config.ws_path, "/ws");
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "LIVEROOM_BIND", default_value = ServerConfig::BIND)]
    pub bind: String,
    /// Path of the WebSocket endpoint.
    #[arg(long, env = "LIVEROOM_WS_PATH", default_value = ServerConfig::WS_PATH)]
    pub ws_path: String,
    /// Serve files from this directory at `/`.
    #[arg(long, env = "LIVEROOM_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Origins allowed to open the WebSocket (comma separated, `*` for any). Default: the
    /// same origin as the `Host` header. Clients that send no `Origin` are always allowed.
    #[arg(long, env = "LIVEROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Per-connection limits.
    #[command(flatten)]
    pub limits: Limits,
    /// How long shutdown waits for connections to close, in milliseconds.
    #[arg(long, env = "LIVEROOM_SHUTDOWN_TIMEOUT_MS", default_value_t = ServerConfig::SHUTDOWN_TIMEOUT_MS)]
    pub shutdown_timeout_ms: u64,
}

impl ServerConfig {
    /// Default of [`ServerConfig::bind`].
    pub const BIND: &'static str = "127.0.0.1:3000";
    /// Default of [`ServerConfig::ws_path`].
    pub const WS_PATH: &'static str = "/ws";
    /// Default of [`ServerConfig::shutdown_timeout_ms`]: 10 s.
    pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: Self::BIND.into(),
            ws_path: Self::WS_PATH.into(),
            static_dir: None,
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            shutdown_timeout_ms: Self::SHUTDOWN_TIMEOUT_MS,
        }
    }
}
