//! The HTTP side: axum routes (`/ws`, `/healthz`, `/metrics`, the manifest, static files), the
//! WebSocket upgrade, one reader and one writer per connection, and graceful shutdown.

use crate::app::{App, Live};
use crate::auth::UpgradeRequest;
use crate::outbox::Drain;
use crate::ws::{self, close, Decoder, Message};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Server settings, as flags and environment variables. Flatten it into your own clap
/// parser with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "LIVEROOM_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    /// Path of the WebSocket endpoint.
    #[arg(long, env = "LIVEROOM_WS_PATH", default_value = "/ws")]
    pub ws_path: String,
    /// Serve files from this directory at `/`.
    #[arg(long, env = "LIVEROOM_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Origins allowed to open the WebSocket (comma separated, `*` for any). Default: the
    /// same origin as the `Host` header. Clients that send no `Origin` are always allowed.
    #[arg(long, env = "LIVEROOM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Most unsent bytes per connection before a slow consumer is cut off (1013).
    #[arg(long, env = "LIVEROOM_OUTBOX_BYTES", default_value_t = 1 << 20)]
    pub outbox_bytes: usize,
    /// Largest client message accepted; larger ones close with 1009.
    #[arg(long, env = "LIVEROOM_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message: usize,
    /// How long shutdown waits for connections to close, in milliseconds.
    #[arg(long, env = "LIVEROOM_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:3000".into(),
            ws_path: "/ws".into(),
            static_dir: None,
            allowed_origins: Vec::new(),
            outbox_bytes: 1 << 20,
            max_message: 1 << 20,
            shutdown_timeout_ms: 10_000,
        }
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
    app: App,
    config: ServerConfig,
    routes: Option<Router>,
}

struct Shared {
    live: Live,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
    open: AtomicUsize,
    closed: Notify,
}

/// A running server: its address, its registry, and the way to stop it.
pub struct Running {
    addr: SocketAddr,
    live: Live,
    stop: watch::Sender<bool>,
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

    /// Graceful shutdown: stop accepting, close every socket with 1001, wait (up to the
    /// configured deadline), release presence.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
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
    /// A server for `app` with the default configuration.
    pub fn new(app: App) -> Self {
        Server {
            app,
            config: ServerConfig::default(),
            routes: None,
        }
    }

    /// Replaces the whole configuration (e.g. from clap).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
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
    pub async fn run(self) -> std::io::Result<()> {
        let running = self.start().await?;
        let addr = running.addr();
        tracing::info!(%addr, "liveroom listening");
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await
    }

    /// Binds and starts serving in the background.
    pub async fn start(self) -> std::io::Result<Running> {
        let listener = TcpListener::bind(&self.config.bind).await?;
        self.start_on(listener).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(self, listener: TcpListener) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let metrics = crate::metrics::handle();
        let live = self
            .app
            .limits(crate::app::Limits {
                outbox_bytes: self.config.outbox_bytes,
                max_message: self.config.max_message,
            })
            .build();
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            live: live.clone(),
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        });
        let mut router = Router::new()
            .route(&self.config.ws_path, get(ws_handler))
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
        let mut stop_rx = shutdown;
        let deadline = Duration::from_millis(self.config.shutdown_timeout_ms);
        let live_for_task = live.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            });
            serve.await?;
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
            stop,
            task,
        })
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
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

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The Origin allow-list (protocol.md section 1).
fn origin_allowed(config: &ServerConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not a browser
    };
    if config.allowed_origins.is_empty() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    config
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

async fn ws_handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    let headers = req.headers();
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned);
    let upgrade_ok = req.method() == Method::GET
        && header_has(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::CONNECTION, "upgrade")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| upgrade_ok) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::from("expected a WebSocket upgrade"))
            .expect("valid response");
    };
    // A refused origin or user is still accepted, then closed with a terminal code: an HTTP
    // error here would look like 1006 to the client, which retries forever.
    let verdict = if !origin_allowed(&shared.config, headers) {
        Err(close::POLICY)
    } else {
        let view = UpgradeRequest::new(headers.clone(), req.uri().query(), Some(remote));
        shared
            .live
            .authenticate(view)
            .await
            .map_err(|r| r.close_code())
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve_socket(shared, upgraded, verdict).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(&key))
        .body(Body::empty())
        .expect("valid response")
}

async fn serve_socket(
    shared: Arc<Shared>,
    upgraded: hyper::upgrade::Upgraded,
    verdict: Result<Option<serde_json::Value>, u16>,
) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    // The plain TCP stream lets an idle connection wait for readability holding no buffer.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => {
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            drop(read_buf); // may share hyper's whole read buffer
            let tcp = io.into_inner();
            // The writer already coalesces frames into one write; Nagle's algorithm would only
            // hold the next small write back until the peer's delayed ACK (~40 ms).
            let _ = tcp.set_nodelay(true);
            let (rd, wr) = tcp.into_split();
            run_socket(&shared, Reader::Tcp(rd), wr, verdict).await;
        }
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            let _ = tcp.set_nodelay(true);
            let io = TokioIo::new(Prefixed::new(parts.read_buf, tcp));
            let (rd, wr) = tokio::io::split(io);
            run_socket(&shared, Reader::Any(Box::new(rd)), wr, verdict).await;
        }
        Err(upgraded) => {
            let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
            run_socket(&shared, Reader::Any(Box::new(rd)), wr, verdict).await;
        }
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
    shared.closed.notify_waiters();
}

/// Bytes hyper read past the upgrade request, then the stream.
struct Prefixed {
    prefix: bytes::Bytes,
    inner: TcpStream,
}

impl Prefixed {
    fn new(prefix: bytes::Bytes, inner: TcpStream) -> Self {
        Prefixed { prefix, inner }
    }
}

impl hyper::rt::Read for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            bytes::Buf::advance(&mut self.prefix, n);
            return std::task::Poll::Ready(Ok(()));
        }
        let mut io = TokioIo::new(&mut self.inner);
        hyper::rt::Read::poll_read(std::pin::Pin::new(&mut io), cx, buf)
    }
}

impl hyper::rt::Write for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.inner), cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.inner), cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.inner), cx)
    }
}

enum Reader {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Any(Box<dyn AsyncRead + Send + Unpin>),
}

impl Reader {
    /// Reads more bytes into `buf`, allocating only once data is there. `Ok(0)` is EOF.
    async fn fill(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Reader::Tcp(rd) => loop {
                rd.readable().await?;
                buf.reserve(4096);
                match rd.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
            Reader::Any(rd) => {
                buf.reserve(4096);
                rd.read_buf(buf).await
            }
        }
    }
}

async fn run_socket<W>(
    shared: &Shared,
    mut reader: Reader,
    mut writer: W,
    verdict: Result<Option<serde_json::Value>, u16>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let user = match verdict {
        Ok(user) => user,
        Err(code) => {
            let mut buf = BytesMut::new();
            ws::encode_close(&mut buf, code);
            let _ = writer.write_all(&buf).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let mut session = shared.live.connect(user);
    let conn = session.conn().clone();
    let mut write_task = tokio::spawn(write_loop(conn.clone(), writer));
    let mut shutdown = shared.shutdown.clone();
    let mut decoder = Decoder::new(shared.config.max_message);
    let mut buf = BytesMut::new();
    'read: loop {
        tokio::select! {
            read = reader.fill(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break 'read,
                    Ok(_) => {}
                }
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(None) => break,
                        // Boxed: the call machinery is only allocated while a frame is handled, so an
                        // idle connection's task stays small.
                        Ok(Some(Message::Text(text))) => Box::pin(session.message(&text)).await,
                        Ok(Some(Message::Binary(_))) => session.binary(),
                        Ok(Some(Message::Ping(p))) => conn.outbox.pong(p),
                        Ok(Some(Message::Pong)) => {}
                        Ok(Some(Message::Close(_))) => {
                            conn.outbox.close(close::NORMAL);
                            break 'read;
                        }
                        Err(ws::DecodeError(code)) => {
                            metrics::counter!("liveroom_bad_frames_total").increment(1);
                            conn.outbox.close(code);
                            break 'read;
                        }
                    }
                }
                if buf.is_empty() && buf.capacity() > 0 {
                    buf = BytesMut::new(); // idle connections hold no read buffer
                }
            }
            _ = conn.stream_failure() => Box::pin(session.settle()).await,
            _ = stopped(&mut shutdown) => {
                conn.outbox.close(close::GOING_AWAY);
                break 'read;
            }
            _ = &mut write_task => {
                // The writer stopped (peer gone, or a close such as 1013 was sent).
                Box::pin(session.close()).await;
                return;
            }
        }
    }
    Box::pin(session.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), write_task).await;
}

/// The connection's single writer: waits for queued frames, encodes everything queued into
/// one buffer, writes it with one call. Sends a `noop` after 60 s of silence.
async fn write_loop<W: AsyncWrite + Unpin>(conn: Arc<crate::conn::Conn>, mut writer: W) {
    let mut drain = Drain::default();
    let mut buf = BytesMut::new();
    loop {
        if tokio::time::timeout(Duration::from_secs(60), conn.outbox.next(&mut drain))
            .await
            .is_err()
        {
            conn.outbox
                .reply(bytes::Bytes::from_static(crate::protocol::NOOP));
            continue;
        }
        drain.encode_ws(&mut buf, conn.outbox.batch());
        if !write_unless_stalled(&conn, &mut writer, &buf).await {
            return;
        }
        if drain.close.is_some() {
            let _ = writer.shutdown().await;
            return;
        }
        buf.clear();
        if buf.capacity() > 64 * 1024 {
            buf = BytesMut::new();
        }
    }
}

/// How long a write may stay blocked while the connection is closing (a slow consumer cut off
/// with 1013, shutdown) before the peer is given up on.
const STALLED_WRITE: Duration = Duration::from_secs(2);

/// Writes `buf`, unless the peer stopped reading and the connection is closing: a peer that
/// never reads again must not hold its session (subscriptions, room memberships) forever.
/// `false` if the write failed or was abandoned.
async fn write_unless_stalled<W: AsyncWrite + Unpin>(
    conn: &crate::conn::Conn,
    writer: &mut W,
    buf: &[u8],
) -> bool {
    let mut write = std::pin::pin!(writer.write_all(buf));
    // Most writes complete at once: no timer for them.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
    })
    .await;
    if let std::task::Poll::Ready(r) = first {
        return r.is_ok();
    }
    let mut closing_seen = false;
    loop {
        tokio::select! {
            r = write.as_mut() => return r.is_ok(),
            () = tokio::time::sleep(STALLED_WRITE) => {
                // Closing at two checks in a row: blocked for STALLED_WRITE since the close.
                if conn.outbox.is_closing() && std::mem::replace(&mut closing_seen, true) {
                    return false;
                }
            }
        }
    }
}
