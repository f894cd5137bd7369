//! `curves`: fan-out as the room grows (10 to 10,000 subscribers), liveroom against the raw
//! limit in the same run, each point on a fresh server, the servers interleaved per size. Prints
//! a markdown table with the ratios and writes one SVG chart per figure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::chart::{short, Chart, Series};
use crate::fanout;
use crate::servers::Kind;
use crate::stats::Metrics;
use crate::suite::{against, Env};

#[derive(clap::Args, Clone, Debug)]
pub struct Opts {
    /// room sizes (subscribers)
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub sizes: Vec<usize>,
    /// publishers (closed loop)
    #[arg(long, default_value_t = 4)]
    pub pubs: usize,
    /// measuring window per point, seconds
    #[arg(long, default_value_t = 4.0)]
    pub duration: f64,
    /// where the SVG charts go
    #[arg(long, default_value = "docs/bench")]
    pub out_dir: PathBuf,
}

/// The figures of one curve: key in the fan-out metrics, title, axis label.
const FIGURES: [(&str, &str, &str); 3] = [
    (
        "delivered_per_s",
        "Fan-out: delivered events/s by room size",
        "delivered events/s",
    ),
    (
        "delivered_per_core_s",
        "Fan-out: delivered events per server-core-second",
        "events per core-second",
    ),
    (
        "latency_p99",
        "Fan-out: publish→receive p99 (64 in flight)",
        "p99 (ms)",
    ),
];

const SERVERS: [Kind; 2] = [Kind::Liveroom, Kind::Raw];

pub async fn run(env: &Env, o: &Opts) -> Result<String> {
    // results[server][size]
    let mut results: Vec<Vec<Metrics>> = vec![Vec::new(); SERVERS.len()];
    for &size in &o.sizes {
        for (i, kind) in SERVERS.iter().enumerate() {
            eprintln!("== curves: {} subscribers, {}", size, kind.name());
            let fo = fanout::Opts {
                subs: size,
                pubs: o.pubs,
                duration: o.duration,
                warmup: 1.0,
                window: 64,
                via: fanout::Via::Action,
                sources: size.div_ceil(10_000).max(1) * 2,
                rooms: 1,
                watch: Vec::new(),
                watch_servers: Vec::new(),
            };
            let limit = Duration::from_secs_f64(60.0 + o.duration * 4.0);
            let m = against(env, *kind, limit, |t| async move {
                fanout::run(&[t], &[t], &fo).await
            })
            .await;
            results[i].push(m);
        }
    }
    std::fs::create_dir_all(&o.out_dir)
        .with_context(|| format!("creating {}", o.out_dir.display()))?;
    let mut report = String::from("### curves: fan-out by room size\n\n");
    for (key, title, y_label) in FIGURES {
        let value = |m: &Metrics| m.get(key);
        let series = SERVERS
            .iter()
            .zip(&results)
            .map(|(kind, ms)| Series {
                name: kind.name().to_string(),
                points: o
                    .sizes
                    .iter()
                    .map(|s| *s as f64)
                    .zip(ms.iter().map(value))
                    .collect(),
            })
            .collect();
        let chart = Chart {
            title: title.to_string(),
            x_label: "subscribers in the room".into(),
            y_label: y_label.to_string(),
            series,
        };
        let file = o
            .out_dir
            .join(format!("fanout-{}.svg", key.replace('_', "-")));
        std::fs::write(&file, chart.svg())
            .with_context(|| format!("writing {}", file.display()))?;
        report.push_str(&format!(
            "{title} ({})\n\n| subscribers | liveroom | raw limit | liveroom / raw |\n|---:|---:|---:|---:|\n",
            file.display()
        ));
        for (j, size) in o.sizes.iter().enumerate() {
            let (a, b) = (value(&results[0][j]), value(&results[1][j]));
            let cell = |v: Option<f64>| v.map(short).unwrap_or_else(|| "n/a".into());
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "n/a".into(),
            };
            report.push_str(&format!(
                "| {size} | {} | {} | {ratio} |\n",
                cell(a),
                cell(b)
            ));
        }
        report.push('\n');
    }
    for (kind, ms) in SERVERS.iter().zip(&results) {
        for (size, m) in o.sizes.iter().zip(ms) {
            if let Some(reason) = &m.skipped {
                report.push_str(&format!("- {} at {size}: {reason}\n", kind.name()));
            }
        }
    }
    Ok(report)
}
