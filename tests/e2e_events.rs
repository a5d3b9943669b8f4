//! End-to-end tests of asynchronous (`Event`) invocations with a real Python runtime: the queue
//! is durable across `kill -9` and SIGTERM (the server binary runs as a child process for
//! those), retries follow the event invoke config with scaled backoff, destinations get AWS's
//! invocation record, old events expire to OnFailure, and the queue bounds answer 429.
//!
//! Functions record what they ran by appending a JSON line to a file in the test's directory
//! (`OUT`), so "ran exactly once" is counted from what the functions did, not from the server.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lambda_at_home::protocols::http::ClientResponse;
use serde_json::{json, Value};

/// Appends `{"event":..., "id": request id, "t": unix seconds}` to `$OUT`, then answers, or
/// raises when the event says `fail`.
const RECORDER: &str = r#"import json, os, time
def handler(event, context):
    with open(os.environ['OUT'], 'a') as f:
        f.write(json.dumps({'event': event, 'id': context.aws_request_id, 't': time.time()}) + '\n')
    if isinstance(event, dict) and event.get('sleep'):
        time.sleep(event['sleep'])
    if isinstance(event, dict) and event.get('fail'):
        raise RuntimeError('failing on purpose')
    return {'doubled': event.get('n', 0) * 2 if isinstance(event, dict) else None}
"#;

/// How long a test waits for events to run (cold starts included).
const RUN_WAIT: Duration = Duration::from_secs(60);

fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> ClientResponse {
    let bytes = body.to_string();
    http_call(addr, method, path, &[], bytes.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A recorder function writing to `out`; returns its ARN.
fn create_recorder(addr: SocketAddr, name: &str, out: &Path) -> String {
    let body = json!({
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "lambda_function.handler",
        "Timeout": 10,
        "Code": {"ZipFile": zip_b64(&[("lambda_function.py", RECORDER.as_bytes(), 0o644)])},
        "Environment": {"Variables": {"OUT": out.to_str().unwrap()}},
    });
    let created = expect_json(&call(addr, "POST", "/2015-03-31/functions", &body), 201);
    created["FunctionArn"].as_str().unwrap().to_string()
}

/// An Event invoke; asserts 202 and returns the request id.
fn invoke_event(addr: SocketAddr, name: &str, payload: &Value) -> String {
    let resp = http_call(
        addr,
        "POST",
        &format!("/2015-03-31/functions/{name}/invocations"),
        &[("X-Amz-Invocation-Type", "Event")],
        payload.to_string().as_bytes(),
    )
    .expect("invoke");
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    resp.header_str("x-amzn-RequestId")
        .expect("request id")
        .to_string()
}

fn set_reserved(addr: SocketAddr, name: &str, n: Option<u32>) {
    let path = format!("/2017-10-31/functions/{name}/concurrency");
    let resp = match n {
        Some(n) => call(
            addr,
            "PUT",
            &path,
            &json!({"ReservedConcurrentExecutions": n}),
        ),
        None => call(addr, "DELETE", &path, &json!({})),
    };
    assert!(
        resp.status == 200 || resp.status == 204,
        "{}",
        describe(&resp)
    );
}

fn put_event_config(addr: SocketAddr, name: &str, config: &Value) {
    let path = format!("/2019-09-25/functions/{name}/event-invoke-config");
    expect_json(&call(addr, "PUT", &path, config), 200);
}

/// The JSON lines a recorder wrote.
fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn wait_for_lines(out: &Path, n: usize) -> Vec<Value> {
    let ok = wait_until(RUN_WAIT, || lines(out).len() >= n);
    let got = lines(out);
    assert!(ok, "expected {n} runs, got {}: {got:?}", got.len());
    got
}

/// How many times each `event.n` ran.
fn runs_by_n(out: &Path) -> HashMap<i64, usize> {
    let mut runs = HashMap::new();
    for l in lines(out) {
        *runs
            .entry(l["event"]["n"].as_i64().expect("n"))
            .or_default() += 1;
    }
    runs
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let resp = http_call(addr, "GET", "/metrics", &[], b"").expect("metrics");
    String::from_utf8_lossy(&resp.body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .expect("a number")
}

/// The server binary as a child process, so it can be killed for real.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(dir: &Path) -> ChildServer {
        let deps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtimes/.deps");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lambda-at-home-server"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--runtime-deps-dir")
            .arg(deps)
            .args(["--bind", "127.0.0.1", "--user-api-port", "0"])
            .args(["--runtime-api-port", "0", "--executor", "process"])
            .args(["--cores", "2", "--shutdown-grace-s", "5"])
            .args(["--event-retry-base-ms", "100"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // The recorder writes into the test's own (private) temporary dir, which an instance
            // with its own uid may not; identities have their own tests (e2e_isolation).
            .env("LAH_INSTANCE_UIDS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address the server announces, then keeps draining its log.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("User API http://").nth(1) {
                    let addr = rest
                        .split(',')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server announces its address")
            .parse()
            .expect("an address");
        ChildServer { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn sigterm(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid; the child is not reaped yet, so the pid
        // still names it.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM sent");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "clean exit after SIGTERM: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn acknowledged_events_survive_kill_9_and_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.jsonl");
    let name = unique_name("ev-kill");
    let server = ChildServer::start(&dir.path().join("data"));
    create_recorder(server.addr, &name, &out);

    // Ten events run to completion before the crash...
    for n in 0..10 {
        invoke_event(server.addr, &name, &json!({ "n": n }));
    }
    wait_for_lines(&out, 10);
    assert!(wait_until(RUN_WAIT, || metric(
        server.addr,
        "lah_events_succeeded_total"
    ) >= 10.0));
    // ...ten more are acknowledged but cannot run (reserved concurrency 0: throttled, kept).
    // Each 202 follows a sync that also covers the first ten's done records.
    set_reserved(server.addr, &name, Some(0));
    let mut acked = Vec::new();
    for n in 10..20 {
        acked.push(invoke_event(server.addr, &name, &json!({ "n": n })));
    }
    assert_eq!(metric(server.addr, "lah_events_queued"), 10.0);
    server.kill9();
    assert_eq!(lines(&out).len(), 10, "nothing ran after the throttle");

    let server = ChildServer::start(&dir.path().join("data"));
    // The events thread replays the log as it starts, maybe just after the server listens.
    assert!(
        wait_until(RUN_WAIT, || metric(server.addr, "lah_events_queued")
            == 10.0),
        "replayed"
    );
    set_reserved(server.addr, &name, None);
    wait_for_lines(&out, 20);
    assert!(wait_until(RUN_WAIT, || metric(
        server.addr,
        "lah_events_queued"
    ) == 0.0));
    std::thread::sleep(Duration::from_millis(500));
    let runs = runs_by_n(&out);
    for n in 0..20 {
        assert_eq!(runs.get(&n), Some(&1), "event {n} ran once: {runs:?}");
    }
    // The replayed events kept the request ids their 202s named.
    let ids: Vec<String> = lines(&out)[10..]
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    for id in &acked {
        assert!(ids.contains(id), "request id {id} kept across the restart");
    }
    server.kill9();
}

#[test]
fn sigterm_lets_the_running_attempt_finish_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.jsonl");
    let name = unique_name("ev-term");
    let server = ChildServer::start(&dir.path().join("data"));
    create_recorder(server.addr, &name, &out);
    // One at a time, 300 ms each: 20 events take 6 s, far longer than the test waits.
    set_reserved(server.addr, &name, Some(1));
    for n in 0..20 {
        invoke_event(server.addr, &name, &json!({ "n": n, "sleep": 0.3 }));
    }
    wait_for_lines(&out, 2);
    server.sigterm();
    let ran_before = lines(&out).len();
    assert!(ran_before < 20, "the queue was not drained before the stop");

    let server = ChildServer::start(&dir.path().join("data"));
    // The events thread replays the log as it starts, maybe just after the server listens.
    let kept = (20 - ran_before) as f64;
    assert!(
        wait_until(RUN_WAIT, || metric(server.addr, "lah_events_queued") == kept),
        "the attempts that ran within the grace are done; the rest were kept: {} queued, {kept} expected",
        metric(server.addr, "lah_events_queued")
    );
    set_reserved(server.addr, &name, None);
    wait_for_lines(&out, 20);
    assert!(wait_until(RUN_WAIT, || metric(
        server.addr,
        "lah_events_queued"
    ) == 0.0));
    std::thread::sleep(Duration::from_millis(500));
    let runs = runs_by_n(&out);
    for n in 0..20 {
        assert_eq!(runs.get(&n), Some(&1), "event {n} ran once: {runs:?}");
    }
    server.sigterm();
}

/// A server whose retry delays are `base_ms` (then twice that).
fn fast_retry_server(base_ms: u64) -> TestServer {
    TestServer::with_config(|c| c.event_retry_base_ms = base_ms)
}

#[test]
fn failing_event_is_retried_with_backoff_then_sent_to_on_failure() {
    let server = fast_retry_server(300);
    let dir = tempfile::tempdir().unwrap();
    let (attempts_out, dest_out) = (dir.path().join("attempts"), dir.path().join("dest"));
    let failing = unique_name("ev-fail");
    let dest = unique_name("ev-dest");
    create_recorder(server.addr, &failing, &attempts_out);
    let dest_arn = create_recorder(server.addr, &dest, &dest_out);
    put_event_config(
        server.addr,
        &failing,
        &json!({"MaximumRetryAttempts": 2,
                "DestinationConfig": {"OnFailure": {"Destination": dest_arn}}}),
    );
    let id = invoke_event(server.addr, &failing, &json!({"n": 7, "fail": true}));

    let records = wait_for_lines(&dest_out, 1);
    let attempts = lines(&attempts_out);
    assert_eq!(
        attempts.len(),
        3,
        "one attempt and two retries: {attempts:?}"
    );
    assert!(attempts.iter().all(|a| a["id"] == id.as_str()));
    let t: Vec<f64> = attempts.iter().map(|a| a["t"].as_f64().unwrap()).collect();
    assert!(t[1] - t[0] >= 0.28, "first retry after ~300 ms: {t:?}");
    assert!(t[2] - t[1] >= 0.58, "second retry after ~600 ms: {t:?}");

    let record = &records[0]["event"];
    assert_eq!(record["version"], "1.0");
    assert!(record["timestamp"].as_str().unwrap().ends_with('Z'));
    let ctx = &record["requestContext"];
    assert_eq!(ctx["requestId"], id.as_str());
    assert_eq!(ctx["condition"], "RetriesExhausted");
    assert_eq!(ctx["approximateInvokeCount"], 3);
    assert!(ctx["functionArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":function:{failing}:$LATEST")));
    assert_eq!(record["requestPayload"], json!({"n": 7, "fail": true}));
    assert_eq!(record["responseContext"]["statusCode"], 200);
    assert_eq!(record["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        record["responsePayload"]["errorMessage"],
        "failing on purpose"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&attempts_out).len(), 3, "no attempt after the last");
    assert_eq!(server.metric("lah_events_failed_total"), 1.0);
}

#[test]
fn successful_event_sends_its_record_to_on_success() {
    let server = fast_retry_server(100);
    let dir = tempfile::tempdir().unwrap();
    let (runs_out, dest_out) = (dir.path().join("runs"), dir.path().join("dest"));
    let ok = unique_name("ev-ok");
    let dest = unique_name("ev-okdest");
    create_recorder(server.addr, &ok, &runs_out);
    let dest_arn = create_recorder(server.addr, &dest, &dest_out);
    put_event_config(
        server.addr,
        &ok,
        &json!({"DestinationConfig": {"OnSuccess": {"Destination": dest_arn}}}),
    );
    let id = invoke_event(server.addr, &ok, &json!({"n": 21}));
    let records = wait_for_lines(&dest_out, 1);
    let record = &records[0]["event"];
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["requestPayload"], json!({"n": 21}));
    assert_eq!(
        record["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST"})
    );
    assert_eq!(record["responsePayload"], json!({"doubled": 42}));
    assert_eq!(lines(&runs_out).len(), 1);
    // The destination's own invocation is a new request, not the event's.
    assert_ne!(records[0]["id"], id.as_str());
}

#[test]
fn an_event_older_than_its_maximum_age_goes_to_on_failure_with_event_age_exceeded() {
    use lambda_at_home::events::log::{EventLog, StoredEvent, COMPACT_MIN_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (runs_out, dest_out) = (dir.path().join("runs"), dir.path().join("dest"));
    let old = unique_name("ev-old");
    let dest = unique_name("ev-olddest");
    {
        let server = TestServer::start_in(&data, |c| c.event_retry_base_ms = 100);
        create_recorder(server.addr, &old, &runs_out);
        let dest_arn = create_recorder(server.addr, &dest, &dest_out);
        put_event_config(
            server.addr,
            &old,
            &json!({"MaximumEventAgeInSeconds": 60,
                    "DestinationConfig": {"OnFailure": {"Destination": dest_arn}}}),
        );
        server.shutdown();
    }
    // An event acknowledged two minutes ago, still in the log (as after a long outage), and
    // one acknowledged just now. Ages count from acknowledgement, across restarts.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stored = |id: &str, accepted_ms: u64, n: i64| StoredEvent {
        id: id.to_string(),
        accepted_ms,
        attempts: 0,
        function: old.clone(),
        qualifier: "$LATEST".to_string(),
        trace_id: "Root=1-00000000-000000000000000000000000".to_string(),
        client_context: None,
        payload: json!({ "n": n }).to_string().into(),
    };
    {
        let (mut log, replayed) = EventLog::open(&data.join("events"), COMPACT_MIN_BYTES).unwrap();
        assert!(replayed.is_empty());
        log.append_enqueue(&stored(
            "00000000-0000-4000-8000-000000000001",
            now_ms - 120_000,
            1,
        ));
        log.append_enqueue(&stored("00000000-0000-4000-8000-000000000002", now_ms, 2));
        log.commit().unwrap();
    }
    let server = TestServer::start_in(&data, |c| c.event_retry_base_ms = 100);
    let records = wait_for_lines(&dest_out, 1);
    let record = &records[0]["event"];
    assert_eq!(
        record["requestContext"]["requestId"],
        "00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(record["requestPayload"], json!({"n": 1}));
    assert!(record.get("responseContext").is_none());
    // The fresh one ran; the old one never did.
    let runs = wait_for_lines(&runs_out, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&runs_out).len(), 1);
    assert_eq!(runs[0]["event"], json!({"n": 2}));
    assert_eq!(server.metric("lah_events_failed_total"), 1.0);
}

#[test]
fn queue_bounds_refuse_events_with_429() {
    let server = TestServer::with_config(|c| {
        c.event_queue_max = 5;
        c.event_queue_function_max = 3;
        c.event_retry_base_ms = 100;
    });
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (unique_name("ev-qa"), unique_name("ev-qb"));
    create_recorder(server.addr, &a, &dir.path().join("a"));
    create_recorder(server.addr, &b, &dir.path().join("b"));
    // Nothing runs, so everything accepted stays queued.
    set_reserved(server.addr, &a, Some(0));
    set_reserved(server.addr, &b, Some(0));
    let event = |name: &str| server.invoke(name, b"{}", &[("X-Amz-Invocation-Type", "Event")]);
    for _ in 0..3 {
        assert_eq!(event(&a).status, 202);
    }
    let body = expect_aws_error(&event(&a), 429, "TooManyRequestsException");
    assert_eq!(body["Reason"], "EventQueueFull", "per-function bound");
    for _ in 0..2 {
        assert_eq!(event(&b).status, 202);
    }
    let body = expect_aws_error(&event(&b), 429, "TooManyRequestsException");
    assert_eq!(body["Reason"], "EventQueueFull", "global bound");
    assert_eq!(server.metric("lah_events_queued"), 5.0);
}

/// Measures what the durable queue adds to an Event invoke: 202 (enqueue + fdatasync) against
/// DryRun (204, same parsing and routing, no queue). Run by hand:
/// `cargo test --release --test e2e_events -- --ignored --nocapture event_ack_latency`.
#[test]
#[ignore]
fn event_ack_latency() {
    const N: usize = 300;
    let server = TestServer::new();
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("ev-lat");
    create_recorder(server.addr, &name, &dir.path().join("runs"));
    set_reserved(server.addr, &name, Some(0));
    let measure = |kind: &str| {
        let mut us: Vec<u64> = (0..N)
            .map(|_| {
                let t = Instant::now();
                let resp = server.invoke(&name, b"{}", &[("X-Amz-Invocation-Type", kind)]);
                assert!(resp.status == 202 || resp.status == 204);
                t.elapsed().as_micros() as u64
            })
            .collect();
        us.sort_unstable();
        (us[N / 2], us[N * 99 / 100])
    };
    let dry = measure("DryRun");
    let syncs_before = server.metric("lah_event_log_sync_seconds_count");
    let event = measure("Event");
    let syncs_sequential = server.metric("lah_event_log_sync_seconds_count") - syncs_before;
    println!(
        "sequential, one connection per request: DryRun p50 {} us p99 {} us; Event p50 {} us p99 {} us; {syncs_sequential} syncs for {N} events",
        dry.0, dry.1, event.0, event.1
    );
    // Group commit: 8 clients at once share syncs.
    const CLIENTS: usize = 8;
    let syncs_before = server.metric("lah_event_log_sync_seconds_count");
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..N / CLIENTS {
                    let resp = server.invoke(&name, b"{}", &[("X-Amz-Invocation-Type", "Event")]);
                    assert_eq!(resp.status, 202);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let syncs = server.metric("lah_event_log_sync_seconds_count") - syncs_before;
    println!(
        "{CLIENTS} clients: {} events in {elapsed:?} ({:.0}/s), {syncs} syncs ({:.1} events per sync)",
        N / CLIENTS * CLIENTS,
        (N / CLIENTS * CLIENTS) as f64 / elapsed.as_secs_f64(),
        (N / CLIENTS * CLIENTS) as f64 / syncs
    );
}
