//! CPU and memory of a process from /proc (the server's and the generator's own), and CPU pinning.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result};

/// Clock ticks per second for /proc CPU times (`getconf CLK_TCK`, 100 on Linux in practice).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// One reading of a process: CPU seconds used so far (user + system) and memory.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

/// Reads /proc/<pid>/stat and /proc/<pid>/status.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        at: Instant::now(),
        cpu_secs: (utime + stime) / clk_tck(),
        rss_kib: field("VmRSS:"),
    })
}

/// CPU seconds all processes have used (user, nice, system, irq, softirq, steal) from /proc/stat.
pub fn system_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum::<f64>();
    Some(busy / clk_tck())
}

pub fn sample_self() -> Result<Sample> {
    sample(std::process::id())
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        0.0
    } else {
        (b.cpu_secs - a.cpu_secs) / wall * 100.0
    }
}

/// A pair of samples (server and generator) taken at the start of a measuring window.
pub struct Window {
    server_pid: Option<u32>,
    server: Option<Sample>,
    gen: Option<Sample>,
    system: Option<f64>,
}

impl Window {
    pub fn start(server_pid: Option<u32>) -> Self {
        Window {
            server_pid,
            server: server_pid.and_then(|p| sample(p).ok()),
            gen: sample_self().ok(),
            system: system_busy_secs(),
        }
    }

    /// Appends server CPU %, server RSS and generator CPU % for the window to `m`.
    pub fn finish(&self, m: &mut crate::stats::Metrics) {
        let end_server = self.server_pid.and_then(|p| sample(p).ok());
        let end_gen = sample_self().ok();
        let cpu = match (&self.server, &end_server) {
            (Some(a), Some(b)) => Some(cpu_percent(a, b)),
            _ => None,
        };
        m.push("server_cpu", "server CPU", cpu, "% core");
        m.push(
            "server_rss",
            "server RSS",
            end_server.map(|s| s.rss_kib as f64 / 1024.0),
            "MiB",
        );
        let gcpu = match (&self.gen, &end_gen) {
            (Some(a), Some(b)) => Some(cpu_percent(a, b)),
            _ => None,
        };
        m.push("gen_cpu", "generator CPU", gcpu, "% core");
        // Everything else that ran meanwhile (other processes on the machine): noise.
        let other = match (self.system, system_busy_secs(), &self.gen, &end_gen) {
            (Some(s0), Some(s1), Some(g0), Some(g1)) => {
                let wall = g1.at.duration_since(g0.at).as_secs_f64();
                let server = match (&self.server, &end_server) {
                    (Some(a), Some(b)) => b.cpu_secs - a.cpu_secs,
                    _ => 0.0,
                };
                let o = (s1 - s0) - server - (g1.cpu_secs - g0.cpu_secs);
                (wall > 0.0).then(|| (o / wall * 100.0).max(0.0))
            }
            _ => None,
        };
        m.push("other_cpu", "other processes' CPU (noise)", other, "% core");
    }
}

/// The summed CPU of a few processes over a window (`None` if one of them went away).
pub struct Group {
    pids: Vec<u32>,
    start: Vec<Sample>,
}

impl Group {
    pub fn start(pids: &[u32]) -> Self {
        Group {
            pids: pids.to_vec(),
            start: pids.iter().filter_map(|p| sample(*p).ok()).collect(),
        }
    }

    /// Their CPU since [`Group::start`], in % of one core; `None` for no processes.
    pub fn finish(&self) -> Option<f64> {
        let end: Vec<Sample> = self.pids.iter().filter_map(|p| sample(*p).ok()).collect();
        if self.pids.is_empty() || end.len() != self.start.len() {
            return None;
        }
        Some(
            self.start
                .iter()
                .zip(&end)
                .map(|(a, b)| cpu_percent(a, b))
                .sum(),
        )
    }
}

/// Pins the calling thread (and so every thread it creates afterwards, e.g. the tokio workers)
/// to `cpus` (a `taskset -c` list). Call before building the runtime.
pub fn pin_self(cpus: &str) -> Result<()> {
    let st = Command::new("taskset")
        .args(["-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(st.success(), "taskset -p -c {cpus} failed");
    Ok(())
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_stat() {
        let s = super::sample_self().unwrap();
        assert!(s.rss_kib > 0);
    }
}
