//! The pictures of a run: which charts a report gets (per scenario: latency percentile curves,
//! throughput against concurrency, cold-start distributions, CPU per invoke), and the
//! self-contained HTML page that shows them inline next to the Markdown report. The page loads
//! nothing from anywhere: the SVGs are in it, there is no script.
//!
//! Runs on the main task after measuring; pure functions of the report's JSON view.

use std::fmt::Write as _;

use crate::compare::Spread;
use crate::plots::{self, Bar, Line};
use crate::view::{is_cold, merged_histogram, scenario_title, PhaseView, ReportView};

/// One chart: `suffix` names its file (`<stem>-<suffix>.svg`).
#[derive(Clone, Debug)]
pub struct Chart {
    pub suffix: String,
    pub title: String,
    pub svg: String,
}

fn median(phases: &[&PhaseView], pick: impl Fn(&PhaseView) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = phases.iter().filter_map(|p| pick(p)).collect();
    Spread::of(&values).map(|s| s.median)
}

/// The charts of one scenario, in the order the page shows them.
pub fn scenario_charts(view: &ReportView, scenario: &str) -> Vec<Chart> {
    let groups = view.groups();
    let in_scenario: Vec<_> = groups
        .iter()
        .filter(|(k, _)| k.scenario == scenario)
        .collect();
    let title = scenario_title(scenario);
    let mut charts = Vec::new();
    if is_cold(scenario) {
        let lines: Vec<Line> = in_scenario
            .iter()
            .map(|(k, phases)| Line {
                label: k.target(),
                stroke: plots::target_stroke(&k.runtime, &k.transport),
                points: phases
                    .iter()
                    .flat_map(|p| p.cold_ms.iter().map(|ms| (0.0, *ms)))
                    .collect(),
            })
            .collect();
        let chart_title = format!("{title}: distribution of samples");
        if let Some(svg) = plots::cold_chart(&chart_title, &lines) {
            charts.push(Chart {
                suffix: format!("{scenario}-distribution"),
                title: chart_title,
                svg,
            });
        }
    } else {
        let mut levels: Vec<Option<u64>> = in_scenario.iter().map(|(k, _)| k.concurrency).collect();
        levels.sort();
        levels.dedup();
        for level in levels {
            let lines: Vec<Line> = in_scenario
                .iter()
                .filter(|(k, _)| k.concurrency == level)
                .filter_map(|(k, phases)| {
                    Some(Line {
                        label: format!("{} {}", k.runtime, k.transport),
                        stroke: plots::target_stroke(&k.runtime, &k.transport),
                        points: plots::percentile_points(&merged_histogram(phases)?),
                    })
                })
                .collect();
            let (suffix, chart_title) = match level {
                Some(c) => (
                    format!("{scenario}-c{c}-latency"),
                    format!("{title} at concurrency {c}: latency by percentile"),
                ),
                None => (
                    format!("{scenario}-latency"),
                    format!("{title}: latency by percentile"),
                ),
            };
            if let Some(svg) = plots::latency_curves(&chart_title, &lines) {
                charts.push(Chart {
                    suffix,
                    title: chart_title,
                    svg,
                });
            }
        }
    }
    if scenario == "throughput" {
        let mut lines: Vec<Line> = Vec::new();
        for (k, phases) in &in_scenario {
            let (Some(c), Some(rps)) = (k.concurrency, median(phases, |p| p.throughput_per_s))
            else {
                continue;
            };
            let label = format!("{} {}", k.runtime, k.transport);
            match lines.iter_mut().find(|l| l.label == label) {
                Some(l) => l.points.push((c as f64, rps)),
                None => lines.push(Line {
                    label,
                    stroke: plots::target_stroke(&k.runtime, &k.transport),
                    points: vec![(c as f64, rps)],
                }),
            }
        }
        for l in &mut lines {
            l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let chart_title = "Throughput against concurrency";
        if let Some(svg) = plots::throughput_chart(chart_title, &lines) {
            charts.push(Chart {
                suffix: "throughput-by-concurrency".into(),
                title: chart_title.into(),
                svg,
            });
        }
    }
    if !is_cold(scenario) {
        let bars: Vec<Bar> = in_scenario
            .iter()
            .map(|(k, phases)| Bar {
                label: k.target(),
                parts: [
                    median(phases, |p| p.server_cpu_us),
                    median(phases, |p| p.runtime_cpu_us),
                    median(phases, |p| p.loadgen_cpu_us),
                ],
            })
            .collect();
        let chart_title = format!("{title}: CPU per invoke");
        if let Some(svg) = plots::cpu_bars(&chart_title, &bars) {
            charts.push(Chart {
                suffix: format!("{scenario}-cpu"),
                title: chart_title,
                svg,
            });
        }
    }
    charts
}

/// Every chart of the report, scenario by scenario.
pub fn all_charts(view: &ReportView) -> Vec<Chart> {
    view.scenarios()
        .iter()
        .flat_map(|s| scenario_charts(view, s))
        .collect()
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The page: the charts inline, then the Markdown report as text (it already has every number).
pub fn page(title: &str, charts: &[Chart], markdown: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>\nbody {{ font-family: sans-serif; margin: 2em auto; \
         max-width: 1400px; padding: 0 1em; color: #222; }}\n\
         figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}\n\
         figure svg {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}\n\
         pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 13px; }}\n\
         </style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    for chart in charts {
        let _ = write!(
            out,
            "<figure id=\"{}\">\n{}\n</figure>\n",
            escape(&chart.suffix),
            strip_xml_declaration(&chart.svg)
        );
    }
    let _ = write!(
        out,
        "<h2>Report</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        escape(markdown)
    );
    out
}

/// An SVG inlined in HTML must not carry an `<?xml …?>` declaration.
fn strip_xml_declaration(svg: &str) -> &str {
    match svg.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(svg, |(_, body)| body),
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let chart = Chart {
            suffix: "warm-latency".into(),
            title: "t".into(),
            svg: "<?xml version=\"1.0\"?><svg></svg>".into(),
        };
        let html = page("a <b>", &[chart], "| x | <y> |");
        assert!(html.contains("<title>a &lt;b&gt;</title>"));
        assert!(html.contains("<figure id=\"warm-latency\">\n<svg></svg>"));
        assert!(html.contains("| x | &lt;y&gt; |"));
        assert!(!html.contains("<script") && !html.contains("<link"));
    }
}
