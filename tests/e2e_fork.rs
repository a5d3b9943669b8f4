//! Fork starts (docs/cold-starts.md), end to end on the process executor: a Python function whose
//! module init sleeps 300 ms. The first invocation pays the init; a second instance started
//! while the first is busy is a fork of the template, which the test proves by what the handler
//! returns (not by timing): the module-level `INIT_AT` and `INIT_PID` are the template's in both
//! instances while their pids differ, their random numbers differ, and each instance's print()
//! is in its own invocation's log tail. `LAMBDA_USE_FORK=false` gives every instance its own
//! init; a configuration change replaces the template. Over HTTP and WebSocket runtimes.
//!
//! Every wait is bounded (the client's timeouts); all traffic stays on 127.0.0.1.

mod common;

use std::time::Instant;

use common::*;
use lambda_at_home::config::ScaleOut;
use serde_json::{json, Value};

/// Module init takes 300 ms and records when and where it ran; the handler can hold its
/// instance busy (`hold` seconds) so that a concurrent invocation needs a second instance.
const SOURCE: &str = r#"
import os, random, time
time.sleep(0.3)
INIT_AT = time.time()
INIT_PID = os.getpid()

def handler(event, context):
    print("FORK-LOG-" + event.get("tag", ""))
    if event.get("hold"):
        time.sleep(event["hold"])
    return {
        "init_at": INIT_AT,
        "init_pid": INIT_PID,
        "pid": os.getpid(),
        "rand": random.random(),
        "stream": context.log_stream_name,
        "env_stream": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
    }
"#;

fn server(ws: bool) -> TestServer {
    TestServer::with_config(|c| {
        c.use_websocket = ws;
        // Two concurrent invocations get two instances, as on AWS.
        c.scale_out = ScaleOut::Eager;
    })
}

/// Invokes `name` with `tag` (holding the instance `hold` seconds) and asks for the log tail;
/// returns the handler's result and the decoded tail.
fn invoke_tail(server: &TestServer, name: &str, tag: &str, hold: f64) -> (Value, String) {
    let payload = json!({ "tag": tag, "hold": hold });
    let resp = server.invoke(
        name,
        payload.to_string().as_bytes(),
        &[("X-Amz-Log-Type", "Tail")],
    );
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );
    let body = expect_json(&resp, 200);
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_else(|| panic!("no X-Amz-Log-Result: {}", describe(&resp)));
    (body, tail)
}

/// Two invocations at once, each holding its instance for `hold` seconds.
fn invoke_pair(server: &TestServer, name: &str, hold: f64) -> [(Value, String); 2] {
    std::thread::scope(|s| {
        let a = s.spawn(|| invoke_tail(server, name, "pair-a", hold));
        let b = s.spawn(|| invoke_tail(server, name, "pair-b", hold));
        [a.join().unwrap(), b.join().unwrap()]
    })
}

/// The labelled sample `lah_executor_starts_total{kind="KIND"}`.
fn starts_of_kind(server: &TestServer, kind: &str) -> f64 {
    let resp = server.call("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let prefix = format!("lah_executor_starts_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

fn init_duration_ms(tail: &str) -> Option<f64> {
    let rest = tail.split("Init Duration: ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

fn forks_share_the_init(ws: bool) {
    let server = server(ws);
    let name = unique_name("fork");
    server.create_python(&name, SOURCE, json!({ "Timeout": 10 }));

    let started = Instant::now();
    let (first, first_tail) = invoke_tail(&server, &name, "first", 0.0);
    let first_ms = started.elapsed().as_millis();
    assert!(
        first_ms >= 300,
        "the first invocation pays the init: {first_ms} ms"
    );
    assert!(first_tail.contains("FORK-LOG-first"), "{first_tail}");
    // The first instance is a fork too: the template ran the init, in another process.
    assert_ne!(first["pid"], first["init_pid"], "{first}");

    // Both instances busy at once: the second one is a new start.
    let [(a, a_tail), (b, b_tail)] = invoke_pair(&server, &name, 3.0);
    assert_ne!(a["pid"], b["pid"], "two instances: {a} {b}");
    for r in [&a, &b] {
        assert_eq!(r["init_at"], first["init_at"], "init ran once: {first} {r}");
        assert_eq!(r["init_pid"], first["init_pid"], "{first} {r}");
        assert_ne!(r["pid"], r["init_pid"], "{r}");
        // Each fork has its own instance's environment and context.
        assert_eq!(r["stream"], r["env_stream"], "{r}");
    }
    assert_ne!(a["stream"], b["stream"], "each instance its own log stream");
    assert_ne!(a["rand"], b["rand"], "forks draw different random numbers");
    // Each fork's output is in its own invocation's tail, and only there.
    assert!(a_tail.contains("FORK-LOG-pair-a"), "{a_tail}");
    assert!(!a_tail.contains("FORK-LOG-pair-b"), "{a_tail}");
    assert!(b_tail.contains("FORK-LOG-pair-b"), "{b_tail}");
    assert!(!b_tail.contains("FORK-LOG-pair-a"), "{b_tail}");
    // The cold one of the pair reports what its fork start took (indicative, not asserted).
    let init = init_duration_ms(&a_tail).or_else(|| init_duration_ms(&b_tail));
    let first_init = init_duration_ms(&first_tail);
    eprintln!("Init Duration: first instance {first_init:?} ms, forked instance {init:?} ms");
    assert!(
        init.is_some(),
        "one of the pair was a cold start: {a_tail} {b_tail}"
    );
    assert!(starts_of_kind(&server, "fork") >= 2.0);
    assert_eq!(starts_of_kind(&server, "exec"), 0.0);
    assert_transport(&server, ws);

    // A configuration change drops the template: the next instance runs the init again.
    let resp = server.call_json(
        "PUT",
        &format!("/2015-03-31/functions/{name}/configuration"),
        &json!({ "Environment": { "Variables": { "CHANGED": "1" } } }),
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    let (after, _) = invoke_tail(&server, &name, "after", 0.0);
    assert_ne!(after["init_at"], first["init_at"], "{first} {after}");
    assert_ne!(after["init_pid"], first["init_pid"], "{first} {after}");
}

#[test]
fn forks_share_the_init_http() {
    forks_share_the_init(false);
}

#[test]
fn forks_share_the_init_websocket() {
    forks_share_the_init(true);
}

#[test]
fn opting_out_starts_every_instance_from_scratch() {
    let server = server(false);
    let name = unique_name("nofork");
    let env = json!({
        "Timeout": 10,
        "Environment": { "Variables": { "LAMBDA_USE_FORK": "false" } },
    });
    server.create_python(&name, SOURCE, env);
    let (first, _) = invoke_tail(&server, &name, "first", 0.0);
    assert_eq!(first["pid"], first["init_pid"], "{first}");
    let [(a, _), (b, _)] = invoke_pair(&server, &name, 3.0);
    assert_ne!(a["pid"], b["pid"], "two instances: {a} {b}");
    assert_ne!(a["init_at"], b["init_at"], "each instance ran its own init");
    for r in [&a, &b] {
        assert_eq!(r["pid"], r["init_pid"], "{r}");
    }
    assert_eq!(starts_of_kind(&server, "fork"), 0.0);
    assert!(starts_of_kind(&server, "exec") >= 2.0);
}

#[test]
fn the_server_flag_turns_fork_starts_off() {
    let server = TestServer::with_config(|c| {
        c.fork_start = false;
        c.scale_out = ScaleOut::Eager;
    });
    let name = unique_name("flagoff");
    server.create_python(&name, SOURCE, json!({}));
    let (first, _) = invoke_tail(&server, &name, "first", 0.0);
    assert_eq!(first["pid"], first["init_pid"], "{first}");
    assert_eq!(starts_of_kind(&server, "fork"), 0.0);
}

/// A handler module that starts a thread cannot be a template: its instances start normally
/// (once the template refused), and invocations never fail because of it.
#[test]
fn a_module_with_threads_falls_back_to_normal_starts() {
    let server = server(false);
    let name = unique_name("threads");
    let source = format!(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n{SOURCE}"
    );
    server.create_python(&name, &source, json!({ "Timeout": 10 }));
    let (first, _) = invoke_tail(&server, &name, "first", 0.0);
    assert_eq!(first["pid"], first["init_pid"], "{first}");
    let [(a, _), (b, _)] = invoke_pair(&server, &name, 3.0);
    assert_ne!(a["pid"], b["pid"]);
    assert_eq!(starts_of_kind(&server, "fork"), 0.0);
}

/// An init error in the template is reported as AWS reports it (the normal start runs the init
/// and reports it), not as a service error.
#[test]
fn an_init_error_is_reported_as_without_forks() {
    let server = server(false);
    let name = unique_name("initerr");
    server.create_python(&name, "raise ValueError('broken init')\n", json!({}));
    let resp = server.invoke(&name, b"{}", &[]);
    let body = expect_function_error(&resp);
    assert_eq!(body["errorType"], "ValueError", "{body}");
    assert_eq!(body["errorMessage"], "broken init", "{body}");
}
