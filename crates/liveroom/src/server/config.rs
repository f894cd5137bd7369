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
    /// Origins allowed to open the WebSocket besides the page's own (comma separated, `*` for
    /// any), e.g. `http://localhost:5173` for a Vite dev server. A page served by this host
    /// (same origin as the `Host` header) and clients that send no `Origin` are always allowed.
    #[arg(long, env = "LIVEROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// A client must send its whole request head within this many milliseconds (slowloris);
    /// also how long an idle keep-alive HTTP connection stays open.
    #[arg(long, env = "LIVEROOM_HEADER_TIMEOUT_MS", default_value_t = ServerConfig::HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger ones get 431. At least
    /// 8192.
    #[arg(long, env = "LIVEROOM_MAX_HEAD_BYTES", default_value_t = ServerConfig::MAX_HEAD_BYTES,
          value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_head_bytes: u32,
    /// Most TCP connections open at once; beyond it new ones get 503 and are closed.
    #[arg(long, env = "LIVEROOM_MAX_CONNECTIONS", default_value_t = ServerConfig::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most TCP connections open at once from one remote address; beyond it new ones get 429
    /// and are closed.
    #[arg(long, env = "LIVEROOM_MAX_CONNECTIONS_PER_IP", default_value_t = ServerConfig::MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// WebSocket upgrades per second per remote address, sustained (0: no limit). Beyond it the
    /// socket is accepted and closed with 4429, which makes clients back off hard.
    #[arg(long, env = "LIVEROOM_UPGRADE_RATE", default_value_t = ServerConfig::UPGRADE_RATE)]
    pub upgrade_rate: u32,
    /// Upgrades per remote address let through at once.
    #[arg(long, env = "LIVEROOM_UPGRADE_BURST", default_value_t = ServerConfig::UPGRADE_BURST)]
    pub upgrade_burst: u32,
    /// How long the upgrade hook may take, in milliseconds; beyond it the upgrade gets 504.
    #[arg(long, env = "LIVEROOM_UPGRADE_TIMEOUT_MS", default_value_t = ServerConfig::UPGRADE_TIMEOUT_MS)]
    pub upgrade_timeout_ms: u64,
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
    /// Default of [`ServerConfig::header_timeout_ms`]: 10 s.
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    /// Default of [`ServerConfig::max_head_bytes`]: 16 KiB, twice what browsers send with
    /// large cookies.
    pub const MAX_HEAD_BYTES: u32 = 16 * 1024;
    /// Default of [`ServerConfig::max_connections`]: 50,000, about 400 MiB of idle sockets, and
    /// below the usual 65,536 file descriptors.
    pub const MAX_CONNECTIONS: usize = 50_000;
    /// Default of [`ServerConfig::max_connections_per_ip`]: 1024, an office of a few hundred
    /// people behind one NAT with a few tabs each.
    pub const MAX_CONNECTIONS_PER_IP: usize = 1024;
    /// Default of [`ServerConfig::upgrade_rate`]: 50 per second per address.
    pub const UPGRADE_RATE: u32 = 50;
    /// Default of [`ServerConfig::upgrade_burst`]: 500, that office reconnecting at once
    /// after a deploy.
    pub const UPGRADE_BURST: u32 = 500;
    /// Default of [`ServerConfig::upgrade_timeout_ms`]: 10 s.
    pub const UPGRADE_TIMEOUT_MS: u64 = 10_000;
}

impl ServerConfig {
    /// The settings from the `LIVEROOM_*` environment variables (docs/operations.md), the
    /// defaults for the rest: what [`Server::new`](crate::Server::new) starts from. An invalid
    /// value is an error naming the variable.
    ///
    /// ```
    /// let config = liveroom::ServerConfig::from_env().expect("valid LIVEROOM_* variables");
    /// # let _ = config;
    /// ```
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Env {
            #[command(flatten)]
            config: ServerConfig,
        }
        <Env as clap::Parser>::try_parse_from(["liveroom"]).map(|env| env.config)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: Self::BIND.into(),
            ws_path: Self::WS_PATH.into(),
            static_dir: None,
            allowed_origins: Vec::new(),
            header_timeout_ms: Self::HEADER_TIMEOUT_MS,
            max_head_bytes: Self::MAX_HEAD_BYTES,
            max_connections: Self::MAX_CONNECTIONS,
            max_connections_per_ip: Self::MAX_CONNECTIONS_PER_IP,
            upgrade_rate: Self::UPGRADE_RATE,
            upgrade_burst: Self::UPGRADE_BURST,
            upgrade_timeout_ms: Self::UPGRADE_TIMEOUT_MS,
            limits: Limits::default(),
            shutdown_timeout_ms: Self::SHUTDOWN_TIMEOUT_MS,
        }
    }
}
