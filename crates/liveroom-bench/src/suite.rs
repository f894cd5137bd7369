//! `suite`: every scenario against every server that has an equivalent, each on a fresh server
//! process pinned away from the generator, then one markdown report with ratios and targets.
//! Never fails on numbers: errors become "skipped: <reason>" cells.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::servers::{self, Kind, ServerProc, Target};
use crate::stats::{fmt_value, Metrics};
use crate::{cluster, cursors, fanout, idle, presence, rpc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// seconds per scenario, tiny counts: a CI check that everything runs (< 1 min)
    Smoke,
    /// a few hundred connections, a few seconds each
    Small,
    /// the sizes of the targets (1000 subscribers, 10,000 idle sockets, 1000 cursor users)
    Full,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    #[arg(long, value_enum, default_value_t = Size::Small)]
    pub size: Size,
    /// only these scenarios (fanout, rpc, presence, cursors, idle, cluster, curves)
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// leave Sockudo out even if it is installed
    #[arg(long)]
    pub no_sockudo: bool,
    /// also write the report to this file
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// fan-out runs per server, interleaved; the median is reported [default: 3 for full, else 1]
    #[arg(long)]
    pub repeat: Option<usize>,
    /// exit with an error when a run broke (an error or a timeout; never because of a number)
    #[arg(long)]
    pub strict: bool,
}

/// Everything needed to start servers.
#[derive(Clone, Debug)]
pub struct Env {
    pub liveroom_bin: PathBuf,
    pub liveroom_args: Vec<String>,
    pub sockudo_bin: Option<PathBuf>,
    pub server_pin: Option<String>,
    pub gen_pin: Option<String>,
}

impl Env {
    pub async fn start(&self, kind: Kind) -> Result<ServerProc> {
        let pin = self.server_pin.as_deref();
        match kind {
            Kind::Liveroom => {
                anyhow::ensure!(
                    self.liveroom_bin.exists(),
                    "{} not built (cargo build --release -p liveroom-testserver)",
                    self.liveroom_bin.display()
                );
                servers::spawn_liveroom(&self.liveroom_bin, &self.liveroom_args, pin).await
            }
            Kind::Raw => servers::spawn_raw(pin).await,
            Kind::Sockudo => match &self.sockudo_bin {
                Some(b) => servers::spawn_sockudo(b, pin).await,
                None => anyhow::bail!("sockudo not installed"),
            },
            Kind::SocketIo => servers::spawn_socketio(pin).await,
        }
    }
}

/// Starts a fresh `kind` server, runs `f` against it with a deadline, stops the server.
pub async fn against<F, Fut>(env: &Env, kind: Kind, limit: Duration, f: F) -> Metrics
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<Metrics>>,
{
    let srv = match env.start(kind).await {
        Ok(s) => s,
        Err(e) => return Metrics::skipped(format!("{e:#}")),
    };
    let res = tokio::time::timeout(limit, f(srv.target)).await;
    let m = match res {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            let tail = srv.log_tail();
            let mut s = format!("error: {e:#}");
            if !tail.is_empty() {
                s.push_str(&format!(" (server log: {})", tail.replace('\n', " / ")));
            }
            Metrics::failed(s)
        }
        Err(_) => Metrics::failed(format!("did not finish within {limit:?}")),
    };
    drop(srv);
    // Let the kernel reclaim the sockets before the next run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    m
}

struct Presets {
    fanout: fanout::Opts,
    rpc: rpc::Opts,
    presence: presence::Opts,
    cursors: cursors::Opts,
    cursors_mesh: cursors::Opts,
    idle: idle::Opts,
    cluster: cluster::Opts,
    limit: Duration,
}

fn presets(size: Size) -> Presets {
    let (f, r, p, c, cm, i, cl, limit) = match size {
        // (subs,pubs,dur,warm) (conc,rate,dur) (obs,rate,dur,hold,leave_wait)
        // (users,obs,dur) (mesh users) (conns) (subs,joins,ghosts,ghost_timeout)
        Size::Smoke => (
            (20, 2, 0.5, 0.2),
            (4, 200, 0.5),
            (3, 20, 0.5, 0.2, 0.3),
            (20, 2, 0.5),
            10,
            200,
            (20, 3, 3, 12.0),
            40,
        ),
        Size::Small => (
            (200, 4, 3.0, 1.0),
            (16, 1000, 3.0),
            (10, 50, 3.0, 0.5, 7.0),
            (200, 5, 3.0),
            30,
            2000,
            (100, 10, 10, 20.0),
            120,
        ),
        Size::Full => (
            (1000, 4, 10.0, 2.0),
            (32, 5000, 10.0),
            (20, 100, 10.0, 1.0, 8.0),
            (1000, 5, 10.0),
            50,
            10_000,
            (300, 20, 20, 30.0),
            600,
        ),
    };
    let warm = f.3;
    Presets {
        fanout: fanout::Opts {
            subs: f.0,
            pubs: f.1,
            duration: f.2,
            warmup: f.3,
            window: 64,
            via: fanout::Via::Action,
            sources: 1,
            rooms: 1,
            watch: Vec::new(),
            watch_servers: Vec::new(),
        },
        rpc: rpc::Opts {
            concurrency: r.0,
            rate: r.1,
            rate_conns: 10,
            duration: r.2,
            warmup: warm.min(0.5),
        },
        presence: presence::Opts {
            observers: p.0,
            rate: p.1,
            duration: p.2,
            hold: p.3,
            leave_wait: p.4,
        },
        cursors: cursors::Opts {
            users: c.0,
            hz: 20.0,
            observers: c.1,
            mesh: false,
            duration: c.2,
            warmup: warm,
        },
        cursors_mesh: cursors::Opts {
            users: cm,
            hz: 20.0,
            observers: 2,
            mesh: true,
            duration: c.2,
            warmup: warm,
        },
        idle: idle::Opts {
            conns: i,
            batch: 256,
            sources: 4,
            settle: if size == Size::Smoke { 0.5 } else { 3.0 },
            subscribed: false,
        },
        cluster: cluster::Opts {
            subs: cl.0,
            pubs: 2,
            duration: f.2.min(5.0),
            window: 64,
            joins: cl.1,
            ghosts: cl.2,
            ghost_timeout: cl.3,
            replica_arg: Vec::new(),
            shards: 0,
            rooms: 1,
        },
        limit: Duration::from_secs(limit),
    }
}

/// The curves at a suite size: the full points at `full` (charts into docs/bench), a few small
/// ones otherwise (charts into target/bench-charts, so a smoke run never overwrites the
/// published charts).
fn curve_presets(size: Size) -> crate::curves::Opts {
    let scratch = PathBuf::from("target/bench-charts");
    let (sizes, rooms, conns, rates, duration, out_dir) = match size {
        Size::Smoke => (
            vec![10, 100],
            vec![1, 10],
            vec![100, 500],
            vec![200, 1000],
            0.5,
            scratch,
        ),
        Size::Small => (
            vec![10, 100, 1000],
            vec![1, 10, 100],
            vec![1000, 5000],
            vec![1000, 5000],
            2.0,
            scratch,
        ),
        Size::Full => (
            vec![10, 100, 1000, 10_000],
            vec![1, 10, 100, 1000],
            vec![1000, 10_000, 19_000, 40_000],
            vec![1000, 5000, 10_000],
            4.0,
            PathBuf::from("docs/bench"),
        ),
    };
    crate::curves::Opts {
        only: vec![
            crate::curves::Curve::Size,
            crate::curves::Curve::Rooms,
            crate::curves::Curve::Idle,
            crate::curves::Curve::Rpc,
        ],
        sizes,
        rooms,
        conns,
        rates,
        pubs: 4,
        duration,
        repeat: if size == Size::Full { 3 } else { 1 },
        no_peers: false,
        out_dir,
    }
}

/// One scenario's results: (server, metrics) in column order.
struct Section {
    title: String,
    cols: Vec<(Kind, Metrics)>,
}

/// The report, and the runs that broke ("scenario / server: reason").
pub async fn run(env: &Env, o: &Opts) -> Result<(String, Vec<String>)> {
    let p = presets(o.size);
    let want = |s: &str| o.only.is_empty() || o.only.iter().any(|x| x == s);
    let mut env = env.clone();
    if o.no_sockudo {
        env.sockudo_bin = None;
    }
    let started = std::time::Instant::now();
    // Read before the run: the full size rewrites the charts in the tree.
    let commit = commit();
    let mut sections: Vec<Section> = Vec::new();
    let lim = p.limit;

    if want("fanout") {
        eprintln!("== fanout (at {:.0} s)", started.elapsed().as_secs_f64());
        let repeat = o
            .repeat
            .unwrap_or(if o.size == Size::Full { 3 } else { 1 })
            .max(1);
        let kinds = COLUMNS;
        let mut runs: Vec<Vec<Metrics>> = vec![Vec::new(); kinds.len()];
        // Interleaved, so that a noisy moment on the machine hits every server alike.
        for _ in 0..repeat {
            for (i, k) in kinds.iter().enumerate() {
                let opts = p.fanout.clone();
                let m = against(&env, *k, lim, |t| async move {
                    fanout::run(&[t], &[t], &opts).await
                })
                .await;
                runs[i].push(m);
            }
        }
        let cols = kinds
            .iter()
            .zip(runs)
            .map(|(k, r)| (*k, median_run(r, "delivered_per_s")))
            .collect();
        sections.push(Section {
            title: format!(
                "fanout: {} subscribers in one room, {} publishers",
                p.fanout.subs, p.fanout.pubs
            ),
            cols,
        });
    }
    if want("rpc") {
        eprintln!("== rpc (at {:.0} s)", started.elapsed().as_secs_f64());
        let mut cols = Vec::new();
        for k in [Kind::Liveroom, Kind::Raw, Kind::SocketIo] {
            let opts = p.rpc.clone();
            let m = against(&env, k, lim, |t| async move { rpc::run(t, &opts).await }).await;
            cols.push((k, m));
        }
        cols.push((
            Kind::Sockudo,
            Metrics::skipped("no RPC in the Pusher protocol"),
        ));
        sections.push(Section {
            title: format!(
                "rpc: test/echo round trips (closed loop C={}, then {} calls/s)",
                p.rpc.concurrency, p.rpc.rate
            ),
            cols,
        });
    }
    if want("presence") {
        eprintln!("== presence (at {:.0} s)", started.elapsed().as_secs_f64());
        let mut cols = Vec::new();
        for k in [Kind::Liveroom, Kind::Sockudo] {
            let opts = p.presence.clone();
            let m = against(
                &env,
                k,
                lim,
                |t| async move { presence::run(t, &opts).await },
            )
            .await;
            cols.push((k, m));
        }
        cols.insert(1, (Kind::Raw, Metrics::skipped("no presence")));
        sections.push(Section {
            title: format!(
                "presence: {} joins/s (fresh identities), {} observers",
                p.presence.rate, p.presence.observers
            ),
            cols,
        });
    }
    if want("cursors") {
        eprintln!("== cursors (at {:.0} s)", started.elapsed().as_secs_f64());
        let opts = p.cursors.clone();
        let m = against(&env, Kind::Liveroom, lim, |t| async move {
            cursors::run(t, &opts).await
        })
        .await;
        sections.push(Section {
            title: format!(
                "cursors (stress): {} users at 20 Hz, {} observers",
                p.cursors.users, p.cursors.observers
            ),
            cols: vec![
                (Kind::Liveroom, m),
                (Kind::Raw, Metrics::skipped("no cursors")),
                (
                    Kind::Sockudo,
                    Metrics::skipped("client events are a full mesh: see the mesh run"),
                ),
            ],
        });
        let mut cols = Vec::new();
        for k in [Kind::Liveroom, Kind::Sockudo] {
            let opts = p.cursors_mesh.clone();
            let m = against(
                &env,
                k,
                lim,
                |t| async move { cursors::run(t, &opts).await },
            )
            .await;
            cols.push((k, m));
        }
        cols.insert(1, (Kind::Raw, Metrics::skipped("no cursors")));
        sections.push(Section {
            title: format!(
                "cursors (mesh): {} users at 20 Hz, every user sees every cursor",
                p.cursors_mesh.users
            ),
            cols,
        });
    }
    if want("idle") {
        eprintln!("== idle (at {:.0} s)", started.elapsed().as_secs_f64());
        let mut cols = Vec::new();
        for k in COLUMNS {
            let opts = p.idle.clone();
            let m = against(&env, k, lim, |t| async move { idle::run(t, &opts).await }).await;
            cols.push((k, m));
        }
        sections.push(Section {
            title: format!("idle: {} connections", p.idle.conns),
            cols,
        });
    }
    if want("cluster") {
        eprintln!("== cluster (at {:.0} s)", started.elapsed().as_secs_f64());
        let opts = p.cluster.clone();
        let bin = env.liveroom_bin.clone();
        let pin = env.server_pin.clone();
        let m = match tokio::time::timeout(lim, cluster::run(&bin, pin.as_deref(), &opts)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => Metrics::failed(format!("error: {e:#}")),
            Err(_) => Metrics::failed("did not finish in time"),
        };
        sections.push(Section {
            title: "cluster: 3 replicas + redis".into(),
            cols: vec![
                (Kind::Liveroom, m),
                (Kind::Raw, Metrics::skipped("n/a")),
                (
                    Kind::Sockudo,
                    Metrics::skipped("not configured (local adapter)"),
                ),
            ],
        });
    }

    let mut curves = String::new();
    let mut curves_broken = Vec::new();
    if want("curves") {
        eprintln!("== curves (at {:.0} s)", started.elapsed().as_secs_f64());
        match crate::curves::run(&env, &curve_presets(o.size)).await {
            Ok((report, broken)) => (curves, curves_broken) = (report, broken),
            Err(e) => {
                curves = format!("curves: **failed**: {e:#}\n");
                curves_broken.push(format!("curves: {e:#}"));
            }
        }
    }

    let mut report = render(&env, o.size, &sections, started.elapsed(), &commit);
    if !curves.is_empty() {
        report.push_str("\n## Curves\n\n");
        report.push_str(&curves);
    }
    if let Some(path) = &o.out {
        std::fs::write(path, &report)?;
    }
    let broken = curves_broken
        .into_iter()
        .chain(sections.iter().flat_map(|s| {
            s.cols.iter().filter(|(_, m)| m.failed).map(move |(k, m)| {
                format!(
                    "{} / {}: {}",
                    s.title,
                    k.name(),
                    m.skipped.as_deref().unwrap_or("")
                )
            })
        }))
        .collect();
    Ok((report, broken))
}

/// The run whose `key` is the median (skipped runs last); notes every run's value when several.
pub fn median_run(mut runs: Vec<Metrics>, key: &str) -> Metrics {
    if runs.len() == 1 {
        return runs.pop().unwrap_or_default();
    }
    let all: Vec<String> = runs
        .iter()
        .map(|m| {
            m.get(key)
                .map(|v| fmt_value(Some(v), ""))
                .unwrap_or("-".into())
        })
        .collect();
    let ok = runs.iter().filter(|m| m.get(key).is_some()).count();
    runs.sort_by(|a, b| {
        let (a, b) = (a.get(key), b.get(key));
        match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    let n = runs.len();
    let mut m = runs.swap_remove(if ok > 0 { (ok - 1) / 2 } else { 0 });
    m.note(format!(
        "median of {n} interleaved runs; {key}: {}",
        all.join(", ")
    ));
    m
}

/// The checked-out commit, and whether the working tree differs from it.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("`{head}`{}", if dirty { " with local changes" } else { "" })
        }
        None => "unknown (not a git checkout)".into(),
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {mem}, Linux {}", kernel.trim())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => String::new(),
    }
}

/// The report's columns, in order.
const COLUMNS: [Kind; 4] = [Kind::Liveroom, Kind::Raw, Kind::Sockudo, Kind::SocketIo];

fn render(env: &Env, size: Size, sections: &[Section], took: Duration, commit: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## liveroom benchmark — size `{}`\n\n",
        format!("{size:?}").to_lowercase()
    ));
    s.push_str(&format!("- machine: {}\n", machine()));
    s.push_str(&format!(
        "- pinning: servers on CPU {}, generator on CPU {}\n",
        env.server_pin.as_deref().unwrap_or("any"),
        env.gen_pin.as_deref().unwrap_or("any")
    ));
    s.push_str(&format!("- commit: {commit}\n"));
    s.push_str(&format!(
        "- servers: liveroom `{}`, raw limit `liveroom-bench raw-server`, Sockudo {}, Socket.IO {}\n",
        env.liveroom_bin.display(),
        env.sockudo_bin
            .as_ref()
            .map(|p| format!("`{}`", p.display()))
            .unwrap_or_else(|| "not installed (skipped)".into()),
        servers::socketio_version()
            .map(|v| format!("{v} on Node {}", servers::node_version().unwrap_or_default()))
            .unwrap_or_else(|| "not installed (skipped)".into())
    ));
    s.push_str(&format!("- suite took {:.0} s\n", took.as_secs_f64()));
    if size == Size::Smoke {
        s.push_str("- **smoke size: checks that everything runs; the numbers mean nothing**\n");
    }
    s.push('\n');

    for sec in sections {
        s.push_str(&format!("### {}\n\n", sec.title));
        let col = |kind: Kind| sec.cols.iter().find(|(k, _)| *k == kind).map(|c| &c.1);
        let others: Vec<Kind> = COLUMNS[1..].to_vec();
        let has = |m: Option<&Metrics>| m.is_some_and(|m| m.skipped.is_none());
        s.push_str("| figure |");
        for k in COLUMNS {
            s.push_str(&format!(" {} |", k.name()));
        }
        for k in &others {
            s.push_str(&format!(" liveroom / {} |", k.name()));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(COLUMNS.len() + others.len()));
        s.push('\n');
        // Row keys in order of first appearance over the columns.
        let mut keys: Vec<(String, String, &'static str)> = Vec::new();
        for (_, m) in &sec.cols {
            for it in &m.items {
                if !keys.iter().any(|(k, _, _)| *k == it.key) {
                    keys.push((it.key.clone(), it.label.clone(), it.unit));
                }
            }
        }
        let cell = |m: Option<&Metrics>, key: &str, unit: &str| -> String {
            match m {
                Some(m) if m.skipped.is_none() => m
                    .items
                    .iter()
                    .find(|i| i.key == key)
                    .map(|i| fmt_value(i.value, unit))
                    .unwrap_or_default(),
                _ => String::new(),
            }
        };
        let lr = col(Kind::Liveroom);
        for (key, label, unit) in &keys {
            let v = |m: Option<&Metrics>| m.and_then(|m| m.get(key));
            // Ratios of noise or of the generator's own CPU say nothing about the servers.
            let has = |m: Option<&Metrics>| has(m) && !key.contains("other_cpu");
            s.push_str(&format!("| {label} |"));
            for k in COLUMNS {
                s.push_str(&format!(" {} |", cell(col(k), key, unit)));
            }
            for k in &others {
                let r = if has(lr) && has(col(*k)) {
                    ratio(v(lr), v(col(*k)))
                } else {
                    String::new()
                };
                s.push_str(&format!(" {r} |"));
            }
            s.push('\n');
        }
        for (k, m) in &sec.cols {
            if let Some(r) = &m.skipped {
                let what = if m.failed { "**failed**" } else { "skipped" };
                s.push_str(&format!("\n- {}: {what}: {}", k.name(), r));
            }
            for n in &m.notes {
                s.push_str(&format!("\n- {}: {}", k.name(), n));
            }
        }
        s.push_str("\n\n");
    }
    s.push_str(&targets(size, sections));
    s
}

fn find<'a>(sections: &'a [Section], prefix: &str, kind: Kind) -> Option<&'a Metrics> {
    sections
        .iter()
        .find(|s| s.title.starts_with(prefix))
        .and_then(|s| s.cols.iter().find(|(k, _)| *k == kind))
        .map(|(_, m)| m)
        .filter(|m| m.skipped.is_none())
}

fn targets(size: Size, sections: &[Section]) -> String {
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
    let get = |p: &str, k: Kind, key: &str| find(sections, p, k).and_then(|m| m.get(key));
    let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let per_core = |k: Kind| get("fanout", k, "delivered_per_core_s");
    let x = r(per_core(Kind::Liveroom), per_core(Kind::Raw));
    rows.push((
        "fan-out ≥ 0.9× the raw limit in delivered events per server-core-second".into(),
        x.map(|v| format!("{v:.2}×")).unwrap_or("n/a".into()),
        x.map(|v| v >= 0.9),
    ));
    for peer in [Kind::Sockudo, Kind::SocketIo] {
        let x = r(per_core(Kind::Liveroom), per_core(peer));
        rows.push((
            format!("fan-out ≥ 10× {} per server-core-second", peer.name()),
            x.map(|v| format!("{v:.1}×")).unwrap_or("n/a".into()),
            x.map(|v| v >= 10.0),
        ));
    }
    let x = get("idle", Kind::Liveroom, "rss_per_conn_kib");
    rows.push((
        "idle ≤ 5 KiB server RSS per connection".into(),
        x.map(|v| format!("{v:.1} KiB")).unwrap_or("n/a".into()),
        x.map(|v| v <= 5.0),
    ));
    let x = get("rpc", Kind::Liveroom, "rate_p99");
    let rate = find(sections, "rpc", Kind::Liveroom).and_then(|m| m.get("rate_achieved"));
    rows.push((
        "RPC p99 < 1 ms at 5,000 calls/s".into(),
        match (x, rate) {
            (Some(p), Some(r)) => format!("{p:.2} ms at {r:.0} calls/s"),
            _ => "n/a".into(),
        },
        x.map(|v| v < 1.0),
    ));
    let cpu = get("cursors (stress)", Kind::Liveroom, "server_cpu");
    rows.push((
        "cursors: 1,000 users at 20 Hz, server under one core".into(),
        cpu.map(|v| format!("{v:.0} % of a core"))
            .unwrap_or("n/a".into()),
        cpu.map(|v| v < 100.0),
    ));
    let p99 = get("cursors (stress)", Kind::Liveroom, "obs_latency_p99");
    let conv = get("cursors (stress)", Kind::Liveroom, "final_converge_ms");
    // A room sends an observer at most 150 positions per 50 ms tick (docs/protocol.md,
    // cursors), so the last of 1,000 users' positions can take ceil(1000 / 150) ticks to come.
    let users = presets(size).cursors.users as f64;
    let budget_ms = (users / 150.0).ceil() * 50.0 + 100.0;
    rows.push((
        format!(
            "cursors: moves reach observers within 100 ms (p99); final positions within the \
             budget's {budget_ms:.0} ms"
        ),
        match (p99, conv) {
            (Some(p), Some(c)) => format!("p99 {p:.1} ms, final positions after {c:.0} ms"),
            (Some(p), None) => format!("p99 {p:.1} ms, final positions not reached"),
            _ => "n/a".into(),
        },
        p99.map(|p| p <= 100.0 && conv.is_some_and(|c| c <= budget_ms)),
    ));
    let x = get("cluster", Kind::Liveroom, "ghost_lifetime_ms");
    let cl_skipped = sections
        .iter()
        .find(|s| s.title.starts_with("cluster"))
        .and_then(|s| s.cols.first())
        .and_then(|(_, m)| m.skipped.clone());
    rows.push((
        "cluster ghost lifetime ≤ 5 s".into(),
        x.map(|v| format!("{:.2} s", v / 1000.0))
            .or(cl_skipped.map(|r| format!("skipped: {r}")))
            .unwrap_or("n/a".into()),
        x.map(|v| v <= 5000.0),
    ));
    let mut s = String::from("### targets\n\n");
    if size != Size::Full {
        s.push_str(
            "_Targets are stated for the `full` sizes; at this size they are indicative only._\n\n",
        );
    }
    s.push_str("| target | measured | |\n|---|---|---|\n");
    for (t, v, ok) in rows {
        let mark = match ok {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        s.push_str(&format!("| {t} | {v} | {mark} |\n"));
    }
    s
}
