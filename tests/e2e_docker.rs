//! End-to-end tests with the Docker executor: an in-process server with `executor = docker`,
//! real Python and Node runtimes in the `lambda-at-home/*:bookworm` images, and the Docker CLI
//! to look at what the server did to the containers (labels, hardening, pause, removal).
//!
//! Docker tests run one at a time (`DOCKER_LOCK`): every server start removes all
//! lambda-at-home containers. Without a daemon or the images a test is skipped with a notice,
//! unless LAH_REQUIRE_DOCKER is set, which makes it fail. Every docker CLI call and every poll is
//! bounded. Containers use host networking; all traffic stays on 127.0.0.1.

mod common;

use std::io::Read;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use lambda_at_home::config::{Config, ExecutorChoice};
use serde_json::{json, Value};

/// Serializes the tests that touch the daemon (a server start removes other servers' containers).
static DOCKER_LOCK: Mutex<()> = Mutex::new(());

/// Longest one docker CLI call may take.
const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the server may take to remove a container it was told (or decided) to remove.
const REMOVAL_WAIT: Duration = Duration::from_secs(15);
const MIB: u64 = 1024 * 1024;

const IMAGES: [&str; 3] = [
    "lambda-at-home/python:bookworm",
    "lambda-at-home/nodejs:bookworm",
    "lambda-at-home/provided:bookworm",
];
const LABEL_SERVER: &str = "lambda-at-home.server";
/// Which data dir's server made a container: start-up cleanup removes only its own.
const LABEL_OWNER: &str = "lambda-at-home.data-dir";
const LABEL_FUNCTION: &str = "lambda-at-home.function";

/// Echoes the event with the identity of the instance (a per-process random `boot` token) and
/// the user it runs as; prints a marker for the log tail.
const PY_ECHO: &str = r#"import os
BOOT = os.urandom(8).hex()
def handler(event, context):
    print("py-log-marker", context.aws_request_id)
    return {"echo": event, "boot": BOOT, "uid": os.getuid(), "rid": context.aws_request_id,
            "ws": os.environ.get("LAMBDA_USE_WEBSOCKET")}
"#;

const NODE_ECHO: &str = r#"const BOOT = require('crypto').randomBytes(8).toString('hex');
exports.handler = async (event, context) => {
  console.log('node-log-marker', context.awsRequestId);
  return { echo: event, boot: BOOT, uid: process.getuid(), rid: context.awsRequestId,
           ws: process.env.LAMBDA_USE_WEBSOCKET };
};
"#;

/// Misbehaves on request: `sleep` seconds, allocate and touch `eat_mb` MiB, `exit` with a code.
const PY_TOOLS: &str = r#"import os, time
BOOT = os.urandom(8).hex()
def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("eat_mb"):
        data = b"x" * (event["eat_mb"] * 1024 * 1024)
        return {"ate": len(data)}
    if "exit" in event:
        os._exit(event["exit"])
    return {"ok": True, "boot": BOOT, "v": event.get("v")}
"#;

const PY_V1: &str = "def handler(event, context):\n    return {\"v\": 1}\n";
const PY_V2: &str = "def handler(event, context):\n    return {\"v\": 2}\n";

// ---------------------------------------------------------------------------------------------
// Docker CLI helpers
// ---------------------------------------------------------------------------------------------

/// Runs `docker ARGS`, bounded by `DOCKER_CLI_TIMEOUT`; Ok(stdout) on exit status 0.
fn docker(args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    // Read both pipes on their own threads so a large output never blocks the child.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + DOCKER_CLI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("docker {args:?} did not finish in time"));
            }
            Err(e) => return Err(format!("docker {args:?}: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!("docker {args:?}: {status}: {}", stderr.trim()))
    }
}

/// `docker` that must succeed.
fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Full ids of the containers matching `filter` (`label=...`, `id=...`); `all` includes stopped.
fn container_ids(filter: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", filter];
    if all {
        args.push("-a");
    }
    docker_ok(&args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every container (running or not) of function `name`.
fn containers_of(name: &str) -> Vec<String> {
    container_ids(&format!("label={LABEL_FUNCTION}={name}"), true)
}

/// The running (or paused) containers of function `name`.
fn running_containers_of(name: &str) -> Vec<String> {
    container_ids(&format!("label={LABEL_FUNCTION}={name}"), false)
}

/// Every container any Lambda@Home server made (or that carries its label).
fn server_containers() -> Vec<String> {
    container_ids(&format!("label={LABEL_SERVER}"), true)
}

fn container_exists(id: &str) -> bool {
    !container_ids(&format!("id={id}"), true).is_empty()
}

/// `docker inspect` of one container.
fn inspect(id: &str) -> Value {
    let text = docker_ok(&["inspect", id]);
    let all: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("docker inspect is not JSON ({e}): {text}"));
    all[0].clone()
}

/// `.State.Paused` of a container, None when it is gone.
fn paused(id: &str) -> Option<bool> {
    let out = docker(&["inspect", "-f", "{{.State.Paused}}", id]).ok()?;
    Some(out.trim() == "true")
}

/// `.State` of a container, for failure messages.
fn state_of(id: &str) -> String {
    docker(&["inspect", "-f", "{{json .State}}", id]).unwrap_or_else(|e| e)
}

/// The single container of `name`; fails the test when there are none or several.
fn only_container_of(name: &str) -> String {
    let ids = containers_of(name);
    assert_eq!(ids.len(), 1, "containers of {name}: {ids:?}");
    ids[0].clone()
}

/// Asserts that `name`'s containers are all gone within `REMOVAL_WAIT`.
fn expect_no_containers_of(name: &str, why: &str) {
    assert!(
        wait_until(REMOVAL_WAIT, || containers_of(name).is_empty()),
        "{why}: containers of {name} still there: {:?}",
        containers_of(name)
    );
}

/// Removes a hand-made container when the test ends, whatever happens.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Skipping, serializing, servers
// ---------------------------------------------------------------------------------------------

fn docker_required() -> bool {
    std::env::var("LAH_REQUIRE_DOCKER").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Takes the Docker lock and checks the daemon and the runtime images. None: the test is skipped
/// (and a notice printed); with LAH_REQUIRE_DOCKER set, a missing daemon or image fails it.
fn docker_ready(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = DOCKER_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // The server's own warnings (RUST_LOG=lambda_at_home=debug for more) explain a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("lambda_at_home=warn")),
        )
        .with_test_writer()
        .try_init();
    let missing = match docker(&["version", "--format", "{{.Server.Version}}"]) {
        Err(e) => Some(format!("docker is unreachable: {e}")),
        Ok(_) => IMAGES
            .iter()
            .find(|image| docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_err())
            .map(|image| format!("image {image} is missing (runtimes/images/build.sh)")),
    };
    match missing {
        None => Some(guard),
        Some(why) => {
            assert!(
                !docker_required(),
                "LAH_REQUIRE_DOCKER is set but {why} (run .ci/docker.sh and runtimes/images/build.sh)"
            );
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// A server with the Docker executor on a data dir that uid 1000 (the containers' user) can
/// traverse: the code is bind-mounted from it read-only.
struct DockerServer {
    server: TestServer,
    /// Dropped after `server` (field order), so the data dir outlives the server.
    _dir: tempfile::TempDir,
}

impl Deref for DockerServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl DockerServer {
    fn shutdown(self) {
        let DockerServer { server, _dir } = self;
        server.shutdown();
    }
}

fn docker_server(adjust: impl FnOnce(&mut Config)) -> DockerServer {
    docker_server_with(ExecutorChoice::Docker, adjust)
}

fn docker_server_with(executor: ExecutorChoice, adjust: impl FnOnce(&mut Config)) -> DockerServer {
    docker_server_gated(false, executor, adjust)
}

/// `exclusive`: no other test server runs meanwhile (`TestServer::exclusive`).
fn docker_server_gated(
    exclusive: bool,
    executor: ExecutorChoice,
    adjust: impl FnOnce(&mut Config),
) -> DockerServer {
    let dir = tempfile::tempdir().expect("create a temporary dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    // tempfile makes 0700 dirs; the containers run as 1000:1000 and must reach the code.
    for path in [dir.path(), data.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let configure = |c: &mut Config| {
        c.executor = executor;
        adjust(c);
    };
    let server = if exclusive {
        TestServer::start_exclusive_in(&data, configure)
    } else {
        TestServer::start_in(&data, configure)
    };
    DockerServer { server, _dir: dir }
}

/// The whole `/metrics` text (the harness's `metrics()` keeps only unlabelled samples).
fn metrics_text(server: &TestServer) -> String {
    let resp = server.call("GET", "/metrics", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// The `lah_instances{state=STATE,...}` gauge (instances of every function, all cores).
fn instances_in(server: &TestServer, state: &str) -> f64 {
    let prefix = format!("lah_instances{{state=\"{state}\",");
    metrics_text(server)
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}...}} sample in /metrics"))
}

/// Waits until `n` instances are idle (parked in `/next` or ready on their WebSocket), so the
/// next invocation is warm instead of starting a second instance.
fn wait_idle(server: &TestServer, n: u32) {
    assert!(
        wait_until(Duration::from_secs(10), || instances_in(server, "idle")
            == f64::from(n)),
        "expected {n} idle instances: {}",
        metrics_text(server)
    );
}

/// Invoke with a JSON payload, returning the response and how long it took.
fn timed_invoke(
    server: &TestServer,
    name: &str,
    payload: &Value,
) -> (lambda_at_home::protocols::http::ClientResponse, Duration) {
    let started = Instant::now();
    let resp = server.invoke(name, payload.to_string().as_bytes(), &[]);
    (resp, started.elapsed())
}

/// Asserts a platform-made Runtime.ExitError-style function error and returns its message.
fn expect_exit_error(resp: &lambda_at_home::protocols::http::ClientResponse) -> String {
    let body = expect_function_error(resp);
    assert_eq!(body["errorType"], "Runtime.ExitError", "{}", describe(resp));
    body["errorMessage"].as_str().unwrap_or("").to_string()
}

/// Asserts that container `id` (of function `name`, `memory_mb` MiB) is hardened as specified.
fn check_hardened(id: &str, name: &str, memory_mb: u64) {
    let c = inspect(id);
    let host = &c["HostConfig"];
    let config = &c["Config"];
    assert_eq!(host["NetworkMode"], "host", "{host}");
    assert_eq!(host["ReadonlyRootfs"], true, "{host}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert_eq!(host["Memory"], json!(memory_mb * MIB), "{host}");
    assert_eq!(
        host["MemorySwap"],
        json!(memory_mb * MIB),
        "no swap: {host}"
    );
    let security = host["SecurityOpt"].as_array().cloned().unwrap_or_default();
    assert!(security.contains(&json!("no-new-privileges")), "{host}");
    assert_eq!(config["User"], "1000:1000", "{config}");
    assert_eq!(config["Labels"][LABEL_FUNCTION], name, "{config}");
    assert!(
        config["Labels"][LABEL_SERVER]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{config}"
    );
    // Only the host network: never Docker's bridge.
    let networks: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(networks, vec!["host"], "{}", c["NetworkSettings"]);
    let task_rw = c["Mounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["Destination"] == "/var/task"))
        .map(|m| m["RW"].clone());
    assert_eq!(
        task_rw,
        Some(json!(false)),
        "code mounted read-only: {}",
        c["Mounts"]
    );
    assert_eq!(c["State"]["Running"], true, "{}", c["State"]);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Create, invoke cold then warm (same instance), log tail through the FIFO, transport in use,
/// and the container: visible with its labels and hardened.
fn round_trip(test: &str, runtime: &str, handler: &str, file: &str, src: &str, ws: bool) {
    let Some(_docker) = docker_ready(test) else {
        return;
    };
    let server = docker_server(|_| {});
    let name = unique_name(test);
    let mut extra = json!({"MemorySize": 256, "Timeout": 10});
    if !ws {
        merge(
            &mut extra,
            json!({"Environment": {"Variables": {"LAMBDA_USE_WEBSOCKET": "false"}}}),
        );
    }
    let resp = server.create_function(
        &name,
        runtime,
        handler,
        &[(file, src.as_bytes(), 0o644)],
        extra,
    );
    expect_json(&resp, 201);
    let cold_starts = server.metric("lah_cold_starts_total");

    let payload = json!({"hello": "docker", "n": 1, "nested": {"list": [1, 2, 3]}});
    let (resp, cold_time) = timed_invoke(&server, &name, &payload);
    let cold = expect_json(&resp, 200);
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );
    assert_eq!(cold["echo"], payload, "{cold}");
    assert_eq!(cold["uid"], 1000, "runs as uid 1000: {cold}");
    assert_eq!(cold["ws"], if ws { "true" } else { "false" }, "{cold}");

    // Let the runtime get back to /next (or its WebSocket) so the next one is warm.
    wait_idle(&server, 1);
    let started = Instant::now();
    let resp = server.invoke(&name, b"{\"n\": 2}", &[("X-Amz-Log-Type", "Tail")]);
    let warm_time = started.elapsed();
    let warm = expect_json(&resp, 200);
    assert_eq!(warm["echo"], json!({"n": 2}), "{warm}");
    assert_eq!(
        warm["boot"], cold["boot"],
        "the warm invoke reused the instance: {warm}"
    );
    assert_ne!(warm["rid"], cold["rid"], "{warm}");
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    let marker = if runtime.starts_with("python") {
        "py-log-marker"
    } else {
        "node-log-marker"
    };
    let rid = warm["rid"].as_str().unwrap_or("?");
    assert!(
        tail.contains(&format!("{marker} {rid}")),
        "the container's output reaches the log tail: {tail:?}"
    );
    // ... and the function's log group, read back through the CloudWatch Logs API.
    let stored = logs::filter_messages(&server, &format!("/aws/lambda/{name}"), rid);
    assert!(
        stored
            .iter()
            .any(|m| m.ends_with(&format!("{marker} {rid}")))
            && stored.iter().any(|m| m.starts_with("REPORT")),
        "the container's output and REPORT are in the log store: {stored:?}"
    );
    assert_eq!(server.metric("lah_cold_starts_total"), cold_starts + 1.0);

    assert_transport(&server, ws);

    let id = only_container_of(&name);
    assert_eq!(running_containers_of(&name), vec![id.clone()]);
    check_hardened(&id, &name, 256);
    assert!(
        metrics_text(&server).contains("executor=\"docker\""),
        "metrics name the executor"
    );
    eprintln!("{test}: cold {cold_time:?}, warm {warm_time:?}");
}

#[test]
fn python_websocket_round_trip_in_hardened_container() {
    round_trip(
        "py-ws",
        "python3.12",
        "lambda_function.handler",
        "lambda_function.py",
        PY_ECHO,
        true,
    );
}

#[test]
fn python_http_round_trip_in_hardened_container() {
    round_trip(
        "py-http",
        "python3.12",
        "lambda_function.handler",
        "lambda_function.py",
        PY_ECHO,
        false,
    );
}

#[test]
fn node_websocket_round_trip_in_hardened_container() {
    round_trip(
        "node-ws",
        "nodejs20.x",
        "index.handler",
        "index.js",
        NODE_ECHO,
        true,
    );
}

#[test]
fn node_http_round_trip_in_hardened_container() {
    round_trip(
        "node-http",
        "nodejs20.x",
        "index.handler",
        "index.js",
        NODE_ECHO,
        false,
    );
}

#[test]
fn timeout_kills_and_removes_the_container() {
    let Some(_docker) = docker_ready("timeout") else {
        return;
    };
    let server = docker_server(|_| {});
    let name = unique_name("timeout");
    server.create_python(&name, PY_TOOLS, json!({"Timeout": 1}));
    server.invoke_ok(&name, &json!({}));
    let id = only_container_of(&name);
    wait_idle(&server, 1);

    let (resp, took) = timed_invoke(&server, &name, &json!({"sleep": 5}));
    let body = expect_function_error(&resp);
    let message = body["errorMessage"].as_str().unwrap_or("");
    eprintln!("timeout: {message:?} after {took:?}");
    assert!(
        message.contains("Task timed out after 1.00 seconds"),
        "{}",
        describe(&resp)
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    assert!(
        wait_until(REMOVAL_WAIT, || !container_exists(&id)),
        "the timed-out container {id} was not removed: {}",
        state_of(&id)
    );
    expect_no_containers_of(&name, "after the timeout");
    assert_eq!(server.metric("lah_timeouts_total"), 1.0);

    // A fresh instance serves the next invocation.
    let got = server.invoke_ok(&name, &json!({"v": "after"}));
    assert_eq!(got["v"], "after", "{got}");
    assert_ne!(only_container_of(&name), id);
}

/// The function's own LAMBDA_USE_WEBSOCKET: the WebSocket runtime API (default) or HTTP.
fn transport_env(ws: bool) -> Value {
    json!({"Environment": {"Variables": {"LAMBDA_USE_WEBSOCKET": ws.to_string()}}})
}

/// A 300 MB allocation at MemorySize 128: the container is OOM-killed, the invocation fails with
/// Runtime.ExitError naming the cause, and a new instance serves the next one.
fn oom_is_runtime_exit_error(test: &str, ws: bool) {
    let Some(_docker) = docker_ready(test) else {
        return;
    };
    let server = docker_server(|_| {});
    let name = unique_name(test);
    let mut extra = json!({"MemorySize": 128, "Timeout": 20});
    merge(&mut extra, transport_env(ws));
    server.create_python(&name, PY_TOOLS, extra);
    let first = server.invoke_ok(&name, &json!({}));
    let id = only_container_of(&name);
    wait_idle(&server, 1);
    // A small allocation fits.
    assert_eq!(
        server.invoke_ok(&name, &json!({"eat_mb": 16})),
        json!({"ate": 16 * MIB})
    );
    wait_idle(&server, 1);
    assert_eq!(containers_of(&name), vec![id.clone()]);

    let (resp, took) = timed_invoke(&server, &name, &json!({"eat_mb": 300}));
    let message = expect_exit_error(&resp);
    eprintln!("{test}: {message:?} after {took:?}");
    assert!(
        message.contains("out of memory") || message.contains("signal: killed"),
        "{}",
        describe(&resp)
    );
    assert!(
        wait_until(REMOVAL_WAIT, || !container_exists(&id)),
        "the OOM-killed container {id} was not removed: {}",
        state_of(&id)
    );

    let again = server.invoke_ok(&name, &json!({"v": 2}));
    assert_eq!(again["v"], 2, "{again}");
    assert_ne!(again["boot"], first["boot"], "a new instance: {again}");
}

#[test]
fn oom_is_runtime_exit_error_websocket() {
    oom_is_runtime_exit_error("oom-ws", true);
}

#[test]
fn oom_is_runtime_exit_error_http() {
    oom_is_runtime_exit_error("oom-http", false);
}

/// `os._exit(3)` mid-invocation: Runtime.ExitError with "exit status 3", the container is
/// removed, and a new instance serves the next invocation.
fn crash_is_runtime_exit_error(test: &str, ws: bool) {
    let Some(_docker) = docker_ready(test) else {
        return;
    };
    let server = docker_server(|_| {});
    let name = unique_name(test);
    let mut extra = json!({"Timeout": 10});
    merge(&mut extra, transport_env(ws));
    server.create_python(&name, PY_TOOLS, extra);
    let first = server.invoke_ok(&name, &json!({}));
    let id = only_container_of(&name);
    wait_idle(&server, 1);
    let crashes = server.metric("lah_instance_crashes_total");

    let resp = server.invoke(&name, br#"{"exit": 3}"#, &[]);
    let message = expect_exit_error(&resp);
    eprintln!("{test}: {message:?}");
    assert!(message.contains("exit status 3"), "{}", describe(&resp));
    assert!(
        wait_until(REMOVAL_WAIT, || !container_exists(&id)),
        "the crashed container {id} was not removed: {}",
        state_of(&id)
    );
    assert_eq!(server.metric("lah_instance_crashes_total"), crashes + 1.0);

    let again = server.invoke_ok(&name, &json!({"v": 3}));
    assert_eq!(again["v"], 3, "{again}");
    assert_ne!(again["boot"], first["boot"], "a new instance: {again}");
}

#[test]
fn crash_is_runtime_exit_error_websocket() {
    crash_is_runtime_exit_error("crash-ws", true);
}

#[test]
fn crash_is_runtime_exit_error_http() {
    crash_is_runtime_exit_error("crash-http", false);
}

#[test]
fn idle_container_is_paused_then_resumed_by_an_invoke() {
    let Some(_docker) = docker_ready("pause") else {
        return;
    };
    let server = docker_server(|c| {
        c.idle_pause_s = 1;
        c.idle_remove_s = 120;
    });
    let name = unique_name("pause");
    server.create_python(&name, PY_TOOLS, json!({}));
    let first = server.invoke_ok(&name, &json!({}));
    let id = only_container_of(&name);
    let returned = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || paused(&id) == Some(true)),
        "container {id} not paused after {:?}",
        returned.elapsed()
    );
    let paused_after = returned.elapsed();
    assert!(
        paused_after >= Duration::from_millis(900),
        "paused after only {paused_after:?}"
    );
    let text = metrics_text(&server);
    assert!(
        text.contains("lah_instances{state=\"paused\",executor=\"docker\"} 1"),
        "{text}"
    );
    let cold_starts = server.metric("lah_cold_starts_total");

    let (resp, took) = timed_invoke(&server, &name, &json!({"v": "resumed"}));
    let got = expect_json(&resp, 200);
    assert_eq!(got["v"], "resumed", "{}", describe(&resp));
    assert_eq!(
        got["boot"], first["boot"],
        "the paused instance served it: {got}"
    );
    assert_eq!(
        server.metric("lah_cold_starts_total"),
        cold_starts,
        "not a cold start"
    );
    assert_eq!(paused(&id), Some(false), "container {id} still paused");
    assert_eq!(inspect(&id)["State"]["Running"], true);
    assert_eq!(only_container_of(&name), id);
    eprintln!("pause: paused after {paused_after:?}, resumed invoke took {took:?}");
}

#[test]
fn idle_container_is_removed() {
    let Some(_docker) = docker_ready("idle-remove") else {
        return;
    };
    let server = docker_server(|c| {
        c.idle_pause_s = 1;
        c.idle_remove_s = 3;
    });
    let name = unique_name("idlerm");
    server.create_python(&name, PY_TOOLS, json!({}));
    server.invoke_ok(&name, &json!({}));
    let id = only_container_of(&name);
    let returned = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || paused(&id) == Some(true)),
        "container {id} not paused first"
    );
    expect_no_containers_of(&name, "idle for longer than idle_remove_s");
    let removed_after = returned.elapsed();
    assert!(
        removed_after >= Duration::from_millis(2_500),
        "removed after only {removed_after:?}"
    );
    let text = metrics_text(&server);
    assert!(
        text.contains("lah_instances{state=\"paused\",executor=\"docker\"} 0"),
        "{text}"
    );
    // The function still works: a cold start.
    let cold_starts = server.metric("lah_cold_starts_total");
    assert_eq!(server.invoke_ok(&name, &json!({"v": 1}))["v"], 1);
    assert_eq!(server.metric("lah_cold_starts_total"), cold_starts + 1.0);
    eprintln!("idle-remove: removed after {removed_after:?}");
}

#[test]
fn start_removes_orphan_containers() {
    let Some(_docker) = docker_ready("orphans") else {
        return;
    };
    // Containers an earlier run on this data dir left: labelled with its key.
    let dir = tempfile::tempdir().expect("create a temporary dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    for path in [dir.path(), data.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let key = lambda_at_home::control::executor::cgroup::data_dir_key(&data);
    let label = format!("{LABEL_OWNER}={key}");
    let running = docker_ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "--label",
        &label,
        "--label",
        &format!("{LABEL_SERVER}=old"),
        IMAGES[2],
        "sleep",
        "600",
    ])
    .trim()
    .to_string();
    let _running_guard = ContainerGuard(running.clone());
    let stopped = docker_ok(&[
        "create",
        "--network",
        "host",
        "--label",
        &label,
        IMAGES[2],
        "true",
    ])
    .trim()
    .to_string();
    let _stopped_guard = ContainerGuard(stopped.clone());
    // Not ours: no lambda-at-home label.
    let foreign = docker_ok(&["create", "--network", "host", IMAGES[2], "true"])
        .trim()
        .to_string();
    let _foreign_guard = ContainerGuard(foreign.clone());
    // Another server's, on another data dir, on the same daemon: left alone.
    let neighbour = docker_ok(&[
        "create",
        "--network",
        "host",
        "--label",
        &format!("{LABEL_OWNER}=another-data-dir"),
        "--label",
        &format!("{LABEL_SERVER}=neighbour"),
        IMAGES[2],
        "true",
    ])
    .trim()
    .to_string();
    let _neighbour_guard = ContainerGuard(neighbour.clone());
    assert_eq!(inspect(&running)["State"]["Running"], true);

    let server = docker_server(|c| c.data_dir = data.clone());
    assert!(
        !container_exists(&running),
        "running orphan {running} survived the start"
    );
    assert!(
        !container_exists(&stopped),
        "stopped orphan {stopped} survived the start"
    );
    assert!(
        container_exists(&foreign),
        "a container without our label was removed"
    );
    assert!(
        container_exists(&neighbour),
        "another server's container was removed"
    );
    // The server works after the sweep.
    let name = unique_name("after-sweep");
    server.create_python(&name, PY_V1, json!({}));
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
}

#[test]
fn update_and_delete_remove_warm_containers() {
    let Some(_docker) = docker_ready("update-delete") else {
        return;
    };
    let server = docker_server(|_| {});
    let name = unique_name("upd");
    server.create_python(&name, PY_V1, json!({}));
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
    wait_idle(&server, 1);
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
    wait_idle(&server, 1);
    let old = only_container_of(&name);

    let resp = server.update_code(&name, &[("lambda_function.py", PY_V2.as_bytes(), 0o644)]);
    expect_json(&resp, 200);
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 2}));
    assert!(
        wait_until(REMOVAL_WAIT, || !container_exists(&old)),
        "the old code's container {old} was not removed"
    );
    let new = only_container_of(&name);
    assert_ne!(new, old);
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 2}));

    let resp = server.call("DELETE", &format!("/2015-03-31/functions/{name}"), &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    expect_no_containers_of(&name, "after DeleteFunction");
    expect_aws_error(
        &server.invoke(&name, b"{}", &[]),
        404,
        "ResourceNotFoundException",
    );
}

#[test]
fn shutdown_leaves_no_container() {
    let Some(_docker) = docker_ready("shutdown") else {
        return;
    };
    let server = docker_server(|c| c.idle_pause_s = 1);
    let py = unique_name("down-py");
    let node = unique_name("down-node");
    server.create_python(&py, PY_ECHO, json!({}));
    let resp = server.create_function(
        &node,
        "nodejs20.x",
        "index.handler",
        &[("index.js", NODE_ECHO.as_bytes(), 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    server.invoke_ok(&py, &json!({}));
    let py_id = only_container_of(&py);
    // One paused container and one running one at shutdown.
    assert!(
        wait_until(Duration::from_secs(5), || paused(&py_id) == Some(true)),
        "container {py_id} not paused"
    );
    server.invoke_ok(&node, &json!({}));
    let node_id = only_container_of(&node);
    assert_eq!(paused(&node_id), Some(false));
    assert_eq!(server_containers().len(), 2, "{:?}", server_containers());

    let started = Instant::now();
    server.shutdown();
    let took = started.elapsed();
    let left = server_containers();
    assert!(left.is_empty(), "containers left after shutdown: {left:?}");
    eprintln!("shutdown took {took:?}");
}

#[test]
fn auto_executor_picks_docker_when_the_daemon_answers() {
    let Some(_docker) = docker_ready("auto") else {
        return;
    };
    let server = docker_server_with(ExecutorChoice::Auto, |_| {});
    let text = metrics_text(&server);
    assert!(text.contains("executor=\"docker\""), "{text}");
    assert!(!text.contains("executor=\"process\""), "{text}");
    let name = unique_name("auto");
    server.create_python(&name, PY_V1, json!({}));
    assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
    let id = only_container_of(&name);
    check_hardened(&id, &name, 128);
}

/// Init limit of the load test's server. Not timed: on a shared 2-CPU machine 50 runtimes
/// initialising at once beside other builds can take longer than Lambda's 10 s, which is not
/// what this test checks (the scheduler's and the executor's behaviour under load is).
const LOAD_INIT_TIMEOUT_S: u64 = 120;
/// Closed-loop workers of the load test (the issue's middle level).
const LOAD_CONCURRENCY: usize = 50;
/// Its measured part, after every worker has been answered twice.
const LOAD_MEASURED: Duration = Duration::from_secs(4);

#[test]
fn closed_loop_at_concurrency_50_fails_nothing_and_runs_at_most_c_plus_10_percent_containers() {
    // The Docker executor holds the process executor's behaviour (e2e_load.rs) under load:
    // no failed invocation (no init timeout while dozens of containers are created at once) and
    // no more containers than the load needs.
    let Some(_docker) = docker_ready("closed_loop_docker") else {
        return;
    };
    let server = docker_server_gated(true, ExecutorChoice::Docker, |c| {
        c.init_timeout_s = LOAD_INIT_TIMEOUT_S
    });
    let name = unique_name("dload");
    server.create_python(&name, PY_V1, json!({}));
    let run = closed_loop(&server, &name, LOAD_CONCURRENCY, LOAD_MEASURED);
    eprintln!("closed loop, docker executor: {run:?}");
    assert!(
        run.errors.is_empty(),
        "{} of {} invokes failed, first: {:?}",
        run.errors.len(),
        run.ok + run.errors.len() as u64,
        run.errors.first()
    );
    assert!(run.ok > 0);
    let bound = instance_bound(LOAD_CONCURRENCY);
    assert!(
        run.instances_max <= bound,
        "{} instances for {LOAD_CONCURRENCY} workers (bound {bound})",
        run.instances_max
    );
    let containers = containers_of(&name).len() as u64;
    assert!(
        containers <= bound,
        "{containers} containers (bound {bound})"
    );
    server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// The pool of started containers (--docker-pool-mb, docs/cold-starts-docker.md)
// ---------------------------------------------------------------------------------------------

const LABEL_POOL: &str = "lambda-at-home.pool";
/// Longest a test waits for the pool's background fill.
const POOL_WAIT: Duration = Duration::from_secs(60);
/// Instance uids of the pool tests: disjoint from tests/e2e_isolation.rs's ranges.
const POOL_UID_BASE: u32 = lambda_at_home::config::INSTANCE_UID_BASE_DEFAULT + 10_000;
const POOL_UIDS: u32 = 100;

/// What a (pooled) instance sees: its environment, uid, working dir and code dir, and whether
/// it can write its code.
const PY_POOL_PROBE: &str = r#"import os, sys, time
def handler(event, context):
    try:
        open("/var/task/probe", "w")
        task = "writable"
    except OSError:
        task = "readonly"
    print("pool-log-marker", context.aws_request_id)
    env = os.environ
    return {"uid": os.getuid(), "greeting": env.get("GREETING"), "code": sorted(os.listdir("/var/task")),
            "task": task, "fn": env.get("AWS_LAMBDA_FUNCTION_NAME"),
            "mem": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "cwd": os.getcwd(),
            "stream": env.get("AWS_LAMBDA_LOG_STREAM_NAME"), "root": env.get("LAMBDA_TASK_ROOT"),
            "rid": context.aws_request_id, "path": sys.path, "keys": sorted(env),
            "tz": time.tzname[0]}
"#;

/// The Node twin of `PY_POOL_PROBE`: what a pooled (started ahead) runtime must show exactly as
/// an ordinary start does.
const NODE_POOL_PROBE: &str = r#"const fs = require('fs');
const Module = require('module');
exports.handler = async (event, context) => {
  let task = 'readonly';
  try { fs.writeFileSync('/var/task/probe', 'x'); task = 'writable'; } catch (e) {}
  console.log('pool-log-marker', context.awsRequestId);
  const env = process.env;
  return { uid: process.getuid(), greeting: env.GREETING, code: fs.readdirSync('/var/task').sort(),
    task, fn: env.AWS_LAMBDA_FUNCTION_NAME, mem: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    cwd: process.cwd(), root: env.LAMBDA_TASK_ROOT, rid: context.awsRequestId,
    keys: Object.keys(env).sort(), paths: Module.globalPaths,
    tz: new Date(0).toString().split(' ').slice(5).join(' ') };
};
"#;

/// Running pool slots of `server`'s data dir.
fn pool_slots(server: &TestServer) -> Vec<String> {
    let owner = lambda_at_home::control::executor::cgroup::data_dir_key(&server.data_dir);
    docker_ok(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={LABEL_POOL}"),
        "--filter",
        &format!("label={LABEL_OWNER}={owner}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Waits until the pool reports an idle slot (`lah_docker_pool_idle_slots`) other than those in
/// `except`; its container id.
fn wait_for_pool_slot(server: &TestServer, except: &[String]) -> String {
    let mut found = None;
    let appeared = wait_until(POOL_WAIT, || {
        found = None;
        if server.metric("lah_docker_pool_idle_slots") >= 1.0 {
            found = pool_slots(server).into_iter().find(|s| !except.contains(s));
        }
        found.is_some()
    });
    assert!(appeared, "no pool slot appeared: {:?}", pool_slots(server));
    found.expect("a slot")
}

/// `lah_executor_starts_total{kind=KIND}`.
fn starts_of(server: &TestServer, kind: &str) -> f64 {
    let prefix = format!("lah_executor_starts_total{{kind=\"{kind}\"}} ");
    metrics_text(server)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} sample in /metrics"))
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A started function teaches the pool its size; another function of that size then starts
/// in the waiting container: its own environment, code (read-only, nothing else in it), uid,
/// log tail and REPORT; the pool refills, the kinds of start are counted, and a size with no
/// slot starts a container anew. Shutdown removes the slots and their mounts.
#[test]
fn pooled_cold_start_serves_a_function_with_its_env_code_uid_and_log_tail() {
    let test = "pooled_cold_start";
    let Some(_docker) = docker_ready(test) else {
        return;
    };
    if !is_root() {
        eprintln!("SKIP {test}: the pool mounts code into containers and needs root");
        return;
    }
    let server = docker_server(|c| {
        c.docker_pool_mb = 1024;
        c.instance_uid_base = POOL_UID_BASE;
        c.instance_uids = POOL_UIDS;
    });
    let data_dir = server.data_dir.clone();
    let files = |src: &'static str| [("lambda_function.py", src.as_bytes(), 0o644)];
    let warm = unique_name("pool-warm");
    let extra =
        json!({"MemorySize": 256, "Environment": {"Variables": {"LAMBDA_USE_WEBSOCKET": "false"}}});
    let resp = server.create_function(
        &warm,
        "python3.12",
        "lambda_function.handler",
        &files(PY_POOL_PROBE),
        extra.clone(),
    );
    expect_json(&resp, 201);
    let ordinary = server.invoke_ok(&warm, &json!({}));
    assert_eq!(
        (starts_of(&server, "exec"), starts_of(&server, "pooled")),
        (1.0, 0.0)
    );
    let slot = wait_for_pool_slot(&server, &[]);
    // A Python function without layers gets a slot whose runtime is started and waiting.
    let entry = inspect(&slot)["Config"]["Entrypoint"].to_string();
    assert!(entry.contains("bootstrap.py"), "{entry}");
    let slot_config = inspect(&slot);
    let host = &slot_config["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true, "{host}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert_eq!(host["NetworkMode"], "host", "{host}");
    assert_eq!(host["Memory"], 256 * MIB, "{host}");
    assert_eq!(host["PidsLimit"], 1024, "{host}");
    assert!(
        host["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges"),
        "{host}"
    );

    let name = unique_name("pool-fn");
    let greeting = "it's a \"test\" $HOME `x`";
    let mut extra = extra;
    merge(
        &mut extra,
        json!({"Environment": {"Variables": {"GREETING": greeting, "LAMBDA_USE_WEBSOCKET": "false", "TZ": "Asia/Tokyo"}}}),
    );
    let resp = server.create_function(
        &name,
        "python3.12",
        "lambda_function.handler",
        &files(PY_POOL_PROBE),
        extra,
    );
    expect_json(&resp, 201);
    let resp = server.invoke(&name, b"{}", &[("X-Amz-Log-Type", "Tail")]);
    let got = expect_json(&resp, 200);
    assert_eq!(resp.header_str("X-Amz-Function-Error"), None, "{got}");
    assert_eq!(
        (starts_of(&server, "exec"), starts_of(&server, "pooled")),
        (1.0, 1.0),
        "the second function's start was not served from the pool"
    );
    assert_eq!(got["greeting"], greeting, "{got}");
    assert_eq!(got["fn"], name.as_str(), "{got}");
    assert_eq!(got["mem"], "256", "{got}");
    assert_eq!(got["code"], json!(["lambda_function.py"]), "{got}");
    assert_eq!(got["task"], "readonly", "{got}");
    assert_eq!(got["cwd"], "/var/task", "{got}");
    assert_eq!(got["root"], "/var/task", "{got}");
    // The runtime started before its function: sys.path and the variables are exactly an
    // ordinary start's (the slot's own are gone), and TZ set late is honoured.
    assert_eq!(got["path"], ordinary["path"], "sys.path pooled vs ordinary");
    let mut keys: Vec<Value> = ordinary["keys"].as_array().expect("keys").clone();
    for k in ["GREETING", "TZ"] {
        if !keys.contains(&json!(k)) {
            keys.push(json!(k));
        }
    }
    keys.sort_by_key(|k| k.as_str().unwrap_or_default().to_string());
    assert_eq!(
        got["keys"],
        Value::Array(keys),
        "variables pooled vs ordinary"
    );
    assert_eq!(got["tz"], "JST", "{got}");
    let uid = got["uid"].as_u64().expect("uid");
    let range = u64::from(POOL_UID_BASE)..u64::from(POOL_UID_BASE + POOL_UIDS);
    assert!(range.contains(&uid), "the pooled instance runs as {uid}");
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    let rid = got["rid"].as_str().unwrap_or("?");
    assert!(
        tail.contains(&format!("pool-log-marker {rid}")),
        "the pooled runtime's output reaches the log tail: {tail:?}"
    );
    let init = tail
        .lines()
        .find(|l| l.starts_with("REPORT"))
        .and_then(|l| l.split("Init Duration: ").nth(1))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        init.is_some_and(|ms| ms > 0.0),
        "REPORT with Init Duration: {tail:?}"
    );
    eprintln!("{test}: pooled cold start, Init Duration {init:?} ms");
    // The claim started a refill: a new slot, not the claimed one.
    wait_for_pool_slot(&server, std::slice::from_ref(&slot));

    // The refilled slot serves a function on the WebSocket transport: its register is admitted
    // from the slot's uid.
    let ws_name = unique_name("pool-ws");
    let resp = server.create_function(
        &ws_name,
        "python3.12",
        "lambda_function.handler",
        &files(PY_POOL_PROBE),
        json!({"MemorySize": 256}),
    );
    expect_json(&resp, 201);
    let got = server.invoke_ok(&ws_name, &json!({}));
    assert_eq!(got["fn"], ws_name.as_str(), "{got}");
    let ws_uid = got["uid"].as_u64().expect("uid");
    assert!(range.contains(&ws_uid), "{got}");
    assert_ne!(ws_uid, uid, "two live instances share a uid");
    assert_eq!(starts_of(&server, "pooled"), 2.0);
    assert_transport(&server, true);

    // 512 MB was never started: no slot of that size, an ordinary start.
    let big = unique_name("pool-big");
    let resp = server.create_function(
        &big,
        "python3.12",
        "lambda_function.handler",
        &files(PY_POOL_PROBE),
        json!({"MemorySize": 512}),
    );
    expect_json(&resp, 201);
    server.invoke_ok(&big, &json!({}));
    assert_eq!(
        (starts_of(&server, "exec"), starts_of(&server, "pooled")),
        (2.0, 2.0)
    );
    let owner = lambda_at_home::control::executor::cgroup::data_dir_key(&data_dir);
    server.shutdown();
    let left = container_ids(&format!("label={LABEL_OWNER}={owner}"), true);
    assert!(left.is_empty(), "containers left after shutdown: {left:?}");
    assert!(
        mounts_under(&data_dir).is_empty(),
        "{:?}",
        mounts_under(&data_dir)
    );
}

/// A Node function without layers starts in a slot whose runtime was started ahead: its code,
/// variables (exactly an ordinary start's), module paths, working directory, uid and log tail
/// are an ordinary start's, and a function that sets a variable Node reads only at start
/// (`NODE_OPTIONS`) gets a slot whose runtime starts at the claim.
#[test]
fn pooled_node_runtime_started_ahead_serves_as_an_ordinary_start() {
    let test = "pooled_node_ahead";
    let Some(_docker) = docker_ready(test) else {
        return;
    };
    if !is_root() {
        eprintln!("SKIP {test}: the pool mounts code into containers and needs root");
        return;
    }
    let server = docker_server(|c| {
        c.docker_pool_mb = 1024;
        c.instance_uid_base = POOL_UID_BASE;
        c.instance_uids = POOL_UIDS;
    });
    let files = [("index.js", NODE_POOL_PROBE.as_bytes(), 0o644)];
    let create = |name: &str, vars: Value| {
        let extra = json!({"MemorySize": 256, "Environment": {"Variables": vars}});
        let resp = server.create_function(name, "nodejs20.x", "index.handler", &files, extra);
        expect_json(&resp, 201);
    };
    let warm = unique_name("pool-node-warm");
    create(&warm, json!({"LAMBDA_USE_WEBSOCKET": "false"}));
    let ordinary = server.invoke_ok(&warm, &json!({}));
    assert_eq!(starts_of(&server, "pooled"), 0.0);
    let slot = wait_for_pool_slot(&server, &[]);
    let entry = inspect(&slot)["Config"]["Entrypoint"].to_string();
    assert!(entry.contains("bootstrap.js"), "{entry}");

    let name = unique_name("pool-node");
    let greeting = "it's a \"test\" $HOME `x`\nline two";
    create(
        &name,
        json!({"GREETING": greeting, "LAMBDA_USE_WEBSOCKET": "false", "TZ": "Asia/Tokyo"}),
    );
    let resp = server.invoke(&name, b"{}", &[("X-Amz-Log-Type", "Tail")]);
    let got = expect_json(&resp, 200);
    assert_eq!(resp.header_str("X-Amz-Function-Error"), None, "{got}");
    assert_eq!(
        starts_of(&server, "pooled"),
        1.0,
        "not served from the pool"
    );
    assert_eq!(got["greeting"], greeting, "{got}");
    assert_eq!(got["fn"], name.as_str(), "{got}");
    assert_eq!(got["mem"], "256", "{got}");
    assert_eq!(got["code"], json!(["index.js"]), "{got}");
    assert_eq!(got["task"], "readonly", "{got}");
    assert_eq!(got["cwd"], "/var/task", "{got}");
    assert_eq!(got["root"], "/var/task", "{got}");
    assert_eq!(
        got["paths"], ordinary["paths"],
        "module paths pooled vs ordinary"
    );
    let mut keys: Vec<Value> = ordinary["keys"].as_array().expect("keys").clone();
    for k in ["GREETING", "TZ"] {
        if !keys.contains(&json!(k)) {
            keys.push(json!(k));
        }
    }
    keys.sort_by_key(|k| k.as_str().unwrap_or_default().to_string());
    assert_eq!(
        got["keys"],
        Value::Array(keys),
        "variables pooled vs ordinary"
    );
    assert!(
        got["tz"].as_str().unwrap_or_default().contains("Japan"),
        "{got}"
    );
    let uid = got["uid"].as_u64().expect("uid");
    let range = u64::from(POOL_UID_BASE)..u64::from(POOL_UID_BASE + POOL_UIDS);
    assert!(range.contains(&uid), "the pooled instance runs as {uid}");
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_default();
    let rid = got["rid"].as_str().unwrap_or("?");
    assert!(tail.contains(&format!("pool-log-marker {rid}")), "{tail:?}");
    let init = tail
        .lines()
        .find(|l| l.starts_with("REPORT"))
        .and_then(|l| l.split("Init Duration: ").nth(1))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    eprintln!("{test}: pooled Node cold start, Init Duration {init:?} ms");
    assert!(init.is_some_and(|ms| ms > 0.0), "{tail:?}");

    // NODE_OPTIONS is read when node starts: a slot whose runtime starts at the claim.
    let refill = wait_for_pool_slot(&server, std::slice::from_ref(&slot));
    let opts = unique_name("pool-node-opts");
    create(&opts, json!({"NODE_OPTIONS": "--max-old-space-size=100"}));
    let got = server.invoke_ok(&opts, &json!({}));
    assert_eq!(got["fn"], opts.as_str(), "{got}");
    assert_eq!(
        (starts_of(&server, "exec"), starts_of(&server, "pooled")),
        (2.0, 1.0),
        "the slot started ahead was not given a function it cannot honour"
    );
    assert!(
        pool_slots(&server).contains(&refill),
        "the slot still waits"
    );
    server.shutdown();
}

/// `--docker-pool-mb 0`: every start creates its container, as before the pool.
#[test]
fn pool_off_creates_every_container() {
    let Some(_docker) = docker_ready("pool_off") else {
        return;
    };
    let server = docker_server(|c| c.docker_pool_mb = 0);
    for _ in 0..2 {
        let name = unique_name("pool-off");
        server.create_python(&name, PY_V1, json!({}));
        assert_eq!(server.invoke_ok(&name, &json!({})), json!({"v": 1}));
        assert_eq!(containers_of(&name).len(), 1);
    }
    assert_eq!(
        (starts_of(&server, "exec"), starts_of(&server, "pooled")),
        (2.0, 0.0)
    );
    assert!(pool_slots(&server).is_empty());
    server.shutdown();
}
