//! `liveroom-testserver`: serves the test app (see the library docs) for the JS client suites,
//! the cluster tests and the benchmark. It prints `LISTENING http://<addr>` once ready.

use clap::Parser;
use liveroom::{Server, ServerConfig};
use liveroom_testserver::{app, Options};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    server: ServerConfig,
    /// Leave grace of the rooms, in milliseconds.
    #[arg(long, env = "LIVEROOM_GRACE_MS", default_value_t = liveroom::room::DEFAULT_GRACE.as_millis() as u64)]
    grace_ms: u64,
    /// Cursor throttle of the board, in milliseconds.
    #[arg(long, env = "LIVEROOM_CURSOR_MS", default_value_t = liveroom::Cursors::DEFAULT_THROTTLE.as_millis() as u64)]
    cursor_ms: u64,
    /// Cursor positions per second each observer of a board gets at most.
    #[arg(long, env = "LIVEROOM_CURSOR_BUDGET", default_value_t = liveroom::Cursors::DEFAULT_BUDGET)]
    cursor_budget: u32,
    /// Listed members of a board at most (further ones are counted).
    #[arg(long, env = "LIVEROOM_PRESENCE_LIMIT", default_value_t = liveroom::room::presence::DEFAULT_LISTED_LIMIT)]
    presence_limit: usize,
    /// Redis URL: switches on cluster mode.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
}

/// jemalloc gives freed memory back to the system after a few seconds, so a server's RSS comes
/// back down after a burst (a flood, a reconnect storm) instead of staying at its peak.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = Options {
        grace: Duration::from_millis(args.grace_ms),
        cursor_throttle: Duration::from_millis(args.cursor_ms),
        cursor_budget: args.cursor_budget,
        presence_limit: args.presence_limit,
    };
    let (mut app, _state) = app(&options);
    if let Some(url) = &args.redis_url {
        app = liveroom::cluster::enable(app, url)
            .await
            .map_err(std::io::Error::other)?;
    }
    let running = Server::new(app).config(args.server).start().await?;
    println!("LISTENING http://{}", running.addr());
    // Make sure the line reaches a parent reading our stdout through a pipe.
    use std::io::Write;
    std::io::stdout().flush()?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        Ok::<_, std::io::Error>(())
    };
    stop.await?;
    running.shutdown().await
}
