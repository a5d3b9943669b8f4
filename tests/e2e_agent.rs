//! End-to-end tests of the in-instance agent's link (`--executor agent`: `lah-agent` as a host
//! process, the Swarm executor's path without Swarm; docs/swarm.md): the agent fetches the code
//! by content hash, serves AWS's HTTP Runtime API to an unmodified runtime on its own loopback
//! port, and carries invocations, answers, errors, streamed responses and output over one
//! WebSocket to the server.
//!
//! In-process servers (test config, 2 cores) with real Python runtimes; the agent is this
//! package's `lah-agent` binary. Every wait is bounded; all traffic stays on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use lambda_at_home::config::ExecutorChoice;
use serde_json::json;

/// Returns what the runtime sees of its Runtime API and the secret, and prints a marker.
const PY_ECHO: &str = r#"
import os
def handler(event, context):
    print("marker:" + event.get("marker", ""))
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    return {
        "event": event,
        "api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
        "ws": os.environ.get("LAMBDA_USE_WEBSOCKET"),
        "secret_visible": "LAMBDA_INSTANCE_ID" in os.environ,
        "agent_vars": sorted(k for k in os.environ if k.startswith("LAH_AGENT_")),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"#;

fn agent_server() -> TestServer {
    TestServer::with_config(|c| {
        c.executor = ExecutorChoice::Agent;
        c.agent_path = Some(env!("CARGO_BIN_EXE_lah-agent").into());
    })
}

#[test]
fn invocations_cross_the_agent_link() {
    let server = agent_server();
    let name = unique_name("agent-link");
    server.create_python(&name, PY_ECHO, json!({"Timeout": 5}));

    let resp = server.invoke(
        &name,
        br#"{"marker":"first-call","n":1}"#,
        &[("X-Amz-Log-Type", "Tail")],
    );
    let body = expect_json(&resp, 200);
    assert_eq!(body["event"]["n"], 1, "{body}");
    // The runtime spoke HTTP to the agent on loopback, and never saw the link's secret.
    let api = body["api"].as_str().unwrap_or_default();
    assert!(api.starts_with("127.0.0.1:"), "{body}");
    assert_ne!(api, server.runtime_addr.to_string(), "{body}");
    assert_eq!(body["ws"], "false", "{body}");
    assert_eq!(body["secret_visible"], false, "{body}");
    assert_eq!(body["agent_vars"], json!([]), "{body}");
    // The code came by content hash into the agent's own directory, not the server's code dir.
    let task_root = body["task_root"].as_str().unwrap_or_default();
    assert!(
        task_root.contains("/agents/") && task_root.ends_with("/task"),
        "{body}"
    );
    assert_eq!(
        resp.header_str("x-amzn-RequestId"),
        body["request_id"].as_str(),
        "{}",
        describe(&resp)
    );
    let remaining = body["remaining_ms"].as_i64().unwrap_or(0);
    assert!(remaining > 3_000 && remaining <= 5_000, "{body}");
    // What the function printed before answering is in the tail: it came over the link first.
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    assert!(tail.contains("marker:first-call"), "tail: {tail:?}");
    // One WebSocket per instance: the link, registered.
    assert!(server.metric("lah_ws_connections_total") >= 1.0);
    assert_eq!(server.metric("lah_ws_connections_open"), 1.0);

    // Warm: same instance, same link.
    for i in 0..5 {
        let body = server.invoke_ok(&name, &json!({"marker": format!("warm-{i}"), "n": i}));
        assert_eq!(body["event"]["n"], i, "{body}");
    }
    assert_eq!(server.metric("lah_ws_connections_total"), 1.0);

    // A function error crosses as AWS's shape.
    let resp = server.invoke(&name, br#"{"fail":true}"#, &[]);
    let error = expect_function_error(&resp);
    assert_eq!(error["errorType"], "ValueError", "{error}");
    assert_eq!(error["errorMessage"], "asked to fail", "{error}");
}

#[test]
fn runtime_exit_and_deadline_end_the_instance() {
    let server = agent_server();
    let name = unique_name("agent-exit");
    server.create_python(&name, PY_ECHO, json!({"Timeout": 2}));
    server.invoke_ok(&name, &json!({"marker": "warm"}));

    // The runtime exits mid-invocation: the agent exits with its status, the caller is told.
    let resp = server.invoke(&name, br#"{"exit":3}"#, &[]);
    let error = expect_function_error(&resp);
    assert_eq!(error["errorType"], "Runtime.ExitError", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("exit status 3"),
        "{error}"
    );
    // A new instance (new agent, new link) serves the next one.
    server.invoke_ok(&name, &json!({"marker": "after-exit"}));

    // Past the deadline: Sandbox.Timedout, the instance is killed, the next call cold-starts.
    let resp = server.invoke(&name, br#"{"sleep":10}"#, &[]);
    let error = expect_function_error(&resp);
    assert_eq!(error["errorType"], "Sandbox.Timedout", "{error}");
    server.invoke_ok(&name, &json!({"marker": "after-timeout"}));
    assert!(
        wait_until(Duration::from_secs(10), || server
            .metric("lah_ws_connections_open")
            == 1.0),
        "old links stay open"
    );
}

/// A generator handler: the Python bootstrap streams it as a chunked `/response`.
const PY_STREAM: &str = r#"
def handler(event, context):
    context.response_content_type = "text/plain"
    print("streaming")
    yield "first;"
    if event.get("throw"):
        raise ValueError("broke mid-stream")
    yield b"second:%d" % len(context.aws_request_id)
"#;

/// A streamed `/response` crosses the agent as `response_chunk`s and a `response_end` (with the
/// trailers' error), collected whole for a plain Invoke.
#[test]
fn streamed_responses_cross_the_agent() {
    let server = agent_server();
    let name = unique_name("agent-stream");
    server.create_python(&name, PY_STREAM, json!({"Timeout": 5}));
    let resp = server.invoke(&name, b"{}", &[("X-Amz-Log-Type", "Tail")]);
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert_eq!(&resp.body[..], b"first;second:36", "{}", describe(&resp));
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    assert!(tail.contains("streaming"), "tail: {tail:?}");
    let resp = server.invoke(&name, br#"{"throw":true}"#, &[]);
    let error = expect_function_error(&resp);
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("broke mid-stream"),
        "{error}"
    );
}

/// A handler that cannot be imported: the invocation that started the instance gets the
/// runtime's init error (AWS's `Runtime.ImportModuleError`), not a hang or a bare exit error.
#[test]
fn init_errors_reach_the_caller() {
    let server = agent_server();
    let name = unique_name("agent-initerr");
    let resp = server.create_function(
        &name,
        "python3.12",
        "nope.handler",
        &[("lambda_function.py", PY_ECHO.as_bytes(), 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let resp = server.invoke(&name, b"{}", &[("X-Amz-Log-Type", "Tail")]);
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
}

/// Imports a module from its layers (`python/` in a layer is on the path) and answers from it.
const PY_LAYERED: &str = r#"
import os, layer_mod
def handler(event, context):
    return {"layer": layer_mod.VALUE, "file": layer_mod.__file__}
"#;

/// Layers travel like code: merged, fetched by content hash into the agent's own `opt`.
#[test]
fn layers_reach_the_agent() {
    let server = agent_server();
    let layer = unique_name("agent-layer");
    let publish = |value: &str| {
        let zip = zip_b64(&[(
            "python/layer_mod.py",
            format!("VALUE = '{value}'\n").as_bytes(),
            0o644,
        )]);
        let body = json!({"Content": {"ZipFile": zip}, "CompatibleRuntimes": ["python3.12"]});
        let resp = server.call_json(
            "POST",
            &format!("/2018-10-31/layers/{layer}/versions"),
            &body,
        );
        expect_json(&resp, 201)["LayerVersionArn"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (first, second) = (publish("first"), publish("second"));
    let name = unique_name("agent-layered");
    server.create_python(&name, PY_LAYERED, json!({"Layers": [first, second]}));
    let out = server.invoke_ok(&name, &json!({}));
    // Later layers override earlier files, as on AWS.
    assert_eq!(out["layer"], "second", "{out}");
    let file = out["file"].as_str().unwrap_or_default();
    assert!(
        file.contains("/agents/") && file.contains("/opt/python/"),
        "{out}"
    );
}

/// The Node bootstrap behind the agent too.
#[test]
fn node_runtime_behind_the_agent() {
    let server = agent_server();
    let name = unique_name("agent-node");
    let source = b"exports.handler = async (event, context) => {\n  console.log('node-marker');\n  return { n: event.n, api: process.env.AWS_LAMBDA_RUNTIME_API, ws: process.env.LAMBDA_USE_WEBSOCKET };\n};\n";
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "index.handler",
        &[("index.js", source, 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    let resp = server.invoke(&name, br#"{"n":7}"#, &[("X-Amz-Log-Type", "Tail")]);
    let body = expect_json(&resp, 200);
    assert_eq!(body["n"], 7, "{body}");
    assert_eq!(body["ws"], "false", "{body}");
    assert!(
        body["api"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{body}"
    );
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    assert!(tail.contains("node-marker"), "tail: {tail:?}");
}
