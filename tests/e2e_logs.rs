//! End-to-end tests of the function log store: logs survive a restart, the oldest go first at
//! the size bound, a disk that refuses writes costs log lines and never an invocation, a function
//! printing without pause does not hold up another, and `aws logs tail --follow` (AWS CLI v2)
//! shows a function's new lines while it is invoked.
//!
//! In-process servers with the process executor and real Python runtimes; logs are read back
//! through the CloudWatch Logs API on the User API port. The AWS CLI test is skipped, with the
//! reason, when no AWS CLI v2 is on the PATH, unless LAH_REQUIRE_AWSCLI=1 (then it fails). Every
//! wait is bounded; all traffic stays on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::logs::{filter_messages, logs_call, logs_ok};
use common::*;
use serde_json::json;

/// Prints its event's `marker` (and `pad` bytes of padding, in 1000-byte lines).
const PY_PRINTS: &str = r#"
def handler(event, context):
    print(event["marker"])
    for _ in range(event.get("pad", 0) // 1000):
        print("p" * 999)
    return "ok"
"#;

/// Starts, at its first invocation, a thread that writes 64 KB chunks to stdout without pause.
const PY_CHATTY: &str = r#"
import sys, threading
started = False
def spam():
    chunk = ("x" * 1023 + "\n") * 64
    while True:
        sys.stdout.write(chunk)
        sys.stdout.flush()
def handler(event, context):
    global started
    if not started:
        started = True
        threading.Thread(target=spam, daemon=True).start()
    return "ok"
"#;

fn invoke_marker(server: &TestServer, name: &str, marker: &str, pad: usize) {
    server.invoke_ok(name, &json!({"marker": marker, "pad": pad}));
}

#[test]
fn logs_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = unique_name("logs-restart");
    let group = format!("/aws/lambda/{name}");
    let server = TestServer::start_in(dir.path(), |_| {});
    server.create_python(&name, PY_PRINTS, json!({}));
    invoke_marker(&server, &name, "before-restart", 0);
    server.shutdown();

    let server = TestServer::start_in(dir.path(), |_| {});
    assert_eq!(
        filter_messages(&server, &group, "before-restart"),
        ["before-restart"]
    );
    invoke_marker(&server, &name, "after-restart", 0);
    let streams = logs_ok(
        &server,
        "DescribeLogStreams",
        &json!({"logGroupName": group}),
    );
    let streams = streams["logStreams"].as_array().expect("streams").clone();
    assert_eq!(
        streams.len(),
        2,
        "a new instance after the restart writes a stream of its own: {streams:?}"
    );
    let all = filter_messages(&server, &group, "restart");
    assert_eq!(all, ["before-restart", "after-restart"]);
    let reports = filter_messages(&server, &group, "REPORT");
    assert_eq!(reports.len(), 2, "{reports:?}");
    server.shutdown();
}

#[test]
fn oldest_logs_are_dropped_at_the_size_bound() {
    const BOUND: u64 = 64 * 1024;
    let server = TestServer::with_config(|c| c.log_bytes_max = BOUND);
    let name = unique_name("logs-bound");
    let group = format!("/aws/lambda/{name}");
    server.create_python(&name, PY_PRINTS, json!({}));
    for i in 0..30 {
        invoke_marker(&server, &name, &format!("bound-marker-{i:02}"), 8000);
    }
    // The store writes on its own thread: read through the API, which answers after it.
    let kept = filter_messages(&server, &group, "bound-marker");
    let stored = server.metric("lah_log_bytes_stored");
    assert!(
        stored as u64 <= BOUND,
        "{stored} bytes stored, bound {BOUND}"
    );
    assert!(
        stored as u64 > BOUND / 2,
        "the store is filled up to its bound, not emptied: {stored}"
    );
    assert!(
        !kept.contains(&"bound-marker-00".to_string()),
        "the oldest lines went first: {kept:?}"
    );
    assert!(
        kept.contains(&"bound-marker-29".to_string()),
        "the newest lines stay: {kept:?}"
    );
    let numbers: Vec<u32> = kept
        .iter()
        .filter_map(|m| m.strip_prefix("bound-marker-")?.parse().ok())
        .collect();
    let first = numbers[0];
    assert_eq!(
        numbers,
        (first..30).collect::<Vec<_>>(),
        "what is kept is the newest, without holes"
    );
}

#[test]
fn a_disk_that_refuses_writes_drops_lines_not_invocations() {
    // Small segments (4 KiB), so the store opens new files often.
    let server = TestServer::with_config(|c| c.log_bytes_max = 64 * 1024);
    let name = unique_name("logs-refused");
    let group = format!("/aws/lambda/{name}");
    server.create_python(&name, PY_PRINTS, json!({}));
    invoke_marker(&server, &name, "stored-first", 0);
    assert_eq!(filter_messages(&server, &group, "stored-first").len(), 1);
    // Take the group's directory away and put a file in its place: every new segment file (the
    // next one is needed within 4 KiB) fails to open, as on a disk that refuses writes.
    let logs_dir = server.data_dir.join("logs");
    for entry in std::fs::read_dir(&logs_dir).expect("logs dir") {
        let path = entry.expect("entry").path();
        std::fs::remove_dir_all(&path).expect("remove group dir");
        std::fs::write(&path, b"not a directory").expect("block the path");
    }
    let dropped_before = server.metric("lah_log_lines_dropped_total");
    for i in 0..5 {
        let resp = server.invoke(
            &name,
            json!({"marker": format!("refused-{i}"), "pad": 8000})
                .to_string()
                .as_bytes(),
            &[],
        );
        assert_eq!(resp.status, 200, "{}", describe(&resp));
        assert_eq!(resp.header_str("X-Amz-Function-Error"), None);
    }
    // A query waits for the store to take what came before it.
    let _ = logs_call(&server, "DescribeLogGroups", &json!({}));
    let dropped = server.metric("lah_log_lines_dropped_total") - dropped_before;
    assert!(
        dropped >= 5.0,
        "lines the disk refused are counted as dropped: {dropped}"
    );
}

#[test]
fn a_function_printing_without_pause_does_not_hold_up_another() {
    let server = TestServer::with_config(|c| c.log_bytes_max = 8 * 1024 * 1024);
    let chatty = unique_name("logs-chatty");
    let quiet = unique_name("logs-quiet");
    server.create_python(&chatty, PY_CHATTY, json!({}));
    server.create_python(&quiet, PY_PRINTS, json!({}));
    invoke_marker(&server, &quiet, "warm-up", 0);
    server.invoke_ok(&chatty, &json!({}));
    // Let it print for a moment, then measure the other function's invocations meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let mut times = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        invoke_marker(&server, &quiet, &format!("quiet-{i}"), 0);
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let stored = server.metric("lah_log_events_stored_total");
    let dropped = server.metric("lah_log_lines_dropped_total");
    eprintln!(
        "quiet invocations beside a chatty one: median {median:?}, max {:?}; log events stored {stored}, dropped {dropped}",
        times[times.len() - 1]
    );
    assert!(
        median < Duration::from_millis(500),
        "a chatty neighbour held invocations up: median {median:?}"
    );
    // The output is read (at the per-instance rate, 4 MiB/s after a 1 MiB burst: at least the
    // burst's thousand 1 KiB lines by now) and stored, or counted as dropped if the store's
    // inbox was full: either way nobody waited for the disk.
    assert!(
        stored + dropped > 1_000.0,
        "the chatty output is read and stored or counted: {stored} + {dropped}"
    );
    let quiet_lines = filter_messages(&server, &format!("/aws/lambda/{quiet}"), "quiet-");
    assert!(
        quiet_lines.len() + dropped as usize >= 20,
        "the quiet function's lines are stored (or counted as dropped): {quiet_lines:?}"
    );
}

/// An AWS CLI v2 on the PATH (`LAH_AWS_CLI` names one explicitly): the first `aws` whose
/// `--version` says `aws-cli/2` (v1 has no `logs tail`).
fn aws_cli_v2() -> Result<std::path::PathBuf, String> {
    let candidates: Vec<std::path::PathBuf> = match std::env::var_os("LAH_AWS_CLI") {
        Some(p) => vec![p.into()],
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("aws"))
            .filter(|p| p.is_file())
            .collect(),
    };
    let mut seen = Vec::new();
    for path in candidates {
        let version = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if version.starts_with("aws-cli/2") {
            return Ok(path);
        }
        seen.push(format!("{} ({version})", path.display()));
    }
    Err(format!(
        "no AWS CLI v2 on the PATH (found: {seen:?}); `aws logs tail` needs v2 (Debian bookworm: apt-get install awscli)"
    ))
}

#[test]
fn aws_logs_tail_follow_shows_new_lines() {
    let aws = match aws_cli_v2() {
        Ok(p) => p,
        Err(why) => {
            let required = std::env::var("LAH_REQUIRE_AWSCLI").is_ok_and(|v| v == "1");
            assert!(!required, "LAH_REQUIRE_AWSCLI=1 but {why}");
            eprintln!("SKIPPED aws_logs_tail_follow_shows_new_lines: {why} (set LAH_REQUIRE_AWSCLI=1 to require it)");
            return;
        }
    };
    let server = TestServer::new();
    let name = unique_name("logs-tail");
    let group = format!("/aws/lambda/{name}");
    server.create_python(&name, PY_PRINTS, json!({}));
    invoke_marker(&server, &name, "tail-before", 0);
    let endpoint = format!("http://{}", server.addr);
    let mut child = Command::new(&aws)
        .args(["logs", "tail", &group, "--follow", "--format", "short"])
        .args(["--endpoint-url", &endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PAGER", "")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aws logs tail");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    // aws-cli v2 polls FilterLogEvents every 5 s; the server has the lines as soon as the
    // invocation has answered. 20 s covers a few polls on a loaded machine.
    let limit = Duration::from_secs(20);
    let wait_for = |marker: &str, seen: &mut Vec<String>| -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.ends_with(marker);
                    seen.push(line);
                    if found {
                        return Some(started.elapsed());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    };
    let before = wait_for("tail-before", &mut seen);
    let mut lags = Vec::new();
    if before.is_some() {
        for i in 0..2 {
            let marker = format!("tail-during-{i}");
            invoke_marker(&server, &name, &marker, 0);
            lags.push(wait_for(&marker, &mut seen));
        }
    }
    let _ = child.kill();
    let status = child.wait().ok();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        before.is_some(),
        "aws logs tail showed the earlier line: {seen:?}\n{status:?} {stderr}"
    );
    assert!(
        lags.iter().all(Option::is_some),
        "aws logs tail --follow showed the lines printed while it ran: {lags:?} {seen:?}\n{stderr}"
    );
    assert!(
        seen.iter().any(|l| l.contains("REPORT RequestId: ")),
        "platform lines are tailed too: {seen:?}"
    );
    eprintln!("aws logs tail --follow: lines shown after {lags:?}");
}
