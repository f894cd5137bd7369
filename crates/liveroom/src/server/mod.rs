//! The HTTP side: axum routes (`/ws`, `/healthz`, `/metrics`, the manifest, static files) and
//! graceful shutdown, here; then, in the order a connection meets them:
//! - `shared`: what every connection shares, and each TCP connection's admission (the caps);
//! - `listen`: the accept loop, the connection caps, HTTP/1 with its timeouts and limits;
//! - `upgrade`: the WebSocket handshake, the Origin allow-list and the upgrade hook;
//! - `socket`: one reader per connection, feeding the session;
//! - `writer`: one writer per connection, framing what the outbox drained into one write;
//! - `config`: [`ServerConfig`].

mod config;
mod listen;
mod shared;
mod socket;
mod upgrade;
mod writer;

pub use config::ServerConfig;

use crate::registry::{App, Live};
use axum::routing::get;
use axum::Router;
use shared::{stopped, Shared, Signal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// The startup line of [`Server::run`]. Printed to stderr when the app installed no `tracing`
/// subscriber (the README's minimal server), logged otherwise.
fn announce(running: &Running) {
    let line = running.startup_line();
    if tracing::dispatcher::has_been_set() {
        tracing::info!(addr = %running.addr(), "liveroom {line}");
    } else {
        eprintln!("liveroom {line}; Ctrl-C stops it");
    }
}

/// Serves an [`App`].
///
/// ```no_run
/// # async fn run(app: liveroom::App) -> std::io::Result<()> {
/// liveroom::Server::new(app).bind("127.0.0.1:3000").run().await
/// # }
/// ```
pub struct Server {
    /// Builds the registry with the configured limits (the app's state type erased).
    app: Box<dyn FnOnce(crate::Limits) -> Live + Send>,
    config: ServerConfig,
    /// An invalid `LIVEROOM_*` variable, reported by `start` (unless `config` replaced them).
    env_error: Option<String>,
    /// `LIVEROOM_MANIFEST`: where [`Server::run`] writes the manifest instead of serving.
    manifest: Option<(PathBuf, serde_json::Value)>,
    routes: Option<Router>,
}

/// A running server: its address, its registry, and the way to stop it.
pub struct Running {
    addr: SocketAddr,
    live: Live,
    signal: watch::Sender<Signal>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry being served.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Where the server listens and in which mode, for a startup message:
    /// `listening on http://127.0.0.1:3000 (single process, presence in memory)` or
    /// `(cluster mode, Redis)`.
    pub fn startup_line(&self) -> String {
        let mode = if self.live.hub().bus().is_some() {
            "cluster mode, Redis"
        } else {
            "single process, presence in memory"
        };
        format!("listening on http://{} ({mode})", self.addr)
    }

    /// Graceful shutdown: stop accepting, close every socket with 1001, wait (up to the
    /// configured deadline), release presence.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.signal.send_modify(|s| s.stop = true);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Waits until the server stops by itself (SIGINT/SIGTERM when started with
    /// [`Server::run`]).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

impl Server {
    /// A server for `app`, configured from the `LIVEROOM_*` environment variables
    /// ([`ServerConfig::from_env`]; defaults for the rest). Methods called on it
    /// ([`bind`](Server::bind), [`config`](Server::config)) override them. An invalid variable
    /// makes [`start`](Server::start) fail with a message naming it.
    pub fn new<S: Clone + Send + Sync + 'static>(app: App<S>) -> Self {
        let (config, env_error) = match ServerConfig::from_env() {
            Ok(config) => (config, None),
            Err(e) => (ServerConfig::default(), Some(e.to_string())),
        };
        let manifest = std::env::var_os("LIVEROOM_MANIFEST").map(|p| (p.into(), app.manifest()));
        Server {
            app: Box::new(move |limits| app.limits(limits).build()),
            config,
            env_error,
            manifest,
            routes: None,
        }
    }

    /// Replaces the whole configuration (e.g. from clap), environment included.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self.env_error = None;
        self
    }

    /// The address to listen on (`"127.0.0.1:0"` for any free port).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.config.bind = addr.into();
        self
    }

    /// Extra application routes, merged before the static file fallback.
    pub fn routes(mut self, routes: Router) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Binds and serves until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// With `LIVEROOM_MANIFEST=<path>` set it serves nothing: it writes the registry's manifest
    /// to `<path>` and returns, so a front-end build can generate its client code without a
    /// running server (`LIVEROOM_MANIFEST=web/src/live/manifest.json cargo run`).
    pub async fn run(self) -> std::io::Result<()> {
        if let Some((path, manifest)) = &self.manifest {
            let text = serde_json::to_string_pretty(manifest).map_err(std::io::Error::other)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, text + "\n").map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
            eprintln!("liveroom wrote its manifest to {}", path.display());
            return Ok(());
        }
        let running = self.start().await?;
        announce(&running);
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    }

    /// Binds and starts serving in the background.
    pub async fn start(self) -> std::io::Result<Running> {
        let listener = TcpListener::bind(&self.config.bind).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", self.config.bind),
            )
        })?;
        self.start_on(listener).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(self, listener: TcpListener) -> std::io::Result<Running> {
        if let Some(e) = &self.env_error {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid LIVEROOM_* environment variable: {e}"),
            ));
        }
        let addr = listener.local_addr()?;
        let metrics = crate::metrics::handle();
        let live = (self.app)(self.config.limits.clone());
        let (signal, signal_rx) = watch::channel(Signal::default());
        tokio::spawn(forward_health(live.hub().health(), signal.clone()));
        let shared = Arc::new(Shared {
            live: live.clone(),
            config: self.config.clone(),
            admission: Default::default(),
            upgrades: Default::default(),
            signal: signal_rx.clone(),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        });
        let mut router = Router::new()
            .route(&self.config.ws_path, get(upgrade::ws_handler))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(move || {
                    let m = metrics.clone();
                    async move { m.render() }
                }),
            )
            .route(
                "/__live/manifest.json",
                get({
                    let live = live.clone();
                    move || {
                        let m = live.manifest();
                        async move { axum::Json(m) }
                    }
                }),
            )
            .with_state(shared.clone());
        if let Some(routes) = self.routes {
            router = router.merge(routes);
        }
        if let Some(dir) = &self.config.static_dir {
            router = router.fallback_service(tower_http::services::ServeDir::new(dir));
        }
        let stop_rx = signal_rx;
        let deadline = Duration::from_millis(self.config.shutdown_timeout_ms);
        let live_for_task = live.clone();
        let task = tokio::spawn(async move {
            listen::accept_loop(listener, router, shared.clone(), stop_rx).await;
            // No new connections now. Every open one saw the shutdown signal and is closing
            // with 1001; wait for them, bounded.
            let wait = async {
                while shared.open.load(Ordering::SeqCst) > 0 {
                    let notified = shared.closed.notified();
                    if shared.open.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    notified.await;
                }
            };
            if tokio::time::timeout(deadline, wait).await.is_err() {
                tracing::warn!(
                    open = shared.open.load(Ordering::SeqCst),
                    "shutdown deadline passed with connections still open"
                );
            }
            live_for_task.release_presence().await;
            Ok(())
        });
        Ok(Running {
            addr,
            live,
            signal,
            task,
        })
    }
}

/// Passes the hub's health (see [`Hub::health`](crate::hub::Hub::health)) on to every
/// connection, until the server stops.
async fn forward_health(mut health: watch::Receiver<bool>, signal: watch::Sender<Signal>) {
    let mut stop = signal.subscribe();
    loop {
        let degraded = *health.borrow_and_update();
        signal.send_if_modified(|s| std::mem::replace(&mut s.degraded, degraded) != degraded);
        tokio::select! {
            r = health.changed() => if r.is_err() { return },
            () = stopped(&mut stop) => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
