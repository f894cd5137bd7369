//! `board`: the liveroom demo server. `cargo run --release` at the repository root, then open
//! <http://127.0.0.1:3000>.

use anyhow::Context;
use board::web::{self, Assets};
use board::{Options, Store};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use liveroom::{Server, ServerConfig};
use std::io::Write;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The liveroom demo board: a collaborative kanban board."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Database: `sqlite://<file>` (created on first start) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://board.db")]
    database_url: String,
    /// Redis URL: runs in cluster mode, sharing events and presence with other replicas.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// How long a member stays in a board's presence after its last tab closed, in ms.
    #[arg(long, env = "GRACE_MS", default_value_t = liveroom::room::DEFAULT_GRACE.as_millis() as u64)]
    grace_ms: u64,
    /// Minimum interval between two cursor broadcasts of one user, in ms.
    #[arg(long, env = "CURSOR_MS", default_value_t = liveroom::Cursors::DEFAULT_THROTTLE.as_millis() as u64)]
    cursor_ms: u64,
    #[command(flatten)]
    server: ServerConfig,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the registry manifest (JSON) for the front end's code generator, then exit.
    Manifest,
}

/// Parses the command line. `--bind` comes from [`ServerConfig`]; it also reads `BIND`, and
/// `LIVEROOM_BIND` still works when neither the flag nor `BIND` is given.
fn parse() -> Cli {
    let command = Cli::command()
        .mut_arg("bind", |a| {
            a.env("BIND")
                .help("Address to listen on (also LIVEROOM_BIND)")
        })
        .mut_arg("static_dir", |a| {
            a.help("Serve the front end from this directory instead of the embedded bundle")
        });
    let matches = command.get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches.value_source("bind") == Some(ValueSource::DefaultValue) {
        if let Ok(bind) = std::env::var("LIVEROOM_BIND") {
            cli.server.bind = bind;
        }
    }
    cli
}

/// jemalloc gives freed memory back to the system after a few seconds, so a server's RSS comes
/// back down after a burst (a flood, a reconnect storm) instead of staying at its peak.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "board=info,liveroom=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = parse();
    let options = Options {
        grace: Duration::from_millis(cli.grace_ms),
        cursor_throttle: Duration::from_millis(cli.cursor_ms),
    };
    if let Some(Command::Manifest) = cli.command {
        let manifest = board::manifest(Store::lazy(), &options);
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }

    let store = Store::connect(&cli.database_url)
        .await
        .with_context(|| format!("opening the database {}", cli.database_url))?;
    let mut app = board::app(store, &options);
    if let Some(url) = &cli.redis_url {
        app = liveroom::cluster::enable(app, url)
            .await
            .context("enabling cluster mode")?;
    }
    // The front end is served by our own fallback (it also sets the identity cookies), so
    // `--static-dir` switches that from the embedded bundle to a directory.
    let assets = match cli.server.static_dir.take() {
        Some(dir) => Assets::Dir(dir),
        None => Assets::Embedded,
    };
    let running = Server::new(app)
        .config(cli.server)
        .routes(web::routes(assets))
        .start()
        .await
        .context("starting the server")?;
    println!("board {}", running.startup_line());
    std::io::stdout().flush()?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await?;
    Ok(())
}
