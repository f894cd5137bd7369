//! `curves`: how cost grows, liveroom against the raw limit and the peers (Sockudo, Socket.IO)
//! in the same run. Four curves:
//! - `size`: fan-out in one room of 10 to 10,000 subscribers;
//! - `rooms`: fan-out in 1 to 1,000 rooms of 10 (each publication goes to one room, in turn);
//! - `idle`: server RSS per idle connection at 1k to 40k connections;
//! - `rpc`: round-trip p99 at a fixed 1k to 10k calls/s.
//!
//! Every point gets a fresh server pinned away from the generator, and the servers alternate
//! per point, so a noisy moment hits them alike. Prints markdown tables with ratios next to the
//! absolute figures and writes one SVG chart per figure.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::chart::{short, Chart, Series};
use crate::servers::{self, Kind, Target};
use crate::stats::Metrics;
use crate::suite::{against, median_run, Env};
use crate::{fanout, idle, rpc};

/// One of the curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Curve {
    Size,
    Rooms,
    Idle,
    Rpc,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// the curves to run
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "size,rooms,idle,rpc"
    )]
    pub only: Vec<Curve>,
    /// `size`: room sizes (subscribers)
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub sizes: Vec<usize>,
    /// `rooms`: numbers of rooms of 10 subscribers
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub rooms: Vec<usize>,
    /// `idle`: numbers of idle connections (a point above the open-files limit is reported as
    /// not measurable)
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,19000,40000")]
    pub conns: Vec<usize>,
    /// `rpc`: fixed call rates, per second
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub rates: Vec<u64>,
    /// publishers (closed loop) of the fan-out curves
    #[arg(long, default_value_t = 4)]
    pub pubs: usize,
    /// measuring window per point, seconds
    #[arg(long, default_value_t = 4.0)]
    pub duration: f64,
    /// runs per point and server (interleaved); the median is kept
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// leave the peers (Sockudo, Socket.IO) out
    #[arg(long)]
    pub no_peers: bool,
    /// where the SVG charts go
    #[arg(long, default_value = "docs/bench")]
    pub out_dir: PathBuf,
}

/// A figure of a curve: key in the metrics, title, y-axis label, log-scale y.
type Figure = (&'static str, &'static str, &'static str, bool);

/// The servers of a curve: liveroom, the raw limit, and the peers that have the feature and are
/// installed here (the report says why one is missing).
fn servers(env: &Env, o: &Opts, curve: Curve, notes: &mut Vec<String>) -> Vec<Kind> {
    let mut kinds = vec![Kind::Liveroom, Kind::Raw];
    if o.no_peers {
        return kinds;
    }
    match (&env.sockudo_bin, curve) {
        // The Pusher protocol has no RPC.
        (_, Curve::Rpc) => {}
        (Some(_), _) => kinds.push(Kind::Sockudo),
        (None, _) => notes.push("Sockudo: not installed".into()),
    }
    match servers::socketio_missing() {
        None => kinds.push(Kind::SocketIo),
        Some(why) => notes.push(format!("Socket.IO: {why}")),
    }
    kinds
}

/// The most sockets one process may hold (`RLIMIT_NOFILE`), from /proc/self/limits.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How a curve's points are run: the servers, how often, and which figure picks the median.
struct Plan<'a> {
    name: &'a str,
    kinds: &'a [Kind],
    repeat: usize,
    median_of: &'a str,
    limit: Duration,
}

/// Runs `point(kind, x)` for every x and server, `repeat` times, the servers alternating within
/// each round; keeps the median run by `median_of`. Returns results[server][x].
async fn measure<X, F, Fut>(env: &Env, plan: &Plan<'_>, xs: &[X], point: F) -> Vec<Vec<Metrics>>
where
    X: Copy + std::fmt::Display,
    F: Fn(Target, X) -> Fut,
    Fut: Future<Output = Result<Metrics>>,
{
    let mut results: Vec<Vec<Metrics>> = vec![Vec::new(); plan.kinds.len()];
    for &x in xs {
        let mut runs: Vec<Vec<Metrics>> = vec![Vec::new(); plan.kinds.len()];
        for round in 0..plan.repeat.max(1) {
            for (i, kind) in plan.kinds.iter().enumerate() {
                eprintln!(
                    "== curves {}: {x}, {} (run {})",
                    plan.name,
                    kind.name(),
                    round + 1
                );
                runs[i].push(against(env, *kind, plan.limit, |t| point(t, x)).await);
            }
        }
        for (i, r) in runs.into_iter().enumerate() {
            results[i].push(median_run(r, plan.median_of));
        }
    }
    results
}

/// Writes one chart per figure and returns the markdown: per figure a table of the absolute
/// figures and of liveroom's ratio to each other server.
#[allow(clippy::too_many_arguments)]
fn report(
    o: &Opts,
    broken: &mut Vec<String>,
    file_stem: &str,
    x_label: &str,
    xs: &[f64],
    kinds: &[Kind],
    results: &[Vec<Metrics>],
    figures: &[Figure],
) -> Result<String> {
    let mut out = String::new();
    for &(key, title, y_label, log_y) in figures {
        let value = |m: &Metrics| m.get(key);
        let series = kinds
            .iter()
            .zip(results)
            .map(|(kind, ms)| Series {
                name: kind.name().to_string(),
                points: xs.iter().copied().zip(ms.iter().map(value)).collect(),
            })
            .collect();
        let chart = Chart {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            series,
            log_y,
        };
        let file = o
            .out_dir
            .join(format!("{file_stem}-{}.svg", key.replace('_', "-")));
        std::fs::write(&file, chart.svg())
            .with_context(|| format!("writing {}", file.display()))?;
        out.push_str(&format!("{title} ({})\n\n| {x_label} |", file.display()));
        for k in kinds {
            out.push_str(&format!(" {} |", k.name()));
        }
        for k in &kinds[1..] {
            out.push_str(&format!(" liveroom / {} |", k.name()));
        }
        out.push_str("\n|---:|");
        out.push_str(&"---:|".repeat(kinds.len() * 2 - 1));
        out.push('\n');
        for (j, x) in xs.iter().enumerate() {
            let lr = value(&results[0][j]);
            out.push_str(&format!("| {} |", short(*x)));
            for ms in results {
                let v = value(&ms[j]).map(short).unwrap_or_else(|| "n/a".into());
                out.push_str(&format!(" {v} |"));
            }
            for ms in &results[1..] {
                let r = match (lr, value(&ms[j])) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "n/a".into(),
                };
                out.push_str(&format!(" {r} |"));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    for (kind, ms) in kinds.iter().zip(results) {
        for (x, m) in xs.iter().zip(ms) {
            if let Some(reason) = &m.skipped {
                out.push_str(&format!("- {} at {}: {reason}\n", kind.name(), short(*x)));
                if m.failed {
                    broken.push(format!(
                        "{file_stem} {} / {}: {reason}",
                        short(*x),
                        kind.name()
                    ));
                }
            }
        }
    }
    Ok(out)
}

const FANOUT: [Figure; 3] = [
    (
        "delivered_per_s",
        "delivered events/s",
        "delivered events/s",
        false,
    ),
    (
        "delivered_per_core_s",
        "delivered events per server-core-second",
        "events per core-second",
        false,
    ),
    (
        "latency_p99",
        "publish→receive p99, 64 publications in flight (lower is better)",
        "p99 (ms)",
        true,
    ),
];

fn fanout_opts(o: &Opts, subs: usize, rooms: usize) -> fanout::Opts {
    fanout::Opts {
        subs,
        pubs: o.pubs,
        duration: o.duration,
        warmup: 1.0,
        window: 64,
        via: fanout::Via::Action,
        sources: subs.div_ceil(10_000).max(1) * 2,
        rooms,
        watch: Vec::new(),
        watch_servers: Vec::new(),
    }
}

/// The report, and the points that broke ("curve x / server: reason"; an error or a timeout,
/// never a number).
pub async fn run(env: &Env, o: &Opts) -> Result<(String, Vec<String>)> {
    std::fs::create_dir_all(&o.out_dir)
        .with_context(|| format!("creating {}", o.out_dir.display()))?;
    let mut out = String::new();
    let mut broken = Vec::new();
    let limit = Duration::from_secs_f64(90.0 + o.duration * 4.0);
    for curve in &o.only {
        let mut notes = Vec::new();
        let kinds = servers(env, o, *curve, &mut notes);
        let plan = |name, median_of| Plan {
            name,
            kinds: &kinds,
            repeat: o.repeat,
            median_of,
            limit,
        };
        let section = match curve {
            Curve::Size => {
                let results = measure(
                    env,
                    &plan("size", "delivered_per_core_s"),
                    &o.sizes,
                    |t, size| {
                        let fo = fanout_opts(o, size, 1);
                        async move { fanout::run(&[t], &[t], &fo).await }
                    },
                )
                .await;
                let xs: Vec<f64> = o.sizes.iter().map(|s| *s as f64).collect();
                format!(
                    "### Fan-out by room size ({} publishers)\n\n{}",
                    o.pubs,
                    report(
                        o,
                        &mut broken,
                        "fanout",
                        "subscribers in the room",
                        &xs,
                        &kinds,
                        &results,
                        &FANOUT
                    )?
                )
            }
            Curve::Rooms => {
                let results = measure(
                    env,
                    &plan("rooms", "delivered_per_core_s"),
                    &o.rooms,
                    |t, rooms| {
                        let fo = fanout_opts(o, rooms * 10, rooms);
                        async move { fanout::run(&[t], &[t], &fo).await }
                    },
                )
                .await;
                let xs: Vec<f64> = o.rooms.iter().map(|s| *s as f64).collect();
                format!(
                    "### Fan-out over rooms of 10 ({} publishers, each publication to one room)\n\n{}",
                    o.pubs,
                    report(o, &mut broken, "rooms", "rooms of 10 subscribers", &xs, &kinds, &results, &FANOUT)?
                )
            }
            Curve::Idle => {
                // One server process holds every connection: above its open-files limit a
                // point cannot be measured on this machine.
                let fds = open_files_limit();
                let results = measure(
                    env,
                    &plan("idle", "rss_per_conn_kib"),
                    &o.conns,
                    |t, conns| {
                        let io = idle::Opts {
                            conns,
                            batch: 256,
                            sources: conns.div_ceil(20_000).max(1) * 4,
                            settle: 3.0,
                            subscribed: false,
                        };
                        async move {
                            match fds {
                                Some(max) if conns + 200 > max => Ok(Metrics::skipped(format!(
                                    "a process may hold {max} sockets here (RLIMIT_NOFILE, hard \
                                 limit), so {conns} cannot be opened"
                                ))),
                                _ => idle::run(t, &io).await,
                            }
                        }
                    },
                )
                .await;
                let xs: Vec<f64> = o.conns.iter().map(|s| *s as f64).collect();
                let figures: [Figure; 1] = [(
                    "rss_per_conn_kib",
                    "server RSS per idle connection (lower is better)",
                    "KiB per connection",
                    true,
                )];
                format!(
                    "### Idle memory by connections\n\n{}",
                    report(
                        o,
                        &mut broken,
                        "idle",
                        "idle connections",
                        &xs,
                        &kinds,
                        &results,
                        &figures
                    )?
                )
            }
            Curve::Rpc => {
                let results = measure(env, &plan("rpc", "rate_p99"), &o.rates, |t, rate| {
                    let ro = rpc::Opts {
                        concurrency: 0,
                        rate,
                        rate_conns: 10,
                        duration: o.duration,
                        warmup: 1.0,
                    };
                    async move { rpc::run(t, &ro).await }
                })
                .await;
                let xs: Vec<f64> = o.rates.iter().map(|s| *s as f64).collect();
                let figures: [Figure; 2] = [
                    (
                        "rate_p99",
                        "RPC round trip p99 at a fixed rate",
                        "p99 (ms)",
                        true,
                    ),
                    (
                        "rate_server_cpu",
                        "server CPU at a fixed RPC rate (lower is better)",
                        "% of a core",
                        false,
                    ),
                ];
                format!(
                    "### RPC round trips at a fixed rate (10 sockets)\n\n{}",
                    report(
                        o,
                        &mut broken,
                        "rpc",
                        "calls per second",
                        &xs,
                        &kinds,
                        &results,
                        &figures
                    )?
                )
            }
        };
        out.push_str(&section);
        for n in notes {
            out.push_str(&format!("- {n}\n"));
        }
        out.push('\n');
    }
    Ok((out, broken))
}
