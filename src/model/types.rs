//! Types that cross the boundary between the data plane (the per-core io_uring threads) and the
//! control plane (the registry/executor thread).
//!
//! Everything here is `Send`: values move between threads over channels, never through shared
//! mutable state. Payloads are `Bytes` so an invocation's body travels from the caller's socket to
//! the runtime's socket (and back) without being copied.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The version every invocation runs: this server keeps only `$LATEST`.
pub const LATEST: &str = "$LATEST";
/// Region in ARNs and `AWS_REGION` until `set_identity` says otherwise (`--region`).
pub const REGION_DEFAULT: &str = "us-east-1";
/// Account id in ARNs until `set_identity` says otherwise (`--account-id`).
pub const ACCOUNT_ID_DEFAULT: &str = "000000000000";

/// The region and account this server reports, set once at start-up.
static IDENTITY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Sets the default region and the account id for the life of the process (first call wins:
/// in-process test servers share the defaults).
pub fn set_identity(region: &str, account_id: &str) {
    let _ = IDENTITY.set((region.to_string(), account_id.to_string()));
}

/// The server's default region: instances' `AWS_REGION`, and ARNs when a request does not name
/// one in its SigV4 credential scope.
pub fn region() -> &'static str {
    IDENTITY.get().map_or(REGION_DEFAULT, |(r, _)| r.as_str())
}

pub fn account_id() -> &'static str {
    IDENTITY
        .get()
        .map_or(ACCOUNT_ID_DEFAULT, |(_, a)| a.as_str())
}

/// A request id, as the runtime sees it in `Lambda-Runtime-Aws-Request-Id` (a UUID v4 string).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// A fresh random UUID v4.
    pub fn random() -> Self {
        let v: u128 = rand::random();
        // Set the version (4) and variant (10xx) bits as RFC 4122 requires.
        let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let s = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        );
        RequestId(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one execution environment (instance) for the life of the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

impl InstanceId {
    /// The core that owns the instance (encoded in the id's low byte).
    pub fn home_core(self) -> usize {
        (self.0 & 0xff) as usize
    }

    /// The id inside a `LAMBDA_INSTANCE_ID` token (`i-<hex>-<secret>`).
    pub fn from_token(token: &str) -> Option<InstanceId> {
        let hex = token.strip_prefix("i-")?.split('-').next()?;
        u64::from_str_radix(hex, 16).ok().map(InstanceId)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i-{:08x}", self.0)
    }
}

/// The stored configuration of a function, as CreateFunction/UpdateFunctionConfiguration set it.
/// Field names are ours; the User API maps them to AWS's PascalCase shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionConfig {
    pub name: String,
    /// e.g. `python3.12`, `nodejs20.x`, `provided.al2023`.
    pub runtime: String,
    /// `file.export` for Node/Python; free text for `provided`.
    pub handler: String,
    pub role: String,
    pub description: String,
    /// 1..=900 seconds, AWS's range.
    pub timeout_s: u32,
    /// 128..=10240 MB, AWS's range.
    pub memory_mb: u32,
    /// The function's own environment variables (Environment.Variables).
    pub environment: BTreeMap<String, String>,
    /// base64 of the SHA-256 of the zip, as AWS reports CodeSha256.
    pub code_sha256: String,
    /// Size of the zip in bytes (CodeSize).
    pub code_size: u64,
    /// AWS's format: `2024-01-01T00:00:00.000+0000`.
    pub last_modified: String,
    /// Changes on every update (RevisionId).
    pub revision_id: String,
    /// Reserved concurrency (PutFunctionConcurrency); `None` = unreserved.
    pub reserved_concurrency: Option<u32>,
    /// Layer versions, in the order they are merged (later ones override earlier files).
    #[serde(default)]
    pub layers: Vec<LayerRef>,
    /// LoggingConfig: log format, levels and log group (stored configs before it: Text).
    #[serde(default)]
    pub logging: crate::model::logsink::LoggingConfig,
}

/// One layer version a function uses: its ARN and size, as FunctionConfiguration.Layers shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    pub arn: String,
    pub code_size: u64,
}

impl FunctionConfig {
    pub fn arn(&self) -> String {
        function_arn(&self.name)
    }
}

/// The unqualified ARN of `name` in the server's default region.
pub fn function_arn(name: &str) -> String {
    function_arn_in(region(), name)
}

/// The unqualified ARN of `name` in `region`.
pub fn function_arn_in(region: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{}:function:{name}", account_id())
}

/// Counters of one version's instance pool that survive configuration and code updates of
/// `$LATEST` (they are keyed by pool key).
#[derive(Debug, Default)]
pub struct FunctionCounters {
    /// Bit `c` set: core `c` has at least one idle instance of this pool (hand-off hint).
    pub idle_cores: AtomicU64,
    /// Bit `c` set: core `c` holds pending invocations of this pool beyond what its own
    /// instances cover; they wait for an instance of another core (wake-up hint: a core whose
    /// instance parks with nothing to do tells such a core at once instead of waiting for its
    /// tick).
    pub waiting_cores: AtomicU64,
    /// Bit `c` set: core `c` has an instance of this pool that is about to ask for work
    /// (starting, or answered within its return grace) with no pending invocation of that core
    /// counting on it. A core with no idle instance anywhere hands a new invocation to such a
    /// core in one message rather than queue it behind the cold-start cap.
    pub spare_cores: AtomicU64,
    /// Average time from dispatch to answer of the pool's invocations, nanoseconds (a moving
    /// average; 0 before the first): with `init_ns`, what `--scale-out adaptive` decides by.
    pub service_ns: AtomicU64,
    /// The pool's observed init (start to first `/next`) of ordinary starts, nanoseconds (a
    /// moving average; 0 before the first).
    pub init_ns: AtomicU64,
    /// The same for starts that took an instance the executor had ready (a Docker pool slot
    /// whose runtime was started ahead; `ReadyStart`): a few milliseconds where an ordinary
    /// start of the same function takes a hundred or more.
    pub ready_init_ns: AtomicU64,
    /// How many ready instances the executor holds now for this pool's next start, as its last
    /// started instance reported them (`ReadyStart::slots`); None: the executor keeps none for
    /// it. With `ready_init_ns`, what the next start costs: the ready one while one waits.
    /// Read on the invoke path (`Scheduler::soon_serving`), hence swapped rather than locked.
    pub ready_slots: arc_swap::ArcSwapOption<AtomicU32>,
    /// Instances of this pool, on every core, that can take an invocation now or soon: serving
    /// and starting, idle, busy, or returning within their grace. A core starts an instance only
    /// while this is below the function's admitted invocations (`Concurrency::in_flight`), so a
    /// pool never has more instances than invocations that need one (the scheduler's cap).
    pub instances: AtomicU32,
}

/// How an executor's start relates to the instances it keeps ready for starts
/// (`executor::Instance::ready_start`; the Docker pool's started containers): what the
/// scheduler needs to tell what the function's next start will cost.
#[derive(Clone, Debug)]
pub struct ReadyStart {
    /// The executor's ready instances for starts like this one, kept up to date by it.
    pub slots: Arc<AtomicU32>,
    /// This start took one of them.
    pub took_one: bool,
}

/// What an instance's start says about the function's next start: what the scheduler estimates
/// a start's cost by (`Scheduler::started`).
#[derive(Clone, Debug, Default)]
pub struct StartFacts {
    /// It included work the next start will not repeat (`executor::Instance::one_off_init`): its
    /// init is no estimate of a start's cost.
    pub one_off_init: bool,
    /// Its executor keeps ready instances for starts like it (`executor::Instance::ready_start`).
    pub ready: Option<ReadyStart>,
}

/// Concurrency of a function, shared by all its versions (AWS reserves per function).
#[derive(Debug)]
pub struct Concurrency {
    /// Invocations admitted and not yet finished, across all cores and versions.
    pub in_flight: AtomicU32,
    /// Reserved concurrency (PutFunctionConcurrency); `u32::MAX` = unreserved.
    pub reserved: AtomicU32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency {
            in_flight: AtomicU32::new(0),
            reserved: AtomicU32::new(u32::MAX),
        }
    }
}

impl Concurrency {
    pub fn new(reserved: Option<u32>) -> Concurrency {
        let c = Concurrency::default();
        c.set_reserved(reserved);
        c
    }

    pub fn reserved(&self) -> Option<u32> {
        match self.reserved.load(Ordering::Relaxed) {
            u32::MAX => None,
            n => Some(n),
        }
    }

    pub fn set_reserved(&self, n: Option<u32>) {
        self.reserved
            .store(n.unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Takes one concurrency slot if fewer than the reserved limit are in use.
    pub fn try_acquire(&self) -> bool {
        let limit = self.reserved.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release(&self) {
        let prev = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "released a concurrency slot that was not held");
    }
}

/// A directory of code (a function's unpacked code, or merged layers) that running instances
/// use, shared by every `Function` that names it. The directory outlives every holder: the
/// registry marks it `obsolete` when no configuration names it any more, and the last holder to
/// let go (the function table, a scheduler's instance, the control plane's instance task) sends
/// its path to the registry's reaper, which removes it on the control-plane thread. The drop
/// itself never touches the disk, so it may happen on a data-plane core.
#[derive(Debug)]
pub struct CodeDir {
    path: PathBuf,
    obsolete: AtomicBool,
    /// Where the path goes once the last holder of an obsolete dir lets go; `None`: never
    /// removed (a dir the registry does not manage, as in tests and benches).
    reaper: Option<tokio::sync::mpsc::UnboundedSender<PathBuf>>,
}

impl CodeDir {
    /// A directory that is never removed through its handle.
    pub fn fixed(path: PathBuf) -> Arc<CodeDir> {
        Arc::new(CodeDir {
            path,
            obsolete: AtomicBool::new(false),
            reaper: None,
        })
    }

    /// A directory that `reaper` removes once it is obsolete and nothing holds it.
    pub fn reaped(path: PathBuf, reaper: tokio::sync::mpsc::UnboundedSender<PathBuf>) -> CodeDir {
        CodeDir {
            path,
            obsolete: AtomicBool::new(false),
            reaper: Some(reaper),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the directory to be removed when its last holder lets go (or, when `false`, keeps
    /// it: a merged layer tree that a configuration names again).
    pub fn set_obsolete(&self, obsolete: bool) {
        self.obsolete.store(obsolete, Ordering::Release);
    }

    pub fn is_obsolete(&self) -> bool {
        self.obsolete.load(Ordering::Acquire)
    }
}

impl Drop for CodeDir {
    fn drop(&mut self) {
        if let (true, Some(reaper)) = (self.is_obsolete(), &self.reaper) {
            // A closed reaper (the registry is gone) leaves the dir to the next start's cleanup.
            let _ = reaper.send(std::mem::take(&mut self.path));
        }
    }
}

/// A function version as the data plane sees it: an immutable snapshot of one generation of its
/// configuration and code. `$LATEST` changes by replacement: an update makes a new `Function`
/// with a higher `generation` and instances of older generations are retired. A published
/// version never changes.
#[derive(Debug)]
pub struct Function {
    pub config: FunctionConfig,
    /// `$LATEST` or the version number (`"1"`, `"2"`, ...).
    pub version: String,
    /// Where the unpacked code lives (mounted at /var/task in containers); held, so it stays on
    /// disk while an instance of this version runs.
    pub code: Arc<CodeDir>,
    /// The function's layers merged in order (mounted at /opt in containers); `None` without
    /// layers. Held like `code`.
    pub opt: Option<Arc<CodeDir>>,
    /// Increases on every code or configuration change; instances remember theirs.
    pub generation: u64,
    /// The version's ARN (qualified for published versions, as AWS's FunctionArn).
    pub arn: String,
    /// The key of this version's instance pool in the scheduler and the function table:
    /// `NAME` for `$LATEST`, `NAME:N` for version N (`:` cannot occur in a name).
    pub pool_key: String,
    pub counters: Arc<FunctionCounters>,
    pub concurrency: Arc<Concurrency>,
}

impl Function {
    /// A `$LATEST` function without layers (tests and benches build these).
    pub fn latest(config: FunctionConfig, code_dir: PathBuf, generation: u64) -> Function {
        Function {
            arn: function_arn(&config.name),
            pool_key: config.name.clone(),
            concurrency: Arc::new(Concurrency::new(config.reserved_concurrency)),
            config,
            version: LATEST.to_string(),
            code: CodeDir::fixed(code_dir),
            opt: None,
            generation,
            counters: Arc::default(),
        }
    }

    pub fn is_latest(&self) -> bool {
        self.version == LATEST
    }

    /// Where the unpacked code lives.
    pub fn code_dir(&self) -> &Path {
        self.code.path()
    }

    /// Where the merged layers live, if the function has layers.
    pub fn opt_dir(&self) -> Option<&Path> {
        self.opt.as_deref().map(CodeDir::path)
    }
}

/// The pool key of `name` at `version` (see `Function::pool_key`).
pub fn pool_key(name: &str, version: &str) -> String {
    if version == LATEST {
        name.to_string()
    } else {
        format!("{name}:{version}")
    }
}

/// An alias as the data plane routes it: a version, and optionally a second version that gets
/// `weight` (0..1) of the invocations.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasRoute {
    pub version: String,
    pub additional: Option<(String, f64)>,
}

/// AWS's default for `MaximumRetryAttempts`: an event whose function fails is retried twice.
pub const EVENT_RETRY_ATTEMPTS_DEFAULT: u32 = 2;
/// AWS's default for `MaximumEventAgeInSeconds`: six hours.
pub const EVENT_AGE_S_DEFAULT: u32 = 21_600;

/// How asynchronous invocations of one function qualifier are handled (its event invoke config,
/// or AWS's defaults when it has none). Destinations are function ARNs of this server.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSettings {
    pub maximum_retry_attempts: u32,
    pub maximum_event_age_s: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            maximum_retry_attempts: EVENT_RETRY_ATTEMPTS_DEFAULT,
            maximum_event_age_s: EVENT_AGE_S_DEFAULT,
            on_success: None,
            on_failure: None,
        }
    }
}

/// What the data-plane cores look functions up in, published whole by the control plane
/// (`ArcSwap`) before it acknowledges a change.
#[derive(Clone, Debug, Default)]
pub struct FunctionTable {
    /// Every runnable version by pool key (`NAME`, `NAME:N`).
    pub versions: HashMap<String, Arc<Function>>,
    /// Aliases by `NAME:ALIAS`.
    pub aliases: HashMap<String, AliasRoute>,
    /// Event invoke configs by `NAME:QUALIFIER` (`$LATEST` for unqualified invocations); a
    /// qualifier without one gets `EventSettings::default()`.
    pub event_settings: HashMap<String, EventSettings>,
    /// Function URLs by URL id: a core serves a URL invoke from here alone.
    pub urls: HashMap<String, Arc<crate::model::urls::UrlRoute>>,
}

impl FunctionTable {
    /// How asynchronous invocations of `name` at `qualifier` are retried and where their
    /// records go.
    pub fn event_settings(&self, name: &str, qualifier: &str) -> EventSettings {
        self.event_settings
            .get(&format!("{name}:{qualifier}"))
            .cloned()
            .unwrap_or_default()
    }

    /// `$LATEST` of `name`.
    pub fn latest(&self, name: &str) -> Option<&Arc<Function>> {
        self.versions.get(name)
    }

    /// Every function's `$LATEST`.
    pub fn functions(&self) -> impl Iterator<Item = &Arc<Function>> {
        self.versions.values().filter(|f| f.is_latest())
    }

    /// The version an invocation of `name` with `qualifier` runs: `$LATEST`, a version number,
    /// or an alias (weighted between its two versions with `roll` in 0..1).
    pub fn resolve(
        &self,
        name: &str,
        qualifier: Option<&str>,
        roll: f64,
    ) -> Option<&Arc<Function>> {
        let version = match qualifier {
            None | Some(LATEST) => return self.versions.get(name),
            Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => q,
            Some(alias) => {
                let route = self.aliases.get(&format!("{name}:{alias}"))?;
                match &route.additional {
                    Some((other, weight)) if roll < *weight => other.as_str(),
                    _ => route.version.as_str(),
                }
            }
        };
        self.versions.get(&pool_key(name, version))
    }
}

/// What a caller asked for, carried with the invocation to the runtime.
#[derive(Clone, Debug, Default)]
pub struct InvokeContext {
    /// `X-Amz-Client-Context` (base64 JSON), passed to the runtime as Lambda-Runtime-Client-Context.
    pub client_context: Option<Bytes>,
    /// X-Amzn-Trace-Id, generated when the caller sent none.
    pub trace_id: Arc<str>,
    /// The alias ARN the caller invoked, when it invoked an alias (the runtime's
    /// Invoked-Function-Arn is then the alias's, as on AWS; otherwise the version's ARN).
    pub alias_arn: Option<Arc<str>>,
}

impl InvokeContext {
    /// The ARN the runtime reports as invoked: the alias's, or `function`'s.
    pub fn invoked_arn<'a>(&'a self, function: &'a Function) -> &'a str {
        self.alias_arn.as_deref().unwrap_or(&function.arn)
    }
}

/// How an invocation ended, as the caller will see it.
#[derive(Debug)]
pub enum InvokeOutcome {
    /// The runtime posted a response: body as it sent it.
    Success { body: Bytes },
    /// The runtime posted an error (or the platform made one, e.g. timeout, crash): 200 with
    /// `X-Amz-Function-Error: <function_error>` and `body` (`{errorMessage,errorType,...}`).
    FunctionError {
        function_error: &'static str,
        body: Bytes,
    },
    /// The platform failed the invocation before/without the function: mapped to an AWS error.
    Service(crate::model::error::ApiError),
}

/// Lambda's function-error document, `{"errorType","errorMessage"[,"stackTrace"]}`: the one
/// builder for every error the platform or a runtime reports (timeouts, crashes, WebSocket
/// `error` messages, error types without a body).
pub fn function_error_body(
    error_type: &str,
    message: &str,
    stack_trace: Option<&serde_json::Value>,
) -> Bytes {
    let mut body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    if let Some(trace) = stack_trace {
        body["stackTrace"] = trace.clone();
    }
    Bytes::from(body.to_string())
}

impl InvokeOutcome {
    /// A function error (`X-Amz-Function-Error: Unhandled`) with Lambda's error document.
    pub fn function_error(error_type: &str, message: &str) -> InvokeOutcome {
        InvokeOutcome::FunctionError {
            function_error: "Unhandled",
            body: function_error_body(error_type, message, None),
        }
    }
}

/// The finished invocation as delivered back to the caller's core.
#[derive(Debug)]
pub struct InvokeResult {
    pub outcome: InvokeOutcome,
    /// The last 4 KB of the invocation's log, when the caller asked for `Tail`.
    pub log_tail: Option<Bytes>,
    /// Whether this invocation had to start a new instance.
    pub cold_start: bool,
}

/// Everything an executor needs to start one instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub id: InstanceId,
    pub function: Arc<Function>,
    /// The address the runtime must use as `AWS_LAMBDA_RUNTIME_API` (`host:port`). It is unique
    /// to this instance: the server tells instances apart by the address they connect to.
    pub runtime_api: SocketAddr,
    /// Environment variables the executor must set (AWS's set plus ours), in addition to the
    /// function's own. Built by `control::environment`.
    pub env: Vec<(String, String)>,
    /// Absolute path of this server's `runtimes/` folder (bootstraps).
    pub runtimes_dir: PathBuf,
    /// The uid (and gid) this instance should run as, its kernel-verified identity; `None` when
    /// identities are off. The executor says whether it could (`Instance::uid`).
    pub uid: Option<u32>,
}

/// How an instance's process ended.
#[derive(Clone, Debug)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when it was killed by one.
    pub signal: Option<i32>,
    /// The kernel's or Docker's OOM killer ended it.
    pub oom_killed: bool,
}

impl ExitInfo {
    /// `Runtime exited with error: exit status 1`, as Lambda words it.
    pub fn describe(&self) -> String {
        if self.oom_killed {
            return "Runtime exited with error: signal: killed (out of memory)".to_string();
        }
        match (self.code, self.signal) {
            (_, Some(sig)) => format!("Runtime exited with error: signal: {}", signal_name(sig)),
            (Some(code), None) => format!("Runtime exited with error: exit status {code}"),
            (None, None) => "Runtime exited without providing a reason".to_string(),
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        other => format!("{other}"),
    }
}
