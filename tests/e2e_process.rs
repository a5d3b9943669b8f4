//! End-to-end tests with the process executor: a server started in-process, real Node and Python
//! runtimes (the bootstraps in `runtimes/`), `provided` bootstraps written inline, and AWS's
//! User API spoken over plain HTTP on loopback.
//!
//! Each test has its own server (own data dir, own ephemeral ports) and bounded waits.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::Digest;

const PY_ECHO: &str = "def handler(event, context):\n    return event\n";

const PY_V2: &str = "def handler(event, context):\n    return {\"version\": 2, \"event\": event}\n";

/// Sleeps `event["sleep"]` seconds (default 0), then answers.
const PY_SLEEPY: &str = "import time\n\
def handler(event, context):\n    time.sleep(event.get(\"sleep\", 0))\n    return {\"slept\": event.get(\"sleep\", 0)}\n";

/// A `provided` runtime: the Runtime API loop with http.client, answering `{"provided": ...}`.
const PROVIDED_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os, sys
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(0)
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    out = json.dumps({
        "provided": True,
        "event": json.loads(body),
        "handler": os.environ.get("_HANDLER"),
        "arn": r.getheader("Lambda-Runtime-Invoked-Function-Arn"),
        "deadline": r.getheader("Lambda-Runtime-Deadline-Ms"),
    }).encode()
    conn.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, out,
                 {"Content-Type": "application/json"})
    conn.getresponse().read()
"#;

/// A `provided` runtime that, on each invocation, first answers a made-up request id (on its own
/// connection) and then reports the status it got in its real response.
const SNOOPING_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os, sys
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(0)
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    fake = "8f2d4a6e-0000-4000-8000-000000000000"
    other = http.client.HTTPConnection(host, int(port), timeout=10)
    other.request("POST", "/2018-06-01/runtime/invocation/%s/response" % fake, b'{"stolen":true}',
                  {"Content-Type": "application/json"})
    o = other.getresponse()
    o.read()
    other.request("POST", "/2018-06-01/runtime/invocation/%s/error" % fake, b'{"errorType":"X","errorMessage":"y"}',
                  {"Content-Type": "application/json"})
    e = other.getresponse()
    e.read()
    other.close()
    out = json.dumps({"fake_response_status": o.status, "fake_error_status": e.status}).encode()
    conn.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, out,
                 {"Content-Type": "application/json"})
    conn.getresponse().read()
"#;

fn arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:000000000000:function:{name}")
}

fn code_sha256(zip: &[u8]) -> String {
    b64(&sha2::Sha256::digest(zip))
}

/// Asserts CreateFunction's answer for `name`.
fn check_created(config: &Value, name: &str, runtime: &str) {
    assert_eq!(config["FunctionName"], name, "{config}");
    assert_eq!(config["FunctionArn"], arn(name), "{config}");
    assert_eq!(config["Runtime"], runtime, "{config}");
    assert_eq!(config["State"], "Active", "{config}");
    assert!(
        config["CodeSha256"].as_str().is_some_and(|s| !s.is_empty()),
        "{config}"
    );
    assert!(
        config["RevisionId"].as_str().is_some_and(|s| !s.is_empty()),
        "{config}"
    );
}

/// Invoke → 404 ResourceNotFoundException in AWS's shape.
fn expect_not_found(server: &TestServer, name: &str) {
    let resp = server.invoke(name, b"{}", &[]);
    let body = expect_aws_error(&resp, 404, "ResourceNotFoundException");
    assert_eq!(body["Type"], "User", "{}", describe(&resp));
    assert!(
        body["Message"].as_str().unwrap_or("").contains(name),
        "{}",
        describe(&resp)
    );
}

/// Create → invoke → update code → invoke (new result) → delete → invoke 404.
fn lifecycle(
    ws: bool,
    runtime: &str,
    handler: &str,
    file: &str,
    v1: &str,
    v2: &str,
    check_v2: impl Fn(&Value, &Value),
) {
    let server = server_with_transport(ws);
    let name = unique_name("life");
    let files: &[(&str, &[u8], u32)] = &[(file, v1.as_bytes(), 0o644)];
    let zip1 = zip_bytes(files);
    let resp = server.create_function(&name, runtime, handler, files, json!({}));
    let created = expect_json(&resp, 201);
    check_created(&created, &name, runtime);
    assert_eq!(created["Handler"], handler);
    assert_eq!(
        created["CodeSha256"],
        code_sha256(&zip1),
        "CodeSha256 is base64(sha256(zip))"
    );

    let payload = json!({"hello": "world", "n": 1, "nested": {"list": [1, 2, 3]}});
    let resp = server.invoke(&name, payload.to_string().as_bytes(), &[]);
    assert_eq!(expect_json(&resp, 200), payload, "{}", describe(&resp));
    assert_eq!(resp.header_str("X-Amz-Executed-Version"), Some("$LATEST"));
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );

    assert_transport(&server, ws);

    let v2_files: &[(&str, &[u8], u32)] = &[(file, v2.as_bytes(), 0o644)];
    let resp = server.update_code(&name, v2_files);
    let updated = expect_json(&resp, 200);
    assert_eq!(
        updated["CodeSha256"],
        code_sha256(&zip_bytes(v2_files)),
        "{updated}"
    );
    assert_ne!(
        updated["RevisionId"], created["RevisionId"],
        "RevisionId changes on update"
    );

    let got = server.invoke_ok(&name, &payload);
    check_v2(&got, &payload);

    let resp = server.call("DELETE", &format!("/2015-03-31/functions/{name}"), &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    expect_not_found(&server, &name);
    let resp = server.call("GET", &format!("/2015-03-31/functions/{name}"), &[], b"");
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
}

/// A server whose instances use the WebSocket Runtime API (`ws`) or the HTTP one.
fn server_with_transport(ws: bool) -> TestServer {
    TestServer::with_config(|c| c.use_websocket = ws)
}

fn python_lifecycle(ws: bool) {
    lifecycle(
        ws,
        "python3.12",
        "lambda_function.handler",
        "lambda_function.py",
        PY_ECHO,
        PY_V2,
        |got, payload| assert_eq!(got, &json!({"version": 2, "event": payload})),
    );
}

#[test]
fn python_create_invoke_update_delete_websocket() {
    python_lifecycle(true);
}

#[test]
fn python_create_invoke_update_delete_http() {
    python_lifecycle(false);
}

fn node_lifecycle(ws: bool) {
    lifecycle(
        ws,
        "nodejs20.x",
        "index.handler",
        "index.js",
        "exports.handler = async (event, context) => event;\n",
        "exports.handler = async (event, context) => ({ version: 2, event, rid: context.awsRequestId });\n",
        |got, payload| {
            assert_eq!(got["version"], 2, "{got}");
            assert_eq!(&got["event"], payload, "{got}");
            assert!(got["rid"].as_str().is_some_and(|s| s.len() >= 32), "{got}");
        },
    );
}

#[test]
fn node_async_create_invoke_update_delete_websocket() {
    node_lifecycle(true);
}

#[test]
fn node_async_create_invoke_update_delete_http() {
    node_lifecycle(false);
}

#[test]
fn node_callback_handler() {
    let server = TestServer::new();
    let name = unique_name("nodecb");
    let src = "exports.handler = (event, context, callback) => {\n  setTimeout(() => callback(null, { cb: event.n * 2 }), 20);\n};\n";
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "index.handler",
        &[("index.js", src.as_bytes(), 0o644)],
        json!({}),
    );
    check_created(&expect_json(&resp, 201), &name, "nodejs20.x");
    for n in 1..=3 {
        assert_eq!(
            server.invoke_ok(&name, &json!({ "n": n })),
            json!({ "cb": n * 2 })
        );
    }
    let err_src =
        "exports.handler = (event, context, callback) => callback(new TypeError('cb-fail'));\n";
    let resp = server.update_code(&name, &[("index.js", err_src.as_bytes(), 0o644)]);
    expect_json(&resp, 200);
    let body = expect_function_error(&server.invoke(&name, b"{}", &[]));
    assert_eq!(body["errorType"], "TypeError", "{body}");
    assert_eq!(body["errorMessage"], "cb-fail", "{body}");
}

#[test]
fn provided_runtime_bootstrap() {
    let server = TestServer::new();
    let name = unique_name("prov");
    let created = server.create_provided(&name, PROVIDED_BOOTSTRAP, json!({}));
    check_created(&created, &name, "provided.al2023");
    for n in 0..3 {
        let got = server.invoke_ok(&name, &json!({ "n": n }));
        assert_eq!(got["provided"], true, "{got}");
        assert_eq!(got["event"], json!({ "n": n }), "{got}");
        assert_eq!(got["handler"], "bootstrap", "{got}");
        assert_eq!(got["arn"], arn(&name), "{got}");
        let deadline: u64 = got["deadline"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("deadline");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            deadline > now_ms - 5_000 && deadline < now_ms + 10_000,
            "deadline {deadline} vs now {now_ms}"
        );
    }
}

#[test]
fn snake_case_create_body_from_the_spec() {
    let server = TestServer::new();
    let name = unique_name("snake");
    let body = json!({
        "function_name": name,
        "runtime": "python311",
        "handler": "lambda_function.handler",
        "code": { "zip_file": zip_b64(&[("lambda_function.py", PY_ECHO.as_bytes(), 0o644)]) },
    });
    let resp = server.call_json("POST", "/2015-03-31/functions", &body);
    let created = expect_json(&resp, 201);
    assert_eq!(created["FunctionName"], name, "{created}");
    assert_eq!(created["FunctionArn"], arn(&name), "{created}");
    assert!(
        created["Runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("python3")),
        "{created}"
    );
    assert_eq!(
        server.invoke_ok(&name, &json!({"snake": true})),
        json!({"snake": true})
    );
}

#[test]
fn event_invoke_runs_in_background_and_dry_run() {
    let server = TestServer::new();
    let name = unique_name("event");
    let src = "def handler(event, context):\n    with open(event['path'], 'w') as f:\n        f.write(event['text'])\n    return {'ok': True}\n";
    server.create_python(&name, src, json!({}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("side-effect.txt");
    let text = unique_name("written");
    let payload = json!({ "path": path.to_str().unwrap(), "text": text });
    let resp = server.invoke(
        &name,
        payload.to_string().as_bytes(),
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(resp.status, 202, "{}", describe(&resp));
    let seen = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t == text)
    });
    assert!(
        seen,
        "the Event invocation did not write {}",
        path.display()
    );

    let dry = dir.path().join("dry.txt");
    let payload = json!({ "path": dry.to_str().unwrap(), "text": "no" });
    let resp = server.invoke(
        &name,
        payload.to_string().as_bytes(),
        &[("X-Amz-Invocation-Type", "DryRun")],
    );
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    assert!(resp.body.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dry.exists(), "DryRun must not run the function");

    let resp = server.invoke(&name, b"{}", &[("X-Amz-Invocation-Type", "Bogus")]);
    expect_aws_error(&resp, 400, "InvalidParameterValueException");
    let resp = server.invoke(
        &unique_name("missing"),
        b"{}",
        &[("X-Amz-Invocation-Type", "Event")],
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
}

fn log_tail(ws: bool) {
    let server = server_with_transport(ws);
    let name = unique_name("tail");
    let src = "def handler(event, context):\n    print('LINE-' + event['tag'])\n    print('x' * event.get('big', 0))\n    return {'tag': event['tag']}\n";
    server.create_python(&name, src, json!({}));
    for (i, big) in [0, 0, 10_000].into_iter().enumerate() {
        let tag = unique_name("tag");
        let payload = json!({ "tag": tag, "big": big });
        let resp = server.invoke(
            &name,
            payload.to_string().as_bytes(),
            &[("X-Amz-Log-Type", "Tail")],
        );
        assert_eq!(expect_json(&resp, 200), json!({ "tag": tag }));
        let encoded = resp
            .header_str("X-Amz-Log-Result")
            .unwrap_or_else(|| panic!("no X-Amz-Log-Result: {}", describe(&resp)));
        let log = b64_decode(encoded);
        assert!(log.len() <= 4096, "tail is {} bytes", log.len());
        let log = String::from_utf8_lossy(&log);
        let request_id = resp.header_str("x-amzn-RequestId").unwrap_or("<none>");
        assert!(log.contains("END RequestId:"), "invocation {i}: {log}");
        assert!(log.contains("REPORT RequestId:"), "invocation {i}: {log}");
        assert!(
            log.contains(request_id),
            "invocation {i}: request id {request_id} not in {log}"
        );
        if big == 0 {
            assert!(log.contains("START RequestId:"), "invocation {i}: {log}");
            assert!(
                log.contains(&format!("LINE-{tag}")),
                "invocation {i}: {log}"
            );
            // The previous invocation's line must not leak into this tail.
            assert_eq!(log.matches("LINE-").count(), 1, "invocation {i}: {log}");
        }
    }
    let resp = server.invoke(&name, br#"{"tag":"t"}"#, &[]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header_str("X-Amz-Log-Result"),
        None,
        "no tail unless asked"
    );
}

#[test]
fn log_tail_websocket() {
    log_tail(true);
}

#[test]
fn log_tail_http() {
    log_tail(false);
}

#[test]
fn function_error_is_200_with_header() {
    let server = TestServer::new();
    let name = unique_name("err");
    server.create_python(
        &name,
        "def handler(event, context):\n    raise ValueError('boom')\n",
        json!({}),
    );
    let resp = server.invoke(&name, b"{}", &[]);
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        Some("Unhandled"),
        "{}",
        describe(&resp)
    );
    let body = expect_function_error(&resp);
    assert_eq!(body["errorType"], "ValueError", "{body}");
    assert_eq!(body["errorMessage"], "boom", "{body}");
    assert!(body["stackTrace"].is_array(), "{body}");
    // The instance survives a handled exception.
    let body = expect_function_error(&server.invoke(&name, b"{}", &[]));
    assert_eq!(body["errorType"], "ValueError", "{body}");
}

fn timeout_kills_and_replaces_the_instance(ws: bool) {
    let server = server_with_transport(ws);
    let name = unique_name("timeout");
    server.create_python(&name, PY_SLEEPY, json!({ "Timeout": 1 }));
    // Warm first: the deadline runs from dispatch, so a cold start (slow on a loaded machine)
    // must not count against the bound below.
    assert_eq!(
        server.invoke_ok(&name, &json!({ "sleep": 0 })),
        json!({ "slept": 0 })
    );
    std::thread::sleep(Duration::from_millis(200));
    let cold_starts = server.metric("lah_cold_starts_total");
    let started = Instant::now();
    let resp = server.invoke(&name, br#"{"sleep": 5}"#, &[]);
    let took = started.elapsed();
    let body = expect_function_error(&resp);
    let message = body["errorMessage"].as_str().unwrap_or("");
    assert!(
        message.contains("Task timed out after 1.00 seconds"),
        "{}",
        describe(&resp)
    );
    assert!(
        took < Duration::from_millis(3000),
        "timeout answered after {took:?}"
    );
    assert_eq!(
        server.metric("lah_cold_starts_total"),
        cold_starts,
        "the timed-out invocation ran on the warm instance"
    );
    let got = server.invoke_ok(&name, &json!({ "sleep": 0 }));
    assert_eq!(got, json!({ "slept": 0 }));
    assert_eq!(
        server.metric("lah_cold_starts_total"),
        cold_starts + 1.0,
        "a timed-out instance is replaced, not reused"
    );
    assert_eq!(server.metric("lah_timeouts_total"), 1.0);
}

#[test]
fn timeout_websocket() {
    timeout_kills_and_replaces_the_instance(true);
}

#[test]
fn timeout_http() {
    timeout_kills_and_replaces_the_instance(false);
}

fn crash_fails_the_invocation_and_recovers(ws: bool) {
    let server = server_with_transport(ws);
    let name = unique_name("crash");
    let src = "import os\ndef handler(event, context):\n    if event.get('exit'):\n        os._exit(3)\n    return {'alive': True}\n";
    server.create_python(&name, src, json!({}));
    assert_eq!(
        server.invoke_ok(&name, &json!({})),
        json!({ "alive": true })
    );
    let started = Instant::now();
    let resp = server.invoke(&name, br#"{"exit": true}"#, &[]);
    let body = expect_function_error(&resp);
    assert_eq!(
        body["errorType"],
        "Runtime.ExitError",
        "{}",
        describe(&resp)
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("exit status 3"),
        "{}",
        describe(&resp)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "crash reported after {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.invoke_ok(&name, &json!({})),
        json!({ "alive": true })
    );
}

#[test]
fn crash_websocket() {
    crash_fails_the_invocation_and_recovers(true);
}

#[test]
fn crash_http() {
    crash_fails_the_invocation_and_recovers(false);
}

#[test]
fn init_error_is_reported_not_hung() {
    let server = TestServer::new();
    let name = unique_name("initerr");
    let resp = server.create_function(
        &name,
        "python3.12",
        "nope.handler",
        &[("lambda_function.py", PY_ECHO.as_bytes(), 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    for _ in 0..2 {
        let started = Instant::now();
        let resp = server.invoke(&name, b"{}", &[]);
        let body = expect_function_error(&resp);
        assert_eq!(
            body["errorType"],
            "Runtime.ImportModuleError",
            "{}",
            describe(&resp)
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
    // Same for Node.
    let name = unique_name("initerr-node");
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "nope.handler",
        &[("index.js", b"exports.handler = async () => 1;\n", 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    let body = expect_function_error(&server.invoke(&name, b"{}", &[]));
    assert_eq!(body["errorType"], "Runtime.ImportModuleError", "{body}");
}

fn concurrency_path(name: &str) -> String {
    format!("/2017-10-31/functions/{name}/concurrency")
}

#[test]
fn reserved_concurrency_zero_throttles() {
    let server = TestServer::new();
    let name = unique_name("throttle");
    server.create_python(&name, PY_ECHO, json!({}));
    let throttles_before = server.metric("lah_throttles_total");
    let resp = server.call_json(
        "PUT",
        &concurrency_path(&name),
        &json!({"ReservedConcurrentExecutions": 0}),
    );
    assert_eq!(
        expect_json(&resp, 200),
        json!({"ReservedConcurrentExecutions": 0})
    );

    let resp = server.invoke(&name, b"{}", &[]);
    let body = expect_aws_error(&resp, 429, "TooManyRequestsException");
    assert!(body["Reason"].is_string(), "{}", describe(&resp));
    assert_eq!(server.metric("lah_throttles_total"), throttles_before + 1.0);

    let resp = server.call(
        "GET",
        &format!("/2019-09-30/functions/{name}/concurrency"),
        &[],
        b"",
    );
    assert_eq!(expect_json(&resp, 200)["ReservedConcurrentExecutions"], 0);

    let resp = server.call("DELETE", &concurrency_path(&name), &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    let resp = server.call(
        "GET",
        &format!("/2019-09-30/functions/{name}/concurrency"),
        &[],
        b"",
    );
    let body = expect_json(&resp, 200);
    assert!(
        body.get("ReservedConcurrentExecutions")
            .is_none_or(Value::is_null),
        "{body}"
    );
    assert_eq!(
        server.invoke_ok(&name, &json!({"after": 1})),
        json!({"after": 1})
    );

    let resp = server.call_json(
        "PUT",
        &concurrency_path(&name),
        &json!({"ReservedConcurrentExecutions": -1}),
    );
    expect_aws_error(&resp, 400, "InvalidParameterValueException");
    let resp = server.call_json(
        "PUT",
        &concurrency_path(&unique_name("nofn")),
        &json!({"ReservedConcurrentExecutions": 1}),
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
}

#[test]
fn reserved_concurrency_one_admits_one() {
    let server = Arc::new(TestServer::new());
    let name = unique_name("one");
    server.create_python(&name, PY_SLEEPY, json!({"Timeout": 10}));
    let resp = server.call_json(
        "PUT",
        &concurrency_path(&name),
        &json!({"ReservedConcurrentExecutions": 1}),
    );
    expect_json(&resp, 200);
    let (s, n) = (server.clone(), name.clone());
    let slow = std::thread::spawn(move || s.invoke(&n, br#"{"sleep": 1}"#, &[]));
    // The first invocation holds the only slot for its cold start plus one second.
    std::thread::sleep(Duration::from_millis(300));
    let second = server.invoke(&name, br#"{"sleep": 0}"#, &[]);
    let first = slow.join().unwrap();
    assert_eq!(first.status, 200, "{}", describe(&first));
    assert_eq!(json_body(&first), json!({"slept": 1}));
    expect_aws_error(&second, 429, "TooManyRequestsException");
    // Once the slot is free, it is usable again.
    assert_eq!(
        server.invoke_ok(&name, &json!({"sleep": 0})),
        json!({"slept": 0})
    );
}

#[test]
fn sixty_concurrent_invocations_all_answered() {
    const CALLERS: usize = 60;
    let server = Arc::new(TestServer::exclusive(|c| c.init_timeout_s = 20));
    let name = unique_name("many");
    server.create_python(&name, PY_ECHO, json!({}));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let handles: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (server, name, barrier) = (server.clone(), name.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let payload = json!({ "i": i, "pad": "x".repeat(i * 100) });
                let resp = server.invoke(&name, payload.to_string().as_bytes(), &[]);
                (payload, resp)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (payload, resp) = h.join().expect("caller thread");
        if resp.status != 200 || resp.header_str("X-Amz-Function-Error").is_some() {
            failures.push(format!("{}: {}", payload["i"], describe(&resp)));
        } else if json_body(&resp) != payload {
            failures.push(format!(
                "{}: got someone else's payload: {}",
                payload["i"],
                describe(&resp)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CALLERS} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Warm now: a second wave is answered too.
    for i in 0..5 {
        assert_eq!(
            server.invoke_ok(&name, &json!({ "again": i })),
            json!({ "again": i })
        );
    }
}

#[test]
fn restart_keeps_functions() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("persist");
    let sha = {
        let server = TestServer::start_in(dir.path(), |_| {});
        let created = server.create_python(
            &name,
            PY_ECHO,
            json!({"Timeout": 7, "Environment": {"Variables": {"KEY1": "v"}}}),
        );
        assert_eq!(
            server.invoke_ok(&name, &json!({"before": 1})),
            json!({"before": 1})
        );
        server.shutdown();
        created["CodeSha256"].clone()
    };
    let server = TestServer::start_in(dir.path(), |_| {});
    let resp = server.call("GET", &format!("/2015-03-31/functions/{name}"), &[], b"");
    let got = expect_json(&resp, 200);
    assert_eq!(got["Configuration"]["CodeSha256"], sha, "{got}");
    assert_eq!(got["Configuration"]["Timeout"], 7, "{got}");
    assert_eq!(
        got["Configuration"]["Environment"]["Variables"]["KEY1"], "v",
        "{got}"
    );
    assert!(got["Code"]["Location"].is_string(), "{got}");
    assert_eq!(
        server.invoke_ok(&name, &json!({"after": 2})),
        json!({"after": 2})
    );
}

#[test]
fn error_shapes() {
    let server = TestServer::new();
    let name = unique_name("shapes");
    server.create_python(&name, PY_ECHO, json!({}));

    let resp = server.invoke(&name, b"{not json", &[]);
    expect_aws_error(&resp, 400, "InvalidRequestContentException");

    let resp = server.create_function(
        &name,
        "python3.12",
        "lambda_function.handler",
        &[("lambda_function.py", PY_ECHO.as_bytes(), 0o644)],
        json!({}),
    );
    expect_aws_error(&resp, 409, "ResourceConflictException");

    let resp = server.create_function(
        &unique_name("badrt"),
        "cobol85",
        "x.handler",
        &[("x.cob", b"", 0o644)],
        json!({}),
    );
    expect_aws_error(&resp, 400, "InvalidParameterValueException");

    let resp = server.call("GET", "/2015-03-31/no-such-route", &[], b"");
    assert_eq!(resp.status, 404, "{}", describe(&resp));
    assert!(
        resp.header_str("x-amzn-ErrorType").is_some(),
        "{}",
        describe(&resp)
    );

    let resp = server.call(
        "GET",
        &format!(
            "/2015-03-31/functions/{}/configuration",
            unique_name("nofn")
        ),
        &[],
        b"",
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
    let resp = server.call(
        "DELETE",
        &format!("/2015-03-31/functions/{}", unique_name("nofn")),
        &[],
        b"",
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");

    let resp = server.call("POST", "/2015-03-31/functions", &[], b"{oops");
    assert_eq!(resp.status, 400, "{}", describe(&resp));
    assert!(
        resp.header_str("x-amzn-ErrorType").is_some(),
        "{}",
        describe(&resp)
    );

    // The function still works after all that.
    assert_eq!(server.invoke_ok(&name, &json!({"k": 1})), json!({"k": 1}));
}

#[test]
fn payload_over_6mb_is_413() {
    let server = TestServer::new();
    let name = unique_name("big");
    server.create_python(&name, PY_ECHO, json!({}));
    let limit = 6 * 1024 * 1024;
    let mut payload = Vec::with_capacity(limit + 1);
    payload.push(b'"');
    payload.resize(limit, b'a');
    payload.push(b'"');
    assert_eq!(payload.len(), limit + 1);
    let resp = server.invoke(&name, &payload, &[]);
    expect_aws_error(&resp, 413, "RequestTooLargeException");
    // Just under the limit still passes through and back (a JSON string echoed).
    let mut ok = Vec::with_capacity(limit - 1024);
    ok.push(b'"');
    ok.resize(limit - 1024, b'b');
    ok.push(b'"');
    let resp = server.invoke(&name, &ok, &[]);
    assert_eq!(resp.status, 200, "status {}", resp.status);
    let got: Value = json_body(&resp);
    assert_eq!(got.as_str().map(str::len), Some(ok.len() - 2));
}

#[test]
fn list_functions_paginates() {
    let server = TestServer::new();
    let mut names: Vec<String> = (0..3).map(|i| unique_name(&format!("list{i}"))).collect();
    for name in &names {
        server.create_python(name, PY_ECHO, json!({}));
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10 {
        let path = match &marker {
            Some(m) => format!("/2015-03-31/functions?MaxItems=1&Marker={m}"),
            None => "/2015-03-31/functions?MaxItems=1".to_string(),
        };
        let body = expect_json(&server.call("GET", &path, &[], b""), 200);
        let page = body["Functions"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"));
        assert!(page.len() <= 1, "{body}");
        seen.extend(
            page.iter()
                .map(|f| f["FunctionName"].as_str().unwrap_or("").to_string()),
        );
        marker = body["NextMarker"].as_str().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    assert!(marker.is_none(), "pagination did not end");
    seen.sort();
    names.sort();
    assert_eq!(seen, names);
    let all = expect_json(&server.call("GET", "/2015-03-31/functions", &[], b""), 200);
    assert_eq!(all["Functions"].as_array().map(Vec::len), Some(3), "{all}");
}

#[test]
fn function_configuration_get_and_update() {
    let server = TestServer::new();
    let name = unique_name("conf");
    let src = "import os\ndef handler(event, context):\n    return {'x': os.environ.get('GREETING'), 'remaining': context.get_remaining_time_in_millis()}\n";
    server.create_python(&name, src, json!({"Timeout": 3, "MemorySize": 256}));
    let path = format!("/2015-03-31/functions/{name}/configuration");
    let conf = expect_json(&server.call("GET", &path, &[], b""), 200);
    assert_eq!(conf["FunctionName"], name, "{conf}");
    assert_eq!(conf["Timeout"], 3, "{conf}");
    assert_eq!(conf["MemorySize"], 256, "{conf}");
    assert_eq!(conf["Handler"], "lambda_function.handler", "{conf}");
    let before = server.invoke_ok(&name, &json!({}));
    assert_eq!(before["x"], Value::Null, "{before}");

    let resp = server.call_json(
        "PUT",
        &path,
        &json!({"Timeout": 9, "Environment": {"Variables": {"GREETING": "hello"}}}),
    );
    let updated = expect_json(&resp, 200);
    assert_eq!(updated["Timeout"], 9, "{updated}");
    assert_eq!(
        updated["Environment"]["Variables"]["GREETING"], "hello",
        "{updated}"
    );
    assert_ne!(updated["RevisionId"], conf["RevisionId"], "{updated}");
    let conf = expect_json(&server.call("GET", &path, &[], b""), 200);
    assert_eq!(conf["Timeout"], 9, "{conf}");
    assert_eq!(
        conf["Environment"]["Variables"]["GREETING"], "hello",
        "{conf}"
    );

    let after = server.invoke_ok(&name, &json!({}));
    assert_eq!(after["x"], "hello", "{after}");
    let remaining = after["remaining"].as_i64().unwrap_or(0);
    assert!(
        remaining > 3_000 && remaining <= 9_000,
        "new Timeout applies: {after}"
    );
}

#[test]
fn healthz_and_metrics() {
    let server = TestServer::new();
    let resp = server.call("GET", "/healthz", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    let name = unique_name("metrics");
    server.create_python(&name, PY_ECHO, json!({}));
    let invocations = server.metric("lah_invocations_total");
    let cold = server.metric("lah_cold_starts_total");
    server.invoke_ok(&name, &json!({"a": 1}));
    // Let the instance get back to /next so the second one is warm.
    std::thread::sleep(Duration::from_millis(300));
    server.invoke_ok(&name, &json!({"a": 2}));
    assert_eq!(server.metric("lah_invocations_total"), invocations + 2.0);
    assert_eq!(server.metric("lah_cold_starts_total"), cold + 1.0);

    let throttles = server.metric("lah_throttles_total");
    let resp = server.call_json(
        "PUT",
        &concurrency_path(&name),
        &json!({"ReservedConcurrentExecutions": 0}),
    );
    expect_json(&resp, 200);
    expect_aws_error(
        &server.invoke(&name, b"{}", &[]),
        429,
        "TooManyRequestsException",
    );
    assert_eq!(server.metric("lah_throttles_total"), throttles + 1.0);
    let resp = server.call("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body);
    assert!(
        text.contains("# TYPE lah_invocations_total counter"),
        "{text}"
    );
    assert!(
        text.contains("lah_invocation_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn runtime_api_isolation() {
    let server = TestServer::new();
    let name = unique_name("snoop");
    server.create_provided(&name, SNOOPING_BOOTSTRAP, json!({}));
    for i in 0..2 {
        let got = server.invoke_ok(&name, &json!({ "i": i }));
        assert_eq!(got["fake_response_status"], 403, "{got}");
        assert_eq!(got["fake_error_status"], 403, "{got}");
    }
    // The shared Runtime API port serves no instance.
    let resp = http_call(
        server.runtime_addr,
        "GET",
        "/2018-06-01/runtime/invocation/next",
        &[],
        b"",
    )
    .expect("runtime port answers");
    assert_eq!(resp.status, 403, "{}", describe(&resp));
    let resp = http_call(
        server.runtime_addr,
        "POST",
        "/2018-06-01/runtime/invocation/8f2d4a6e-0000-4000-8000-000000000000/response",
        &[],
        b"{}",
    )
    .expect("runtime port answers");
    assert_eq!(resp.status, 403, "{}", describe(&resp));
}

#[test]
fn update_retires_instances() {
    let server = Arc::new(TestServer::new());
    let name = unique_name("retire");
    let v1 = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return {'v': 1}\n";
    let v2 = "def handler(event, context):\n    return {'v': 2}\n";
    server.create_python(&name, v1, json!({"Timeout": 10}));
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));

    // An invocation in flight during the update finishes on the old code.
    let (s, n) = (server.clone(), name.clone());
    let in_flight = std::thread::spawn(move || s.invoke(&n, br#"{"sleep": 1}"#, &[]));
    std::thread::sleep(Duration::from_millis(300));
    let resp = server.update_code(&name, &[("lambda_function.py", v2.as_bytes(), 0o644)]);
    expect_json(&resp, 200);
    for i in 0..5 {
        assert_eq!(
            server.invoke_ok(&name, &json!({})),
            json!({"v": 2}),
            "invocation {i} after the update"
        );
    }
    let old = in_flight.join().unwrap();
    assert_eq!(
        expect_json(&old, 200),
        json!({"v": 1}),
        "{}",
        describe(&old)
    );
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 2}));
}

/// A `provided` runtime that reports its own `LAMBDA_INSTANCE_ID` (over HTTP).
const TOKEN_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os, sys
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(0)
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    out = json.dumps({"token": os.environ.get("LAMBDA_INSTANCE_ID", "")}).encode()
    conn.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, out,
                 {"Content-Type": "application/json"})
    conn.getresponse().read()
"#;

/// Registers on the shared Runtime API port's WebSocket endpoint with `instance_id`; returns
/// the text messages the server sent before closing.
fn websocket_register(server: &TestServer, name: &str, instance_id: &str) -> Vec<String> {
    use tungstenite::Message;
    let stream = std::net::TcpStream::connect(server.runtime_addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!(
        "ws://{}/2018-06-01/runtime/websocket?fn={name}",
        server.runtime_addr
    );
    let (mut ws, _) = match tungstenite::client::client(url.as_str(), stream) {
        Ok(ok) => ok,
        // Refusing the upgrade outright is as good as refusing the register.
        Err(e) => return vec![format!("handshake refused: {e}")],
    };
    let register = json!({
        "type": "register",
        "function_name": name,
        "runtime": "provided.al2023",
        "version": "$LATEST",
        "instance_id": instance_id,
    });
    ws.send(Message::Text(register.to_string().into()))
        .expect("send register");
    let mut texts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let t = t.to_string();
                let is_invocation = t.contains("\"invocation\"");
                texts.push(t);
                if is_invocation {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    texts
}

#[test]
fn websocket_register_with_forged_token_is_refused() {
    let server = TestServer::new();
    let name = unique_name("wshijack");
    server.create_provided(&name, TOKEN_BOOTSTRAP, json!({}));
    let got = server.invoke_ok(&name, &json!({}));
    let token = got["token"].as_str().unwrap_or("").to_string();
    assert!(
        token.starts_with("i-"),
        "LAMBDA_INSTANCE_ID looks like i-<id>-<secret>: {got}"
    );
    // The real instance's id with a wrong secret, and a made-up id.
    let (id_part, _secret) = token.rsplit_once('-').expect("token has a secret part");
    for forged in [
        format!("{id_part}-0000000000000000"),
        "i-00000001-guess".to_string(),
    ] {
        let texts = websocket_register(&server, &name, &forged);
        assert!(
            !texts.iter().any(|t| t.contains("\"invocation\"")),
            "forged {forged} got an invocation: {texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("error_response") || t.starts_with("handshake refused")),
            "forged {forged} was not refused: {texts:?}"
        );
    }
    // The real instance is unaffected.
    let again = server.invoke_ok(&name, &json!({}));
    assert_eq!(again["token"], token.as_str(), "{again}");
}

/// The bundled Python and Node bootstraps reach the Runtime API on their instance's own Unix
/// socket (`LAMBDA_RUNTIME_API_SOCKET`; Python's WebSocket client keeps TCP, which measured
/// faster), whose value is the server's even when a function sets the variable itself; with
/// `--runtime-unix-sockets false` they get none and use TCP.
#[test]
fn bundled_runtimes_use_their_instance_s_unix_socket() {
    const PY: &str = "import os\ndef handler(event, context):\n    return {\"sock\": os.environ.get(\"LAMBDA_RUNTIME_API_SOCKET\")}\n";
    const JS: &str = "exports.handler = async () => ({ sock: process.env.LAMBDA_RUNTIME_API_SOCKET || null });\n";
    for unix in [true, false] {
        let server = TestServer::with_config(|c| c.runtime_unix_sockets = unix);
        let mut expected = 0.0;
        for ws in ["true", "false"] {
            for (runtime, handler, file, code) in [
                (
                    "python3.12",
                    "lambda_function.handler",
                    "lambda_function.py",
                    PY,
                ),
                ("nodejs20.x", "index.handler", "index.js", JS),
            ] {
                let name = unique_name("unixsock");
                let env = json!({"Environment": {"Variables": {
                    "LAMBDA_USE_WEBSOCKET": ws,
                    "LAMBDA_RUNTIME_API_SOCKET": "@not-the-server-s",
                }}});
                let resp = server.create_function(
                    &name,
                    runtime,
                    handler,
                    &[(file, code.as_bytes(), 0o644)],
                    env,
                );
                expect_json(&resp, 201);
                for _ in 0..3 {
                    let got = server.invoke_ok(&name, &json!({}));
                    if unix {
                        let sock = got["sock"].as_str().unwrap_or_default();
                        assert!(
                            sock.starts_with("@lambda-at-home/"),
                            "{runtime} ws={ws}: {got}"
                        );
                    } else {
                        assert_eq!(got["sock"], Value::Null, "{runtime} ws={ws}: {got}");
                    }
                }
                let used = server.metric("lah_runtime_unix_connections_total");
                let python_ws = runtime.starts_with("python") && ws == "true";
                if unix {
                    // One connection per instance (WebSocket: its link; HTTP: its keep-alive).
                    if !python_ws {
                        expected += 1.0;
                    }
                    assert!(
                        used >= expected,
                        "{runtime} ws={ws}: {used} Unix connections"
                    );
                    if python_ws {
                        assert_eq!(used, expected, "Python's WebSocket client keeps TCP");
                    }
                } else {
                    assert_eq!(used, 0.0, "{runtime} ws={ws}");
                }
            }
        }
        assert!(
            server.metric("lah_ws_connections_total") >= 2.0,
            "the WebSocket functions used WebSocket"
        );
        server.shutdown();
    }
}

/// A caller's keep-alive connection that landed on another core than its function's instance
/// follows the instance there (`user_api::Follow`): after three invocations in a row handed to
/// that core it is moved, with the bytes it had read past the last request, and keeps serving.
/// Sixteen connections (SO_REUSEPORT puts each on one of the two cores: all sixteen on the
/// instance's core has odds of 2^-16), each sending its invocations two at a time (a request
/// that was already read when its connection moved is served on the new core), each answer
/// checked against its own request.
#[test]
fn a_callers_connection_follows_its_instance_to_its_core() {
    let server = TestServer::new();
    let name = unique_name("follow");
    server.create_python(&name, PY_ECHO, json!({}));
    assert_eq!(
        server.invoke_ok(&name, &json!({"warm": true})),
        json!({"warm": true})
    );
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let host = server.addr.to_string();
    for c in 0..16 {
        let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.set_nodelay(true).unwrap();
        // Both answers of a pair may arrive in one read: what is past the first stays here.
        let mut read_ahead = bytes::BytesMut::new();
        for pair in 0..5 {
            let mut out = Vec::new();
            let bodies: Vec<Vec<u8>> = (0..2)
                .map(|k| json!({"c": c, "i": 2 * pair + k}).to_string().into_bytes())
                .collect();
            for body in &bodies {
                lambda_at_home::protocols::http::write_request_head(
                    &mut out,
                    "POST",
                    &path,
                    &host,
                    &[("Content-Type", "application/json")],
                    body.len(),
                );
                out.extend_from_slice(body);
            }
            conn.write_all(&out).unwrap();
            for body in &bodies {
                let resp = read_pipelined(&mut conn, &mut read_ahead).unwrap();
                assert_eq!(resp.status, 200, "{}", describe(&resp));
                let got: Value = serde_json::from_slice(&resp.body).unwrap();
                let sent: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(got, sent, "connection {c}: another answer");
            }
        }
    }
    let moved = server.metric("lah_connections_moved_total");
    // At least one connection was on the other core; none moved twice (once on the instance's
    // core, its invocations are served there).
    assert!((1.0..=16.0).contains(&moved), "{moved} connections moved");
}
