//! `loadgen`: measures a Lambda-compatible endpoint the way the "Performance Comparison" tables
//! of the WebSocket Runtime API's original design do (`docs/websocket-protocol.md`) — cold
//! start, warm start, high frequency and throughput, for each runtime (Node, Python) and runtime
//! transport (HTTP, WebSocket) — and reports the tables, the full detail, JSON, and the server's
//! CPU and memory when it runs on this machine.
//!
//! Module map: `client` (HTTP/1.1 keep-alive client), `sigv4` (request signing), `lambda`
//! (User API, test functions), `scenarios` (the four measurements), `floor` (the machine's own
//! floor), `stats` (HdrHistogram tallies), `procstat` (`/proc`), `progress` (stderr line),
//! `report` (Markdown, JSON, files), `soak` (the long churn run and its report), `view` (reading reports back), `plots` and `html` (charts,
//! HTML page), `compare` (A/B with noise bands), `paths` (no machine paths in results). Test
//! functions loadgen creates are deleted at the end, also when a phase fails.
//!
//! Threads: one tokio runtime (`--threads` workers, default 1) runs everything; the
//! high-frequency schedule has its own OS thread; `compare` runs without a runtime; the hidden
//! `floor-serve` and `floor-runtime` subcommands are the floor's server and runtime processes.

mod client;
mod compare;
mod floor;
mod floor_uring;
mod html;
mod lambda;
mod paths;
mod plots;
mod procstat;
mod progress;
mod report;
mod scenarios;
mod sigv4;
mod soak;
mod stats;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;

use client::{ClientError, Conn, Endpoint};
use paths::Scrub;

/// Closed-loop workers of `soak` when `--concurrency` is not given (the global default is the
/// throughput scenario's list of levels): enough to keep a few instances of each live function
/// busy on a small machine.
const SOAK_CONCURRENCY_DEFAULT: usize = 16;

/// Repetitions of a run at most: each repeats every phase, and 20 already gives a band that
/// more would not narrow much.
const REPEAT_MAX: usize = 20;
use lambda::{Api, ApiError, RuntimeKind, Transport, TRANSPORT_ENV};
use procstat::Watch;
use report::{GitInfo, Machine, Report, ServerInfo, Settings};
use scenarios::{Bench, Phase, Scenario, Target};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for Lambda-compatible endpoints: cold start, warm start, high \
             frequency (open loop, CO-corrected) and throughput (closed loop), over the HTTP and \
             WebSocket runtime transports",
    after_help = "With no subcommand, runs every scenario (the full report)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Options,
}

#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Every scenario (the default).
    Full,
    /// First invokes of fresh instances.
    Cold,
    /// Sequential invokes on one warm instance.
    Warm,
    /// Constant-rate open-loop load, latency from the intended send time.
    Highfreq,
    /// Closed-loop load at each concurrency level.
    Throughput,
    /// The machine's floor: the same exchange through a trivial Rust server and runtime.
    Floor(floor::FloorArgs),
    /// A long closed-loop run with function churn, sampling the server's RSS, descriptors,
    /// threads and instances, with a verdict on whether RSS stays flat.
    Soak(soak::SoakArgs),
    /// Compare reports: each against the first, with noise bands from their repetitions.
    Compare {
        /// Report JSON files; the first is the baseline.
        #[arg(required = true, num_args = 2..=compare::REPORTS_MAX)]
        files: Vec<PathBuf>,
    },
    /// The floor's server process (started by `floor`).
    #[command(hide = true)]
    FloorServe(floor::ServeArgs),
    /// The floor's runtime process (started by the floor server).
    #[command(hide = true)]
    FloorRuntime(floor::RuntimeArgs),
}

impl Command {
    fn label(&self) -> &'static str {
        match self {
            Command::Full => "full",
            Command::Cold => "cold",
            Command::Warm => "warm",
            Command::Highfreq => "highfreq",
            Command::Throughput => "throughput",
            Command::Floor(_) => "floor",
            Command::Soak(_) => "soak",
            Command::Compare { .. } => "compare",
            Command::FloorServe(_) => "floor-serve",
            Command::FloorRuntime(_) => "floor-runtime",
        }
    }

    fn scenarios(&self) -> Vec<Scenario> {
        match self {
            Command::Full => vec![
                Scenario::Cold,
                Scenario::Warm,
                Scenario::Highfreq,
                Scenario::Throughput,
            ],
            Command::Cold => vec![Scenario::Cold],
            Command::Warm => vec![Scenario::Warm],
            Command::Highfreq => vec![Scenario::Highfreq],
            Command::Throughput => vec![Scenario::Throughput],
            Command::Floor(_)
            | Command::Soak(_)
            | Command::Compare { .. }
            | Command::FloorServe(_)
            | Command::FloorRuntime(_) => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
struct Options {
    /// The Lambda User API to drive.
    #[arg(long, global = true, default_value = "http://127.0.0.1:9000")]
    endpoint: String,
    /// Use this existing function instead of creating test functions (runtime and transport are
    /// read from its configuration; cold starts change one env variable, restored at the end).
    #[arg(long, global = true)]
    function: Option<String>,
    /// With --function: only invoke it (`POST /2015-03-31/functions/NAME/invocations`), no
    /// other call at all (no ListFunctions, no configuration read or change, no /metrics), so
    /// any Lambda-style endpoint can be measured. No cold starts then; the runtime and
    /// transport named in the report are the first of --runtimes and --transports.
    #[arg(long, global = true, requires = "function")]
    invoke_only: bool,
    /// Sign every request with AWS SigV4 (service `lambda`), credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION.
    #[arg(long, global = true)]
    sign: bool,
    /// Invoke through a function URL (created with AuthType NONE for each function, deleted at
    /// the end unless it existed): warm, high-frequency and throughput requests are `POST /` to
    /// the URL; cold starts still use Invoke (its log tail has the Init Duration).
    #[arg(long, global = true, conflicts_with = "invoke_only")]
    url: bool,
    /// Run the scenario sequence this many times; the JSON keeps every repetition, and
    /// `compare` takes its noise band from them.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: usize,
    /// Relate the figures to this floor: a `loadgen floor` JSON, or a report that holds one
    /// (`full` measures its own floor when this is not given).
    #[arg(long, global = true)]
    floor: Option<PathBuf>,
    /// Measure even when the server binary is older than the checked-out code (refused
    /// otherwise); the report then carries the warning.
    #[arg(long, global = true)]
    allow_stale: bool,
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "node,python"
    )]
    runtimes: Vec<RuntimeKind>,
    #[arg(long, global = true, value_delimiter = ',', default_value = "http,ws")]
    transports: Vec<Transport>,
    /// Size of the JSON event sent (and echoed back).
    #[arg(long, global = true, default_value_t = 64)]
    payload_bytes: usize,
    /// Cold-start samples per function.
    #[arg(long, global = true, default_value_t = 10)]
    samples: u64,
    /// Pause after each configuration change before the cold invoke (lets the old instance exit).
    #[arg(long, global = true, default_value_t = 250)]
    cold_pause_ms: u64,
    /// Later-instance cold-start samples per function, after the first-instance ones: a new
    /// instance of an unchanged configuration while the others are busy (0: none). Needs
    /// loadgen's own echo functions (not with `--function`).
    #[arg(long, global = true, default_value_t = 5)]
    later_samples: u64,
    /// Module-level init of the echo functions sleeps this long (the functions loadgen creates
    /// get `LOADGEN_INIT_SLEEP_MS`): a function with a slow init, for cold starts.
    #[arg(long, global = true, default_value_t = 0)]
    init_sleep_ms: u64,
    /// Sequential invokes in the warm-start scenario.
    #[arg(long, global = true, default_value_t = 1000)]
    warm_invokes: u64,
    /// High-frequency request rate (per second).
    #[arg(long, global = true, default_value_t = 500.0)]
    rate: f64,
    /// Measured duration of high frequency and of each throughput level.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration_s: f64,
    /// Unmeasured warm-up before high frequency and each throughput level.
    #[arg(long, global = true, default_value_t = 2.0)]
    warmup_s: f64,
    /// Connections the high-frequency schedule is spread over.
    #[arg(long, global = true, default_value_t = 16)]
    connections: usize,
    /// Throughput concurrency levels (closed-loop workers, one connection each).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "10,50,100"
    )]
    concurrency: Vec<usize>,
    /// MemorySize of the test functions.
    #[arg(long, global = true, default_value_t = 128)]
    memory_mb: u32,
    /// Per-request timeout.
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout_s: f64,
    /// The server's pid, for CPU and memory; default: the local process listening on the port.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Tokio worker threads of loadgen (it shares the CPUs with the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Write `<DIR>/<YYYY-MM-DD>-<name>.json`, `.md`, `.html` and the charts as `.svg`.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Report name; default `<executor>-<subcommand>`, e.g. `process-full`.
    #[arg(long, global = true)]
    name: Option<String>,
    /// Print the JSON report on stdout instead of Markdown.
    #[arg(long, global = true)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot reach the Lambda API at {url}: {source}\n  is the server running? \
         (e.g. `lambda-at-home-server --executor process`, or pass --endpoint URL)"
    )]
    Unreachable { url: String, source: ClientError },
    #[error("{url} does not answer like the Lambda User API: {source}")]
    NotLambda { url: String, source: ApiError },
    #[error("function {name}: {source}")]
    Function { name: String, source: ApiError },
    #[error("no function could be set up; nothing was measured")]
    NothingToRun,
    #[error("{0}\n  (pass --allow-stale to measure it anyway; the report will say so)")]
    Stale(String),
    #[error("floor: {0}")]
    Floor(String),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("internal error: {0}")]
    Panic(String),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `soak` runs one concurrency level: the global default (a list for throughput) does not
    // apply to it unless given.
    let soak_default_concurrency = matches
        .subcommand_matches("soak")
        .and_then(|m| m.value_source("concurrency"))
        .is_none_or(|source| source == ValueSource::DefaultValue);
    if matches!(cli.command, Some(Command::Soak(_))) && soak_default_concurrency {
        cli.opts.concurrency = vec![SOAK_CONCURRENCY_DEFAULT];
    }
    match &cli.command {
        Some(Command::FloorServe(args)) => return floor::serve_main(args),
        Some(Command::FloorRuntime(args)) => return floor::runtime_main(&cli.opts.endpoint, args),
        Some(Command::Compare { files }) => {
            return match compare::run(files, cli.opts.out.as_deref()) {
                Ok(md) => {
                    print!("{md}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadgen: error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    let threads = cli.opts.threads.clamp(1, 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(RunError::Runtime);
    // Everything runs in a spawned task, on the worker thread that also polls the sockets: code
    // inside `block_on` would be woken across threads on every response, adding latency.
    let result = runtime.and_then(|rt| {
        rt.block_on(async { tokio::spawn(run(cli)).await })
            .unwrap_or_else(|e| Err(RunError::Panic(e.to_string())))
    });
    match result {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn validate(o: &Options) -> Result<(), RunError> {
    let bad = |m: &str| Err(RunError::Usage(m.to_owned()));
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return bad("--rate must be a positive number");
    }
    if !(o.duration_s > 0.0 && o.warmup_s >= 0.0 && o.timeout_s > 0.0) {
        return bad("--duration-s and --timeout-s must be positive, --warmup-s not negative");
    }
    if o.connections == 0 || o.concurrency.contains(&0) {
        return bad("--connections and --concurrency levels must be at least 1");
    }
    if o.runtimes.is_empty() || o.transports.is_empty() {
        return bad("--runtimes and --transports need at least one value");
    }
    if !(1..=REPEAT_MAX).contains(&o.repeat) {
        return bad("--repeat must be between 1 and 20");
    }
    Ok(())
}

/// The endpoint to drive (signing its requests with `--sign`) and a User API client on it.
fn connect(opts: &Options) -> Result<(Endpoint, Api), RunError> {
    let mut endpoint = Endpoint::parse(&opts.endpoint).map_err(|e| match e {
        ClientError::Endpoint(..) => RunError::Usage(e.to_string()),
        source => RunError::Unreachable {
            url: opts.endpoint.clone(),
            source,
        },
    })?;
    if opts.sign {
        let creds = sigv4::Credentials::from_env().map_err(RunError::Usage)?;
        endpoint.sign = Some(Arc::new(creds));
    }
    let timeout = Duration::from_secs_f64(opts.timeout_s);
    let api = Api::new(Conn::new(&endpoint, timeout));
    Ok((endpoint, api))
}

/// Runs everything; `Ok(false)` when the report has errors or warnings worth a non-zero exit.
async fn run(cli: Cli) -> Result<bool, RunError> {
    let opts = cli.opts;
    validate(&opts)?;
    let command = cli.command.unwrap_or(Command::Full);
    if let Command::Floor(args) = &command {
        return run_floor(&opts, args).await;
    }
    if let Command::Soak(args) = &command {
        return run_soak(&opts, args).await;
    }
    let started = Instant::now();
    let (date, started_unix_s) = report::today();
    let scrub = Scrub::from_env();
    let (endpoint, mut api) = connect(&opts)?;
    let timeout = Duration::from_secs_f64(opts.timeout_s);
    let metrics = if opts.invoke_only {
        api.metrics_enabled = false;
        None
    } else {
        preflight(&mut api, &endpoint).await?;
        api.metrics().await
    };
    let mut machine = Machine::collect();
    let mut server = server_info(&endpoint, &opts, metrics.as_ref(), &scrub);
    let git = GitInfo::collect();
    let mut warnings = check_checkout(&opts, &git, &mut server)?;
    if server.pid.is_none() {
        warnings.push("server process not found: no server CPU or memory figures".to_owned());
    }
    let payload = Arc::new(lambda::payload(opts.payload_bytes));
    let (floor, floor_source) =
        floor_for(&opts, &command, &payload, timeout, &scrub, &mut warnings).await?;
    let mut bench = Bench {
        endpoint: endpoint.clone(),
        api,
        watch: Watch::new(server.pid),
        request_timeout: timeout,
        quiet: opts.quiet,
    };
    let run_id = format!("{}-{started_unix_s}", std::process::id());
    let mut scenarios = command.scenarios();
    if opts.invoke_only && scenarios.contains(&Scenario::Cold) {
        scenarios.retain(|s| *s != Scenario::Cold);
        warnings.push(
            "--invoke-only: no cold starts measured (forcing one needs a configuration change)"
                .to_owned(),
        );
    }
    let (mut targets, created) =
        setup_targets(&mut bench, &opts, &payload, &run_id, &mut warnings).await;
    let mut urls_created = Vec::new();
    if opts.url {
        targets = setup_urls(&mut bench, targets, &mut urls_created, &mut warnings).await;
    }
    if targets.is_empty() {
        return Err(RunError::NothingToRun);
    }
    let mut phases = Vec::new();
    for repetition in 1..=opts.repeat {
        let mut more = run_phases(&mut bench, &opts, &scenarios, &mut targets, &run_id).await;
        for p in &mut more {
            p.repetition = repetition;
        }
        phases.extend(more);
        // The first invoke after CreateFunction is a cold sample of the first repetition only.
        for t in &mut targets {
            t.first_invoke = None;
        }
    }
    if !created {
        for name in &urls_created {
            if let Err(e) = bench.api.delete_function_url(name).await {
                warnings.push(format!("deleting the function URL of {name}: {e}"));
            }
        }
    }
    teardown(&mut bench, &opts, &targets, created, &mut warnings).await;
    machine.loadavg_end = report::loadavg();
    warnings.extend(report::phase_warnings(&phases));
    let name = opts.name.clone().unwrap_or_else(|| {
        let executor = server.executor.clone().unwrap_or_else(|| "remote".into());
        format!("{executor}-{}", command.label())
    });
    let args: Vec<String> = std::env::args().collect();
    let report = Report {
        name,
        date,
        started_unix_s,
        total_s: started.elapsed().as_secs_f64(),
        command_line: report::shell_line(scrub.args(&args)),
        git,
        loadgen_version: env!("CARGO_PKG_VERSION"),
        machine,
        server,
        settings: settings(&opts, scenarios),
        floor,
        floor_source,
        targets,
        phases,
        warnings,
    };
    emit(&report, &opts)?;
    Ok(report.warnings.is_empty())
}

/// The floor to relate this run to: read from `--floor FILE`, or measured now for `full`.
async fn floor_for(
    opts: &Options,
    command: &Command,
    payload: &Arc<Vec<u8>>,
    timeout: Duration,
    scrub: &Scrub,
    warnings: &mut Vec<String>,
) -> Result<(Option<Value>, Option<String>), RunError> {
    if let Some(file) = &opts.floor {
        let (_, value) = view::ReportView::load(file).map_err(RunError::Usage)?;
        let floor = value.get("floor").filter(|f| f.is_object()).cloned();
        if floor.is_none() {
            return Err(RunError::Usage(format!(
                "{} holds no floor (write one with `loadgen floor --out DIR`)",
                file.display()
            )));
        }
        return Ok((floor, Some(scrub.path(&file.display().to_string()))));
    }
    if !matches!(command, Command::Full) {
        return Ok((None, None));
    }
    eprintln!(
        "loadgen: measuring this machine's floor ({} exchanges)",
        opts.warm_invokes
    );
    let windows = (
        Duration::from_secs_f64(opts.duration_s),
        Duration::from_secs_f64(opts.warmup_s),
    );
    let args = floor::FloorArgs::default();
    match floor::measure(&args, opts.warm_invokes, windows, payload.clone(), timeout).await {
        Ok(f) => {
            eprintln!("loadgen: floor {}", floor_line(&f));
            let value = serde_json::to_value(&f).map_err(report::ReportError::from)?;
            Ok((Some(value), Some("measured in this run".to_owned())))
        }
        Err(e) => {
            warnings.push(format!("the floor could not be measured: {e}"));
            Ok((None, None))
        }
    }
}

fn floor_line(f: &floor::Floor) -> String {
    format!(
        "p50 {} ms, p99 {} ms, {} ok, {} errors",
        f.latency
            .as_ref()
            .map_or("–".into(), |l| format!("{:.3}", l.p50_ms)),
        f.latency
            .as_ref()
            .map_or("–".into(), |l| format!("{:.3}", l.p99_ms)),
        f.invokes,
        f.errors
    )
}

/// `loadgen floor`: measures the floor and reports it on its own.
async fn run_floor(opts: &Options, args: &floor::FloorArgs) -> Result<bool, RunError> {
    let (date, started_unix_s) = report::today();
    let scrub = Scrub::from_env();
    let payload = Arc::new(lambda::payload(opts.payload_bytes));
    let timeout = Duration::from_secs_f64(opts.timeout_s);
    let windows = (
        Duration::from_secs_f64(opts.duration_s),
        Duration::from_secs_f64(opts.warmup_s),
    );
    let measured = floor::measure(args, opts.warm_invokes, windows, payload, timeout)
        .await
        .map_err(RunError::Floor)?;
    eprintln!("loadgen: floor {}", floor_line(&measured));
    let args: Vec<String> = std::env::args().collect();
    let mut machine = Machine::collect();
    machine.loadavg_end = report::loadavg();
    let report = floor::FloorReport {
        kind: "floor",
        name: opts.name.clone().unwrap_or_else(|| "floor".into()),
        date,
        started_unix_s,
        command_line: report::shell_line(scrub.args(&args)),
        git: GitInfo::collect(),
        loadgen_version: env!("CARGO_PKG_VERSION"),
        machine,
        floor: measured,
    };
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(report::ReportError::from)?
        );
    } else {
        print!("{}", report.markdown());
    }
    if let Some(dir) = &opts.out {
        for path in report.write_files(dir)? {
            eprintln!("loadgen: wrote {}", path.display());
        }
    }
    Ok(report.floor.errors == 0)
}

/// `loadgen soak`: checks the endpoint and the server binary as a scenario run does, runs the
/// soak, writes its report. `Ok(false)` when there were errors or RSS did not stay flat.
async fn run_soak(opts: &Options, args: &soak::SoakArgs) -> Result<bool, RunError> {
    let bad = |m: &str| Err(RunError::Usage(m.to_owned()));
    if opts.concurrency.len() != 1 {
        return bad("soak runs one concurrency level: give --concurrency N");
    }
    if args.invocations == 0 || args.live_functions < soak::LIVE_FUNCTIONS_MIN {
        return bad("soak needs --invocations of at least 1 and --live-functions of at least 2");
    }
    if !(args.sample_every_s > 0.0 && args.sample_every_s.is_finite()) {
        return bad("--sample-every-s must be a positive number");
    }
    if opts.invoke_only || opts.function.is_some() || opts.url {
        return bad(
            "soak creates, updates and deletes its own functions: no --function, \
                    --invoke-only or --url",
        );
    }
    let started = Instant::now();
    let (date, started_unix_s) = report::today();
    let scrub = Scrub::from_env();
    let (endpoint, mut api) = connect(opts)?;
    let timeout = Duration::from_secs_f64(opts.timeout_s);
    preflight(&mut api, &endpoint).await?;
    let metrics = api.metrics().await;
    let mut machine = Machine::collect();
    let mut server = server_info(&endpoint, opts, metrics.as_ref(), &scrub);
    let git = GitInfo::collect();
    let mut warnings = check_checkout(opts, &git, &mut server)?;
    if server.pid.is_none() {
        warnings.push("server process not found: no RSS, descriptor or thread figures".into());
    }
    let payload = Arc::new(lambda::payload(opts.payload_bytes));
    let settings = soak::SoakSettings {
        invocations: args.invocations,
        concurrency: opts.concurrency[0],
        churn_every: args.churn_every,
        live_functions: args.live_functions,
        sample_every_s: args.sample_every_s,
        event_every: args.event_every,
        error_every: args.error_every,
        runtimes: opts.runtimes.clone(),
        transports: opts.transports.clone(),
        payload_bytes: payload.len(),
        memory_mb: opts.memory_mb,
        loadgen_threads: opts.threads,
    };
    let result = soak::run(soak::SoakRun {
        endpoint: &endpoint,
        api: &mut api,
        timeout,
        pid: server.pid,
        settings: &settings,
        payload,
        quiet: opts.quiet,
    })
    .await
    .map_err(|e| RunError::Usage(format!("soak could not start: {e}")))?;
    machine.loadavg_end = report::loadavg();
    let errors: u64 =
        result.errors.values().sum::<u64>() + result.churn.errors.values().sum::<u64>();
    if errors > 0 {
        warnings.push(format!("{errors} unexpected errors (see Totals)"));
    }
    warnings.extend(soak::server_surprises(&result));
    if result.verdict.flat == Some(false) {
        warnings.push("server RSS did not stay flat (see Flatness)".into());
    }
    let name = opts.name.clone().unwrap_or_else(|| {
        let executor = server.executor.clone().unwrap_or_else(|| "remote".into());
        format!("{executor}-soak")
    });
    let argv: Vec<String> = std::env::args().collect();
    let report = soak::SoakReport {
        kind: "soak",
        name,
        date,
        started_unix_s,
        total_s: started.elapsed().as_secs_f64(),
        command_line: report::shell_line(scrub.args(&argv)),
        git,
        loadgen_version: env!("CARGO_PKG_VERSION"),
        machine,
        server,
        settings,
        soak: result,
        warnings,
    };
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(report::ReportError::from)?
        );
    } else {
        print!("{}", report.markdown());
    }
    if let Some(dir) = &opts.out {
        for path in report.write_files(dir)? {
            eprintln!("loadgen: wrote {}", path.display());
        }
    }
    Ok(report.warnings.is_empty())
}

async fn preflight(api: &mut Api, endpoint: &Endpoint) -> Result<(), RunError> {
    match api.list_functions().await {
        Ok(()) => Ok(()),
        Err(ApiError::Client(source)) => Err(RunError::Unreachable {
            url: endpoint.url.clone(),
            source,
        }),
        Err(source) => Err(RunError::NotLambda {
            url: endpoint.url.clone(),
            source,
        }),
    }
}

fn server_info(
    endpoint: &Endpoint,
    opts: &Options,
    metrics: Option<&lambda::Metrics>,
    scrub: &Scrub,
) -> ServerInfo {
    let pid = opts.server_pid.or_else(|| {
        if !endpoint.is_local() {
            return None;
        }
        match procstat::find_listener_pid(endpoint.addr.port()) {
            Ok(pid) => Some(pid),
            Err(e) => {
                eprintln!("loadgen: server pid not found ({e}); pass --server-pid for CPU figures");
                None
            }
        }
    });
    let exe = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
    ServerInfo {
        endpoint: endpoint.url.clone(),
        pid,
        cmdline: pid
            .and_then(|p| procstat::cmdline_args(p).ok())
            .map(|args| report::shell_line(scrub.args(&args))),
        exe: exe.as_ref().map(|e| scrub.path(&e.display().to_string())),
        // The link itself, not the path it names: it still reaches the running binary when
        // that was replaced on disk ("(deleted)").
        exe_modified_unix_s: pid
            .and_then(|p| {
                std::fs::metadata(format!("/proc/{p}/exe"))
                    .ok()?
                    .modified()
                    .ok()
            })
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        stale: false,
        executor: metrics.and_then(|m| m.executor()),
        has_metrics: metrics.is_some(),
    }
}

/// Creates the test functions (or reads the existing one) and checks each echoes its event.
/// Returns the targets that work and whether loadgen created them.
async fn setup_targets(
    bench: &mut Bench,
    opts: &Options,
    payload: &Arc<Vec<u8>>,
    run_id: &str,
    warnings: &mut Vec<String>,
) -> (Vec<Target>, bool) {
    if let (Some(name), true) = (&opts.function, opts.invoke_only) {
        let target = Target {
            function: name.clone(),
            runtime: opts.runtimes[0],
            transport: opts.transports[0],
            base_env: BTreeMap::new(),
            payload: payload.clone(),
            first_invoke: None,
            url_host: None,
        };
        return match check_echo(bench, &target).await {
            Ok(()) => (vec![target], false),
            Err(e) => {
                eprintln!("loadgen: {e}");
                warnings.push(e);
                (Vec::new(), false)
            }
        };
    }
    if let Some(name) = &opts.function {
        return match existing_target(bench, name, payload).await {
            Ok(target) => (vec![target], false),
            Err(e) => {
                eprintln!("loadgen: {e}");
                warnings.push(e.to_string());
                (Vec::new(), false)
            }
        };
    }
    let mut targets = Vec::new();
    for &runtime in &opts.runtimes {
        for &transport in &opts.transports {
            let name = format!(
                "lg-{}-{}-{}",
                run_id.split('-').next().unwrap_or("0"),
                runtime.label(),
                transport.label()
            );
            let mut env =
                BTreeMap::from([(TRANSPORT_ENV.to_owned(), transport.env_value().to_owned())]);
            if opts.init_sleep_ms > 0 {
                env.insert(
                    lambda::INIT_SLEEP_ENV.to_owned(),
                    opts.init_sleep_ms.to_string(),
                );
            }
            let mut target = Target {
                function: name,
                runtime,
                transport,
                base_env: env,
                payload: payload.clone(),
                first_invoke: None,
                url_host: None,
            };
            match create_and_check(bench, &mut target, opts.memory_mb).await {
                Ok(()) => targets.push(target),
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    warnings.push(e);
                    let _ = bench.api.delete_function(&target.function).await;
                }
            }
        }
    }
    (targets, true)
}

/// `--url`: gives every target a function URL (AuthType NONE; an existing one is used as it is)
/// and checks one invoke through it. Targets whose URL does not work are dropped with a warning.
/// `created` receives the functions whose URL loadgen created (to delete it at the end).
async fn setup_urls(
    bench: &mut Bench,
    targets: Vec<Target>,
    created: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<Target> {
    let mut ready = Vec::new();
    for mut target in targets {
        let name = target.function.clone();
        let checked = match bench.api.function_url(&name).await {
            Ok((url, new)) => {
                if new {
                    created.push(name.clone());
                }
                match lambda::url_host(&url) {
                    Some(host) => {
                        target.url_host = Some(host);
                        check_url_echo(bench, &target).await
                    }
                    None => Err(format!("function {name}: unusable FunctionUrl {url:?}")),
                }
            }
            Err(e) => Err(format!("function {name}: no function URL: {e}")),
        };
        match checked {
            Ok(()) => ready.push(target),
            Err(e) => {
                eprintln!("loadgen: {e}");
                warnings.push(e);
            }
        }
    }
    ready
}

/// One invoke through the target's URL: the echo handler returns the payload 2.0 event, whose
/// `body` must be the payload sent.
async fn check_url_echo(bench: &mut Bench, target: &Target) -> Result<(), String> {
    let name = &target.function;
    let mut conn = bench.conn_for(target);
    let resp = conn
        .request(
            "POST",
            &target.invoke_target(),
            &[("Content-Type", "application/json")],
            &target.payload,
        )
        .await
        .map_err(|e| format!("function {name}: invoke through its URL failed: {e}"))?;
    let event: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let body = event.as_ref().and_then(|e| e["body"].as_str());
    if lambda::classify(&resp).is_none() && body.map(str::as_bytes) == Some(&target.payload[..]) {
        return Ok(());
    }
    Err(format!(
        "function {name} does not answer through its URL: status {} — body {:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    ))
}

async fn create_and_check(
    bench: &mut Bench,
    target: &mut Target,
    memory_mb: u32,
) -> Result<(), String> {
    let name = target.function.clone();
    eprintln!(
        "loadgen: creating {name} ({})",
        target.runtime.aws_runtime()
    );
    bench
        .api
        .create_function(&name, target.runtime, &target.base_env, memory_mb)
        .await
        .map_err(|e| {
            RunError::Function {
                name: name.clone(),
                source: e,
            }
            .to_string()
        })?;
    let first = scenarios::cold_invoke(&mut bench.api, target, "create").await;
    check_echo(bench, target).await?;
    target.first_invoke = Some(first);
    Ok(())
}

/// One logged invoke whose body must equal the event sent; on failure the error carries the
/// function's log tail so the cause is visible.
async fn check_echo(bench: &mut Bench, target: &Target) -> Result<(), String> {
    let name = &target.function;
    let tail = bench
        .api
        .invoke_tail(name, &target.payload)
        .await
        .map_err(|e| format!("function {name}: invoke failed: {e}"))?;
    let sent: Option<Value> = serde_json::from_slice(&target.payload).ok();
    let got: Option<Value> = serde_json::from_slice(&tail.response.body).ok();
    let failure = lambda::classify(&tail.response);
    if failure.is_none() && sent.is_some() && sent == got {
        return Ok(());
    }
    Err(format!(
        "function {name} does not work: {} — body {:?}; log tail:\n{}",
        failure.unwrap_or_else(|| "response is not the echoed event".into()),
        String::from_utf8_lossy(&tail.response.body),
        tail.log.as_deref().unwrap_or("(none)")
    ))
}

async fn existing_target(
    bench: &mut Bench,
    name: &str,
    payload: &Arc<Vec<u8>>,
) -> Result<Target, RunError> {
    let config = bench
        .api
        .configuration(name)
        .await
        .map_err(|e| RunError::Function {
            name: name.into(),
            source: e,
        })?;
    let runtime = config["Runtime"]
        .as_str()
        .and_then(RuntimeKind::from_aws)
        .unwrap_or(RuntimeKind::Python);
    let base_env: BTreeMap<String, String> = config["Environment"]["Variables"]
        .as_object()
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let transport = match base_env.get(TRANSPORT_ENV).map(String::as_str) {
        Some("false") => Transport::Http,
        _ => Transport::Ws,
    };
    Ok(Target {
        function: name.to_owned(),
        runtime,
        transport,
        base_env,
        payload: payload.clone(),
        first_invoke: None,
        url_host: None,
    })
}

/// Scenario by scenario (so HTTP and WebSocket of a runtime are measured close together in
/// time), target by target.
async fn run_phases(
    bench: &mut Bench,
    opts: &Options,
    scenarios: &[Scenario],
    targets: &mut [Target],
    run_id: &str,
) -> Vec<Phase> {
    let duration = Duration::from_secs_f64(opts.duration_s);
    let warmup = Duration::from_secs_f64(opts.warmup_s);
    let mut phases = Vec::new();
    for &scenario in scenarios {
        for target in targets.iter() {
            match scenario {
                Scenario::Cold => {
                    let pause = Duration::from_millis(opts.cold_pause_ms);
                    let cold = scenarios::cold(bench, target, opts.samples, pause, run_id).await;
                    // Holders must outlast the measured start: four times the slowest first
                    // start (bounded in `cold_later`).
                    let hold = cold.latency.as_ref().map_or(Duration::ZERO, |l| {
                        Duration::from_secs_f64(l.max_ms * 4.0 / 1e3)
                    });
                    phases.push(cold);
                    if opts.later_samples > 0 && opts.function.is_none() {
                        phases.push(
                            scenarios::cold_later(bench, target, opts.later_samples, hold).await,
                        );
                        retire_instances(bench, opts, target, run_id).await;
                    }
                }
                // Part of `Cold` above: no command lists it on its own.
                Scenario::ColdLater => {}
                Scenario::Warm => {
                    phases.push(scenarios::warm(bench, target, opts.warm_invokes).await)
                }
                Scenario::Highfreq => phases.push(
                    scenarios::highfreq(
                        bench,
                        target,
                        opts.rate,
                        duration,
                        warmup,
                        opts.connections,
                    )
                    .await,
                ),
                Scenario::Throughput => {
                    let mut levels = opts.concurrency.clone();
                    levels.sort_unstable();
                    for c in levels {
                        phases
                            .push(scenarios::throughput(bench, target, c, duration, warmup).await);
                    }
                    retire_instances(bench, opts, target, run_id).await;
                }
            }
        }
    }
    phases
}

/// Frees the instances a throughput run left behind (up to the highest concurrency each) before
/// the next target starts, so they do not sit in memory while others are measured.
async fn retire_instances(bench: &mut Bench, opts: &Options, target: &Target, run_id: &str) {
    if opts.function.is_some() || opts.invoke_only {
        return;
    }
    let mut env = target.base_env.clone();
    env.insert(lambda::GENERATION_ENV.into(), format!("{run_id}-retired"));
    let _ = bench.api.set_environment(&target.function, &env).await;
}

async fn teardown(
    bench: &mut Bench,
    opts: &Options,
    targets: &[Target],
    created: bool,
    warnings: &mut Vec<String>,
) {
    for target in targets {
        let result = if created {
            bench.api.delete_function(&target.function).await
        } else if opts.function.is_some() && !opts.invoke_only && opts.samples > 0 {
            bench
                .api
                .set_environment(&target.function, &target.base_env)
                .await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            warnings.push(format!("cleaning up {}: {e}", target.function));
        }
    }
}

/// Relates the server to this checkout: refuses a Lambda@Home server whose binary is older than
/// the checked-out sources (or marks it stale with `--allow-stale`), and returns the checkout's
/// warnings (printed as well). Only a server that identified itself as Lambda@Home (its
/// /metrics) is built from this checkout; another endpoint's binary has nothing to do with the
/// commit.
fn check_checkout(
    opts: &Options,
    git: &GitInfo,
    server: &mut ServerInfo,
) -> Result<Vec<String>, RunError> {
    if !server.has_metrics {
        return Ok(Vec::new());
    }
    if let Some(why) = git.stale_binary(server) {
        if !opts.allow_stale {
            return Err(RunError::Stale(why));
        }
        server.stale = true;
    }
    let warnings = git.warnings(server);
    for w in &warnings {
        eprintln!("loadgen: warning: {w}");
    }
    Ok(warnings)
}

fn settings(opts: &Options, scenarios: Vec<Scenario>) -> Settings {
    Settings {
        scenarios,
        runtimes: opts.runtimes.clone(),
        transports: opts.transports.clone(),
        payload_bytes: lambda::payload(opts.payload_bytes).len(),
        cold_samples: opts.samples,
        cold_pause_ms: opts.cold_pause_ms,
        cold_later_samples: opts.later_samples,
        init_sleep_ms: opts.init_sleep_ms,
        warm_invokes: opts.warm_invokes,
        rate_per_s: opts.rate,
        duration_s: opts.duration_s,
        warmup_s: opts.warmup_s,
        highfreq_connections: opts.connections,
        concurrency: opts.concurrency.clone(),
        memory_mb: opts.memory_mb,
        loadgen_threads: opts.threads,
        repeat: opts.repeat,
    }
}

fn emit(report: &Report, opts: &Options) -> Result<(), RunError> {
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(report::ReportError::from)?
        );
    } else {
        print!("{}", report::markdown(report));
    }
    if let Some(dir) = &opts.out {
        for path in report::write_files(dir, report)? {
            eprintln!("loadgen: wrote {}", path.display());
        }
    }
    Ok(())
}
