//! A read-only view of a report's JSON, the common input of the charts (`plots`), the HTML page
//! (`html`), `loadgen compare` and the floor ratios. A run builds it from its own report turned
//! into JSON; `compare` and `--floor` build it from files written earlier, so the same code reads
//! both and nothing depends on the in-memory types of the run.
//!
//! Runs on the main task after measuring (or in `compare`, which measures nothing). Missing
//! fields read as `None` or empty; a histogram
//! that does not decode is left out rather than failing the report.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;

/// Scenarios in the order reports show them.
pub const SCENARIOS: [&str; 5] = ["cold", "cold-later", "warm", "highfreq", "throughput"];

/// Whether a scenario is a set of cold-start samples (`cold`, `cold-later`).
pub fn is_cold(scenario: &str) -> bool {
    scenario == "cold" || scenario == "cold-later"
}

pub fn scenario_title(scenario: &str) -> &str {
    match scenario {
        "cold" => "Cold Start",
        "cold-later" => "Cold Start, later instance",
        "warm" => "Warm Start",
        "highfreq" => "High Frequency",
        "throughput" => "Throughput",
        other => other,
    }
}

/// What a phase measured: one scenario (at one concurrency) of one runtime × transport.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Position of the scenario in `SCENARIOS`, so keys sort in report order.
    pub rank: usize,
    pub scenario: String,
    pub runtime: String,
    pub transport: String,
    pub concurrency: Option<u64>,
}

impl Key {
    /// `node ws`, or `node ws c=10` for a throughput level.
    pub fn target(&self) -> String {
        match self.concurrency {
            Some(c) => format!("{} {} c={c}", self.runtime, self.transport),
            None => format!("{} {}", self.runtime, self.transport),
        }
    }
}

/// One phase of one repetition.
#[derive(Clone, Debug)]
pub struct PhaseView {
    pub key: Key,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub throughput_per_s: Option<f64>,
    pub server_cpu_us: Option<f64>,
    pub runtime_cpu_us: Option<f64>,
    pub loadgen_cpu_us: Option<f64>,
    /// The client latency histogram (nanoseconds).
    pub histogram: Option<Histogram<u64>>,
    /// Cold scenario: each successful sample's latency (ms).
    pub cold_ms: Vec<f64>,
}

/// The floor figures (`loadgen floor`) a report can be related to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloorView {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub server_cpu_us: Option<f64>,
    pub runtime_cpu_us: Option<f64>,
    pub loadgen_cpu_us: Option<f64>,
}

impl FloorView {
    /// Reads the `floor` object of a floor file or of a run report; `None` if it has none.
    pub fn from_report(v: &Value) -> Option<FloorView> {
        let f = v.get("floor").filter(|f| f.is_object())?;
        Some(FloorView {
            p50_ms: f["latency"]["p50_ms"].as_f64(),
            p99_ms: f["latency"]["p99_ms"].as_f64(),
            server_cpu_us: f["usage"]["server_cpu_us_per_invoke"].as_f64(),
            runtime_cpu_us: f["usage"]["runtime_cpu_us_per_invoke"].as_f64(),
            loadgen_cpu_us: f["usage"]["loadgen_cpu_us_per_invoke"].as_f64(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct ReportView {
    pub name: String,
    pub date: String,
    pub phases: Vec<PhaseView>,
}

fn decode_histogram(b64: &str) -> Option<Histogram<u64>> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Deserializer::new().deserialize(&mut &raw[..]).ok()
}

impl PhaseView {
    pub fn from_value(p: &Value) -> Option<PhaseView> {
        let scenario = p["scenario"].as_str()?.to_owned();
        let rank = SCENARIOS
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(SCENARIOS.len());
        let latency = &p["latency"];
        let usage = &p["usage"];
        Some(PhaseView {
            key: Key {
                rank,
                scenario: scenario.clone(),
                runtime: p["runtime"].as_str().unwrap_or("?").to_owned(),
                transport: p["transport"].as_str().unwrap_or("?").to_owned(),
                concurrency: p["concurrency"].as_u64(),
            },
            p50_ms: latency["p50_ms"].as_f64(),
            p99_ms: latency["p99_ms"].as_f64(),
            throughput_per_s: (!is_cold(&scenario))
                .then(|| p["throughput_per_s"].as_f64())
                .flatten(),
            server_cpu_us: usage["server_cpu_us_per_invoke"].as_f64(),
            runtime_cpu_us: usage["runtime_cpu_us_per_invoke"].as_f64(),
            loadgen_cpu_us: usage["loadgen_cpu_us_per_invoke"].as_f64(),
            histogram: latency["histogram_v2_b64"]
                .as_str()
                .and_then(decode_histogram),
            cold_ms: p["cold_samples"]
                .as_array()
                .map(|samples| {
                    samples
                        .iter()
                        .filter(|s| s["error"].is_null())
                        .filter_map(|s| s["latency_ms"].as_f64())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

impl ReportView {
    pub fn from_value(v: &Value) -> ReportView {
        ReportView {
            name: v["name"].as_str().unwrap_or("?").to_owned(),
            date: v["date"].as_str().unwrap_or("?").to_owned(),
            phases: v["phases"]
                .as_array()
                .map(|a| a.iter().filter_map(PhaseView::from_value).collect())
                .unwrap_or_default(),
        }
    }

    pub fn load(path: &Path) -> Result<(ReportView, Value), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        Ok((ReportView::from_value(&v), v))
    }

    /// The phases grouped by what they measured, repetitions together, in report order.
    pub fn groups(&self) -> BTreeMap<Key, Vec<&PhaseView>> {
        let mut out: BTreeMap<Key, Vec<&PhaseView>> = BTreeMap::new();
        for p in &self.phases {
            out.entry(p.key.clone()).or_default().push(p);
        }
        out
    }

    /// The scenarios present, in report order.
    pub fn scenarios(&self) -> Vec<String> {
        let mut s: Vec<&Key> = self.phases.iter().map(|p| &p.key).collect();
        s.sort();
        let mut out: Vec<String> = s.iter().map(|k| k.scenario.clone()).collect();
        out.dedup();
        out
    }
}

/// The latency histograms of all repetitions merged (for percentile curves).
pub fn merged_histogram(phases: &[&PhaseView]) -> Option<Histogram<u64>> {
    let mut it = phases.iter().filter_map(|p| p.histogram.as_ref());
    let mut merged = it.next()?.clone();
    for h in it {
        // Histograms that do not fit each other's bounds are left out rather than failing.
        let _ = merged.add(h);
    }
    Some(merged)
}

/// The figures `compare` and the floor section relate; each knows which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    P50,
    P99,
    Throughput,
    ServerCpu,
    RuntimeCpu,
}

impl Figure {
    pub const ALL: [Figure; 5] = [
        Figure::P50,
        Figure::P99,
        Figure::Throughput,
        Figure::ServerCpu,
        Figure::RuntimeCpu,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::P50 => "p50 ms",
            Figure::P99 => "p99 ms",
            Figure::Throughput => "req/s",
            Figure::ServerCpu => "server CPU µs/inv",
            Figure::RuntimeCpu => "runtime CPU µs/inv",
        }
    }

    pub fn lower_is_better(self) -> bool {
        self != Figure::Throughput
    }

    /// Whether the figure means something for `scenario`: throughput only under closed-loop
    /// load (elsewhere it is the schedule or the sequence, not a result), CPU per invoke not for
    /// cold starts (a handful of samples, each with a whole process start).
    pub fn applies(self, scenario: &str) -> bool {
        match self {
            Figure::Throughput => scenario == "throughput",
            Figure::ServerCpu | Figure::RuntimeCpu => !is_cold(scenario),
            Figure::P50 | Figure::P99 => true,
        }
    }

    pub fn value(self, p: &PhaseView) -> Option<f64> {
        match self {
            Figure::P50 => p.p50_ms,
            Figure::P99 => p.p99_ms,
            Figure::Throughput => p.throughput_per_s,
            Figure::ServerCpu => p.server_cpu_us,
            Figure::RuntimeCpu => p.runtime_cpu_us,
        }
        .filter(|v| v.is_finite())
    }
}
