//! The four measured scenarios, each run against one target function (a runtime × transport):
//! cold start, warm start, high frequency (open loop) and throughput (closed loop).
//!
//! Invariants: a latency is recorded only for a measured request, never for warm-up; connection
//! set-up is never inside a latency; every phase brackets its measured window with a `/proc`
//! sample and a `/metrics` snapshot, so CPU per invoke and server-side events (cold starts,
//! throttles, WebSocket fallbacks) belong to exactly that window. High frequency is
//! coordinated-omission corrected: its latency runs from the intended send time (wrk2-style).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};

use crate::client::{Conn, Endpoint};
use crate::lambda::{classify, invoke_path, Api, Metrics, RuntimeKind, Transport, GENERATION_ENV};
use crate::procstat::{Sample, Usage, Watch};
use crate::progress::{Counters, Plan, Progress};
use crate::stats::{histogram, Summary, Tally};

/// Warm-up invokes before the warm-start series, so the instance is initialised and hot.
const WARM_UP_INVOKES: u64 = 20;
/// Invokes each throughput worker completes before measuring starts.
const WORKER_READY_INVOKES: u64 = 3;
/// How long throughput waits for all workers to get ready (instances to cold-start).
const READY_WAIT_MAX: Duration = Duration::from_secs(120);
/// Pause before a connection retries after a failed connect, so a dead server is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Lead time of the first scheduled high-frequency request.
const SCHEDULE_LEAD: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Cold,
    /// Cold starts of later instances of a function whose first instance is up (`cold_later`).
    #[serde(rename = "cold-later")]
    #[value(name = "cold-later")]
    ColdLater,
    Warm,
    Highfreq,
    Throughput,
}

impl Scenario {
    /// Whether the phase is a set of cold-start samples rather than a stream of invokes.
    pub fn is_cold(self) -> bool {
        matches!(self, Scenario::Cold | Scenario::ColdLater)
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::Cold => "Cold Start",
            Scenario::ColdLater => "Cold Start, later instance",
            Scenario::Warm => "Warm Start",
            Scenario::Highfreq => "High Frequency",
            Scenario::Throughput => "Throughput",
        }
    }
}

/// One function under test.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub function: String,
    pub runtime: RuntimeKind,
    pub transport: Transport,
    /// The environment to keep when a cold start is forced by changing `GENERATION_ENV`.
    pub base_env: BTreeMap<String, String>,
    #[serde(skip)]
    pub payload: Arc<Vec<u8>>,
    /// The first invoke after CreateFunction (a cold start), if loadgen created the function.
    pub first_invoke: Option<ColdSample>,
    /// With `--url`: the host of the function's URL (`<id>.lambda-url.<region>.localhost:<port>`).
    /// Warm, high-frequency and throughput invokes then go to the URL (`POST /` with this
    /// `Host`, on the endpoint's address); cold starts still use Invoke, whose log tail carries
    /// the Init Duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_host: Option<String>,
}

impl Target {
    pub fn label(&self) -> String {
        let via = if self.url_host.is_some() { " url" } else { "" };
        format!("{} {}{via}", self.runtime.label(), self.transport.label())
    }

    /// The request target of a measured invoke: the function URL's root, or Invoke's path.
    pub fn invoke_target(&self) -> String {
        match self.url_host {
            Some(_) => "/".to_owned(),
            None => invoke_path(&self.function),
        }
    }
}

/// One cold invoke.
#[derive(Clone, Debug, Serialize)]
pub struct ColdSample {
    /// `create` (first invoke of a new function), `update` (after a configuration change) or
    /// `later` (a new instance beside busy ones of the same configuration, `cold_later`).
    pub kind: &'static str,
    pub latency_ms: f64,
    /// `Init Duration` of the REPORT line; `None` means the server reported no cold start.
    pub init_duration_ms: Option<f64>,
    pub error: Option<String>,
    /// How the server started the instance (`lah_executor_starts_total` kinds that rose during
    /// the sample: `exec` a new process or container, `fork` from a template, `pooled` a
    /// pre-started process or container); None when the server exports no such counter or
    /// started nothing.
    pub start: Option<String>,
}

/// Everything measured in one phase.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub scenario: Scenario,
    pub runtime: RuntimeKind,
    pub transport: Transport,
    pub function: String,
    /// Which repetition of the scenario sequence (`--repeat`) this is, from 1.
    pub repetition: usize,
    pub concurrency: Option<usize>,
    pub rate_per_s: Option<f64>,
    pub connections: Option<usize>,
    pub measured_s: f64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub throttled: u64,
    /// Errors while warming up (not part of the measurement, but worth seeing).
    pub warmup_errors: BTreeMap<String, u64>,
    pub throughput_per_s: f64,
    /// Client-side latency; for high frequency, from the intended send time.
    pub latency: Option<Summary>,
    /// High frequency only: from the actual send time (what the server alone took).
    pub service_latency: Option<Summary>,
    /// High frequency only: how late loadgen's scheduler thread released each request (its own
    /// timer and CPU lateness, independent of the server).
    pub schedule_lag: Option<Summary>,
    /// High frequency only: from release until a connection sent it (all connections busy on
    /// slow responses, or loadgen's event loop slow to wake).
    pub dispatch_wait: Option<Summary>,
    pub init_duration: Option<Summary>,
    pub cold_samples: Vec<ColdSample>,
    pub usage: Usage,
    /// Changes of the server's `/metrics` counters during the measured window.
    pub server_counters: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

impl Phase {
    fn new(scenario: Scenario, target: &Target) -> Phase {
        Phase {
            scenario,
            runtime: target.runtime,
            transport: target.transport,
            function: target.function.clone(),
            repetition: 1,
            concurrency: None,
            rate_per_s: None,
            connections: None,
            measured_s: 0.0,
            ok: 0,
            errors: BTreeMap::new(),
            throttled: 0,
            warmup_errors: BTreeMap::new(),
            throughput_per_s: 0.0,
            latency: None,
            service_latency: None,
            schedule_lag: None,
            dispatch_wait: None,
            init_duration: None,
            cold_samples: Vec::new(),
            usage: Usage::default(),
            server_counters: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn set_tally(&mut self, tally: &Tally, measured: Duration) {
        self.measured_s = measured.as_secs_f64();
        self.ok = tally.ok_count();
        self.errors = tally.errors.clone();
        self.throttled = tally.throttled();
        self.latency = Summary::of(&tally.latency);
        if self.measured_s > 0.0 {
            self.throughput_per_s = self.ok as f64 / self.measured_s;
        }
    }

    /// A one-line result for stderr.
    pub fn one_line(&self) -> String {
        let lat = self
            .latency
            .as_ref()
            .map_or("no successes".to_owned(), |l| {
                format!("p50 {:.3} ms, p99 {:.3} ms", l.p50_ms, l.p99_ms)
            });
        let errors = self.errors.values().sum::<u64>();
        format!(
            "{} {} {}{}: {lat}, {:.0}/s, {} ok, {errors} errors",
            self.scenario.title(),
            self.runtime.label(),
            self.transport.label(),
            self.concurrency
                .map_or(String::new(), |c| format!(" c={c}")),
            self.throughput_per_s,
            self.ok,
        )
    }
}

/// Shared state of a run: where to send, the control connection, what to watch.
pub struct Bench {
    pub endpoint: Endpoint,
    pub api: Api,
    pub watch: Watch,
    pub request_timeout: Duration,
    pub quiet: bool,
}

/// The start of a measured window.
struct Meter {
    sample: Sample,
    metrics: Option<Metrics>,
}

impl Bench {
    fn conn(&self) -> Conn {
        Conn::new(&self.endpoint, self.request_timeout)
    }

    /// A connection for `target`'s measured invokes: to the endpoint's address, with the
    /// function URL's `Host` when the target is invoked through its URL.
    pub fn conn_for(&self, target: &Target) -> Conn {
        match &target.url_host {
            Some(host) => {
                let mut endpoint = self.endpoint.clone();
                endpoint.host = host.clone();
                Conn::new(&endpoint, self.request_timeout)
            }
            None => self.conn(),
        }
    }

    async fn sample(&self) -> Sample {
        let watch = self.watch.clone();
        match tokio::task::spawn_blocking(move || watch.sample()).await {
            Ok(sample) => sample,
            Err(_) => self.watch.sample(),
        }
    }

    async fn begin(&mut self) -> Meter {
        let metrics = self.api.metrics().await;
        Meter {
            sample: self.sample().await,
            metrics,
        }
    }

    /// Closes the window; `invokes` is how many invokes it held (CPU is divided by it).
    async fn end(&mut self, meter: Meter, phase: &mut Phase, invokes: u64) {
        let sample = self.sample().await;
        phase.usage = self.watch.usage(&meter.sample, &sample, invokes);
        if let (Some(before), Some(after)) = (meter.metrics, self.api.metrics().await) {
            phase.server_counters = after.counter_deltas(&before);
        }
    }

    fn progress(&self, scenario: Scenario, target: &Target, plan: Plan) -> Progress {
        let label = format!("{} {}", scenario.title(), target.label());
        Progress::start(label, plan, self.quiet)
    }
}

/// One invoke on `conn`: `Err(label)` for any failure (see `lambda::classify`).
async fn invoke(conn: &mut Conn, path: &str, payload: &[u8]) -> Result<(), String> {
    match conn.request("POST", path, &[], payload).await {
        Ok(resp) => classify(&resp).map_or(Ok(()), Err),
        Err(e) => Err(e.kind().to_owned()),
    }
}

/// Connects, retrying after a pause until `give_up`; failures are tallied as errors.
async fn connect(conn: &mut Conn, tally: &mut Tally, give_up: Instant) -> bool {
    loop {
        match conn.connect().await {
            Ok(()) => return true,
            Err(e) if Instant::now() >= give_up => {
                tally.error(e.kind().to_owned());
                return false;
            }
            Err(e) => {
                tally.error(e.kind().to_owned());
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

/// Cold start: `samples` first invokes of fresh instances. The first sample is the invoke right
/// after CreateFunction when loadgen created the function; each other one follows an
/// UpdateFunctionConfiguration that changes `GENERATION_ENV`, which retires all instances.
pub async fn cold(
    bench: &mut Bench,
    target: &Target,
    samples: u64,
    pause: Duration,
    run_id: &str,
) -> Phase {
    let mut phase = Phase::new(Scenario::Cold, target);
    let progress = bench.progress(Scenario::Cold, target, Plan::Count(samples));
    let meter = bench.begin().await;
    let started = Instant::now();
    let mut seen: Vec<ColdSample> = target.first_invoke.iter().cloned().collect();
    for generation in seen.len() as u64..samples {
        let mut env = target.base_env.clone();
        env.insert(GENERATION_ENV.into(), format!("{run_id}-{generation}"));
        if let Err(e) = bench.api.set_environment(&target.function, &env).await {
            phase.notes.push(format!("cold start aborted: {e}"));
            break;
        }
        // Let the retired instance exit first, so its shutdown does not compete for the CPU.
        tokio::time::sleep(pause).await;
        let sample = cold_invoke(&mut bench.api, target, "update").await;
        progress.counters.record(sample.error.is_none());
        seen.push(sample);
    }
    let not_cold = record_cold_samples(&mut phase, seen, started.elapsed());
    if not_cold > 0 {
        phase.notes.push(format!(
            "{not_cold} of {} cold-start samples had no Init Duration in their REPORT line \
             (the server did not report a cold start)",
            phase.cold_samples.len()
        ));
    }
    let in_window = phase
        .cold_samples
        .len()
        .saturating_sub(target.first_invoke.iter().count()) as u64;
    bench.end(meter, &mut phase, in_window).await;
    progress.finish(&phase.one_line()).await;
    phase
}

/// How long, at least, the holders of `cold_later` keep their instances busy.
const HOLD_MIN: Duration = Duration::from_secs(1);
/// How long, at most.
const HOLD_MAX: Duration = Duration::from_secs(30);
/// How long `cold_later` lets its holders reach their instances before the measured invoke.
const HOLD_SETTLE: Duration = Duration::from_millis(50);

/// The event that makes the echo handler wait `ms` before it answers (`lambda::RuntimeKind`'s
/// source reads `loadgen_hold_ms`).
pub fn hold_event(ms: u64) -> Vec<u8> {
    format!("{{\"loadgen_hold_ms\":{ms}}}").into_bytes()
}

/// Cold start of later instances: the second and later instances of one configuration, as a
/// scale-out starts them (on AWS, and here from a pre-initialised template where the server has
/// one). Sample `i` keeps the function's `i + 1` instances busy with invokes that wait `hold` in
/// the handler (one connection each), then sends the measured invoke, which needs a new instance.
/// Its client latency includes any wait the server's scale-out policy imposes before it starts
/// one (`--scale-out adaptive` first waits up to one init duration for a busy instance); "init"
/// is the instance's own `Init Duration`. Runs on the configuration the `cold` phase left.
pub async fn cold_later(bench: &mut Bench, target: &Target, samples: u64, hold: Duration) -> Phase {
    let mut phase = Phase::new(Scenario::ColdLater, target);
    let progress = bench.progress(Scenario::ColdLater, target, Plan::Count(samples));
    let hold = hold.clamp(HOLD_MIN, HOLD_MAX);
    let path = invoke_path(&target.function);
    // One instance of the configuration must be up; after `cold` it is.
    let _ = bench
        .api
        .invoke_tail(&target.function, &target.payload)
        .await;
    let meter = bench.begin().await;
    let started = Instant::now();
    let mut seen = Vec::new();
    for i in 0..samples {
        let mut holders = tokio::task::JoinSet::new();
        for _ in 0..=i {
            let mut conn = Conn::new(&bench.endpoint, bench.request_timeout + hold);
            let path = path.clone();
            let event = hold_event(hold.as_millis() as u64);
            holders.spawn(async move { invoke(&mut conn, &path, &event).await });
        }
        tokio::time::sleep(HOLD_SETTLE).await;
        let sample = cold_invoke(&mut bench.api, target, "later").await;
        progress.counters.record(sample.error.is_none());
        seen.push(sample);
        while let Some(held) = holders.join_next().await {
            if let Ok(Err(kind)) = held {
                phase.notes.push(format!("a holding invoke failed: {kind}"));
            }
        }
    }
    let not_cold = record_cold_samples(&mut phase, seen, started.elapsed());
    if not_cold > 0 {
        phase.notes.push(format!(
            "{not_cold} of {} later-instance samples were served by an instance that was \
             already up (no Init Duration)",
            phase.cold_samples.len()
        ));
    }
    bench.end(meter, &mut phase, samples).await;
    progress.finish(&phase.one_line()).await;
    phase
}

/// Puts a cold phase's samples into it: latencies and errors into its tally (measured over
/// `elapsed`), Init Durations into its init summary, the samples themselves. Returns how many
/// succeeded without an Init Duration (no cold start reported).
fn record_cold_samples(phase: &mut Phase, seen: Vec<ColdSample>, elapsed: Duration) -> usize {
    let mut tally = Tally::default();
    let mut inits = histogram();
    for sample in &seen {
        match &sample.error {
            Some(kind) => tally.error(kind.clone()),
            None => tally.ok((sample.latency_ms * 1e6) as u64),
        }
        if let Some(init) = sample.init_duration_ms {
            inits.saturating_record((init * 1e6) as u64);
        }
    }
    phase.set_tally(&tally, elapsed);
    phase.throughput_per_s = 0.0;
    phase.init_duration = Summary::of(&inits);
    let not_cold = seen
        .iter()
        .filter(|s| s.error.is_none() && s.init_duration_ms.is_none())
        .count();
    phase.cold_samples = seen;
    not_cold
}

/// One logged invoke, timed from send to the end of the response.
/// The server's metrics are read before and after it (outside the timed part) to tell how the
/// instance was started.
pub async fn cold_invoke(api: &mut Api, target: &Target, kind: &'static str) -> ColdSample {
    let before = api.metrics().await;
    let started = Instant::now();
    let result = api.invoke_tail(&target.function, &target.payload).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let start = match (before, api.metrics().await) {
        (Some(before), Some(after)) => after.start_kinds_since(&before),
        _ => None,
    };
    match result {
        Ok(tail) => ColdSample {
            kind,
            latency_ms,
            init_duration_ms: tail.init_duration_ms(),
            error: classify(&tail.response),
            start,
        },
        Err(e) => ColdSample {
            kind,
            latency_ms,
            init_duration_ms: None,
            error: Some(e.kind().to_owned()),
            start,
        },
    }
}

/// Warm start: `invokes` sequential invokes on one keep-alive connection, after a warm-up, so
/// every one of them lands on the same warm instance.
pub async fn warm(bench: &mut Bench, target: &Target, invokes: u64) -> Phase {
    let mut phase = Phase::new(Scenario::Warm, target);
    let path = target.invoke_target();
    let mut conn = bench.conn_for(target);
    let mut warmup = Tally::default();
    let give_up = Instant::now() + bench.request_timeout;
    if connect(&mut conn, &mut warmup, give_up).await {
        for _ in 0..WARM_UP_INVOKES {
            if let Err(kind) = invoke(&mut conn, &path, &target.payload).await {
                warmup.error(kind);
            }
        }
    }
    let progress = bench.progress(Scenario::Warm, target, Plan::Count(invokes));
    let meter = bench.begin().await;
    let mut tally = Tally::default();
    let started = Instant::now();
    for _ in 0..invokes {
        let sent = Instant::now();
        let result = invoke(&mut conn, &path, &target.payload).await;
        let ok = result.is_ok();
        match result {
            Ok(()) => tally.ok(sent.elapsed().as_nanos() as u64),
            Err(kind) => tally.error(kind),
        }
        progress.counters.record(ok);
    }
    phase.set_tally(&tally, started.elapsed());
    phase.warmup_errors = warmup.errors;
    let invokes = phase.ok + phase.errors.values().sum::<u64>();
    bench.end(meter, &mut phase, invokes).await;
    progress.finish(&phase.one_line()).await;
    phase
}

/// One scheduled request of the open-loop schedule.
#[derive(Clone, Copy)]
struct Tick {
    intended: Instant,
    /// When the scheduler thread actually handed it over (`intended` plus its own lateness).
    released: Instant,
    measured: bool,
}

/// What a high-frequency connection worker measured. For each request, corrected latency =
/// schedule lag (intended → released) + dispatch wait (released → sent) + service (sent → done).
struct OpenLoopTally {
    corrected: Tally,
    service: Histogram<u64>,
    schedule_lag: Histogram<u64>,
    dispatch_wait: Histogram<u64>,
    warmup: Tally,
}

fn nanos(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos().max(1) as u64
}

/// High frequency: an open-loop schedule of `rate` requests per second for `duration` after
/// `warmup`, served by `connections` keep-alive connections that take the next due request
/// when free. Latency is measured from the intended send time, so a stall that delays later
/// requests counts against them too (coordinated-omission correction, as in wrk2).
pub async fn highfreq(
    bench: &mut Bench,
    target: &Target,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    connections: usize,
) -> Phase {
    let mut phase = Phase::new(Scenario::Highfreq, target);
    phase.rate_per_s = Some(rate);
    phase.connections = Some(connections);
    let (tx, rx) = mpsc::unbounded_channel::<Tick>();
    let rx = Arc::new(Mutex::new(rx));
    let progress = bench.progress(Scenario::Highfreq, target, Plan::Time(warmup + duration));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let conn = bench.conn_for(target);
        let path = target.invoke_target();
        let payload = target.payload.clone();
        let (rx, counters) = (rx.clone(), progress.counters.clone());
        workers.push(tokio::spawn(open_loop_worker(
            conn, path, payload, rx, counters,
        )));
    }
    // Connections open before the schedule starts; give them a moment.
    tokio::time::sleep(SCHEDULE_LEAD).await;
    let start = Instant::now() + SCHEDULE_LEAD;
    let warm_count = (rate * warmup.as_secs_f64()).round() as u64;
    let total = warm_count + (rate * duration.as_secs_f64()).round() as u64;
    let scheduler = std::thread::spawn(move || run_schedule(tx, start, rate, warm_count, total));
    tokio::time::sleep_until((start + warmup).into()).await;
    let meter = bench.begin().await;
    let mut tallies = Vec::new();
    for worker in workers {
        if let Ok(t) = worker.await {
            tallies.push(t);
        }
    }
    let _ = scheduler.join();
    let mut merged = Tally::default();
    let (mut service, mut lag, mut wait) = (histogram(), histogram(), histogram());
    let mut warm_tally = Tally::default();
    for t in &tallies {
        merged.merge(&t.corrected);
        let _ = service.add(&t.service);
        let _ = lag.add(&t.schedule_lag);
        let _ = wait.add(&t.dispatch_wait);
        warm_tally.merge(&t.warmup);
    }
    phase.set_tally(&merged, duration);
    phase.service_latency = Summary::of(&service);
    phase.dispatch_wait = Summary::of(&wait);
    phase.schedule_lag = Summary::of(&lag);
    phase.warmup_errors = warm_tally.errors;
    let invokes = phase.ok + phase.errors.values().sum::<u64>();
    bench.end(meter, &mut phase, invokes).await;
    progress.finish(&phase.one_line()).await;
    phase
}

/// The schedule, on its own OS thread: tokio's timer wheel has 1 ms granularity, which would
/// add up to 1 ms of fake latency to every CO-corrected sample; a sleeping thread wakes within
/// tens of microseconds (its timer slack is lowered to 1 µs).
fn run_schedule(tx: mpsc::UnboundedSender<Tick>, start: Instant, rate: f64, warm: u64, total: u64) {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack; no memory is involved.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let tick = Tick {
            intended,
            released: Instant::now(),
            measured: i >= warm,
        };
        if tx.send(tick).is_err() {
            return;
        }
    }
}

async fn open_loop_worker(
    mut conn: Conn,
    path: String,
    payload: Arc<Vec<u8>>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Tick>>>,
    counters: Arc<Counters>,
) -> OpenLoopTally {
    let mut out = OpenLoopTally {
        corrected: Tally::default(),
        service: histogram(),
        schedule_lag: histogram(),
        dispatch_wait: histogram(),
        warmup: Tally::default(),
    };
    let _ = conn.connect().await; // a failure shows up on the first request
    loop {
        let tick = { rx.lock().await.recv().await };
        let Some(tick) = tick else {
            return out;
        };
        let sent = Instant::now();
        let result = invoke(&mut conn, &path, &payload).await;
        let done = Instant::now();
        counters.record(result.is_ok());
        if matches!(&result, Err(kind) if kind == "connect") {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        if !tick.measured {
            if let Err(kind) = result {
                out.warmup.error(kind);
            }
            continue;
        }
        match result {
            Ok(()) => {
                out.corrected.ok(nanos(tick.intended, done));
                out.service.saturating_record(nanos(sent, done));
            }
            Err(kind) => out.corrected.error(kind),
        }
        out.schedule_lag
            .saturating_record(nanos(tick.intended, tick.released));
        out.dispatch_wait
            .saturating_record(nanos(tick.released, sent));
    }
}

/// Throughput phase states, shared by the workers of one run.
const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// Throughput: `concurrency` closed-loop workers, one keep-alive connection each, invoking
/// back to back. Measuring starts once every worker has completed a few invokes (all instances
/// cold-started) and the warm-up time has passed; it lasts `duration`.
pub async fn throughput(
    bench: &mut Bench,
    target: &Target,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
) -> Phase {
    let mut phase = Phase::new(Scenario::Throughput, target);
    phase.concurrency = Some(concurrency);
    phase.connections = Some(concurrency);
    let state = Arc::new(AtomicU8::new(WARMING));
    let ready = Arc::new(AtomicUsize::new(0));
    let progress = bench.progress(Scenario::Throughput, target, Plan::Time(duration));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let conn = bench.conn_for(target);
        let path = target.invoke_target();
        let payload = target.payload.clone();
        let (state, ready, counters) = (state.clone(), ready.clone(), progress.counters.clone());
        workers.push(tokio::spawn(closed_loop_worker(
            conn, path, payload, state, ready, counters,
        )));
    }
    let warm_started = Instant::now();
    tokio::time::sleep(warmup).await;
    while ready.load(Ordering::Relaxed) < concurrency && warm_started.elapsed() < READY_WAIT_MAX {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Instances the warm-up asked for may still be starting (a container start under load takes
    // seconds): their first invokes would count as cold starts in the measured window.
    while warm_started.elapsed() < READY_WAIT_MAX {
        match bench.api.metrics().await.and_then(|m| m.starting()) {
            Some(starting) if starting > 0.0 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    let ready_now = ready.load(Ordering::Relaxed);
    if ready_now < concurrency {
        phase.notes.push(format!(
            "only {ready_now} of {concurrency} workers completed {WORKER_READY_INVOKES} invokes \
             within {READY_WAIT_MAX:?} of warm-up; measured anyway"
        ));
    }
    let meter = bench.begin().await;
    let started = Instant::now();
    state.store(MEASURING, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    state.store(STOPPED, Ordering::Relaxed);
    let measured = started.elapsed();
    let mut tally = Tally::default();
    let mut warm_tally = Tally::default();
    for worker in workers {
        if let Ok((t, w)) = worker.await {
            tally.merge(&t);
            warm_tally.merge(&w);
        }
    }
    phase.set_tally(&tally, measured);
    phase.warmup_errors = warm_tally.errors;
    let invokes = phase.ok + phase.errors.values().sum::<u64>();
    bench.end(meter, &mut phase, invokes).await;
    progress.finish(&phase.one_line()).await;
    phase
}

async fn closed_loop_worker(
    mut conn: Conn,
    path: String,
    payload: Arc<Vec<u8>>,
    state: Arc<AtomicU8>,
    ready: Arc<AtomicUsize>,
    counters: Arc<Counters>,
) -> (Tally, Tally) {
    let mut tally = Tally::default();
    let mut warmup = Tally::default();
    let mut warm_ok = 0u64;
    let _ = conn.connect().await;
    loop {
        let before = state.load(Ordering::Relaxed);
        if before == STOPPED {
            return (tally, warmup);
        }
        let sent = Instant::now();
        let result = invoke(&mut conn, &path, &payload).await;
        let ns = sent.elapsed().as_nanos() as u64;
        // Only requests sent and completed inside the window count toward it.
        let measured = before == MEASURING && state.load(Ordering::Relaxed) == MEASURING;
        if measured {
            counters.record(result.is_ok());
        }
        if matches!(&result, Err(kind) if kind == "connect") {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        match (result, measured) {
            (Ok(()), true) => tally.ok(ns),
            (Err(kind), true) => tally.error(kind),
            (Ok(()), false) => {
                warm_ok += 1;
                if warm_ok == WORKER_READY_INVOKES {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Err(kind), false) => warmup.error(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use lambda_at_home::protocols::http::{write_response_head, Decoder, Limits};
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A fake Lambda endpoint: echoes invocations, throttles every `throttle_every`-th one with
    /// 429, and has no `/metrics`.
    async fn fake_lambda(throttle_every: u64) -> (Endpoint, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint =
            Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut decoder = Decoder::new(Limits::default());
                    let mut buf = BytesMut::with_capacity(4096);
                    loop {
                        while let Ok(Some(req)) = decoder.decode(&mut buf) {
                            let mut out = Vec::new();
                            if !req.path().ends_with("/invocations") {
                                write_response_head(&mut out, 404, &[], 0, true);
                            } else if (counter.fetch_add(1, Ordering::Relaxed) + 1) % throttle_every
                                == 0
                            {
                                let ty = [("x-amzn-ErrorType", "TooManyRequestsException")];
                                write_response_head(&mut out, 429, &ty, 2, true);
                                out.extend_from_slice(b"{}");
                            } else {
                                write_response_head(&mut out, 200, &[], req.body.len(), true);
                                out.extend_from_slice(&req.body);
                            }
                            if sock.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        match sock.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        (endpoint, seen)
    }

    fn bench(endpoint: &Endpoint) -> Bench {
        Bench {
            endpoint: endpoint.clone(),
            api: Api::new(Conn::new(endpoint, Duration::from_secs(5))),
            watch: Watch::new(None),
            request_timeout: Duration::from_secs(5),
            quiet: true,
        }
    }

    fn target() -> Target {
        Target {
            function: "f".into(),
            runtime: RuntimeKind::Python,
            transport: Transport::Ws,
            base_env: BTreeMap::new(),
            payload: Arc::new(crate::lambda::payload(64)),
            first_invoke: None,
            url_host: None,
        }
    }

    #[tokio::test]
    async fn warm_counts_every_invoke_and_throttles() {
        let (endpoint, seen) = fake_lambda(10).await;
        let mut bench = bench(&endpoint);
        let phase = warm(&mut bench, &target(), 100).await;
        // 20 warm-up invokes (2 throttled), then 100 measured: numbers 21..=120 hold 10 throttles.
        assert_eq!(phase.ok, 90);
        assert_eq!(phase.throttled, 10);
        assert_eq!(
            phase.errors.get("http_429:TooManyRequestsException"),
            Some(&10)
        );
        assert_eq!(phase.warmup_errors.values().sum::<u64>(), 2);
        assert_eq!(seen.load(Ordering::Relaxed), 120);
        assert!(phase.latency.unwrap().p50_ms > 0.0);
        assert!(phase.usage.loadgen_cpu_ms > 0.0);
        assert!(phase.usage.server_cpu_ms.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn highfreq_keeps_the_schedule() {
        let (endpoint, seen) = fake_lambda(u64::MAX).await;
        let mut bench = bench(&endpoint);
        let rate = 400.0;
        let warmup = Duration::from_millis(250);
        let duration = Duration::from_millis(500);
        let phase = highfreq(&mut bench, &target(), rate, duration, warmup, 4).await;
        assert_eq!(phase.ok, 200, "{phase:?}");
        assert_eq!(seen.load(Ordering::Relaxed), 300);
        assert!((phase.throughput_per_s - rate).abs() < 1.0);
        let corrected = phase.latency.unwrap();
        let service = phase.service_latency.unwrap();
        // Corrected latency includes the queue wait, so it is never below the service latency.
        assert!(corrected.max_ms >= service.max_ms);
        assert_eq!(phase.schedule_lag.unwrap().count, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn throughput_measures_only_the_window() {
        let (endpoint, seen) = fake_lambda(u64::MAX).await;
        let mut bench = bench(&endpoint);
        let phase = throughput(
            &mut bench,
            &target(),
            4,
            Duration::from_millis(300),
            Duration::from_millis(100),
        )
        .await;
        assert!(phase.ok > 10, "{phase:?}");
        assert!(phase.errors.is_empty());
        // Warm-up requests were served but are not in the count.
        assert!(seen.load(Ordering::Relaxed) > phase.ok + 4 * WORKER_READY_INVOKES - 1);
        let expected = phase.ok as f64 / phase.measured_s;
        assert!((phase.throughput_per_s - expected).abs() < 1e-6);
    }

    #[tokio::test]
    async fn cold_against_a_server_without_configuration_api_reports_the_failure() {
        let (endpoint, _) = fake_lambda(u64::MAX).await;
        let mut bench = bench(&endpoint);
        let phase = cold(&mut bench, &target(), 3, Duration::ZERO, "t").await;
        assert_eq!(phase.ok, 0);
        assert!(
            phase.notes[0].contains("UpdateFunctionConfiguration returned HTTP 404"),
            "{:?}",
            phase.notes
        );
    }
}
