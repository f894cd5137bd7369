//! Latency histograms, counters and the metric records every scenario returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Microseconds since a process-wide monotonic epoch. Publishers stamp payloads with it and
/// receivers in the same process subtract it, so latencies need no clock synchronisation.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

const SUB_BITS: u32 = 7; // 128 sub-buckets per octave: < 0.8 % relative error
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = 2 * SUB; // values below this are exact
const OCTAVES: u64 = 40;
const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// A log-linear histogram of microsecond values with atomic counters, shared by all tasks of a
/// scenario (recording is one relaxed add).
pub struct Hist {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max: AtomicU64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Hist {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros() as u64; // >= SUB_BITS + 1
        let shift = exp - SUB_BITS as u64;
        let octave = (exp - SUB_BITS as u64 - 1).min(OCTAVES - 1);
        let mant = (v >> shift) - SUB;
        (LINEAR + octave * SUB + mant) as usize
    }

    fn value_of(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < LINEAR {
            return idx;
        }
        let octave = (idx - LINEAR) / SUB;
        let mant = (idx - LINEAR) % SUB;
        let shift = octave + 1;
        ((SUB + mant) << shift) + (1 << shift) / 2
    }

    pub fn record(&self, v: u64) {
        self.counts[Self::index(v)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Value at quantile `q` (0..=1) in microseconds; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(Self::value_of(i).min(self.max()));
            }
        }
        Some(self.max())
    }

    /// p50 / p99 / max in milliseconds, appended to `m` under `prefix`.
    pub fn push_latency(&self, m: &mut Metrics, key: &str, label: &str) {
        let ms = |v: Option<u64>| v.map(|v| v as f64 / 1000.0);
        m.push(
            format!("{key}_p50"),
            format!("{label} p50"),
            ms(self.quantile(0.50)),
            "ms",
        );
        m.push(
            format!("{key}_p99"),
            format!("{label} p99"),
            ms(self.quantile(0.99)),
            "ms",
        );
        let max = if self.count() == 0 {
            None
        } else {
            Some(self.max())
        };
        m.push(format!("{key}_max"), format!("{label} max"), ms(max), "ms");
    }
}

/// One reported figure.
#[derive(Clone, Debug)]
pub struct Metric {
    pub key: String,
    pub label: String,
    pub value: Option<f64>,
    pub unit: &'static str,
}

/// The ordered figures of one scenario run against one server, plus free-text notes.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub items: Vec<Metric>,
    pub notes: Vec<String>,
    /// Set when the run could not happen; the reason is shown instead of numbers.
    pub skipped: Option<String>,
    /// The run was attempted and broke (an error or a timeout, not a missing tool).
    pub failed: bool,
}

impl Metrics {
    pub fn skipped(reason: impl Into<String>) -> Self {
        Metrics {
            skipped: Some(reason.into()),
            ..Default::default()
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Metrics {
            skipped: Some(reason.into()),
            failed: true,
            ..Default::default()
        }
    }

    pub fn push(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: Option<f64>,
        unit: &'static str,
    ) {
        self.items.push(Metric {
            key: key.into(),
            label: label.into(),
            value,
            unit,
        });
    }

    pub fn set(&mut self, key: &str, label: &str, value: f64, unit: &'static str) {
        self.push(key, label, Some(value), unit);
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.items
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.value)
    }

    /// Plain listing for single-scenario commands.
    pub fn render(&self, title: &str) -> String {
        let mut s = format!("### {title}\n\n");
        if let Some(r) = &self.skipped {
            s.push_str(&format!("skipped: {r}\n"));
            return s;
        }
        s.push_str("| figure | value |\n|---|---:|\n");
        for m in &self.items {
            s.push_str(&format!(
                "| {} | {} |\n",
                m.label,
                fmt_value(m.value, m.unit)
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("\n- {n}"));
        }
        s.push('\n');
        s
    }
}

/// Human formatting of a value with its unit.
pub fn fmt_value(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "n/a".into();
    };
    let num = if v.abs() >= 1_000_000.0 {
        format!("{:.2} M", v / 1_000_000.0)
    } else if v.abs() >= 10_000.0 {
        format!("{:.1} k", v / 1000.0)
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if unit.is_empty() {
        num
    } else {
        format!("{num} {unit}")
    }
}

/// Atomic counter helper.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.01, "{p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.01, "{p99}");
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.quantile(1.0), Some(100_000));
    }

    #[test]
    fn small_values_exact_and_huge_values_clamped() {
        let h = Hist::new();
        h.record(3);
        assert_eq!(h.quantile(0.5), Some(3));
        let h = Hist::new();
        h.record(u64::MAX / 2);
        assert!(h.quantile(0.5).is_some());
    }
}
