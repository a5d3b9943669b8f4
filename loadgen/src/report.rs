//! The report: everything a run measured, the machine and server it ran on, rendered as
//! Markdown (the "Performance Comparison" tables of the original WebSocket design, described in
//! `docs/websocket-protocol.md`, per runtime, then the full detail) and as JSON, and written to
//! `<out>/<YYYY-MM-DD>-<name>.{md,json}`.
//!
//! Rendering never fails and never hides data: a missing value prints as `–`, and every error,
//! throttle and server-side surprise of a phase is listed under "Warnings".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::lambda::{RuntimeKind, Transport};
use crate::scenarios::{ColdSample, Phase, Scenario, Target};
use crate::view::{FloorView, ReportView};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub kernel: String,
    pub memory_mb: u64,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn collect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let logical_cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let kernel = command_output("uname", &["-srvm"]).unwrap_or_else(|| "unknown".into());
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        Machine {
            cpu_model,
            logical_cpus,
            kernel,
            memory_mb,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Trimmed stdout of a command that succeeded.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The checkout loadgen ran in (its working directory), to tie results to a commit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GitInfo {
    pub commit: Option<String>,
    pub commit_unix_s: Option<u64>,
    /// Tracked files that differ from the commit (`git diff --name-only HEAD`).
    pub modified: Vec<String>,
    /// Whether the working tree differs from the commit (tracked files; untracked ones are
    /// not built into anything).
    pub dirty: bool,
    /// Commit time of the last commit that changed what the server binary is built from
    /// (`src/`, `runtimes/`, `Cargo.toml`; not `Cargo.lock`, which loadgen's own dependencies
    /// also change without the server being rebuilt): a binary older than that is stale.
    pub server_sources_commit_unix_s: Option<u64>,
}

impl GitInfo {
    /// Read-only git queries; every field is empty outside a repository.
    pub fn collect() -> GitInfo {
        let modified: Vec<String> = command_output("git", &["diff", "--name-only", "HEAD"])
            .map(|out| out.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let server_sources_commit_unix_s = command_output(
            "git",
            &[
                "log",
                "-1",
                "--format=%ct",
                "--",
                ":/src",
                ":/runtimes",
                ":/Cargo.toml",
            ],
        )
        .and_then(|t| t.parse().ok());
        GitInfo {
            commit: command_output("git", &["rev-parse", "HEAD"]),
            commit_unix_s: command_output("git", &["log", "-1", "--format=%ct"])
                .and_then(|t| t.parse().ok()),
            dirty: !modified.is_empty(),
            modified,
            server_sources_commit_unix_s,
        }
    }

    /// Why the server binary does not match the checked-out code, if it does not: it was
    /// written before the last commit that changed the server's sources (or, when that is
    /// unknown, before the checked-out commit), or it was replaced on disk after the server
    /// started (`/proc/<pid>/exe` reads "(deleted)").
    pub fn stale_binary(&self, server: &ServerInfo) -> Option<String> {
        let exe = server.exe.as_deref().unwrap_or("?");
        if exe.ends_with(" (deleted)") {
            return Some(format!(
                "the running server binary {exe} was replaced on disk after the server started: \
                 restart the server"
            ));
        }
        let built = server.exe_modified_unix_s?;
        let sources = self.server_sources_commit_unix_s.or(self.commit_unix_s)?;
        (built < sources).then(|| {
            format!(
                "the server binary {exe} is older than the checked-out commit {} (binary \
                 written at Unix time {built}, server sources last changed at {sources}): \
                 rebuild it (`cargo build --release -p lambda-at-home --bin lambda-at-home-server`) \
                 and restart the server",
                self.commit.as_deref().unwrap_or("?")
            )
        })
    }

    /// Why the results might not describe `commit`: a server binary older than the commit, or
    /// uncommitted changes to the server's sources.
    pub fn warnings(&self, server: &ServerInfo) -> Vec<String> {
        let mut out: Vec<String> = self.stale_binary(server).into_iter().collect();
        let server_sources: Vec<&str> = self
            .modified
            .iter()
            .map(String::as_str)
            .filter(|f| f.starts_with("src/") || f.starts_with("runtimes/") || *f == "Cargo.toml")
            .collect();
        if !server_sources.is_empty() {
            out.push(format!(
                "uncommitted changes to the server's sources: {}",
                server_sources.join(", ")
            ));
        }
        out
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerInfo {
    pub endpoint: String,
    pub pid: Option<u32>,
    pub cmdline: Option<String>,
    /// The server's executable (`/proc/<pid>/exe`) and when it was last written.
    pub exe: Option<String>,
    pub exe_modified_unix_s: Option<u64>,
    /// The binary is older than the checked-out server sources and the run went ahead anyway
    /// (`--allow-stale`): these results may not describe the commit.
    pub stale: bool,
    pub executor: Option<String>,
    pub has_metrics: bool,
}

/// Settings of the run, as resolved (defaults filled in).
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub scenarios: Vec<Scenario>,
    pub runtimes: Vec<RuntimeKind>,
    pub transports: Vec<Transport>,
    pub payload_bytes: usize,
    pub cold_samples: u64,
    pub cold_pause_ms: u64,
    /// Later-instance cold-start samples per function (`--later-samples`).
    pub cold_later_samples: u64,
    /// `--init-sleep-ms`: the echo functions' module init sleeps this long.
    pub init_sleep_ms: u64,
    pub warm_invokes: u64,
    pub rate_per_s: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub highfreq_connections: usize,
    pub concurrency: Vec<usize>,
    pub memory_mb: u32,
    pub loadgen_threads: usize,
    /// Repetitions of the whole scenario sequence (`--repeat`); each phase records its own.
    pub repeat: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub date: String,
    pub started_unix_s: u64,
    pub total_s: f64,
    pub command_line: String,
    pub git: GitInfo,
    pub loadgen_version: &'static str,
    pub machine: Machine,
    pub server: ServerInfo,
    pub settings: Settings,
    /// The floor (`loadgen floor`) the figures are related to: measured in this run, or read
    /// from `--floor FILE`.
    pub floor: Option<serde_json::Value>,
    pub floor_source: Option<String>,
    pub targets: Vec<Target>,
    pub phases: Vec<Phase>,
    pub warnings: Vec<String>,
}

/// Today's UTC date as `YYYY-MM-DD`, and the Unix time.
pub fn today() -> (String, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = lambda_at_home::control::registry::civil_from_days((secs / 86_400) as i64);
    (format!("{y:04}-{m:02}-{d:02}"), secs)
}

/// The command line as a shell would need it typed.
pub fn shell_line(args: impl IntoIterator<Item = String>) -> String {
    let quote = |a: String| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
        if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Writes `<dir>/<stem>.json`, `.md`, `.html` and one `<stem>-<chart>.svg` per chart (the
/// Markdown links them, so they render on a code host; the HTML has them inline). Returns the
/// paths written.
pub fn write_files(dir: &Path, report: &Report) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Write(dir.to_owned(), e))?;
    let stem = format!("{}-{}", report.date, report.name);
    let value = serde_json::to_value(report)?;
    let charts = crate::html::all_charts(&ReportView::from_value(&value));
    let mut md = markdown(report);
    if !charts.is_empty() {
        md.push_str("\n## Charts\n\n");
    }
    let mut written = Vec::new();
    let mut write = |name: String, data: &str| -> Result<(), ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(|e| ReportError::Write(path.clone(), e))?;
        written.push(path);
        Ok(())
    };
    write(
        format!("{stem}.json"),
        &(serde_json::to_string_pretty(&value)? + "\n"),
    )?;
    for chart in &charts {
        let name = format!("{stem}-{}.svg", chart.suffix);
        let _ = writeln!(md, "![{}]({name})\n", chart.title);
        write(name, &chart.svg)?;
    }
    write(format!("{stem}.md"), &md)?;
    let title = format!("loadgen report: {} ({})", report.name, report.date);
    write(
        format!("{stem}.html"),
        &crate::html::page(&title, &charts, &md),
    )?;
    Ok(written)
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_owned(),
    }
}

/// Decimals that keep 3 significant digits for sub-millisecond latencies.
fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 1.0 => num(Some(v), 3),
        Some(v) if v < 100.0 => num(Some(v), 2),
        other => num(other, 1),
    }
}

/// `better` is positive when WebSocket wins: lower latency, or higher throughput.
fn improvement(http: Option<f64>, ws: Option<f64>, lower_is_better: bool) -> String {
    match (http, ws) {
        (Some(h), Some(w)) if h > 0.0 => {
            let better = if lower_is_better {
                (h - w) / h
            } else {
                (w - h) / h
            };
            format!("{:+.0}%", better * 100.0)
        }
        _ => "–".to_owned(),
    }
}

/// The median of `pick` over the repetitions of one phase (`None` if none has a value).
fn median_of(
    phases: &[Phase],
    runtime: RuntimeKind,
    transport: Transport,
    scenario: Scenario,
    concurrency: Option<usize>,
    pick: impl Fn(&Phase) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = phases
        .iter()
        .filter(|p| {
            p.runtime == runtime
                && p.transport == transport
                && p.scenario == scenario
                && (concurrency.is_none() || p.concurrency == concurrency)
        })
        .filter_map(pick)
        .collect();
    crate::compare::Spread::of(&values).map(|s| s.median)
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    header(&mut out, r);
    let runtimes: Vec<RuntimeKind> = {
        let mut v: Vec<_> = r.phases.iter().map(|p| p.runtime).collect();
        v.sort();
        v.dedup();
        v
    };
    for runtime in runtimes {
        comparison(&mut out, r, runtime);
    }
    floor_section(&mut out, r);
    resources(&mut out, r);
    detail(&mut out, r);
    cold_detail(&mut out, r);
    highfreq_detail(&mut out, r);
    warnings(&mut out, r);
    out
}

fn header(out: &mut String, r: &Report) {
    let m = &r.machine;
    let s = &r.settings;
    let _ = writeln!(out, "# loadgen report: {} ({})\n", r.name, r.date);
    let _ = writeln!(out, "- Command: `{}`", r.command_line);
    let modified = if r.git.modified.is_empty() {
        String::new()
    } else {
        format!(" (uncommitted changes: {})", r.git.modified.join(", "))
    };
    let _ = writeln!(
        out,
        "- Git commit: `{}`{modified}",
        r.git.commit.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "- Machine: {} × {} logical CPUs, {} MB RAM, `{}`; load average {} at start, {} at end",
        m.cpu_model, m.logical_cpus, m.memory_mb, m.kernel, m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(
        out,
        "- Server: {} (pid {}, executor {}){}",
        r.server.endpoint,
        r.server.pid.map_or("unknown".into(), |p| p.to_string()),
        r.server.executor.as_deref().unwrap_or("unknown"),
        r.server
            .cmdline
            .as_ref()
            .map_or(String::new(), |c| format!(": `{c}`")),
    );
    let _ = writeln!(
        out,
        "- Settings: payload {} B; cold {} first-instance samples ({} ms pause) and {} \
         later-instance samples{}; warm {} sequential invokes; \
         high frequency {} req/s for {} s over {} connections; throughput at concurrency {:?} \
         for {} s each; {} s warm-up; loadgen on {} tokio thread(s)",
        s.payload_bytes,
        s.cold_samples,
        s.cold_pause_ms,
        s.cold_later_samples,
        if s.init_sleep_ms > 0 {
            format!(" (module init sleeps {} ms)", s.init_sleep_ms)
        } else {
            String::new()
        },
        s.warm_invokes,
        s.rate_per_s,
        s.duration_s,
        s.highfreq_connections,
        s.concurrency,
        s.duration_s,
        s.warmup_s,
        s.loadgen_threads
    );
    if s.repeat > 1 {
        let _ = writeln!(
            out,
            "- Repetitions: {} (the scenario sequence ran {} times; the comparison tables show \
             the median of the repetitions, the detail tables every repetition)",
            s.repeat, s.repeat
        );
    }
    let _ = writeln!(out, "- Total run time: {:.0} s\n", r.total_s);
}

fn comparison(out: &mut String, r: &Report, runtime: RuntimeKind) {
    let med =
        |t, s, c, pick: fn(&Phase) -> Option<f64>| median_of(&r.phases, runtime, t, s, c, pick);
    let _ = writeln!(out, "## {} ({})\n", runtime.label(), runtime.aws_runtime());
    for (title, pick) in [
        (
            "p50",
            (|p: &Phase| p.latency.as_ref().map(|l| l.p50_ms)) as fn(&Phase) -> Option<f64>,
        ),
        ("p99", |p: &Phase| p.latency.as_ref().map(|l| l.p99_ms)),
    ] {
        let _ = writeln!(out, "### Latency ({title})\n");
        let _ = writeln!(
            out,
            "| Scenario | HTTP (ms) | WebSocket (ms) | Improvement |\n|----------|-----------|----------------|-------------|"
        );
        for scenario in [
            Scenario::Cold,
            Scenario::ColdLater,
            Scenario::Warm,
            Scenario::Highfreq,
        ] {
            let h = med(Transport::Http, scenario, None, pick);
            let w = med(Transport::Ws, scenario, None, pick);
            if h.is_none() && w.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                scenario.title(),
                ms(h),
                ms(w),
                improvement(h, w, true)
            );
        }
        out.push('\n');
    }
    let mut levels: Vec<usize> = r
        .phases
        .iter()
        .filter(|p| p.runtime == runtime && p.scenario == Scenario::Throughput)
        .filter_map(|p| p.concurrency)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Throughput\n");
    let _ = writeln!(
        out,
        "| Concurrent Invocations | HTTP (req/s) | WebSocket (req/s) | Improvement |\n|------------------------|--------------|-------------------|-------------|"
    );
    for c in levels {
        let rps = |t| {
            med(t, Scenario::Throughput, Some(c), |p| {
                Some(p.throughput_per_s)
            })
        };
        let (h, w) = (rps(Transport::Http), rps(Transport::Ws));
        let _ = writeln!(
            out,
            "| {c} | {} | {} | {} |",
            num(h, 0),
            num(w, 0),
            improvement(h, w, false)
        );
    }
    out.push('\n');
}

fn load_label(p: &Phase, s: &Settings) -> String {
    let label = load_label_one(p, s);
    if s.repeat > 1 {
        format!("{label} (rep {})", p.repetition)
    } else {
        label
    }
}

fn load_label_one(p: &Phase, s: &Settings) -> String {
    match p.scenario {
        Scenario::Cold | Scenario::ColdLater => format!("{} samples", p.cold_samples.len()),
        Scenario::Warm => format!("{} sequential", p.ok + p.errors.values().sum::<u64>()),
        Scenario::Highfreq => format!(
            "{:.0}/s × {:.0} s, {} conns",
            p.rate_per_s.unwrap_or(0.0),
            p.measured_s,
            p.connections.unwrap_or(0)
        ),
        Scenario::Throughput => format!("c={} × {:.0} s", p.concurrency.unwrap_or(0), s.duration_s),
    }
}

/// Each figure against the floor of this machine (`loadgen floor`): "3.1 ×" means 3.1 times
/// what a trivial Rust server and runtime take for the same exchange.
fn floor_section(out: &mut String, r: &Report) {
    let Some(floor) = r
        .floor
        .as_ref()
        .and_then(|f| FloorView::from_report(&serde_json::json!({ "floor": f })))
    else {
        return;
    };
    let _ = writeln!(out, "## Against this machine's floor\n");
    let _ = writeln!(
        out,
        "The floor ({}) is a trivial Rust server and runtime doing the same exchange over \
         loopback, one at a time: p50 {} ms, p99 {} ms, server CPU {} µs and runtime CPU {} µs \
         per exchange. Each cell is the figure, then its ratio to the floor's.\n",
        r.floor_source.as_deref().unwrap_or("measured in this run"),
        ms(floor.p50_ms),
        ms(floor.p99_ms),
        num(floor.server_cpu_us, 1),
        num(floor.runtime_cpu_us, 1),
    );
    let _ = writeln!(
        out,
        "| Runtime | Transport | Scenario | p50 ms | p99 ms | Server CPU µs/inv | Runtime CPU µs/inv |\n|---|---|---|---|---|---|---|"
    );
    let mut seen: Vec<(RuntimeKind, Transport, Scenario, Option<usize>)> = Vec::new();
    for p in &r.phases {
        let key = (p.runtime, p.transport, p.scenario, p.concurrency);
        if p.scenario.is_cold() || seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let med = |pick: fn(&Phase) -> Option<f64>| {
            median_of(
                &r.phases,
                p.runtime,
                p.transport,
                p.scenario,
                p.concurrency,
                pick,
            )
        };
        let cell = |v: Option<f64>, f: Option<f64>, fmt: fn(Option<f64>) -> String| match (v, f) {
            (Some(v), Some(f)) if f > 0.0 => format!("{} ({:.1} ×)", fmt(Some(v)), v / f),
            (v, _) => fmt(v),
        };
        let cpu = |v: Option<f64>| num(v, 1);
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {} |",
            p.runtime.label(),
            p.transport.label(),
            p.scenario.title(),
            p.concurrency.map_or(String::new(), |c| format!(" c={c}")),
            cell(
                med(|p| p.latency.as_ref().map(|l| l.p50_ms)),
                floor.p50_ms,
                ms
            ),
            cell(
                med(|p| p.latency.as_ref().map(|l| l.p99_ms)),
                floor.p99_ms,
                ms
            ),
            cell(
                med(|p| p.usage.server_cpu_us_per_invoke),
                floor.server_cpu_us,
                cpu
            ),
            cell(
                med(|p| p.usage.runtime_cpu_us_per_invoke),
                floor.runtime_cpu_us,
                cpu
            ),
        );
    }
    out.push('\n');
}

fn resources(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Resources per invoke\n");
    let _ = writeln!(
        out,
        "CPU time per completed invoke (µs) over each measured window, from `/proc/<pid>/task/*/schedstat`; \
         \"runtimes\" are the server's descendant processes. RSS at the end of the window.\n"
    );
    let _ = writeln!(
        out,
        "| Runtime | Transport | Scenario | Load | Server CPU µs/inv | Runtime CPU µs/inv | loadgen CPU µs/inv | Server run-queue wait ms | Server RSS MB | Runtimes RSS MB (procs) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &r.phases {
        let u = &p.usage;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) |",
            p.runtime.label(),
            p.transport.label(),
            p.scenario.title(),
            load_label(p, &r.settings),
            num(u.server_cpu_us_per_invoke, 1),
            num(u.runtime_cpu_us_per_invoke, 1),
            num(u.loadgen_cpu_us_per_invoke, 1),
            num(u.server_runqueue_wait_ms, 1),
            num(u.server_rss_mb, 1),
            num(u.runtime_rss_mb, 0),
            u.runtime_processes.map_or("–".into(), |n| n.to_string()),
        );
    }
    out.push('\n');
}

fn detail(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Detail\n");
    let _ = writeln!(
        out,
        "Latencies in ms (client side; high frequency from the intended send time). \
         \"Cold starts\" is the server's `lah_cold_starts_total` change during the measured window.\n"
    );
    let _ = writeln!(
        out,
        "| Runtime | Transport | Scenario | Load | OK | Errors | p50 | p90 | p99 | p99.9 | max | mean | req/s | Cold starts |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &r.phases {
        let l = p.latency.as_ref();
        let errors: u64 = p.errors.values().sum();
        let colds = p.server_counters.get("lah_cold_starts_total").copied();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.runtime.label(),
            p.transport.label(),
            p.scenario.title(),
            load_label(p, &r.settings),
            p.ok,
            errors,
            ms(l.map(|l| l.p50_ms)),
            ms(l.map(|l| l.p90_ms)),
            ms(l.map(|l| l.p99_ms)),
            ms(l.map(|l| l.p999_ms)),
            ms(l.map(|l| l.max_ms)),
            ms(l.map(|l| l.mean_ms)),
            if p.scenario.is_cold() {
                "–".into()
            } else {
                num(Some(p.throughput_per_s), 0)
            },
            num(colds.or(Some(0.0)).filter(|_| r.server.has_metrics), 0),
        );
    }
    out.push('\n');
}

fn cold_detail(out: &mut String, r: &Report) {
    let colds: Vec<&Phase> = r.phases.iter().filter(|p| p.scenario.is_cold()).collect();
    if colds.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Cold starts\n");
    let _ = writeln!(
        out,
        "Client latency of the first invoke of a fresh instance; \"init\" is the server's \
         `Init Duration` from the REPORT line of the invoke's log tail. \"First\" instances: the \
         `create` sample is the first invoke after CreateFunction, the others follow an \
         UpdateFunctionConfiguration (a new configuration's first instance). \"Later\" instances: \
         a new instance of an unchanged configuration while its others are busy, as a scale-out \
         starts one (`--later-samples`); their latency includes any wait the server's scale-out \
         policy imposes before starting one, their init does not. Where the server started \
         instances of one row in different ways (its `lah_executor_starts_total` kinds: `exec` a \
         new process or container, `fork` from an initialised template, `pooled` a pre-started \
         process or container), a row per way follows.\n"
    );
    let _ = writeln!(
        out,
        "| Runtime | Transport | Instance | Latency p50 | Latency max | Init p50 | Init max | Samples (latency/init ms) |\n|---|---|---|---|---|---|---|---|"
    );
    for p in colds {
        let l = p.latency.as_ref();
        let i = p.init_duration.as_ref();
        let instance = if p.scenario == Scenario::ColdLater {
            "later"
        } else {
            "first"
        };
        let all: Vec<&ColdSample> = p.cold_samples.iter().collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            p.runtime.label(),
            p.transport.label(),
            instance,
            ms(l.map(|l| l.p50_ms)),
            ms(l.map(|l| l.max_ms)),
            ms(i.map(|i| i.p50_ms)),
            ms(i.map(|i| i.max_ms)),
            cold_sample_list(&all)
        );
        // Samples the server started in different ways (a pooled or forked start beside new
        // processes or containers) get a row per way as well.
        let kinds: std::collections::BTreeSet<&str> = p
            .cold_samples
            .iter()
            .filter(|s| s.error.is_none())
            .filter_map(|s| s.start.as_deref())
            .collect();
        if kinds.len() < 2 {
            continue;
        }
        for kind in kinds {
            let group: Vec<&ColdSample> = p
                .cold_samples
                .iter()
                .filter(|s| s.error.is_none() && s.start.as_deref() == Some(kind))
                .collect();
            let latency: Vec<f64> = group.iter().map(|s| s.latency_ms).collect();
            let init: Vec<f64> = group.iter().filter_map(|s| s.init_duration_ms).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {instance}, {kind} start | {} | {} | {} | {} | {} |",
                p.runtime.label(),
                p.transport.label(),
                ms(median(&latency)),
                ms(latency.iter().copied().reduce(f64::max)),
                ms(median(&init)),
                ms(init.iter().copied().reduce(f64::max)),
                cold_sample_list(&group)
            );
        }
    }
    out.push('\n');
}

/// `latency/init` of each sample (or `kind:error`), comma-separated.
fn cold_sample_list(samples: &[&ColdSample]) -> String {
    let items: Vec<String> = samples
        .iter()
        .map(|s| match &s.error {
            Some(e) => format!("{}:{e}", s.kind),
            None => format!(
                "{}/{}",
                ms(Some(s.latency_ms)),
                s.init_duration_ms.map_or("none".into(), |v| ms(Some(v)))
            ),
        })
        .collect();
    items.join(", ")
}

/// The lower median (as the reports' histogram p50 is), None for no values.
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().checked_sub(1)? / 2).copied()
}

fn highfreq_detail(out: &mut String, r: &Report) {
    let phases: Vec<&Phase> = r
        .phases
        .iter()
        .filter(|p| p.scenario == Scenario::Highfreq)
        .collect();
    if phases.is_empty() {
        return;
    }
    let _ = writeln!(out, "## High frequency: corrected vs. service latency\n");
    let _ = writeln!(
        out,
        "\"Corrected\" runs from the intended send time (coordinated-omission corrected); \"service\" \
         from the actual send (what the server took). The difference is loadgen's side: \"schedule lag\" \
         is how late its scheduler thread released the request (timer wake-up and CPU contention), \
         \"dispatch wait\" the time from release until a connection sent it (all connections busy on \
         slow responses, or the event loop slow to wake). Corrected = lag + wait + service.\n"
    );
    let _ = writeln!(
        out,
        "| Runtime | Transport | Corrected p50 / p99 / max | Service p50 / p99 / max | Schedule lag p50 / p99 / max | Dispatch wait p50 / p99 / max |\n|---|---|---|---|---|---|"
    );
    let triple = |s: Option<&crate::stats::Summary>| {
        format!(
            "{} / {} / {}",
            ms(s.map(|s| s.p50_ms)),
            ms(s.map(|s| s.p99_ms)),
            ms(s.map(|s| s.max_ms))
        )
    };
    for p in phases {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            p.runtime.label(),
            p.transport.label(),
            triple(p.latency.as_ref()),
            triple(p.service_latency.as_ref()),
            triple(p.schedule_lag.as_ref()),
            triple(p.dispatch_wait.as_ref()),
        );
    }
    out.push('\n');
}

fn warnings(out: &mut String, r: &Report) {
    let _ = writeln!(out, "## Warnings\n");
    if r.warnings.is_empty() {
        let _ = writeln!(out, "None.");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "- {w}");
    }
}

/// Everything in the phases a reader should not miss: errors, throttles, unexpected cold
/// starts, WebSocket fallbacks, server-side failures, and loadgen falling behind its schedule.
pub fn phase_warnings(phases: &[Phase]) -> Vec<String> {
    let mut out = Vec::new();
    for p in phases {
        let name = format!(
            "{} {} {}{}",
            p.scenario.title(),
            p.runtime.label(),
            p.transport.label(),
            p.concurrency.map_or(String::new(), |c| format!(" c={c}"))
        );
        if !p.errors.is_empty() {
            out.push(format!("{name}: errors {}", fmt_counts(&p.errors)));
        }
        if p.throttled > 0 {
            out.push(format!(
                "{name}: {} requests throttled (HTTP 429)",
                p.throttled
            ));
        }
        if !p.warmup_errors.is_empty() {
            out.push(format!(
                "{name}: errors during warm-up {}",
                fmt_counts(&p.warmup_errors)
            ));
        }
        for note in &p.notes {
            out.push(format!("{name}: {note}"));
        }
        server_warnings(&name, p, &mut out);
        if let Some(wait) = &p.dispatch_wait {
            if wait.p99_ms > 1.0 {
                out.push(format!(
                    "{name}: requests waited to be sent (dispatch wait p99 {:.2} ms, max {:.2} ms): \
                     all {} connections busy, or loadgen's event loop starved of CPU; the corrected \
                     latency includes this wait",
                    wait.p99_ms,
                    wait.max_ms,
                    p.connections.unwrap_or(0)
                ));
            }
        }
        if let Some(lag) = &p.schedule_lag {
            if lag.p99_ms > 1.0 {
                out.push(format!(
                    "{name}: loadgen's scheduler ran late (p99 {:.2} ms): loadgen or the machine was saturated",
                    lag.p99_ms
                ));
            }
        }
    }
    out
}

fn server_warnings(name: &str, p: &Phase, out: &mut Vec<String>) {
    let c = &p.server_counters;
    let get = |k: &str| c.get(k).copied().unwrap_or(0.0);
    if !p.scenario.is_cold() && get("lah_cold_starts_total") > 0.0 {
        out.push(format!(
            "{name}: {} cold starts inside the measured window",
            get("lah_cold_starts_total")
        ));
    }
    for key in [
        "lah_service_errors_total",
        "lah_timeouts_total",
        "lah_instance_crashes_total",
        "lah_throttles_total",
        "lah_ws_protocol_errors_total",
        "lah_ws_fallbacks_to_http_total",
    ] {
        if get(key) > 0.0 {
            out.push(format!("{name}: server counter {key} rose by {}", get(key)));
        }
    }
    let ws_messages = get("lah_ws_messages_in_total");
    if p.transport == Transport::Ws
        && p.ok > 0
        && c.contains_key("lah_invocations_total")
        && ws_messages == 0.0
    {
        out.push(format!(
            "{name}: no WebSocket runtime messages during a WebSocket phase (runtime fell back to HTTP?)"
        ));
    }
    if p.transport == Transport::Http && ws_messages > 0.0 {
        out.push(format!(
            "{name}: {ws_messages} WebSocket runtime messages during an HTTP phase"
        ));
    }
}

fn fmt_counts(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k} × {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_binary_and_dirty_tree_are_flagged() {
        let git = GitInfo {
            commit: Some("abc".into()),
            commit_unix_s: Some(2_000),
            modified: vec!["loadgen/src/main.rs".into(), "src/server.rs".into()],
            ..GitInfo::default()
        };
        let mut server = ServerInfo {
            exe: Some("/bin/server".into()),
            exe_modified_unix_s: Some(1_000),
            ..ServerInfo::default()
        };
        let w = git.warnings(&server);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("older than the checked-out commit abc"));
        assert!(w[1].ends_with("src/server.rs"));
        server.exe_modified_unix_s = Some(3_000);
        let clean = GitInfo {
            modified: vec!["loadgen/src/main.rs".into()],
            ..git
        };
        assert!(clean.warnings(&server).is_empty());
    }

    #[test]
    fn dates() {
        let civil = lambda_at_home::control::registry::civil_from_days;
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(20_454), (2026, 1, 1));
        assert_eq!(today().0.len(), 10);
    }

    #[test]
    fn shell_quoting() {
        let line =
            shell_line(["loadgen", "--out", "results/", "--name", "a b", "it's"].map(String::from));
        assert_eq!(line, r"loadgen --out results/ --name 'a b' 'it'\''s'");
    }

    #[test]
    fn cold_samples_listed_and_the_lower_median() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[9.0, 1.0, 5.0, 7.0]), Some(5.0));
        let sample = |latency_ms, init, start: &str| ColdSample {
            kind: "update",
            latency_ms,
            init_duration_ms: init,
            error: None,
            start: Some(start.to_string()),
        };
        let (a, b) = (
            sample(12.5, Some(8.25), "pooled"),
            sample(310.0, None, "exec"),
        );
        assert_eq!(cold_sample_list(&[&a, &b]), "12.50/8.25, 310.0/none");
    }

    #[test]
    fn improvements() {
        assert_eq!(improvement(Some(0.2), Some(0.15), true), "+25%");
        assert_eq!(improvement(Some(1000.0), Some(900.0), false), "-10%");
        assert_eq!(improvement(None, Some(1.0), true), "–");
    }

    #[test]
    fn number_formats() {
        assert_eq!(ms(Some(0.1234)), "0.123");
        assert_eq!(ms(Some(42.123)), "42.12");
        assert_eq!(ms(Some(150.0)), "150.0");
        assert_eq!(ms(None), "–");
    }
}
