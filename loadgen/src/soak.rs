//! `loadgen soak`: a long closed-loop run with function churn that shows whether the server's
//! memory, descriptors and threads stay flat. `--invocations` (default 1,000,000) invokes are
//! spread over a small pool of live functions by `--concurrency` workers; every
//! `--churn-every` invocations one function is created (the runtimes and transports in turn),
//! one existing function gets new code or a new configuration (which retires its instances) and
//! the oldest is deleted, so instances, code directories and registry entries come and go all
//! run long. A small share of the invokes are asynchronous (`Event`) and a small share ask the
//! function to fail (deliberate function errors, counted apart from errors).
//!
//! Every `--sample-every-s` a sampler reads the server's VmRSS and thread count
//! (`/proc/PID/status`), its open descriptors (`/proc/PID/fd`) and `/metrics` (`lah_instances`,
//! `lah_events_queued`). The verdict compares the median RSS of the last 10 % of samples with
//! that of the 10 %–20 % window (the first 10 % is warm-up: allocator arenas, pools and caches
//! fill there).
//!
//! Threads: everything runs on loadgen's tokio runtime; workers, the sampler and the churn
//! controller are tasks. Workers share the live pool through a lock held only to pick a function
//! and count it in flight, so a function is deleted only when no request to it is open.
//! Invariants: a function leaves the pool before it is deleted, and is deleted only when none
//! of its requests is in flight; Event invokes go to the newest function only, so no event is
//! sent to a function for several churn periods before it is deleted. An event whose attempt
//! failed is retried after a minute (Lambda's backoff); if its function was deleted meanwhile,
//! the server drops it, and the report warns (`server_surprises`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::client::{Conn, Endpoint};
use crate::lambda::{
    classify, invoke_path, zip_file, Api, Metrics, RuntimeKind, Transport, GENERATION_ENV,
    TRANSPORT_ENV,
};
use crate::progress::{Counters, Plan, Progress};
use crate::report::{GitInfo, Machine, ReportError, ServerInfo};
use crate::stats::{Summary, Tally};

/// Fewer samples than this give no verdict: each window needs at least one sample, and the
/// warm-up window must be skipped.
pub const VERDICT_SAMPLES_MIN: usize = 10;
/// RSS is called flat when the end window's median is at most this much above the baseline
/// window's. Allocator arenas and per-core buffers move by a few percent with load alone; a leak
/// over 1,000,000 invocations grows without bound and shows well past it.
pub const FLAT_GROWTH_PCT_MAX: f64 = 5.0;
/// Live functions at least: churn updates one that is neither the newest nor the oldest.
pub const LIVE_FUNCTIONS_MIN: usize = 2;
/// Rows of the sample table in the Markdown (the JSON has every sample).
const MD_SAMPLE_ROWS_MAX: usize = 25;
/// How long teardown waits for the server to drop the deleted functions' instances.
const TEARDOWN_WAIT_MAX: Duration = Duration::from_secs(20);
/// Poll period of the churn controller (churn points, requests in flight).
const POLL: Duration = Duration::from_millis(5);

/// `loadgen soak` options (the shared ones — `--concurrency`, `--runtimes`, `--transports`,
/// `--payload-bytes`, `--memory-mb`, `--out` — come from the global options).
#[derive(Clone, Debug, clap::Args)]
pub struct SoakArgs {
    /// Invocations in all (sync, Event and deliberate failures together).
    #[arg(long, default_value_t = 1_000_000)]
    pub invocations: u64,
    /// One churn step (create, update, delete) every this many completed invocations; 0: none.
    #[arg(long, default_value_t = 20_000)]
    pub churn_every: u64,
    /// Functions invoked at any time (one more while a churn step runs).
    #[arg(long, default_value_t = 4)]
    pub live_functions: usize,
    /// Period of the server samples (RSS, descriptors, threads, instances).
    #[arg(long, default_value_t = 2.0)]
    pub sample_every_s: f64,
    /// One in this many invocations is asynchronous (`X-Amz-Invocation-Type: Event`); 0: none.
    #[arg(long, default_value_t = 100)]
    pub event_every: u64,
    /// One in this many invocations asks the function to fail (a deliberate function error);
    /// 0: none.
    #[arg(long, default_value_t = 200)]
    pub error_every: u64,
}

/// The runtime and transport of the `i`-th function created: runtimes alternate every function,
/// transports every round of runtimes (node http, python http, node ws, python ws, …).
pub fn combo(
    i: u64,
    runtimes: &[RuntimeKind],
    transports: &[Transport],
) -> (RuntimeKind, Transport) {
    let r = runtimes.len().max(1) as u64;
    let t = transports.len().max(1) as u64;
    (
        runtimes[(i % r) as usize],
        transports[((i / r) % t) as usize],
    )
}

/// What a churn step changes on an existing function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    Code,
    Configuration,
}

/// Churn step `k`, decided when the pool holds `live + 1` functions (oldest first, the one
/// just created last): which one to update and how. The oldest (slot 0) is deleted after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChurnStep {
    pub update: UpdateKind,
    /// In `1..live`: never the oldest (about to go) nor the newest (not yet warm).
    pub update_slot: usize,
}

pub fn churn_step(k: u64, live: usize) -> ChurnStep {
    let candidates = live.saturating_sub(1).max(1) as u64;
    ChurnStep {
        update: if k % 2 == 0 {
            UpdateKind::Code
        } else {
            UpdateKind::Configuration
        },
        update_slot: 1 + (k % candidates) as usize,
    }
}

/// Churn steps of a run: one at each multiple of `every` below `invocations`.
pub fn churn_steps(invocations: u64, every: u64) -> u64 {
    if every == 0 || invocations == 0 {
        0
    } else {
        (invocations - 1) / every
    }
}

/// How invocation number `n` (from 0) is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokeKind {
    Sync,
    Event,
    /// Sync, with an event that makes the handler throw.
    Fail,
}

pub fn invoke_kind(n: u64, event_every: u64, error_every: u64) -> InvokeKind {
    if error_every > 0 && n % error_every == error_every - 1 {
        InvokeKind::Fail
    } else if event_every > 0 && n % event_every == event_every / 2 {
        InvokeKind::Event
    } else {
        InvokeKind::Sync
    }
}

/// The soak handler: echoes its event, throws when the event has `"fail": true`. The
/// generation comment makes each code update a different zip (and a new code directory).
pub fn soak_zip(runtime: RuntimeKind, generation: u64) -> Result<Vec<u8>, crate::lambda::ApiError> {
    let (file, source) = match runtime {
        RuntimeKind::Node => (
            "index.js",
            format!(
                "exports.handler = async (event) => {{\n  if (event && event.fail) {{\n    \
                 throw new Error(\"soak: deliberate failure\");\n  }}\n  return event;\n}};\n\
                 // generation {generation}\n"
            ),
        ),
        RuntimeKind::Python => (
            "lambda_function.py",
            format!(
                "def handler(event, context):\n    if isinstance(event, dict) and event.get(\"fail\"):\n        \
                 raise RuntimeError(\"soak: deliberate failure\")\n    return event\n\
                 # generation {generation}\n"
            ),
        ),
    };
    zip_file(file, &source)
}

/// Median of `values` (NaNs sorted last); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Growth of a series from the baseline window (samples 10 %–20 %) to the end window (the
/// last 10 %), by their medians.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Growth {
    pub baseline: f64,
    pub end: f64,
    pub growth: f64,
    pub growth_pct: f64,
    pub baseline_samples: usize,
    pub end_samples: usize,
}

pub fn window_growth(values: &[f64]) -> Option<Growth> {
    let n = values.len();
    if n < VERDICT_SAMPLES_MIN {
        return None;
    }
    let tenth = (n / 10).max(1);
    let baseline = &values[tenth..(2 * tenth).min(n)];
    let end = &values[n - tenth..];
    let (b, e) = (median(baseline)?, median(end)?);
    Some(Growth {
        baseline: b,
        end: e,
        growth: e - b,
        growth_pct: if b > 0.0 { (e - b) / b * 100.0 } else { 0.0 },
        baseline_samples: baseline.len(),
        end_samples: end.len(),
    })
}

/// The flatness verdict: RSS (MB) decides; descriptors and threads are shown alongside.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub rule: String,
    pub rss_mb: Option<Growth>,
    pub fds: Option<Growth>,
    pub threads: Option<Growth>,
    /// The highest RSS sampled after warm-up (the first 10 % of samples), and the invocations
    /// completed then: a leak that is freed again before the end shows here, not in `rss_mb`.
    pub rss_peak_mb: Option<f64>,
    pub rss_peak_at_invocations: Option<u64>,
    /// `None`: too few samples (or no server pid) to tell.
    pub flat: Option<bool>,
}

pub fn verdict(samples: &[SoakSample]) -> Verdict {
    let series = |f: fn(&SoakSample) -> Option<f64>| -> Option<Vec<f64>> {
        samples.iter().map(f).collect::<Option<Vec<f64>>>()
    };
    let rss = series(|s| s.rss_mb).and_then(|v| window_growth(&v));
    let fds = series(|s| s.fds.map(|v| v as f64)).and_then(|v| window_growth(&v));
    let threads = series(|s| s.threads.map(|v| v as f64)).and_then(|v| window_growth(&v));
    let warm = (samples.len() / 10).max(1);
    let peak = samples
        .iter()
        .skip(warm)
        .filter_map(|s| Some((s.rss_mb?, s.invocations)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Verdict {
        rss_peak_mb: peak.map(|p| p.0),
        rss_peak_at_invocations: peak.map(|p| p.1),
        rule: format!(
            "flat when the median RSS of the last 10 % of samples is at most {FLAT_GROWTH_PCT_MAX} % \
             above the median of samples 10 %–20 % (the first 10 % is warm-up); at least \
             {VERDICT_SAMPLES_MIN} samples"
        ),
        flat: rss.as_ref().map(|g| g.growth_pct <= FLAT_GROWTH_PCT_MAX),
        rss_mb: rss,
        fds,
        threads,
    }
}

/// `VmRSS` (kB) and `Threads` of a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    (field("VmRSS:"), field("Threads:"))
}

/// The sum of the `lah_instances{…}` gauges (every state), and `lah_events_queued`.
pub fn instance_gauges(m: &Metrics) -> (Option<f64>, Option<f64>) {
    let mut any = false;
    let mut sum = 0.0;
    for (k, v) in &m.series {
        if k.starts_with("lah_instances{") {
            any = true;
            sum += v;
        }
    }
    (
        any.then_some(sum),
        m.series.get("lah_events_queued").copied(),
    )
}

/// One reading of the server during the run.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    pub elapsed_s: f64,
    /// Invocations completed when the sample was taken.
    pub invocations: u64,
    pub rss_mb: Option<f64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    pub instances: Option<f64>,
    pub events_queued: Option<f64>,
    /// Functions in loadgen's live pool.
    pub functions: usize,
    /// Unexpected errors so far (deliberate function errors excluded).
    pub errors: u64,
}

/// A function of the live pool.
struct Live {
    name: String,
    runtime: RuntimeKind,
    transport: Transport,
    /// Requests to it that are open; it is deleted only at zero, after leaving the pool.
    inflight: AtomicUsize,
}

impl Live {
    fn env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            TRANSPORT_ENV.to_owned(),
            self.transport.env_value().to_owned(),
        )])
    }
}

struct Shared {
    pool: RwLock<Vec<Arc<Live>>>,
    /// Next invocation number to hand out (may pass `total`: then a worker stops).
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    total: u64,
    event_every: u64,
    error_every: u64,
    payload: Arc<Vec<u8>>,
    fail_payload: Vec<u8>,
    stop_sampling: AtomicBool,
}

impl Shared {
    fn pool_len(&self) -> usize {
        self.pool.read().map_or(0, |p| p.len())
    }

    /// Picks worker `index`'s function (Event invokes: the newest) and counts it in flight.
    fn pick(&self, index: usize, kind: InvokeKind) -> Option<Arc<Live>> {
        let pool = self.pool.read().unwrap_or_else(|e| e.into_inner());
        let live = match kind {
            InvokeKind::Event => pool.last(),
            _ => pool.get(index % pool.len().max(1)),
        }?;
        live.inflight.fetch_add(1, Ordering::SeqCst);
        Some(live.clone())
    }
}

/// What one worker saw.
#[derive(Default)]
struct WorkerTally {
    /// Sync invokes that returned the event: their latency. Errors: every unexpected outcome.
    sync: Tally,
    deliberate_failures: u64,
    events_accepted: u64,
}

async fn worker(
    index: usize,
    shared: Arc<Shared>,
    mut conn: Conn,
    counters: Arc<Counters>,
) -> WorkerTally {
    let mut out = WorkerTally::default();
    let _ = conn.connect().await; // a failure shows up on the first request
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= shared.total {
            return out;
        }
        let kind = invoke_kind(n, shared.event_every, shared.error_every);
        let Some(live) = shared.pick(index, kind) else {
            out.sync.error("no_live_function".into());
            shared.errors.fetch_add(1, Ordering::Relaxed);
            shared.done.fetch_add(1, Ordering::Relaxed);
            counters.record(false);
            continue;
        };
        let path = invoke_path(&live.name);
        let sent = Instant::now();
        let result = match kind {
            InvokeKind::Event => {
                let headers = [("X-Amz-Invocation-Type", "Event")];
                conn.request("POST", &path, &headers, &shared.payload).await
            }
            InvokeKind::Fail => conn.request("POST", &path, &[], &shared.fail_payload).await,
            InvokeKind::Sync => conn.request("POST", &path, &[], &shared.payload).await,
        };
        let ns = sent.elapsed().as_nanos() as u64;
        live.inflight.fetch_sub(1, Ordering::SeqCst);
        let outcome: Result<(), String> = match (kind, result) {
            (_, Err(e)) => Err(e.kind().to_owned()),
            (InvokeKind::Event, Ok(resp)) if resp.status == 202 => {
                out.events_accepted += 1;
                Ok(())
            }
            (InvokeKind::Event, Ok(resp)) => Err(format!(
                "event:{}",
                classify(&resp).unwrap_or_else(|| "http_200".into())
            )),
            (InvokeKind::Fail, Ok(resp)) => match classify(&resp) {
                Some(k) if k.starts_with("function_error:") => {
                    out.deliberate_failures += 1;
                    Ok(())
                }
                Some(k) => Err(k),
                None => Err("deliberate_failure_succeeded".into()),
            },
            (InvokeKind::Sync, Ok(resp)) => match classify(&resp) {
                None => {
                    out.sync.ok(ns);
                    Ok(())
                }
                Some(k) => Err(k),
            },
        };
        let ok = outcome.is_ok();
        if let Err(k) = outcome {
            if k == "connect" {
                tokio::time::sleep(POLL).await;
            }
            out.sync.error(k);
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
        counters.record(ok);
    }
}

/// Reads the server's `/proc` figures and `/metrics` into one sample.
async fn take_sample(
    shared: &Shared,
    api: &mut Api,
    pid: Option<u32>,
    started: Instant,
) -> SoakSample {
    let (rss_kb, threads) = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .map_or((None, None), |t| parse_status(&t));
    let fds = pid
        .and_then(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map(|d| d.count() as u64);
    let (instances, events_queued) = api
        .metrics()
        .await
        .map_or((None, None), |m| instance_gauges(&m));
    SoakSample {
        elapsed_s: started.elapsed().as_secs_f64(),
        invocations: shared.done.load(Ordering::Relaxed),
        rss_mb: rss_kb.map(|kb| kb as f64 / 1024.0),
        fds,
        threads,
        instances,
        events_queued,
        functions: shared.pool_len(),
        errors: shared.errors.load(Ordering::Relaxed),
    }
}

async fn sampler(
    shared: Arc<Shared>,
    mut api: Api,
    pid: Option<u32>,
    started: Instant,
    every: Duration,
) -> Vec<SoakSample> {
    let mut out = vec![take_sample(&shared, &mut api, pid, started).await];
    let mut next = Instant::now() + every;
    while !shared.stop_sampling.load(Ordering::Relaxed) {
        tokio::time::sleep(POLL * 10).await;
        if Instant::now() >= next {
            next += every;
            out.push(take_sample(&shared, &mut api, pid, started).await);
        }
    }
    out.push(take_sample(&shared, &mut api, pid, started).await);
    out
}

/// What churn did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Churn {
    pub steps: u64,
    pub created: u64,
    pub code_updates: u64,
    pub configuration_updates: u64,
    pub deleted: u64,
    /// Functions deleted at the end (the live pool), not part of churn.
    pub teardown_deleted: u64,
    /// Failed management calls or checks, by kind (should be none).
    pub errors: BTreeMap<String, u64>,
}

impl Churn {
    fn error(&mut self, what: String) {
        eprintln!("loadgen: soak churn: {what}");
        let kind = what.split(':').next().unwrap_or("churn").to_owned();
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// What the server's counters say went wrong that the client could not see: events that failed
/// or were dropped after their 202, invocation timeouts, instance crashes, service errors, and
/// function errors beyond the deliberate ones (an init that failed or timed out).
pub fn server_surprises(r: &SoakResult) -> Vec<String> {
    let counter = |name: &str| r.server_counters.get(name).copied().unwrap_or(0.0);
    let mut out = Vec::new();
    for (name, what) in [
        (
            "lah_events_dropped_total",
            "events dropped after they were accepted",
        ),
        (
            "lah_events_failed_total",
            "events that failed every attempt",
        ),
        ("lah_timeouts_total", "invocations that timed out"),
        (
            "lah_instance_crashes_total",
            "instances that exited unasked",
        ),
        ("lah_service_errors_total", "service errors"),
    ] {
        let n = counter(name);
        if n > 0.0 {
            out.push(format!("server: {n} {what} (`{name}`)"));
        }
    }
    let extra = counter("lah_function_errors_total") - r.deliberate_function_errors as f64;
    if !r.server_counters.is_empty() && extra > 0.0 {
        out.push(format!(
            "server: {extra} function errors beyond the deliberate ones (`lah_function_errors_total`; \
             an init that failed or timed out, or a failed event attempt)"
        ));
    }
    out
}

/// Settings of a soak run, as resolved.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSettings {
    pub invocations: u64,
    pub concurrency: usize,
    pub churn_every: u64,
    pub live_functions: usize,
    pub sample_every_s: f64,
    pub event_every: u64,
    pub error_every: u64,
    pub runtimes: Vec<RuntimeKind>,
    pub transports: Vec<Transport>,
    pub payload_bytes: usize,
    pub memory_mb: u32,
    pub loadgen_threads: usize,
}

/// What the soak measured.
#[derive(Clone, Debug, Serialize)]
pub struct SoakResult {
    pub invocations: u64,
    pub sync_ok: u64,
    pub events_accepted: u64,
    /// Deliberate failures that came back as function errors, as asked.
    pub deliberate_function_errors: u64,
    /// Every other outcome that was not the expected one, by kind.
    pub errors: BTreeMap<String, u64>,
    pub measured_s: f64,
    pub throughput_per_s: f64,
    /// Latency of the successful sync invokes.
    pub latency: Option<Summary>,
    pub churn: Churn,
    pub samples: Vec<SoakSample>,
    /// After every function was deleted and the server dropped their instances.
    pub after_teardown: Option<SoakSample>,
    pub verdict: Verdict,
    /// Changes of the server's `/metrics` counters over the run.
    pub server_counters: BTreeMap<String, f64>,
}

/// The report of `loadgen soak`.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub kind: &'static str,
    pub name: String,
    pub date: String,
    pub started_unix_s: u64,
    pub total_s: f64,
    pub command_line: String,
    pub git: GitInfo,
    pub loadgen_version: &'static str,
    pub machine: Machine,
    pub server: ServerInfo,
    pub settings: SoakSettings,
    pub soak: SoakResult,
    pub warnings: Vec<String>,
}

/// Where and how to run.
pub struct SoakRun<'a> {
    pub endpoint: &'a Endpoint,
    pub api: &'a mut Api,
    pub timeout: Duration,
    pub pid: Option<u32>,
    pub settings: &'a SoakSettings,
    pub payload: Arc<Vec<u8>>,
    pub quiet: bool,
}

/// The event that makes the soak handler throw: the payload with `"fail": true` added.
fn fail_payload(payload: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(payload).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("fail".into(), Value::Bool(true));
    }
    v.to_string().into_bytes()
}

/// Creates one function and checks it echoes the event; returns it ready for the pool.
async fn create_live(
    api: &mut Api,
    name: String,
    runtime: RuntimeKind,
    transport: Transport,
    memory_mb: u32,
    payload: &[u8],
) -> Result<Arc<Live>, String> {
    let live = Live {
        name,
        runtime,
        transport,
        inflight: AtomicUsize::new(0),
    };
    let zip = soak_zip(runtime, 0).map_err(|e| format!("create: {e}"))?;
    api.create_function_code(&live.name, runtime, &live.env(), memory_mb, &zip)
        .await
        .map_err(|e| format!("create: {}: {e}", live.name))?;
    let tail = api
        .invoke_tail(&live.name, payload)
        .await
        .map_err(|e| format!("check: {}: {e}", live.name))?;
    let sent: Option<Value> = serde_json::from_slice(payload).ok();
    let got: Option<Value> = serde_json::from_slice(&tail.response.body).ok();
    if classify(&tail.response).is_some() || sent != got {
        let _ = api.delete_function(&live.name).await;
        return Err(format!(
            "check: {} does not echo: status {}, body {:?}; log tail:\n{}",
            live.name,
            tail.response.status,
            String::from_utf8_lossy(&tail.response.body),
            tail.log.as_deref().unwrap_or("(none)")
        ));
    }
    Ok(Arc::new(live))
}

/// Runs the soak: sets up the pool, runs workers, churn and sampler, tears down.
pub async fn run(mut r: SoakRun<'_>) -> Result<SoakResult, String> {
    let s = r.settings;
    let mut seq = 0u64;
    let mut churn = Churn::default();
    let mut pool = Vec::new();
    for _ in 0..s.live_functions {
        let (runtime, transport) = combo(seq, &s.runtimes, &s.transports);
        let name = soak_name(&mut seq);
        eprintln!(
            "loadgen: soak: creating {name} ({} {})",
            runtime.label(),
            transport.label()
        );
        match create_live(r.api, name, runtime, transport, s.memory_mb, &r.payload).await {
            Ok(live) => pool.push(live),
            Err(e) => {
                for live in &pool {
                    let _ = r.api.delete_function(&live.name).await;
                }
                return Err(e);
            }
        }
    }
    let shared = Arc::new(Shared {
        pool: RwLock::new(pool),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        total: s.invocations,
        event_every: s.event_every,
        error_every: s.error_every,
        fail_payload: fail_payload(&r.payload),
        payload: r.payload.clone(),
        stop_sampling: AtomicBool::new(false),
    });
    let before = r.api.metrics().await;
    let started = Instant::now();
    let sampler = tokio::spawn(sampler(
        shared.clone(),
        Api::new(Conn::new(r.endpoint, r.timeout)),
        r.pid,
        started,
        Duration::from_secs_f64(s.sample_every_s),
    ));
    let progress = Progress::start("Soak".into(), Plan::Count(s.invocations), r.quiet);
    let workers: Vec<_> = (0..s.concurrency)
        .map(|i| {
            let conn = Conn::new(r.endpoint, r.timeout);
            tokio::spawn(worker(i, shared.clone(), conn, progress.counters.clone()))
        })
        .collect();
    let steps = churn_steps(s.invocations, s.churn_every);
    for k in 0..steps {
        let due = (k + 1) * s.churn_every;
        while shared.done.load(Ordering::Relaxed) < due {
            if workers.iter().all(|w| w.is_finished()) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        churn.steps += 1;
        churn_once(&mut r, &shared, &mut churn, k, &mut seq).await;
    }
    let mut tally = WorkerTally::default();
    for w in workers {
        match w.await {
            Ok(t) => {
                tally.sync.merge(&t.sync);
                tally.deliberate_failures += t.deliberate_failures;
                tally.events_accepted += t.events_accepted;
            }
            Err(e) => tally.sync.error(format!("worker_panicked:{e}")),
        }
    }
    let measured = started.elapsed();
    shared.stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let after = r.api.metrics().await;
    let errors_n: u64 = tally.sync.errors.values().sum();
    progress
        .finish(&format!(
            "Soak: {} invocations in {:.0} s, {errors_n} errors",
            s.invocations,
            measured.as_secs_f64()
        ))
        .await;
    let after_teardown = teardown(&mut r, &shared, &mut churn, started).await;
    let invocations = shared.done.load(Ordering::Relaxed);
    Ok(SoakResult {
        invocations,
        sync_ok: tally.sync.ok_count(),
        events_accepted: tally.events_accepted,
        deliberate_function_errors: tally.deliberate_failures,
        errors: tally.sync.errors.clone(),
        measured_s: measured.as_secs_f64(),
        throughput_per_s: invocations as f64 / measured.as_secs_f64().max(1e-9),
        latency: Summary::of(&tally.sync.latency),
        churn,
        verdict: verdict(&samples),
        samples,
        after_teardown,
        server_counters: match (before, after) {
            (Some(b), Some(a)) => a.counter_deltas(&b),
            _ => BTreeMap::new(),
        },
    })
}

/// One churn step: create a function, update another, delete the oldest.
async fn churn_once(
    r: &mut SoakRun<'_>,
    shared: &Shared,
    churn: &mut Churn,
    k: u64,
    seq: &mut u64,
) {
    let s = r.settings;
    let (runtime, transport) = combo(*seq, &s.runtimes, &s.transports);
    let name = soak_name(seq);
    match create_live(r.api, name, runtime, transport, s.memory_mb, &r.payload).await {
        Ok(live) => {
            churn.created += 1;
            shared
                .pool
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(live);
        }
        Err(e) => {
            churn.error(e);
            return;
        }
    }
    let live_now = shared.pool_len().saturating_sub(1);
    let step = churn_step(k, live_now);
    let target = shared
        .pool
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(step.update_slot)
        .cloned();
    if let Some(target) = target {
        let result = match step.update {
            UpdateKind::Code => match soak_zip(target.runtime, k + 1) {
                Ok(zip) => r.api.update_function_code(&target.name, &zip).await,
                Err(e) => Err(e),
            },
            UpdateKind::Configuration => {
                let mut env = target.env();
                env.insert(GENERATION_ENV.into(), format!("soak-{k}"));
                r.api.set_environment(&target.name, &env).await
            }
        };
        match (result, step.update) {
            (Ok(()), UpdateKind::Code) => churn.code_updates += 1,
            (Ok(()), UpdateKind::Configuration) => churn.configuration_updates += 1,
            (Err(e), _) => churn.error(format!("update: {}: {e}", target.name)),
        }
    }
    let oldest = {
        let mut pool = shared.pool.write().unwrap_or_else(|e| e.into_inner());
        (pool.len() > s.live_functions).then(|| pool.remove(0))
    };
    if let Some(oldest) = oldest {
        delete_when_idle(r.api, &oldest, r.timeout, churn).await;
    }
}

/// The name of the `seq`-th function of this loadgen process (then counts it).
fn soak_name(seq: &mut u64) -> String {
    let name = format!("lg-soak-{}-{seq}", std::process::id());
    *seq += 1;
    name
}

/// Waits until no request to `live` is open (it has left the pool), then deletes it.
async fn delete_when_idle(api: &mut Api, live: &Live, timeout: Duration, churn: &mut Churn) {
    let give_up = Instant::now() + timeout;
    while live.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < give_up {
        tokio::time::sleep(POLL).await;
    }
    match api.delete_function(&live.name).await {
        Ok(()) => churn.deleted += 1,
        Err(e) => churn.error(format!("delete: {}: {e}", live.name)),
    }
}

/// Deletes every live function, waits (up to `TEARDOWN_WAIT_MAX`) for the server to drop
/// their instances, and samples it then.
async fn teardown(
    r: &mut SoakRun<'_>,
    shared: &Shared,
    churn: &mut Churn,
    started: Instant,
) -> Option<SoakSample> {
    let live: Vec<Arc<Live>> =
        std::mem::take(&mut *shared.pool.write().unwrap_or_else(|e| e.into_inner()));
    let churned = churn.deleted;
    for l in &live {
        delete_when_idle(r.api, l, r.timeout, churn).await;
    }
    churn.teardown_deleted = churn.deleted - churned;
    churn.deleted = churned;
    let give_up = Instant::now() + TEARDOWN_WAIT_MAX;
    loop {
        let sample = take_sample(shared, r.api, r.pid, started).await;
        let gone = sample.instances.is_none_or(|n| n == 0.0);
        if gone || Instant::now() >= give_up {
            return Some(sample);
        }
        tokio::time::sleep(POLL * 40).await;
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_owned(),
    }
}

fn growth_row(label: &str, unit: &str, g: Option<&Growth>, decimals: usize) -> String {
    match g {
        Some(g) => format!(
            "| {label} | {}{unit} | {}{unit} | {:+.decimals$}{unit} | {:+.1} % |\n",
            num(Some(g.baseline), decimals),
            num(Some(g.end), decimals),
            g.growth,
            g.growth_pct
        ),
        None => format!("| {label} | – | – | – | – |\n"),
    }
}

impl SoakReport {
    pub fn markdown(&self) -> String {
        let s = &self.soak;
        let st = &self.settings;
        let m = &self.machine;
        let mut md = String::new();
        let _ = writeln!(md, "# loadgen soak: {} ({})\n", self.name, self.date);
        let verdict = match s.verdict.flat {
            Some(true) => "**flat**",
            Some(false) => "**not flat**",
            None => "**no verdict** (too few samples or no server pid)",
        };
        let rss = s.verdict.rss_mb.as_ref();
        let _ = writeln!(
            md,
            "Server RSS over {} invocations with function churn: {verdict}{}.\n",
            s.invocations,
            rss.map_or(String::new(), |g| format!(
                " — median {:.1} MB in the 10 %–20 % window, {:.1} MB in the last 10 % ({:+.1} MB, {:+.1} %)",
                g.baseline, g.end, g.growth, g.growth_pct
            ))
        );
        let _ = writeln!(md, "- Command: `{}`", self.command_line);
        let _ = writeln!(
            md,
            "- Server: `{}` ({}, executor {})",
            self.server.cmdline.as_deref().unwrap_or("unknown"),
            self.server.exe.as_deref().unwrap_or("binary unknown"),
            self.server.executor.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            md,
            "- Git commit: `{}`{}",
            self.git.commit.as_deref().unwrap_or("unknown"),
            if self.git.dirty {
                format!(" (modified: {})", self.git.modified.join(", "))
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            md,
            "- Machine: {} × {} logical CPUs, {} MB memory, {}; load average {} at start, {} at end",
            m.cpu_model, m.logical_cpus, m.memory_mb, m.kernel, m.loadavg_start, m.loadavg_end
        );
        let _ =
            writeln!(
            md,
            "- Settings: concurrency {}, {} live functions ({} × {}), churn every {} invocations, \
             1 in {} Event, 1 in {} deliberate failure, {} B payload, {} MB functions, sample \
             every {} s, loadgen threads {}",
            st.concurrency,
            st.live_functions,
            st.runtimes.iter().map(|r| r.label()).collect::<Vec<_>>().join("/"),
            st.transports.iter().map(|t| t.label()).collect::<Vec<_>>().join("/"),
            st.churn_every,
            st.event_every,
            st.error_every,
            st.payload_bytes,
            st.memory_mb,
            st.sample_every_s,
            st.loadgen_threads
        );
        let _ = writeln!(
            md,
            "- Duration: {:.0} s ({:.1} s in all)\n",
            s.measured_s, self.total_s
        );
        md.push_str("## Totals\n\n| Figure | Value |\n|---|---|\n");
        let errors_n: u64 = s.errors.values().sum();
        let rows = [
            ("Invocations", s.invocations.to_string()),
            ("Sync, answered with the event", s.sync_ok.to_string()),
            ("Event, accepted (202)", s.events_accepted.to_string()),
            (
                "Deliberate function errors",
                s.deliberate_function_errors.to_string(),
            ),
            ("Errors (anything else)", errors_n.to_string()),
            (
                "Throughput",
                format!("{:.0} invocations/s", s.throughput_per_s),
            ),
            (
                "Sync latency p50 / p99 / max",
                s.latency.as_ref().map_or("–".into(), |l| {
                    format!("{:.2} / {:.2} / {:.1} ms", l.p50_ms, l.p99_ms, l.max_ms)
                }),
            ),
            (
                "Churn steps (created / code updates / configuration updates / deleted)",
                format!(
                    "{} ({} / {} / {} / {})",
                    s.churn.steps,
                    s.churn.created,
                    s.churn.code_updates,
                    s.churn.configuration_updates,
                    s.churn.deleted
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        for (kind, n) in &s.errors {
            let _ = writeln!(md, "| Error `{kind}` | {n} |");
        }
        for (kind, n) in &s.churn.errors {
            let _ = writeln!(md, "| Churn error `{kind}` | {n} |");
        }
        md.push_str("\n## Flatness\n\n");
        let _ = writeln!(md, "Rule: {}.\n", s.verdict.rule);
        md.push_str("| Series | 10 %–20 % median | Last 10 % median | Growth | Growth % |\n|---|---|---|---|---|\n");
        md.push_str(&growth_row(
            "Server RSS",
            " MB",
            s.verdict.rss_mb.as_ref(),
            1,
        ));
        md.push_str(&growth_row(
            "Open descriptors",
            "",
            s.verdict.fds.as_ref(),
            0,
        ));
        md.push_str(&growth_row("Threads", "", s.verdict.threads.as_ref(), 0));
        if let (Some(peak), Some(at)) = (s.verdict.rss_peak_mb, s.verdict.rss_peak_at_invocations) {
            let _ = writeln!(
                md,
                "\nHighest RSS after warm-up: {peak:.1} MB, at {at} invocations."
            );
        }
        if let Some(a) = &s.after_teardown {
            let _ = writeln!(
                md,
                "\nAfter teardown (every function deleted): RSS {} MB, {} descriptors, {} threads, {} instances.",
                num(a.rss_mb, 1),
                a.fds.map_or("–".into(), |v| v.to_string()),
                a.threads.map_or("–".into(), |v| v.to_string()),
                num(a.instances, 0)
            );
        }
        if !s.server_counters.is_empty() {
            md.push_str("\n## Server counters over the run\n\n| Counter | Change |\n|---|---|\n");
            for (k, v) in &s.server_counters {
                let _ = writeln!(md, "| `{k}` | {v} |");
            }
        }
        md.push_str(
            "\n## Samples\n\n| s | Invocations | RSS MB | fds | Threads | Instances | Events queued | Functions | Errors |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let n = s.samples.len();
        let stride = n.div_ceil(MD_SAMPLE_ROWS_MAX).max(1);
        for (i, x) in s.samples.iter().enumerate() {
            if i % stride != 0 && i + 1 != n {
                continue;
            }
            let _ = writeln!(
                md,
                "| {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.elapsed_s,
                x.invocations,
                num(x.rss_mb, 1),
                x.fds.map_or("–".into(), |v| v.to_string()),
                x.threads.map_or("–".into(), |v| v.to_string()),
                num(x.instances, 0),
                num(x.events_queued, 0),
                x.functions,
                x.errors
            );
        }
        if n > MD_SAMPLE_ROWS_MAX {
            let _ = writeln!(
                md,
                "\nEvery {stride}th of {n} samples (and the last); the JSON has all."
            );
        }
        if !self.warnings.is_empty() {
            md.push_str("\n## Warnings\n\n");
            for w in &self.warnings {
                let _ = writeln!(md, "- {w}");
            }
        }
        md
    }

    /// Writes `<dir>/<date>-<name>.json`, `.md` and `-rss.svg`; returns the paths written.
    pub fn write_files(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::Write(dir.to_owned(), e))?;
        let stem = format!("{}-{}", self.date, self.name);
        let mut md = self.markdown();
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        let points = |f: fn(&SoakSample) -> Option<f64>| -> Vec<(f64, f64)> {
            self.soak
                .samples
                .iter()
                .filter_map(|s| Some((s.invocations as f64, f(s)?)))
                .collect()
        };
        let svg = crate::plots::soak_chart(
            &format!(
                "Server RSS and descriptors over {} invocations with churn",
                self.soak.invocations
            ),
            &points(|s| s.rss_mb),
            &[
                ("open descriptors", points(|s| s.fds.map(|v| v as f64))),
                ("threads", points(|s| s.threads.map(|v| v as f64))),
                ("instances", points(|s| s.instances)),
            ],
        );
        if let Some(svg) = svg {
            let name = format!("{stem}-rss.svg");
            let _ = writeln!(md, "\n## Chart\n\n![Server RSS and descriptors]({name})");
            files.push((dir.join(name), svg));
        }
        files.push((
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)? + "\n",
        ));
        files.push((dir.join(format!("{stem}.md")), md));
        let mut written = Vec::new();
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|e| ReportError::Write(path.clone(), e))?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss_mb: f64) -> SoakSample {
        SoakSample {
            elapsed_s: 0.0,
            invocations: 0,
            rss_mb: Some(rss_mb),
            fds: Some(40),
            threads: Some(9),
            instances: Some(4.0),
            events_queued: Some(0.0),
            functions: 4,
            errors: 0,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn growth_compares_the_last_tenth_with_the_second_tenth() {
        // 20 samples: warm-up 0..2 (huge, ignored), baseline 2..4, end 18..20.
        let mut v = vec![500.0, 400.0, 10.0, 12.0];
        v.extend(std::iter::repeat_n(11.0, 14));
        v.extend([13.0, 15.0]);
        let g = window_growth(&v).unwrap();
        assert_eq!((g.baseline_samples, g.end_samples), (2, 2));
        assert_eq!(g.baseline, 11.0);
        assert_eq!(g.end, 14.0);
        assert_eq!(g.growth, 3.0);
        assert!((g.growth_pct - 300.0 / 11.0).abs() < 1e-9);
        assert!(window_growth(&v[..VERDICT_SAMPLES_MIN - 1]).is_none());
    }

    #[test]
    fn verdict_flat_and_not_flat() {
        let flat: Vec<SoakSample> = (0..50)
            .map(|i| sample(40.0 + (i % 3) as f64 * 0.3))
            .collect();
        let v = verdict(&flat);
        assert_eq!(v.flat, Some(true), "{v:?}");
        assert_eq!(v.fds.unwrap().growth, 0.0);
        // A leak: RSS climbs 1 MB per sample.
        let leak: Vec<SoakSample> = (0..50).map(|i| sample(40.0 + i as f64)).collect();
        let v = verdict(&leak);
        assert_eq!(v.flat, Some(false));
        let g = v.rss_mb.unwrap();
        assert_eq!((g.baseline, g.end), (47.0, 87.0));
        assert_eq!(v.rss_peak_mb, Some(89.0));
        // A hump freed before the end: flat by the windows, but the peak shows it.
        let mut hump: Vec<SoakSample> = (0..50).map(|_| sample(40.0)).collect();
        hump[25].rss_mb = Some(70.0);
        hump[25].invocations = 500;
        hump[1].rss_mb = Some(99.0); // warm-up: not the peak
        let v = verdict(&hump);
        assert_eq!(v.flat, Some(true));
        assert_eq!(
            (v.rss_peak_mb, v.rss_peak_at_invocations),
            (Some(70.0), Some(500))
        );
        // Just at the limit is still flat; past it is not.
        let mut edge: Vec<SoakSample> = (0..20).map(|_| sample(100.0)).collect();
        for s in &mut edge[18..] {
            s.rss_mb = Some(100.0 + FLAT_GROWTH_PCT_MAX);
        }
        assert_eq!(verdict(&edge).flat, Some(true));
        edge[18].rss_mb = Some(106.0);
        edge[19].rss_mb = Some(106.0);
        assert_eq!(verdict(&edge).flat, Some(false));
        // No server pid: no RSS, no verdict.
        let blind: Vec<SoakSample> = (0..20)
            .map(|_| SoakSample {
                rss_mb: None,
                ..sample(1.0)
            })
            .collect();
        assert_eq!(verdict(&blind).flat, None);
        assert_eq!(verdict(&flat[..5]).flat, None);
    }

    #[test]
    fn churn_schedule() {
        assert_eq!(churn_steps(1_000_000, 20_000), 49);
        assert_eq!(churn_steps(1_000_001, 20_000), 50);
        assert_eq!(churn_steps(19_999, 20_000), 0);
        assert_eq!(churn_steps(1_000_000, 0), 0);
        assert_eq!(churn_steps(0, 10), 0);
        // Four live functions: the pool holds five (oldest first) while a step runs; the update
        // goes to slots 1..=3, alternating code and configuration.
        let steps: Vec<ChurnStep> = (0..6).map(|k| churn_step(k, 4)).collect();
        let slots: Vec<usize> = steps.iter().map(|s| s.update_slot).collect();
        assert_eq!(slots, [1, 2, 3, 1, 2, 3]);
        let kinds: Vec<UpdateKind> = steps.iter().map(|s| s.update).collect();
        assert_eq!(kinds[..2], [UpdateKind::Code, UpdateKind::Configuration]);
        assert_eq!(kinds[2], UpdateKind::Code);
        // Two live functions: only the middle one is neither oldest nor newest.
        assert!((0..5).all(|k| churn_step(k, 2).update_slot == 1));
    }

    #[test]
    fn functions_alternate_runtime_then_transport() {
        let r = [RuntimeKind::Node, RuntimeKind::Python];
        let t = [Transport::Http, Transport::Ws];
        let got: Vec<_> = (0..5).map(|i| combo(i, &r, &t)).collect();
        assert_eq!(
            got,
            [
                (RuntimeKind::Node, Transport::Http),
                (RuntimeKind::Python, Transport::Http),
                (RuntimeKind::Node, Transport::Ws),
                (RuntimeKind::Python, Transport::Ws),
                (RuntimeKind::Node, Transport::Http),
            ]
        );
        assert_eq!(
            combo(7, &r[..1], &t[1..]),
            (RuntimeKind::Node, Transport::Ws)
        );
    }

    #[test]
    fn invoke_mix() {
        let kinds: Vec<InvokeKind> = (0..1000).map(|n| invoke_kind(n, 100, 200)).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(InvokeKind::Fail), 5);
        assert_eq!(count(InvokeKind::Event), 10);
        assert_eq!(kinds[199], InvokeKind::Fail);
        assert_eq!(kinds[50], InvokeKind::Event);
        assert!((0..100).all(|n| invoke_kind(n, 0, 0) == InvokeKind::Sync));
    }

    #[test]
    fn status_and_gauges() {
        let status =
            "Name:\tlambda-at-home-\nVmHWM:\t   52000 kB\nVmRSS:\t   48128 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status), (Some(48128), Some(7)));
        assert_eq!(parse_status(""), (None, None));
        let m = Metrics::parse(
            "lah_instances{state=\"idle\",executor=\"process\"} 3\n\
             lah_instances{state=\"busy\",executor=\"process\"} 2\nlah_events_queued 1\n",
        );
        assert_eq!(instance_gauges(&m), (Some(5.0), Some(1.0)));
        assert_eq!(instance_gauges(&Metrics::default()), (None, None));
    }

    #[test]
    fn failing_event_and_handlers() {
        let p = fail_payload(&crate::lambda::payload(64));
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["fail"], Value::Bool(true));
        assert_eq!(v["data"].as_str().unwrap().len(), 64 - 11);
        for runtime in [RuntimeKind::Node, RuntimeKind::Python] {
            let a = soak_zip(runtime, 1).unwrap();
            let b = soak_zip(runtime, 2).unwrap();
            assert_ne!(a, b, "each code update is a different zip");
            let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a)).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut archive.by_index(0).unwrap(), &mut text).unwrap();
            assert!(text.contains("deliberate failure") && text.contains("generation 1"));
        }
    }

    #[test]
    fn surprises_come_from_the_server_counters() {
        let mut r = SoakResult {
            invocations: 10,
            sync_ok: 8,
            events_accepted: 1,
            deliberate_function_errors: 1,
            errors: BTreeMap::new(),
            measured_s: 1.0,
            throughput_per_s: 10.0,
            latency: None,
            churn: Churn::default(),
            samples: Vec::new(),
            after_teardown: None,
            verdict: verdict(&[]),
            server_counters: BTreeMap::from([
                ("lah_invocations_total".to_owned(), 10.0),
                ("lah_function_errors_total".to_owned(), 1.0),
            ]),
        };
        assert!(server_surprises(&r).is_empty());
        r.server_counters
            .insert("lah_function_errors_total".into(), 2.0);
        r.server_counters
            .insert("lah_events_dropped_total".into(), 1.0);
        let w = server_surprises(&r);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("lah_events_dropped_total") && w[1].contains("beyond the deliberate")
        );
    }

    #[test]
    fn count_labels() {
        assert_eq!(crate::plots::fmt_count(0.0), "0");
        assert_eq!(crate::plots::fmt_count(250_000.0), "250k");
        assert_eq!(crate::plots::fmt_count(1_500_000.0), "1.5M");
    }

    #[test]
    fn chart_needs_two_points() {
        let rss = [(0.0, 40.0), (1000.0, 41.0)];
        let counts = [("open descriptors", vec![(0.0, 30.0), (1000.0, 31.0)])];
        let svg = crate::plots::soak_chart("t", &rss, &counts).unwrap();
        assert!(svg.contains("server RSS") && svg.contains("open descriptors"));
        assert!(crate::plots::soak_chart("t", &rss[..1], &counts).is_none());
    }
}
