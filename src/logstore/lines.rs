//! How output becomes log events, as Lambda makes them: AWS's line splitting, and the platform
//! lines (INIT_START, START, END, REPORT; `platform.*` records with the JSON format).
//!
//! Pure functions and one small per-instance state (`LineSplitter`), used by the log-writer
//! thread only. Rules (docs/logs.md):
//! - each `\n` ends an event; `\r` stays inside it (AWS's runtimes turn the newlines of one
//!   multi-line log call into `\r` so that the call stays one event);
//! - empty lines make no event (CloudWatch refuses empty messages);
//! - an event holds at most `EVENT_MESSAGE_BYTES_MAX`; a longer line is cut into several;
//! - bytes after the last newline wait for the rest of their line, and are stored as they are
//!   when the invocation ends, the instance's output closes, or they wait too long;
//! - invalid UTF-8 becomes U+FFFD;
//! - an event's timestamp is when the core read the chunk that completed it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::disk::Event;
use crate::model::logsink::{LogFormat, LogStream, Report, SYSTEM_LOG_LEVELS};
use crate::model::types::{region, RequestId};

/// CloudWatch's largest event: 256 KiB including 26 bytes of overhead per event.
pub const EVENT_MESSAGE_BYTES_MAX: usize = 256 * 1024 - 26;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One instance's unfinished line.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// When the first byte of `partial` was read.
    since_ms: Option<u64>,
    /// When output last arrived.
    pub last_ms: u64,
}

impl LineSplitter {
    /// Adds a chunk read at `at_ms`; pushes the events it completes.
    pub fn push(&mut self, data: &[u8], at_ms: u64, out: &mut Vec<Event>) {
        self.last_ms = at_ms;
        let mut rest = data;
        while let Some(n) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..n]);
            emit(&self.partial, at_ms, out);
            self.partial.clear();
            self.since_ms = None;
            rest = &rest[n + 1..];
        }
        if !rest.is_empty() {
            self.partial.extend_from_slice(rest);
            self.since_ms.get_or_insert(at_ms);
            // A line longer than an event is stored in event-sized pieces as it grows.
            while self.partial.len() >= EVENT_MESSAGE_BYTES_MAX {
                let cut = utf8_cut(&self.partial, EVENT_MESSAGE_BYTES_MAX);
                emit(&self.partial[..cut], at_ms, out);
                self.partial.drain(..cut);
            }
        }
    }

    /// Stores the unfinished line as it is.
    pub fn finish(&mut self, at_ms: u64, out: &mut Vec<Event>) {
        emit(&self.partial, at_ms, out);
        self.partial.clear();
        self.since_ms = None;
    }

    /// When the unfinished line began, if there is one.
    pub fn pending_since(&self) -> Option<u64> {
        self.since_ms
    }
}

/// The largest cut at or below `max` that does not split a UTF-8 sequence (any cut when the
/// bytes are not UTF-8 there).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    while cut > 0 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 && max - cut < 4 {
        cut -= 1;
    }
    if cut == 0 {
        max.min(bytes.len())
    } else {
        cut
    }
}

fn emit(line: &[u8], ts: u64, out: &mut Vec<Event>) {
    let mut rest = line;
    while !rest.is_empty() {
        let cut = utf8_cut(rest, EVENT_MESSAGE_BYTES_MAX);
        out.push(Event {
            ts,
            message: String::from_utf8_lossy(&rest[..cut]).into_owned(),
        });
        rest = &rest[cut..];
    }
}

/// `2024-01-02T03:04:05.678Z`.
pub fn iso_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether platform records of `level` are kept (JSON format: `SystemLogLevel`; Text: all).
fn system_keeps(stream: &LogStream, level: &str) -> bool {
    let rank = |l: &str| SYSTEM_LOG_LEVELS.iter().position(|x| *x == l);
    match stream.system_level.as_deref() {
        Some(min) => rank(level) >= rank(min),
        None => true,
    }
}

fn platform(stream: &LogStream, at_ms: u64, kind: &str, record: serde_json::Value) -> Vec<Event> {
    if !system_keeps(stream, "INFO") {
        return Vec::new();
    }
    let line = json!({"time": iso_ms(at_ms), "type": kind, "record": record});
    vec![Event {
        ts: at_ms,
        message: line.to_string(),
    }]
}

fn runtime_version(stream: &LogStream) -> (String, String) {
    // `python3.12` → `python:3.12`, `nodejs20.x` → `nodejs:20` (AWS's runtime version names,
    // without AWS's build suffix, which this server has no equivalent of).
    let base = stream.runtime.trim_end_matches(".x");
    let version = match base.find(|c: char| c.is_ascii_digit()) {
        Some(i) if base.starts_with("python") || base.starts_with("nodejs") => {
            format!("{}:{}", &base[..i], &base[i..])
        }
        _ => base.to_string(),
    };
    let arn = format!("arn:aws:lambda:{}::runtime:{}", region(), stream.runtime);
    (version, arn)
}

/// INIT_START, when the instance's runtime starts.
pub fn init_start(stream: &LogStream, at_ms: u64) -> Vec<Event> {
    let (version, arn) = runtime_version(stream);
    match stream.format {
        LogFormat::Text => vec![Event {
            ts: at_ms,
            message: format!("INIT_START Runtime Version: {version}\tRuntime Version ARN: {arn}"),
        }],
        LogFormat::Json => platform(
            stream,
            at_ms,
            "platform.initStart",
            json!({
                "initializationType": "on-demand",
                "phase": "init",
                "runtimeVersion": version,
                "runtimeVersionArn": arn,
                "functionName": stream.function,
                "functionVersion": stream.version,
            }),
        ),
    }
}

/// START, when an invocation is handed to the instance.
pub fn start(stream: &LogStream, at_ms: u64, request: &RequestId) -> Vec<Event> {
    match stream.format {
        LogFormat::Text => vec![Event {
            ts: at_ms,
            message: [
                "START RequestId: ",
                request.as_str(),
                " Version: ",
                &stream.version,
            ]
            .concat(),
        }],
        LogFormat::Json => platform(
            stream,
            at_ms,
            "platform.start",
            json!({"requestId": request.to_string(), "version": stream.version}),
        ),
    }
}

/// END and REPORT (Text), or `platform.report` (JSON), when the invocation ends.
pub fn end(stream: &LogStream, at_ms: u64, request: &RequestId, r: &Report) -> Vec<Event> {
    let billed = r.duration_ms.ceil().max(1.0) as u64;
    match stream.format {
        LogFormat::Text => {
            let mut report = format!(
                "REPORT RequestId: {request}\tDuration: {:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB",
                r.duration_ms, r.memory_mb
            );
            if let Some(init) = r.init_ms {
                report.push_str(&format!("\tInit Duration: {init:.2} ms"));
            }
            if !r.success {
                report.push_str("\tStatus: error");
            }
            vec![
                Event {
                    ts: at_ms,
                    message: ["END RequestId: ", request.as_str()].concat(),
                },
                Event {
                    ts: at_ms,
                    message: report,
                },
            ]
        }
        LogFormat::Json => {
            let mut metrics = json!({
                "durationMs": (r.duration_ms * 100.0).round() / 100.0,
                "billedDurationMs": billed,
                "memorySizeMB": r.memory_mb,
            });
            if let Some(init) = r.init_ms {
                metrics["initDurationMs"] = json!((init * 100.0).round() / 100.0);
            }
            platform(
                stream,
                at_ms,
                "platform.report",
                json!({
                    "requestId": request.to_string(),
                    "metrics": metrics,
                    "status": if r.success { "success" } else { "error" },
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::InstanceId;

    fn messages(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn splits_on_newlines_keeps_carriage_returns_and_waits_for_partials() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"one\ntwo\r\nthree\rstill three\n\npar", 7, &mut out);
        assert_eq!(messages(&out), ["one", "two\r", "three\rstill three"]);
        assert_eq!(s.pending_since(), Some(7));
        out.clear();
        s.push(b"tial\n", 9, &mut out);
        assert_eq!(messages(&out), ["partial"]);
        assert_eq!(out[0].ts, 9);
        assert_eq!(s.pending_since(), None);
        out.clear();
        s.push(b"no newline", 10, &mut out);
        s.finish(11, &mut out);
        assert_eq!(messages(&out), ["no newline"]);
    }

    #[test]
    fn long_lines_become_several_events_on_char_boundaries() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        let line = "é".repeat(EVENT_MESSAGE_BYTES_MAX); // 2 bytes each
        s.push(line.as_bytes(), 1, &mut out);
        s.push(b"\n", 1, &mut out);
        assert!(out.len() >= 2);
        assert!(out
            .iter()
            .all(|e| e.message.len() <= EVENT_MESSAGE_BYTES_MAX));
        let joined: String = out.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(joined, line);
    }

    #[test]
    fn iso_timestamps() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_704_164_645_678), "2024-01-02T03:04:05.678Z");
    }

    fn stream(format: LogFormat, system_level: Option<&str>) -> LogStream {
        LogStream {
            instance: InstanceId(1),
            group: "/aws/lambda/f".into(),
            name: "s".into(),
            function: "f".into(),
            version: "$LATEST".into(),
            runtime: "python3.12".into(),
            format,
            system_level: system_level.map(str::to_string),
        }
    }

    #[test]
    fn platform_lines_text_and_json() {
        let id = RequestId(std::sync::Arc::from("r-1"));
        let report = Report {
            duration_ms: 1.234,
            memory_mb: 128,
            init_ms: Some(50.0),
            success: true,
        };
        let text = stream(LogFormat::Text, None);
        assert_eq!(
            messages(&start(&text, 1, &id)),
            ["START RequestId: r-1 Version: $LATEST"]
        );
        let ended = end(&text, 2, &id, &report);
        assert_eq!(ended[0].message, "END RequestId: r-1");
        assert_eq!(
            ended[1].message,
            "REPORT RequestId: r-1\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tInit Duration: 50.00 ms"
        );
        assert!(init_start(&text, 0)[0]
            .message
            .starts_with("INIT_START Runtime Version: python:3.12\t"));
        let json_stream = stream(LogFormat::Json, Some("INFO"));
        let v: serde_json::Value =
            serde_json::from_str(&end(&json_stream, 2, &id, &report)[0].message).unwrap();
        assert_eq!(v["type"], "platform.report");
        assert_eq!(v["record"]["requestId"], "r-1");
        assert_eq!(v["record"]["metrics"]["billedDurationMs"], 2);
        assert_eq!(v["record"]["status"], "success");
        let v: serde_json::Value =
            serde_json::from_str(&start(&json_stream, 1, &id)[0].message).unwrap();
        assert_eq!(v["type"], "platform.start");
        assert_eq!(v["record"]["version"], "$LATEST");
        // SystemLogLevel WARN hides the INFO platform records.
        assert!(start(&stream(LogFormat::Json, Some("WARN")), 1, &id).is_empty());
    }
}
