//! Charts as SVG text (plotters' SVG backend, no fonts loaded: the viewer lays out the text):
//! latency percentile curves on a log percentile axis (HdrHistogram style, p50 … p99.99),
//! throughput against concurrency, cold-start distributions (empirical CDF) and CPU per invoke
//! as stacked bars. The data preparation (`percentile_points`, `ecdf_steps`, ranges) is separate
//! from the drawing so it can be tested without looking at pictures.
//!
//! Runs on the main task after measuring. Never fails the report: a chart with no data is not
//! drawn (`None`), and a drawing error is reported as `None` too.

use std::ops::Range;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Highest percentile drawn: 99.99 (x = 4 on the log axis). Curves stop earlier when the
/// histogram holds fewer samples than that percentile needs to mean anything.
pub const PERCENTILE_NINES_MAX: f64 = 4.0;
/// Points per curve: enough for a smooth line, few enough for a small SVG.
const CURVE_POINTS: usize = 80;
/// Chart size in pixels (width grows with the bars of a bar chart).
const WIDTH_PX: u32 = 760;
const HEIGHT_PX: u32 = 420;
/// Horizontal room per bar of a bar chart, so its label does not run into the next one.
const BAR_SLOT_PX: u32 = 130;
const FONT: &str = "sans-serif";

/// Colours by runtime (and in compare, by target): blue, orange, green, red, purple, brown.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// How a line is drawn: a colour from the palette and a dash pattern (0 solid, 1 dashed,
/// 2 dotted). Reports use colour for the runtime and the pattern for the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stroke {
    pub color: usize,
    pub dash: u8,
}

/// Report style: Node blue, Python orange; HTTP dashed, WebSocket solid.
pub fn target_stroke(runtime: &str, transport: &str) -> Stroke {
    Stroke {
        color: usize::from(runtime != "node"),
        dash: u8::from(transport == "http"),
    }
}

/// One named line.
#[derive(Clone, Debug)]
pub struct Line {
    pub label: String,
    pub stroke: Stroke,
    pub points: Vec<(f64, f64)>,
}

/// `x = log10(1 / (1 - q))`: p50 → 0.30, p90 → 1, p99 → 2, p99.9 → 3, p99.99 → 4.
pub fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The latency (ms) at evenly spaced points of the log percentile axis, from p50 to the
/// highest percentile the sample count supports (with n samples, beyond 1 - 1/n every
/// percentile is the maximum) and at most p99.99.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let start = nines(0.5);
    let end = (h.len() as f64).log10().clamp(start, PERCENTILE_NINES_MAX);
    let steps = CURVE_POINTS - 1;
    (0..=steps)
        .map(|i| {
            let x = start + (end - start) * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1e6)
        })
        .collect()
}

/// An empirical CDF as a step line: each sample raises the share by 1/n.
pub fn ecdf_steps(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mut out = Vec::with_capacity(v.len() * 2);
    for (i, s) in v.iter().enumerate() {
        out.push((*s, i as f64 / n));
        out.push((*s, (i + 1) as f64 / n));
    }
    out
}

/// A log axis range around `values` with some air, or `None` when there is nothing positive.
pub fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo <= hi).then(|| (lo / 1.3, hi * 1.3))
}

/// Tick values for a log axis over `lo..hi`: 1-2-5 in each decade, or every integer multiple
/// when that would give fewer than three ticks.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let pick = |mults: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        let first = lo.log10().floor() as i32;
        let last = hi.log10().ceil() as i32;
        for e in first..=last {
            for m in mults {
                // Dividing by a power of ten keeps 0.3 as 0.3 (0.1 × 3 would not be).
                let v = if e < 0 {
                    m / 10f64.powi(-e)
                } else {
                    m * 10f64.powi(e)
                };
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
        }
        out
    };
    let ticks = pick(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 3 {
        ticks
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Milliseconds with as many decimals as the magnitude needs.
pub fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A linear f64 axis with ticks exactly at `keys` (percentiles, concurrency levels, bars).
/// plotters' own `with_key_points` on an f64 range loses the label formatter, hence this.
#[derive(Clone)]
struct KeyedAxis {
    inner: RangedCoordf64,
    keys: Vec<f64>,
}

impl KeyedAxis {
    fn new(range: Range<f64>, keys: Vec<f64>) -> KeyedAxis {
        KeyedAxis {
            inner: range.into(),
            keys,
        }
    }
}

impl Ranged for KeyedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.keys.clone()
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// An axis tick: three significant digits, no trailing zeros (0.2, 1, 2.5, 120).
pub fn fmt_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn percentile_label(x: f64) -> String {
    let q = (1.0 - 10f64.powf(-x)) * 100.0;
    let text = format!("{q:.2}");
    format!("p{}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn draw_line<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    line: &Line,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = PALETTE[line.stroke.color % PALETTE.len()];
    let style = color.stroke_width(2);
    let points = line.points.clone();
    let anno = match line.stroke.dash {
        0 => chart.draw_series(LineSeries::new(points, style)),
        1 => chart.draw_series(DashedLineSeries::new(points, 8, 5, style)),
        _ => chart.draw_series(DashedLineSeries::new(points, 2, 4, style)),
    }
    .map_err(|e| e.to_string())?;
    let dash = line.stroke.dash;
    anno.label(line.label.clone()).legend(move |(x, y)| {
        let pts = match dash {
            0 => vec![(x, y), (x + 24, y)],
            _ => vec![(x, y), (x + 9, y)],
        };
        PathElement::new(pts, style)
    });
    Ok(())
}

/// Latency percentile curves: x is the log percentile axis, y the latency on a log scale.
pub fn latency_curves(title: &str, lines: &[Line]) -> Option<String> {
    let lines: Vec<&Line> = lines.iter().filter(|l| l.points.len() > 1).collect();
    let (lo, hi) = log_range(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)))?;
    let x_end = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .max(2.0);
    let ticks: Vec<f64> = [nines(0.5), 1.0, 2.0, 3.0, 4.0]
        .into_iter()
        .filter(|t| *t <= x_end + 1e-9)
        .collect();
    // The latency axis is drawn as log10(ms) on a linear axis with our own ticks: plotters'
    // log axis labels only whole decades' multiples above 1 and leaves sub-millisecond
    // latencies, the interesting ones here, unlabelled.
    let y_ticks: Vec<f64> = log_ticks(lo, hi).iter().map(|v| v.log10()).collect();
    let log_lines: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            points: l
                .points
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|p| (p.0, p.1.log10()))
                .collect(),
            ..(*l).clone()
        })
        .collect();
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(
                KeyedAxis::new(nines(0.5)..x_end, ticks),
                KeyedAxis::new(lo.log10()..hi.log10(), y_ticks),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms, log scale)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| fmt_tick(10f64.powf(*y)))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(TRANSPARENT)
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &log_lines {
            draw_line(&mut chart, line)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.ok().map(|()| svg)
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 13))
        .border_style(RGBColor(180, 180, 180))
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(|e| e.to_string())
}

/// Throughput (req/s) against concurrency, one line per target.
pub fn throughput_chart(title: &str, lines: &[Line]) -> Option<String> {
    let lines: Vec<&Line> = lines.iter().filter(|l| !l.points.is_empty()).collect();
    let mut levels: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let (&first, &last) = (levels.first()?, levels.last()?);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    let pad = ((last - first) * 0.06).max(1.0);
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(
                KeyedAxis::new((first - pad)..(last + pad), levels.clone()),
                0.0..y_max.max(1.0),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("concurrent invocations (closed-loop workers)")
            .y_desc("completed invokes per second")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(RGBColor(246, 246, 246))
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &lines {
            draw_line(&mut chart, line)?;
            let color = PALETTE[line.stroke.color % PALETTE.len()];
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|p| Circle::new(*p, 4, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.ok().map(|()| svg)
}

/// Cold-start distributions: the empirical CDF of each target's samples (x linear, ms).
pub fn cold_chart(title: &str, lines: &[Line]) -> Option<String> {
    let lines: Vec<Line> = lines
        .iter()
        .filter(|l| !l.points.is_empty())
        .map(|l| Line {
            points: ecdf_steps(&l.points.iter().map(|p| p.1).collect::<Vec<_>>()),
            ..l.clone()
        })
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(f64::MIN, f64::max);
    if x_max <= 0.0 {
        return None;
    }
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max * 1.08, 0.0..1.02)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("cold-start latency (ms)")
            .y_desc("share of samples at or below")
            .x_label_formatter(&|x| fmt_tick(*x))
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .light_line_style(RGBColor(246, 246, 246))
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &lines {
            draw_line(&mut chart, line)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.ok().map(|()| svg)
}

/// One bar of the CPU chart: a label and server / runtime / loadgen µs per invoke.
#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub parts: [Option<f64>; 3],
}

pub const CPU_PARTS: [&str; 3] = ["server", "runtime", "loadgen"];

/// Stacked bars, bottom to top in `CPU_PARTS` order; a missing part counts as zero.
pub fn stacks(bar: &Bar) -> [(f64, f64); 3] {
    let mut base = 0.0;
    bar.parts.map(|v| {
        let top = base + v.unwrap_or(0.0).max(0.0);
        let out = (base, top);
        base = top;
        out
    })
}

/// CPU per invoke as stacked bars (server, runtime, loadgen), one bar per phase.
pub fn cpu_bars(title: &str, bars: &[Bar]) -> Option<String> {
    let total_max = bars.iter().map(|b| stacks(b)[2].1).fold(0.0f64, f64::max);
    if bars.is_empty() || total_max <= 0.0 {
        return None;
    }
    let n = bars.len();
    let width = (BAR_SLOT_PX * n as u32 + 140).max(WIDTH_PX);
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let keys: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(
                KeyedAxis::new(-0.6..(n as f64 - 0.4), keys),
                0.0..total_max * 1.3,
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("CPU µs per invoke")
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(RGBColor(246, 246, 246))
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (part, name) in CPU_PARTS.iter().enumerate() {
            let color = PALETTE[part + 2];
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let (lo, hi) = stacks(b)[part];
                    let x = i as f64;
                    Rectangle::new([(x - 0.32, lo), (x + 0.32, hi)], color.filled())
                }))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.ok().map(|()| svg)
}

/// An invocation count as an axis label: 0, 250k, 1M, 1.5M.
pub fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", fmt_tick(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", fmt_tick(v / 1e3))
    } else {
        fmt_tick(v)
    }
}

/// The soak chart: server RSS (MB) over completed invocations on top, and below it counts
/// (descriptors, threads, instances) over the same axis, one line each.
pub fn soak_chart(
    title: &str,
    rss: &[(f64, f64)],
    counts: &[(&str, Vec<(f64, f64)>)],
) -> Option<String> {
    let x_max = rss
        .iter()
        .chain(counts.iter().flat_map(|(_, p)| p.iter()))
        .map(|p| p.0)
        .fold(0.0f64, f64::max);
    if rss.len() < 2 || x_max <= 0.0 {
        return None;
    }
    let rss_max = rss.iter().map(|p| p.1).fold(0.0f64, f64::max) * 1.15;
    let count_max = counts
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        * 1.15;
    let mut svg = String::new();
    let result = (|| -> Result<(), String> {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH_PX, HEIGHT_PX * 3 / 2)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root.titled(title, (FONT, 18)).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(HEIGHT_PX * 3 / 4);
        let mut chart = ChartBuilder::on(&top)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..rss_max.max(1.0))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .y_desc("server RSS (MB)")
            .x_label_formatter(&|x| fmt_count(*x))
            .y_label_formatter(&|y| fmt_tick(*y))
            .light_line_style(RGBColor(246, 246, 246))
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        let rss_line = Line {
            label: "server RSS".into(),
            stroke: Stroke { color: 0, dash: 0 },
            points: rss.to_vec(),
        };
        draw_line(&mut chart, &rss_line)?;
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        let mut chart = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..count_max.max(1.0))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("invocations completed")
            .y_desc("count")
            .x_label_formatter(&|x| fmt_count(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(RGBColor(246, 246, 246))
            .label_style((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (label, points)) in counts.iter().enumerate() {
            if points.len() < 2 {
                continue;
            }
            let line = Line {
                label: (*label).to_owned(),
                stroke: Stroke {
                    color: i + 1,
                    dash: 0,
                },
                points: points.clone(),
            };
            draw_line(&mut chart, &line)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.ok().map(|()| svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: impl Iterator<Item = u64>) -> Histogram<u64> {
        let mut h = crate::stats::histogram();
        for v in values_us {
            h.record(v * 1_000).unwrap();
        }
        h
    }

    #[test]
    fn percentile_axis_positions() {
        assert!((nines(0.5) - std::f64::consts::LOG10_2).abs() < 1e-12);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert!((nines(0.9999) - 4.0).abs() < 1e-6);
        assert_eq!(percentile_label(nines(0.5)), "p50");
        assert_eq!(percentile_label(3.0), "p99.9");
        assert_eq!(percentile_label(4.0), "p99.99");
    }

    #[test]
    fn curve_follows_the_histogram_and_stops_where_samples_run_out() {
        // 1..=1000 µs: the curve starts at the median and ends at p99.9 (1,000 samples).
        let h = hist(1..=1000);
        let pts = percentile_points(&h);
        assert_eq!(pts.len(), CURVE_POINTS);
        assert!((pts[0].1 - 0.5).abs() < 0.002, "{:?}", pts[0]);
        let last = pts[pts.len() - 1];
        assert!((last.0 - 3.0).abs() < 1e-9, "{last:?}");
        assert!((last.1 - 0.999).abs() < 0.002, "{last:?}");
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        // A million samples: the axis is capped at p99.99.
        let mut big = crate::stats::histogram();
        big.record_n(1_000, 1_000_000).unwrap();
        let end = percentile_points(&big).last().unwrap().0;
        assert!((end - PERCENTILE_NINES_MAX).abs() < 1e-9);
        assert!(percentile_points(&crate::stats::histogram()).is_empty());
    }

    #[test]
    fn ecdf_and_stacks_and_ranges() {
        let steps = ecdf_steps(&[30.0, 10.0, 20.0, f64::NAN]);
        assert_eq!(
            steps,
            vec![
                (10.0, 0.0),
                (10.0, 1.0 / 3.0),
                (20.0, 1.0 / 3.0),
                (20.0, 2.0 / 3.0),
                (30.0, 2.0 / 3.0),
                (30.0, 1.0)
            ]
        );
        let bar = Bar {
            label: "x".into(),
            parts: [Some(10.0), None, Some(5.0)],
        };
        assert_eq!(stacks(&bar), [(0.0, 10.0), (10.0, 10.0), (10.0, 15.0)]);
        let (lo, hi) = log_range([0.0, 2.0, 0.5, f64::INFINITY].into_iter()).unwrap();
        assert!(lo < 0.5 && hi > 2.0);
        assert!(log_range([0.0].into_iter()).is_none());
        assert_eq!(log_ticks(0.08, 3.0), vec![0.1, 0.2, 0.5, 1.0, 2.0]);
        assert_eq!(log_ticks(0.21, 0.6), vec![0.3, 0.4, 0.5, 0.6]);
        assert_eq!(fmt_tick(1.0), "1");
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(20.0), "20");
        assert_eq!(fmt_tick(0.025), "0.025");
        assert_eq!(fmt_ms(0.25), "0.25");
        assert_eq!(fmt_ms(0.1), "0.1");
        assert_eq!(fmt_ms(123.4), "123");
    }

    #[test]
    fn charts_are_svg_with_their_labels() {
        let h = hist(50..=400);
        let line = |label: &str, rt: &str, tr: &str| Line {
            label: label.into(),
            stroke: target_stroke(rt, tr),
            points: percentile_points(&h),
        };
        let svg = latency_curves(
            "Warm",
            &[
                line("node http", "node", "http"),
                line("node ws", "node", "ws"),
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("node http") && svg.contains("p99"), "{svg}");
        assert!(!svg.contains("http://") || svg.contains("www.w3.org"));
        let bars = cpu_bars(
            "CPU",
            &[Bar {
                label: "python ws".into(),
                parts: [Some(40.0), Some(30.0), Some(12.0)],
            }],
        )
        .unwrap();
        assert!(bars.contains("python ws") && bars.contains("runtime"));
        assert!(cpu_bars("CPU", &[]).is_none());
        assert!(latency_curves("empty", &[]).is_none());
    }
}
