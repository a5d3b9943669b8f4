//! End-to-end lifecycle safety with the process executor: code stays on disk while an instance
//! of its generation runs (update and delete during an invocation), processes an instance starts
//! die with it and with the server (also ones that left its process group with `setsid`), a
//! runtime that stops asking for work is reaped, and MemorySize is enforced where the server can
//! write cgroups.
//!
//! Real server, real runtimes (`provided` bootstraps in Python, the Python runtime). The crash
//! test runs the server binary as a child process and kills it with SIGKILL. Every wait is
//! bounded.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// How long a killed instance's processes may take to disappear.
const GONE_WAIT: Duration = Duration::from_secs(10);
/// How long the server binary may take to answer after it was started.
const SERVER_START_WAIT: Duration = Duration::from_secs(30);

/// A `provided` runtime that answers every invocation after an optional pause, with the content
/// of its `data.txt` read at that moment (relative to its code dir). With `started` in the event,
/// it creates that file first, so the test knows the invocation is running. With `spawn` in the
/// event, it starts `sleep <spawn>` in a new session (outside its process group) first. With
/// `once` in the event, it answers and then never asks for work again.
const BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os, subprocess, sys, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
while True:
    conn.request("GET", "/2018-06-01/runtime/invocation/next")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(0)
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    event = json.loads(body)
    if "spawn" in event:
        subprocess.Popen(["sleep", event["spawn"]], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if "started" in event:
        open(event["started"], "w").close()
    time.sleep(event.get("pause_s", 0))
    with open("data.txt") as f:
        data = f.read()
    out = json.dumps({"data": data, "pid": os.getpid()}).encode()
    conn.request("POST", "/2018-06-01/runtime/invocation/%s/response" % rid, out,
                 {"Content-Type": "application/json"})
    conn.getresponse().read()
    if event.get("once"):
        time.sleep(3600)
"#;

fn files(data: &'static [u8]) -> [(&'static str, &'static [u8], u32); 2] {
    [
        ("bootstrap", BOOTSTRAP.as_bytes(), 0o755),
        ("data.txt", data, 0o644),
    ]
}

fn create(server: &TestServer, name: &str, data: &'static [u8]) {
    let resp = server.create_function(name, "provided.al2023", "h", &files(data), json!({}));
    expect_json(&resp, 201);
}

/// A unique `sleep` argument (a number of seconds `sleep` accepts): finds exactly the processes
/// this test started.
fn sleep_marker() -> String {
    format!(
        "1000.{}{:06}",
        std::process::id(),
        rand::random::<u32>() % 1_000_000
    )
}

/// The pids of live (not zombie) processes whose command line is `sleep MARKER`.
fn sleepers(marker: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{marker}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            cmdline.ends_with(wanted.as_bytes()) && !zombie
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'))
}

/// The code dirs (`code-*`, not zips) of function `name`.
fn code_dirs(data_dir: &Path, name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("functions").join(name)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("code-"))
        .collect()
}

/// Invokes `name` with `event` on another thread; returns the handle to its response body.
fn invoke_in_background(
    server: &TestServer,
    name: &str,
    event: Value,
) -> std::thread::JoinHandle<(u16, Value)> {
    let (addr, name) = (server.addr, name.to_string());
    std::thread::spawn(move || {
        let resp = http_call(
            addr,
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            &[],
            event.to_string().as_bytes(),
        )
        .expect("invoke");
        (resp.status, json_body(&resp))
    })
}

/// Starts an invocation that pauses, waits until it runs, and returns its handle.
fn start_paused_invocation(
    server: &TestServer,
    name: &str,
    scratch: &Path,
) -> std::thread::JoinHandle<(u16, Value)> {
    let started = scratch.join(format!("{name}.started"));
    let event = json!({"started": started.to_str().unwrap(), "pause_s": 1.5});
    let handle = invoke_in_background(server, name, event);
    assert!(
        wait_until(Duration::from_secs(20), || started.exists()),
        "the invocation did not start"
    );
    handle
}

#[test]
fn update_code_during_an_invocation_keeps_its_code_until_the_instance_is_gone() {
    let server = TestServer::new();
    let scratch = tempfile::tempdir().unwrap();
    let name = unique_name("life-update");
    create(&server, &name, b"v1");
    let before = code_dirs(&server.data_dir, &name);
    assert_eq!(before.len(), 1, "{before:?}");

    let running = start_paused_invocation(&server, &name, scratch.path());
    expect_json(&server.update_code(&name, &files(b"v2")), 200);
    let (status, body) = running.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"], "v1",
        "the running invocation read its own code: {body}"
    );

    // The next invocation runs the new code on a new instance; the old instance is retired
    // and, once it is gone, so is its code.
    assert_eq!(server.invoke_ok(&name, &json!({}))["data"], "v2");
    let after = code_dirs(&server.data_dir, &name);
    assert!(
        wait_until(GONE_WAIT, || code_dirs(&server.data_dir, &name).len() == 1),
        "the old code was not removed: {:?}",
        code_dirs(&server.data_dir, &name)
    );
    assert!(
        !code_dirs(&server.data_dir, &name).contains(&before[0]),
        "{after:?}"
    );
}

#[test]
fn delete_during_an_invocation_lets_it_finish_on_its_code_then_removes_everything() {
    let server = TestServer::new();
    let scratch = tempfile::tempdir().unwrap();
    let name = unique_name("life-delete");
    create(&server, &name, b"kept");

    let running = start_paused_invocation(&server, &name, scratch.path());
    let resp = server.call("DELETE", &format!("/2015-03-31/functions/{name}"), &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    let (status, body) = running.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], "kept", "{body}");
    let dir = server.data_dir.join("functions").join(&name);
    assert!(
        wait_until(GONE_WAIT, || !dir.exists()),
        "the deleted function's dir outlived its last instance"
    );
}

#[test]
fn processes_an_instance_started_in_their_own_session_die_with_it() {
    let server = TestServer::new();
    let name = unique_name("life-grandchild");
    create(&server, &name, b"x");
    let marker = sleep_marker();
    server.invoke_ok(&name, &json!({"spawn": marker}));
    assert!(
        wait_until(GONE_WAIT, || sleepers(&marker).len() == 1),
        "the function's sleep did not start"
    );
    // A configuration change retires the idle instance: it is killed.
    let resp = server.call_json(
        "PUT",
        &format!("/2015-03-31/functions/{name}/configuration"),
        &json!({"Description": "retire the instance"}),
    );
    expect_json(&resp, 200);
    assert!(
        wait_until(GONE_WAIT, || sleepers(&marker).is_empty()),
        "a process started by the killed instance survived it: {:?}",
        sleepers(&marker)
    );
}

#[test]
fn runtime_that_never_comes_back_to_next_is_killed_and_stops_counting_busy() {
    let server = TestServer::new();
    let name = unique_name("life-once");
    create(&server, &name, b"x");
    let body = server.invoke_ok(&name, &json!({"once": true}));
    let pid = body["pid"].as_u64().expect("pid");
    assert!(alive(pid));
    let busy = |server: &TestServer| {
        let resp = server.call("GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        text.lines()
            .find(|l| l.starts_with("lah_instances{state=\"busy\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .expect("busy gauge")
    };
    assert_eq!(busy(&server), 1.0, "answered, not back at /next yet");
    // RETURN_TIMEOUT (5 s) plus the kill.
    assert!(
        wait_until(Duration::from_secs(15), || !alive(pid)),
        "the runtime that stopped asking for work was not killed"
    );
    assert!(
        wait_until(GONE_WAIT, || busy(&server) == 0.0),
        "still counted busy"
    );
    // The function still works, on a new instance.
    let again = server.invoke_ok(&name, &json!({}));
    assert_ne!(again["pid"], body["pid"]);
}

/// The server binary on `data_dir` with the process executor, as a child process.
fn spawn_server(data_dir: &Path) -> (Child, std::net::SocketAddr) {
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (user, runtime) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_lambda-at-home-server"))
        .args(["--executor", "process", "--cores", "1"])
        .args(["--user-api-port", &user.to_string()])
        .args(["--runtime-api-port", &runtime.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{user}").parse().unwrap();
    let up = wait_until(SERVER_START_WAIT, || {
        http_call(addr, "GET", "/2015-03-31/functions", &[], b"").is_ok_and(|r| r.status == 200)
    });
    assert!(up, "the server binary did not answer");
    (child, addr)
}

#[test]
fn processes_of_a_crashed_server_are_killed_when_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = spawn_server(dir.path());
    let name = unique_name("life-crash");
    let body = json!({
        "FunctionName": name, "Runtime": "provided.al2023", "Role": ROLE, "Handler": "h",
        "Code": {"ZipFile": zip_b64(&files(b"x"))},
    });
    let resp = http_call(
        addr,
        "POST",
        "/2015-03-31/functions",
        &[],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}", describe(&resp));
    let marker = sleep_marker();
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let event = json!({"spawn": marker}).to_string();
    let resp = http_call(addr, "POST", &path, &[], event.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert!(wait_until(GONE_WAIT, || sleepers(&marker).len() == 1));

    first.kill().expect("SIGKILL the server");
    first.wait().unwrap();
    // Nothing kills it but the next start: it outlived the server.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sleepers(&marker).len(),
        1,
        "the sleep should outlive a SIGKILLed server"
    );

    let (mut second, _) = spawn_server(dir.path());
    let gone = wait_until(GONE_WAIT, || sleepers(&marker).is_empty());
    // SAFETY: SIGTERM to our own child, which is still running (not yet waited for).
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    second.wait().unwrap();
    assert!(
        gone,
        "a process of the crashed server's instance survived its restart"
    );
}

/// A Python function that writes `eat_mb` MiB of memory (every page touched).
const PY_EATER: &str = r#"
def handler(event, context):
    n = event.get("eat_mb", 0) * 1024 * 1024
    block = b"x" * n
    return {"ate": len(block)}
"#;

#[test]
fn memory_size_is_enforced_where_cgroups_are_writable() {
    let server = TestServer::new();
    let key = lambda_at_home::control::executor::cgroup::data_dir_key(&server.data_dir);
    // The server's own detection, on its data dir (the same directories the server made).
    let detected = lambda_at_home::control::executor::cgroup::Cgroups::detect(&key);
    if let Some(reason) = &detected.no_memory_limit {
        eprintln!("skipped: the server cannot limit memory here ({reason})");
        return;
    }
    let name = unique_name("life-oom");
    server.create_python(&name, PY_EATER, json!({"MemorySize": 128, "Timeout": 20}));
    assert_eq!(
        server.invoke_ok(&name, &json!({"eat_mb": 16}))["ate"],
        16 * 1024 * 1024
    );
    let resp = server.invoke(&name, json!({"eat_mb": 300}).to_string().as_bytes(), &[]);
    let body = expect_function_error(&resp);
    assert_eq!(
        body["errorType"],
        "Runtime.ExitError",
        "{}",
        describe(&resp)
    );
    let message = body["errorMessage"].as_str().unwrap_or("");
    assert!(message.contains("(out of memory)"), "{}", describe(&resp));
    // A new instance serves the next invocation.
    assert_eq!(
        server.invoke_ok(&name, &json!({"eat_mb": 1}))["ate"],
        1024 * 1024
    );
    // The server goes first: `detected` removes the data dir's (then empty) cgroups.
    drop(server);
    drop(detected);
}
