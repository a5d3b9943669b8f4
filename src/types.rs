//! Types that cross the boundary between the data plane (the per-core io_uring threads) and the
//! control plane (the registry/executor thread).
//!
//! Everything here is `Send`: values move between threads over channels, never through shared
//! mutable state. Payloads are `Bytes` so an invocation's body travels from the caller's socket to
//! the runtime's socket (and back) without being copied.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The version every invocation runs: this server keeps only `$LATEST`.
pub const LATEST: &str = "$LATEST";
/// Region reported in ARNs and `AWS_REGION`.
pub const REGION: &str = "local";
/// Account id reported in ARNs.
pub const ACCOUNT_ID: &str = "000000000000";

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
}

impl FunctionConfig {
    pub fn arn(&self) -> String {
        function_arn(&self.name)
    }
}

pub fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}")
}

/// Counters of a function that survive configuration and code updates (they are keyed by name).
#[derive(Debug, Default)]
pub struct FunctionCounters {
    /// Invocations admitted and not yet finished, across all cores (concurrency in use).
    pub in_flight: AtomicU32,
    /// Bit `c` set: core `c` has at least one idle instance of this function (hand-off hint).
    pub idle_cores: AtomicU64,
}

impl FunctionCounters {
    /// Takes one concurrency slot if fewer than `limit` are in use.
    pub fn try_acquire(&self, limit: u32) -> bool {
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

/// A function as the data plane sees it: an immutable snapshot of one generation of its
/// configuration and code. An update makes a new `Function` with a higher `generation`; instances
/// of older generations are retired.
#[derive(Debug)]
pub struct Function {
    pub config: FunctionConfig,
    /// Where the unpacked code lives (mounted at /var/task in containers).
    pub code_dir: PathBuf,
    /// Increases on every code or configuration change; instances remember theirs.
    pub generation: u64,
    pub arn: String,
    pub counters: Arc<FunctionCounters>,
}

/// What a caller asked for, carried with the invocation to the runtime.
#[derive(Clone, Debug, Default)]
pub struct InvokeContext {
    /// `X-Amz-Client-Context` (base64 JSON), passed to the runtime as Lambda-Runtime-Client-Context.
    pub client_context: Option<Bytes>,
    /// X-Amzn-Trace-Id, generated when the caller sent none.
    pub trace_id: Arc<str>,
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
    Service(crate::error::ApiError),
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
