//! A latency CDF as a self-contained SVG, drawn by the benches from the
//! samples of the run they report (no plotting crate: the picture is a few
//! polylines on a log-scale time axis).

use std::fmt::Write as _;

/// One curve: a label and its samples in nanoseconds (any order).
pub struct Series {
    pub label: String,
    pub samples_ns: Vec<u64>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = ["#555555", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];

/// The decades (in ms, as powers of ten) the x axis spans: from the one
/// below the smallest sample to the one above the largest.
fn decades(series: &[Series]) -> (i32, i32) {
    let all = series.iter().flat_map(|s| s.samples_ns.iter().copied());
    let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v.max(1)), hi.max(v)));
    if hi == 0 {
        return (-1, 1);
    }
    let lo_ms = lo as f64 / 1e6;
    let hi_ms = hi as f64 / 1e6;
    let first = lo_ms.log10().floor() as i32;
    let last = (hi_ms.log10().ceil() as i32).max(first + 1);
    (first, last)
}

/// Draws the empirical CDF of each series (fraction of samples ≤ t against
/// t on a log scale). Empty series are left out of the plot and the legend.
pub fn render(title: &str, series: &[Series]) -> String {
    let (first, last) = decades(series);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |ns: u64| {
        let ms = (ns.max(1) as f64 / 1e6).log10();
        LEFT + (ms - first as f64) / (last - first) as f64 * plot_w
    };
    let y_of = |frac: f64| TOP + (1.0 - frac) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid: a line at 1, 2 and 5 of every decade, labelled at the decades.
    for d in first..=last {
        for m in [1.0, 2.0, 5.0] {
            let ms = m * 10f64.powi(d);
            if d == last && m > 1.0 {
                break;
            }
            let x = x_of((ms * 1e6) as u64);
            let shade = if m == 1.0 { "#bbbbbb" } else { "#e5e5e5" };
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{shade}"/>"#,
                TOP + plot_h
            );
            if m == 1.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{} ms</text>"#,
                    TOP + plot_h + 16.0,
                    trim_ms(ms)
                );
            }
        }
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
        let y = y_of(q);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}"/>"#,
            LEFT + plot_w,
            if q == 0.5 || q == 0.99 { "#bbbbbb" } else { "#e5e5e5" }
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time from spawn (log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">fraction of samples</text>"#,
        TOP + plot_h / 2.0
    );
    let drawn = series.iter().filter(|x| !x.samples_ns.is_empty());
    for (i, ser) in drawn.enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut sorted = ser.samples_ns.clone();
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        // A step function: up at each sample to the fraction at or below it.
        let mut points = format!("{:.1},{:.1}", x_of(sorted[0]), y_of(0.0));
        for (k, v) in sorted.iter().enumerate() {
            let x = x_of(*v);
            let _ = write!(
                points,
                " {x:.1},{:.1} {x:.1},{:.1}",
                y_of(k as f64 / n),
                y_of((k + 1) as f64 / n)
            );
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{points}"/>"#
        );
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/>"#,
            LEFT + 10.0,
            LEFT + 30.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} (n = {})</text>"#,
            LEFT + 36.0,
            ly + 4.0,
            escape(&ser.label),
            sorted.len()
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn trim_ms(ms: f64) -> String {
    if ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms}") }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_spans_the_decades_around_the_samples() {
        let s = [Series {
            label: "a".into(),
            samples_ns: vec![700_000, 30_000_000],
        }];
        assert_eq!(decades(&s), (-1, 2));
    }

    #[test]
    fn every_non_empty_series_is_one_polyline_ending_at_one() {
        let s = [
            Series {
                label: "floor <x>".into(),
                samples_ns: vec![3_000_000, 1_000_000, 2_000_000],
            },
            Series {
                label: "empty".into(),
                samples_ns: vec![],
            },
        ];
        let svg = render("t", &s);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("floor &lt;x&gt; (n = 3)"));
        assert!(!svg.contains("empty"));
        // The curve ends at fraction 1 (y = TOP) at the largest sample.
        let last = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let end = last.rsplit(' ').next().unwrap().trim_end_matches("\"/>");
        let y: f64 = end.split(',').nth(1).unwrap().parse().unwrap();
        assert_eq!(y, TOP);
    }
}
