//! What crosses threads on the way to the function log store (`crate::logstore`): `LogMsg`, the
//! `LogSink` every thread sends through, `LogStream` (one execution environment's log stream)
//! and a function's `LoggingConfig` as AWS shapes it.
//!
//! Senders: the data-plane cores (instance output, INIT_START/START/END/REPORT), the control
//! plane (CloudWatch Logs API calls, function deletions) and `server` (shutdown). The one
//! receiver is the log-writer thread. The channel is bounded (`LOG_INBOX_MAX`): a core never
//! waits for room; when the channel is full the message is dropped and its lines counted in
//! `lah_log_lines_dropped_total`, so a slow disk or a function printing without pause costs
//! other functions nothing but the lines that did not fit. Only the control plane, which runs
//! management calls on tokio's blocking pool, waits for room (API queries must not be lost).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::messages::ApiAnswer;
use super::metrics::Metrics;
use super::types::{InstanceId, RequestId};

/// Messages waiting for the log-writer thread. At most `DRAIN_CHUNK_BYTES` (8 KiB) of output
/// each, so the queue holds at most about 32 MiB of unwritten output.
pub const LOG_INBOX_MAX: usize = 4096;

/// AWS's log formats (`LoggingConfig.LogFormat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFormat {
    #[default]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "Text",
            LogFormat::Json => "JSON",
        }
    }
}

/// A function's `LoggingConfig`, as CreateFunction / UpdateFunctionConfiguration take it.
/// Levels are stored only with the JSON format (AWS applies them only there).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingConfig {
    #[serde(default)]
    pub log_format: LogFormat,
    /// TRACE, DEBUG, INFO, WARN, ERROR or FATAL (runtimes filter their own records by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_log_level: Option<String>,
    /// DEBUG, INFO or WARN: platform records below it are not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_log_level: Option<String>,
    /// The group the function's streams go to; `None`: `/aws/lambda/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
}

/// AWS's application log levels, least severe first.
pub const APPLICATION_LOG_LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
/// AWS's system log levels, least severe first.
pub const SYSTEM_LOG_LEVELS: [&str; 3] = ["DEBUG", "INFO", "WARN"];

impl LoggingConfig {
    /// The group a function's logs go to.
    pub fn group_for(&self, function: &str) -> String {
        self.log_group
            .clone()
            .unwrap_or_else(|| default_log_group(function))
    }

    /// The application level the runtime is told (JSON only; AWS's default is INFO).
    pub fn application_level(&self) -> Option<&str> {
        (self.log_format == LogFormat::Json)
            .then(|| self.application_log_level.as_deref().unwrap_or("INFO"))
    }

    /// The system level platform records are filtered by (JSON only; default INFO).
    pub fn system_level(&self) -> Option<&str> {
        (self.log_format == LogFormat::Json)
            .then(|| self.system_log_level.as_deref().unwrap_or("INFO"))
    }
}

/// `/aws/lambda/NAME`, the group Lambda writes a function's logs to by default.
pub fn default_log_group(function: &str) -> String {
    format!("/aws/lambda/{function}")
}

/// AWS's stream name for an execution environment: `YYYY/MM/DD/[VERSION]` and 32 hex digits,
/// dated when the instance starts (UTC). The digits are `run_nonce`, a random number fixed per
/// server run (`Switchboard::log_nonce`), and the instance id: a stream of one run never
/// continues one of an earlier run, whose instance ids started at 1 too.
pub fn log_stream_name(date: &str, version: &str, run_nonce: u64, id: InstanceId) -> String {
    format!("{date}/[{version}]{run_nonce:016x}{:016x}", id.0)
}

/// One execution environment's log stream: where its lines go and how they are shaped. Made by
/// the control plane when it starts the instance, then shared (`Arc`) by every message about it.
#[derive(Debug)]
pub struct LogStream {
    pub instance: InstanceId,
    pub group: String,
    pub name: String,
    pub function: String,
    pub version: String,
    pub runtime: String,
    pub format: LogFormat,
    /// Platform records below this level are not stored (JSON format only).
    pub system_level: Option<String>,
}

/// What the log-writer thread receives.
pub enum LogMsg {
    /// Bytes the instance wrote to stdout or stderr, read at `at_ms` (Unix ms).
    Output {
        stream: Arc<LogStream>,
        at_ms: u64,
        data: Bytes,
    },
    /// The instance's output pipe reached end of file: flush its partial last line.
    Closed { stream: Arc<LogStream>, at_ms: u64 },
    /// The instance began its init (INIT_START).
    InitStart { stream: Arc<LogStream>, at_ms: u64 },
    /// An invocation was handed to the instance (START).
    Start {
        stream: Arc<LogStream>,
        at_ms: u64,
        request: RequestId,
    },
    /// The invocation ended (END and REPORT).
    End {
        stream: Arc<LogStream>,
        at_ms: u64,
        request: RequestId,
        report: Report,
    },
    /// A CloudWatch Logs API call (`X-Amz-Target: Logs_20140328.<operation>`), answered on
    /// `reply`.
    Api {
        operation: String,
        body: Bytes,
        region: String,
        reply: oneshot::Sender<ApiAnswer>,
    },
    /// Function `name` was deleted: its log streams go too.
    FunctionDeleted { name: String },
    /// Flush everything and stop.
    Shutdown { done: oneshot::Sender<()> },
}

/// The figures of a REPORT line.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub duration_ms: f64,
    pub memory_mb: u32,
    pub init_ms: Option<f64>,
    /// Whether the invocation succeeded (`platform.report`'s `status`).
    pub success: bool,
}

/// The senders' end of the log-writer thread's inbox; disabled (everything dropped uncounted)
/// when no store runs, as in unit tests of other modules.
#[derive(Clone, Default)]
pub struct LogSink {
    tx: Option<SyncSender<LogMsg>>,
}

impl LogSink {
    pub fn new(tx: SyncSender<LogMsg>) -> LogSink {
        LogSink { tx: Some(tx) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Sends without waiting (the cores' way): a full or closed inbox drops the message and
    /// counts its lines as dropped.
    pub fn offer(&self, metrics: &Metrics, msg: LogMsg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                metrics
                    .log_lines_dropped
                    .fetch_add(lines_in(&msg), Ordering::Relaxed);
            }
        }
    }

    /// Sends, waiting for room (blocking: only from threads that may block). Returns the message
    /// when the store is gone.
    pub fn send_blocking(&self, msg: LogMsg) -> Result<(), LogMsg> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }
}

/// How many log lines a dropped message would have made (at least one for output without a
/// newline; two for END + REPORT).
fn lines_in(msg: &LogMsg) -> u64 {
    match msg {
        LogMsg::Output { data, .. } => (data.iter().filter(|&&b| b == b'\n').count() as u64).max(1),
        LogMsg::End { .. } => 2,
        LogMsg::InitStart { .. } | LogMsg::Start { .. } => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_aws() {
        let name = log_stream_name("2024/01/02", "$LATEST", 0xabc, InstanceId(0x1234));
        let (prefix, hex) = name.split_at("2024/01/02/[$LATEST]".len());
        assert_eq!(prefix, "2024/01/02/[$LATEST]");
        assert_eq!(hex.len(), 32);
        assert_eq!(hex, "0000000000000abc0000000000001234");
    }

    #[test]
    fn full_inbox_counts_dropped_lines() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(0);
        let sink = LogSink::new(tx);
        let metrics = Metrics::default();
        let stream = Arc::new(LogStream {
            instance: InstanceId(1),
            group: "g".into(),
            name: "s".into(),
            function: "f".into(),
            version: "$LATEST".into(),
            runtime: "python3.12".into(),
            format: LogFormat::Text,
            system_level: None,
        });
        sink.offer(
            &metrics,
            LogMsg::Output {
                stream,
                at_ms: 0,
                data: Bytes::from_static(b"a\nb\nc"),
            },
        );
        assert_eq!(metrics.log_lines_dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn levels_apply_only_with_json() {
        let mut c = LoggingConfig::default();
        assert_eq!(c.application_level(), None);
        c.log_format = LogFormat::Json;
        assert_eq!(c.application_level(), Some("INFO"));
        assert_eq!(c.system_level(), Some("INFO"));
        assert_eq!(c.group_for("f"), "/aws/lambda/f");
    }
}
