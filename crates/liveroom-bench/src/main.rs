//! liveroom-bench: load generator, raw-limit baseline server and benchmark suite.
//!
//! Loopback only; every run is bounded in connections and time. See BENCHMARKS.md.

mod chart;
mod cluster;
mod crowd;
mod cursors;
mod curves;
mod fanout;
mod http;
mod idle;
mod presence;
mod procstat;
mod raw_server;
mod rpc;
mod servers;
mod stats;
mod storm;
mod suite;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use servers::{Kind, Target};
use stats::Metrics;

#[derive(Parser)]
#[command(
    name = "liveroom-bench",
    about = "liveroom load generator and benchmark suite"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Debug)]
struct Common {
    /// liveroom test server binary [default: next to this binary, else target/release/]
    #[arg(long, global = true)]
    liveroom_bin: Option<PathBuf>,
    /// extra argument for the liveroom test server (repeatable)
    #[arg(long, global = true, allow_hyphen_values = true)]
    liveroom_arg: Vec<String>,
    /// Sockudo binary [default: $SOCKUDO_BIN, /root/sockudo/bin/sockudo, PATH]
    #[arg(long, global = true)]
    sockudo_bin: Option<PathBuf>,
    /// CPUs for the servers (taskset -c list)
    #[arg(long, global = true, default_value = "0")]
    server_cpus: String,
    /// CPUs for this generator (taskset -c list)
    #[arg(long, global = true, default_value = "1")]
    gen_cpus: String,
    /// do not pin anything
    #[arg(long, global = true)]
    no_pin: bool,
}

#[derive(clap::Args, Clone, Debug)]
struct TargetArgs {
    /// server to load
    #[arg(long, value_enum, default_value_t = Kind::Liveroom)]
    target: Kind,
    /// an already running server (loopback); default: start one
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// pid of the already running server, for its CPU and RSS
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// the raw-limit baseline server (prints `LISTENING http://<addr>`)
    RawServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
    /// N subscribers, M publishers: delivered events/s and latency
    Fanout {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: fanout::Opts,
    },
    /// RPC round trips: closed loop and fixed rate
    Rpc {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: rpc::Opts,
    },
    /// presence join/leave churn
    Presence {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: presence::Opts,
    },
    /// a crowd joins one room: convergence, frames and bytes, server CPU
    Crowd {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: crowd::Opts,
    },
    /// cursor moves at 20 Hz
    Cursors {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: cursors::Opts,
    },
    /// server RSS per idle connection
    Idle {
        #[command(flatten)]
        t: TargetArgs,
        #[command(flatten)]
        o: idle::Opts,
    },
    /// 3 liveroom replicas + a private redis-server
    Cluster {
        #[command(flatten)]
        o: cluster::Opts,
    },
    /// cost curves (room size, rooms, idle memory, RPC rate) against the raw limit and the
    /// peers, with SVG charts
    Curves {
        #[command(flatten)]
        o: curves::Opts,
    },
    /// the cluster run on Redis Clusters of several sizes (rooms spread over the shards)
    Shards {
        #[command(flatten)]
        o: cluster::Opts,
        /// cluster sizes, in primaries
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        sizes: Vec<usize>,
    },
    /// a reconnect storm after a replica restart, with and without replay
    Storm {
        #[command(flatten)]
        o: storm::Opts,
    },
    /// everything, one markdown report
    Suite {
        #[command(flatten)]
        o: suite::Opts,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::RawServer { bind } = cli.cmd {
        ws::ensure_loopback(bind)?;
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(raw_server::run(bind));
    }
    let common = cli.common.clone();
    let mut pin = !common.no_pin && procstat::available_cpus() >= 2;
    if pin {
        if let Err(e) = procstat::pin_self(&common.gen_cpus) {
            eprintln!("not pinning ({e:#})");
            pin = false;
        }
    }
    let env = suite::Env {
        liveroom_bin: common
            .liveroom_bin
            .clone()
            .unwrap_or_else(servers::default_liveroom_bin),
        liveroom_args: common.liveroom_arg.clone(),
        sockudo_bin: servers::find_sockudo(common.sockudo_bin.as_deref()),
        server_pin: pin.then(|| common.server_cpus.clone()),
        gen_pin: pin.then(|| common.gen_cpus.clone()),
    };
    // Worker threads = the CPUs we may use (1 when pinned to one core).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(procstat::available_cpus())
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let out = match cli.cmd {
            Cmd::RawServer { .. } => unreachable!(),
            Cmd::Fanout { t, o } => {
                single(&env, &t, "fanout", |tg| async move {
                    fanout::run(&[tg], &[tg], &o).await
                })
                .await?
            }
            Cmd::Rpc { t, o } => {
                single(&env, &t, "rpc", |tg| async move { rpc::run(tg, &o).await }).await?
            }
            Cmd::Presence { t, o } => {
                single(&env, &t, "presence", |tg| async move {
                    presence::run(tg, &o).await
                })
                .await?
            }
            Cmd::Crowd { t, o } => {
                single(
                    &env,
                    &t,
                    "crowd",
                    |tg| async move { crowd::run(tg, &o).await },
                )
                .await?
            }
            Cmd::Cursors { t, o } => {
                single(&env, &t, "cursors", |tg| async move {
                    cursors::run(tg, &o).await
                })
                .await?
            }
            Cmd::Idle { t, o } => {
                single(
                    &env,
                    &t,
                    "idle",
                    |tg| async move { idle::run(tg, &o).await },
                )
                .await?
            }
            Cmd::Cluster { o } => cluster::run(&env.liveroom_bin, env.server_pin.as_deref(), &o)
                .await?
                .render("cluster"),
            Cmd::Curves { o } => {
                // Read before the run, which rewrites the charts in the tree.
                let commit = suite::commit();
                let (report, broken) = curves::run(&env, &o).await?;
                if !broken.is_empty() {
                    eprintln!("points that broke:\n  {}", broken.join("\n  "));
                }
                format!(
                    "- commit: {commit}\n- machine: {}\n\n{report}",
                    suite::machine(),
                )
            }
            Cmd::Shards { o, sizes } => {
                cluster::shards(&env.liveroom_bin, env.server_pin.as_deref(), &o, &sizes)
                    .await?
                    .render("redis cluster shards")
            }
            Cmd::Storm { o } => storm::run(&env.liveroom_bin, env.server_pin.as_deref(), &o)
                .await?
                .render("reconnect storm"),
            Cmd::Suite { o } => {
                let (report, broken) = suite::run(&env, &o).await?;
                println!("{report}");
                if !broken.is_empty() {
                    eprintln!("runs that broke:\n  {}", broken.join("\n  "));
                    if o.strict {
                        anyhow::bail!("{} run(s) broke (--strict)", broken.len());
                    }
                }
                return Ok(());
            }
        };
        println!("{out}");
        Ok(())
    })
}

/// Runs one scenario against an existing server (`--addr`) or a fresh one.
async fn single<F, Fut>(env: &suite::Env, t: &TargetArgs, name: &str, f: F) -> Result<String>
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<Metrics>>,
{
    let title = format!("{name} — {}", t.target.name());
    if let Some(addr) = t.addr {
        ws::ensure_loopback(addr)?;
        let m = f(Target {
            kind: t.target,
            addr,
            pid: t.pid,
        })
        .await?;
        return Ok(m.render(&title));
    }
    let srv = env
        .start(t.target)
        .await
        .with_context(|| format!("starting {}", t.target.name()))?;
    let res = f(srv.target).await;
    if res.is_err() {
        eprintln!("server log tail:\n{}", srv.log_tail());
    }
    Ok(res?.render(&title))
}
