//! SVG line charts for the report: one per curve, a line per server, a log-scale x axis (the
//! sizes grow tenfold) and a linear y axis from zero, or a log-scale one where the servers
//! differ a hundredfold (memory per connection). Plain SVG text, no dependencies, so
//! BENCHMARKS.md can embed the files as images.

use std::fmt::Write;

/// One line: a name and its points (x, y); a missing y leaves a gap.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, Option<f64>)>,
}

/// A chart: title, axis labels, lines.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A log-scale y axis (decades) instead of a linear one from zero.
    pub log_y: bool,
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 4] = ["#2563eb", "#6b7280", "#d97706", "#059669"];

/// `v` in a short form: 1.2 M, 35 k, 0.42.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let one = |x: f64| format!("{x:.1}").trim_end_matches(".0").to_string();
    if a >= 1e6 {
        format!("{} M", one(v / 1e6))
    } else if a >= 1e4 {
        format!("{:.0} k", v / 1e3)
    } else if a >= 1e3 {
        format!("{} k", one(v / 1e3))
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|x| *x > 0.0)
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .collect();
        let (x0, x1) = (
            xs.iter().copied().fold(f64::INFINITY, f64::min).log10(),
            xs.iter().copied().fold(f64::NEG_INFINITY, f64::max).log10(),
        );
        let top = ys.iter().copied().fold(0.0, f64::max);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| {
            let span = (x1 - x0).max(1e-9);
            LEFT + (x.log10() - x0) / span * pw
        };
        // Linear: 0..y1. Log: the decades around the values.
        let (y1, d0, d1) = if self.log_y {
            let low = ys
                .iter()
                .copied()
                .filter(|y| *y > 0.0)
                .fold(f64::INFINITY, f64::min);
            let d0 = if low.is_finite() {
                low.log10().floor()
            } else {
                0.0
            };
            let d1 = top.log10().ceil().max(d0 + 1.0);
            (10f64.powf(d1), d0, d1)
        } else {
            (nice(top), 0.0, 0.0)
        };
        let log_y = self.log_y;
        let py = move |y: f64| {
            if log_y {
                TOP + ph - (y.max(1e-12).log10() - d0) / (d1 - d0) * ph
            } else {
                TOP + ph - y / y1.max(1e-9) * ph
            }
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="22" font-size="14" font-weight="bold">{}</text>"#,
            LEFT,
            esc(&self.title)
        );
        // Round steps: a top of 1 or 5 × 10^n in fifths, of 2 × 10^n in quarters; decades on
        // a log axis.
        let lead = y1 / 10f64.powf(y1.log10().floor());
        let steps = if log_y {
            (d1 - d0) as usize
        } else if (lead - 2.0).abs() < 1e-9 {
            4
        } else {
            5
        };
        for i in 0..=steps {
            let y = if log_y {
                10f64.powf(d0 + i as f64)
            } else {
                y1 * i as f64 / steps as f64
            };
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e5e7eb"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                py(y) + 4.0,
                short(y),
                py = py(y)
            );
        }
        let mut ticks: Vec<f64> = xs.clone();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for x in ticks {
            let _ = write!(
                s,
                r##"<line x1="{p:.1}" x2="{p:.1}" y1="{TOP}" y2="{}" stroke="#f3f4f6"/><text x="{p:.1}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                short(x),
                p = px(x)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 10.0,
            esc(&self.x_label)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            // A gap (a point without a value) ends one polyline and starts the next.
            for run in series.points.split(|p| p.1.is_none()) {
                let pts: Vec<String> = run
                    .iter()
                    .filter_map(|(x, y)| Some(format!("{:.1},{:.1}", px(*x), py((*y)?))))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                    pts.join(" ")
                );
                for p in &pts {
                    let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
                }
            }
            let ly = TOP + 10.0 + i as f64 * 18.0;
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
                LEFT + pw + 14.0,
                ly - 4.0,
                LEFT + pw + 32.0,
                ly,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The smallest 1, 2 or 5 × 10^n at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_line_per_series_with_gaps() {
        let c = Chart {
            title: "fan-out <room size>".into(),
            x_label: "subscribers".into(),
            y_label: "events/s".into(),
            series: vec![
                Series {
                    name: "liveroom".into(),
                    points: vec![
                        (10.0, Some(1.0e5)),
                        (100.0, Some(9.0e5)),
                        (1000.0, Some(1.5e6)),
                    ],
                },
                Series {
                    name: "raw".into(),
                    points: vec![(10.0, Some(2.0e5)), (100.0, None), (1000.0, Some(1.6e6))],
                },
            ],
            log_y: false,
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            3,
            "the gap splits raw's line"
        );
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("fan-out &lt;room size&gt;"));
        assert!(svg.contains(">2 M<"), "y axis up to a nice 2 M");
        assert_eq!(nice(1.6e6), 2.0e6);
        assert_eq!(nice(0.42), 0.5);
        assert_eq!(short(35_000.0), "35 k");
    }

    #[test]
    fn a_log_axis_spans_the_decades_around_the_values() {
        let c = Chart {
            title: "memory".into(),
            x_label: "connections".into(),
            y_label: "KiB".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(3.0, Some(4.2)), (7.0, Some(150.0))],
            }],
            log_y: true,
        };
        let svg = c.svg();
        for tick in [">1<", ">10<", ">100<", ">1 k<"] {
            assert!(svg.contains(tick), "tick {tick}");
        }
        assert!(!svg.contains(">10 k<"));
    }
}
