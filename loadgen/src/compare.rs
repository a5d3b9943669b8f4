//! `loadgen compare A.json B.json [C.json …]`: each later report against the first, figure by
//! figure, as a ratio with a noise band, and "same" when the difference is inside the noise.
//!
//! The noise rule. A report made with `--repeat N` holds N repetitions of every phase. For one
//! figure (say warm p50 of node ws) the repetitions of A give values a₁…aₙ, those of B b₁…bₘ.
//! The ratio shown is median(b) / median(a). The band is the ratio's range over every pairing
//! of a repetition of A with one of B: [min(b) / max(a), max(b) / min(a)]. The difference is
//! "same" when the band contains 1, which is exactly when the ranges [min a, max a] and
//! [min b, max b] overlap: B's best and worst repetitions are within what A's repetitions already
//! showed, so the runs cannot tell the two apart. With one repetition on either side there is no
//! band, and the verdict says so instead of guessing. Min..max is wide on purpose: with 3–5
//! repetitions an interquartile range would rest on one or two values.
//!
//! Runs on the calling thread, reads files only, measures nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plots::{self, Line, Stroke};
use crate::view::{merged_histogram, scenario_title, Figure, Key, ReportView};

/// Reports compared at once (the first is the baseline); more lines make the overlay unreadable
/// and the dash patterns run out.
pub const REPORTS_MAX: usize = 3;

/// The per-repetition values of one figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The band contains 1: inside the noise.
    Same,
    Better,
    Worse,
    /// One repetition on a side: a ratio but no band to judge it by.
    NoBand,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoBand => "no band (1 repetition)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    pub ratio: f64,
    pub band: Option<(f64, f64)>,
    pub verdict: Verdict,
}

/// B relative to A under the rule in the module doc; `None` when A's median is not positive.
pub fn ratio(a: &Spread, b: &Spread, lower_is_better: bool) -> Option<Ratio> {
    if a.median <= 0.0 || a.min <= 0.0 {
        return None;
    }
    let ratio = b.median / a.median;
    let band = (a.n >= 2 && b.n >= 2).then(|| (b.min / a.max, b.max / a.min));
    let verdict = match band {
        None => Verdict::NoBand,
        Some((lo, hi)) if lo <= 1.0 && 1.0 <= hi => Verdict::Same,
        Some(_) if (ratio < 1.0) == lower_is_better => Verdict::Better,
        Some(_) => Verdict::Worse,
    };
    Some(Ratio {
        ratio,
        band,
        verdict,
    })
}

/// The spread of `figure` over the repetitions of `key` in `report`.
pub fn spread_of(report: &ReportView, key: &Key, figure: Figure) -> Option<Spread> {
    let values: Vec<f64> = report
        .phases
        .iter()
        .filter(|p| &p.key == key)
        .filter_map(|p| figure.value(p))
        .collect();
    Spread::of(&values)
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        plots::fmt_ms(v)
    }
}

fn fmt_spread(s: &Spread) -> String {
    if s.n < 2 {
        fmt(s.median)
    } else {
        format!(
            "{} ({}–{}, n={})",
            fmt(s.median),
            fmt(s.min),
            fmt(s.max),
            s.n
        )
    }
}

/// The comparison as Markdown: one table per scenario, one row per target × figure.
pub fn markdown(reports: &[(PathBuf, ReportView)]) -> String {
    let mut out = String::new();
    let Some(((base_path, base), others)) = reports.split_first() else {
        return out;
    };
    let _ = writeln!(out, "# loadgen compare\n");
    let _ = writeln!(
        out,
        "Baseline A: `{}` ({}, {}).",
        base_path.display(),
        base.name,
        base.date
    );
    for (i, (path, r)) in others.iter().enumerate() {
        let letter = char::from(b'B' + i as u8);
        let _ = writeln!(
            out,
            "{letter}: `{}` ({}, {}).",
            path.display(),
            r.name,
            r.date
        );
    }
    let _ = writeln!(
        out,
        "\nValues are the median over a report's repetitions, with min–max and the count when \
         there are several. Ratio = median / baseline median. Band = [min / baseline max, max / \
         baseline min]; \"same\" when the band contains 1 (the repetitions' ranges overlap).\n"
    );
    let groups = base.groups();
    let mut scenario = String::new();
    for key in groups.keys() {
        if key.scenario != scenario {
            scenario.clone_from(&key.scenario);
            let _ = writeln!(out, "\n## {}\n", scenario_title(&scenario));
            let mut head = "| Target | Figure | A |".to_owned();
            let mut rule = "|---|---|---|".to_owned();
            for i in 0..others.len() {
                let letter = char::from(b'B' + i as u8);
                let _ = write!(head, " {letter} | {letter}/A | band | verdict |");
                rule.push_str("---|---|---|---|");
            }
            let _ = writeln!(out, "{head}\n{rule}");
        }
        for figure in Figure::ALL {
            if !figure.applies(&key.scenario) {
                continue;
            }
            let Some(a) = spread_of(base, key, figure) else {
                continue;
            };
            let mut row = format!(
                "| {} | {} | {} |",
                key.target(),
                figure.label(),
                fmt_spread(&a)
            );
            for (_, other) in others {
                let b = spread_of(other, key, figure);
                let r = b.and_then(|b| ratio(&a, &b, figure.lower_is_better()));
                let _ = write!(
                    row,
                    " {} | {} | {} | {} |",
                    b.map_or("–".into(), |b| fmt_spread(&b)),
                    r.map_or("–".into(), |r| format!("{:.2}", r.ratio)),
                    r.and_then(|r| r.band)
                        .map_or("–".into(), |(lo, hi)| format!("{lo:.2}–{hi:.2}")),
                    r.map_or(if b.is_none() { "missing in B" } else { "–" }, |r| r
                        .verdict
                        .label()),
                );
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}

/// Overlay plots: per scenario (and throughput level), every report's latency percentile
/// curve of every target; colour is the target, the dash pattern the report (A solid, B
/// dashed, C dotted). Returns (file suffix, title, SVG).
pub fn overlays(reports: &[(PathBuf, ReportView)]) -> Vec<(String, String, String)> {
    let mut charts: BTreeMap<(usize, String, Option<u64>), Vec<Line>> = BTreeMap::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    for (i, (_, r)) in reports.iter().enumerate() {
        let letter = char::from(b'A' + i as u8);
        for (key, phases) in r.groups() {
            let Some(h) = merged_histogram(&phases) else {
                continue;
            };
            if crate::view::is_cold(&key.scenario) {
                continue; // a handful of samples: the cold table says more than a curve
            }
            let target = (key.runtime.clone(), key.transport.clone());
            let color = match targets.iter().position(|t| *t == target) {
                Some(c) => c,
                None => {
                    targets.push(target);
                    targets.len() - 1
                }
            };
            charts
                .entry((key.rank, key.scenario.clone(), key.concurrency))
                .or_default()
                .push(Line {
                    label: format!("{letter}: {} {}", key.runtime, key.transport),
                    stroke: Stroke {
                        color,
                        dash: i as u8,
                    },
                    points: plots::percentile_points(&h),
                });
        }
    }
    charts
        .into_iter()
        .filter_map(|((_, scenario, c), lines)| {
            let suffix = match c {
                Some(c) => format!("{scenario}-c{c}-latency"),
                None => format!("{scenario}-latency"),
            };
            let title = match c {
                Some(c) => format!("{} c={c}: latency, A vs others", scenario_title(&scenario)),
                None => format!("{}: latency, A vs others", scenario_title(&scenario)),
            };
            let svg = plots::latency_curves(&title, &lines)?;
            Some((suffix, title, svg))
        })
        .collect()
}

/// Loads the reports, prints the Markdown, and with `out` writes `compare.md` and the overlay
/// SVGs (linked from it) into that directory.
pub fn run(files: &[PathBuf], out: Option<&Path>) -> Result<String, String> {
    if files.len() < 2 || files.len() > REPORTS_MAX {
        return Err(format!(
            "compare needs 2 to {REPORTS_MAX} report files (the first is the baseline)"
        ));
    }
    let mut reports = Vec::new();
    for f in files {
        let (view, _) = ReportView::load(f)?;
        if view.phases.is_empty() {
            return Err(format!("{} holds no phases", f.display()));
        }
        // The Markdown names the files the way results name paths: never absolute.
        let shown = crate::paths::Scrub::from_env().path(&f.display().to_string());
        reports.push((PathBuf::from(shown), view));
    }
    let mut md = markdown(&reports);
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let charts = overlays(&reports);
        if !charts.is_empty() {
            md.push_str("\n## Overlays\n\n");
        }
        for (suffix, title, svg) in charts {
            let name = format!("compare-{suffix}.svg");
            let path = dir.join(&name);
            std::fs::write(&path, svg)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let _ = writeln!(md, "![{title}]({name})\n");
        }
        let path = dir.join("compare.md");
        std::fs::write(&path, &md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("loadgen: wrote {}", path.display());
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[f64]) -> Spread {
        Spread::of(v).unwrap()
    }

    #[test]
    fn spreads() {
        assert_eq!(
            s(&[3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                n: 3
            }
        );
        assert_eq!(s(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn overlapping_ranges_are_the_same() {
        let a = s(&[1.0, 1.1, 1.2]);
        let b = s(&[1.15, 1.3, 1.4]);
        let r = ratio(&a, &b, true).unwrap();
        assert!((r.ratio - 1.3 / 1.1).abs() < 1e-12);
        let (lo, hi) = r.band.unwrap();
        assert!((lo - 1.15 / 1.2).abs() < 1e-12 && (hi - 1.4).abs() < 1e-12);
        assert_eq!(r.verdict, Verdict::Same);
    }

    #[test]
    fn disjoint_ranges_are_better_or_worse_by_direction() {
        let a = s(&[1.0, 1.1, 1.2]);
        let faster = s(&[0.5, 0.6, 0.7]);
        assert_eq!(ratio(&a, &faster, true).unwrap().verdict, Verdict::Better);
        // Higher is better (throughput): the same numbers are worse.
        assert_eq!(ratio(&a, &faster, false).unwrap().verdict, Verdict::Worse);
        let slower = s(&[1.3, 1.5]);
        assert_eq!(ratio(&a, &slower, true).unwrap().verdict, Verdict::Worse);
        assert_eq!(ratio(&a, &slower, false).unwrap().verdict, Verdict::Better);
    }

    #[test]
    fn one_repetition_has_no_band() {
        let r = ratio(&s(&[1.0]), &s(&[2.0, 2.1]), true).unwrap();
        assert_eq!(r.verdict, Verdict::NoBand);
        assert!(r.band.is_none());
        assert!((r.ratio - 2.05).abs() < 1e-12);
        assert!(ratio(&s(&[0.0, 1.0]), &s(&[1.0, 1.0]), true).is_none());
    }
}
