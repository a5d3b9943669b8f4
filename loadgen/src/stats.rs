//! Latency recording: an HdrHistogram of nanoseconds (3 significant digits, 1 ns to 10 min)
//! per worker, merged at the end of a phase, plus tallies of errors by kind.
//!
//! Each worker owns its `Tally`, so recording is a plain array increment with no sharing; the
//! summary keeps the whole histogram (V2 + deflate, base64) so any percentile can be recomputed
//! from the JSON later.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histograms hold; longer ones are clamped to it (and show as the max).
const LATENCY_NS_MAX: u64 = 600 * 1_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure would be a programming error.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Successes with their latencies, and failures by kind, of one worker or one phase.
#[derive(Clone, Debug)]
pub struct Tally {
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    pub fn ok(&mut self, ns: u64) {
        self.latency.saturating_record(ns.max(1));
    }

    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    pub fn ok_count(&self) -> u64 {
        self.latency.len()
    }

    /// Requests refused with 429 (TooManyRequestsException).
    pub fn throttled(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(k, _)| k.starts_with("http_429"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub stdev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The full histogram (HdrHistogram V2 + deflate, base64; values in nanoseconds).
    pub histogram_v2_b64: String,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Summary {
    /// `None` for an empty histogram: there is nothing to summarise.
    pub fn of(h: &Histogram<u64>) -> Option<Summary> {
        if h.is_empty() {
            return None;
        }
        let mut raw = Vec::new();
        let encoded = match V2DeflateSerializer::new().serialize(h, &mut raw) {
            Ok(_) => base64::engine::general_purpose::STANDARD.encode(&raw),
            Err(_) => String::new(),
        };
        Some(Summary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1e6,
            stdev_ms: h.stdev() / 1e6,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            histogram_v2_b64: encoded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn tallies_merge_and_summarise() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for i in 1..=900u64 {
            a.ok(i * 1_000); // 1 µs .. 900 µs
        }
        for i in 901..=1000u64 {
            b.ok(i * 1_000);
        }
        b.error("http_429:TooManyRequestsException".into());
        b.error("http_429:TooManyRequestsException".into());
        b.error("connect".into());
        a.merge(&b);
        assert_eq!(a.ok_count(), 1000);
        assert_eq!(a.errors.values().sum::<u64>(), 3);
        assert_eq!(a.throttled(), 2);
        let s = Summary::of(&a.latency).unwrap();
        assert!((s.p50_ms - 0.5).abs() < 0.001, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.001, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.001, "{s:?}");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s.histogram_v2_b64)
            .unwrap();
        let back: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        assert_eq!(back.len(), 1000);
        assert!(Summary::of(&histogram()).is_none());
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let mut t = Tally::default();
        t.ok(u64::MAX);
        t.ok(0);
        assert_eq!(t.ok_count(), 2);
    }
}
