//! `--executor swarm` on a real two-node Swarm (`scripts/swarm-two-node.sh`, docs/swarm.md): the
//! server runs inside node 1's network namespace with its Runtime API on node 1's veth address;
//! each instance is a Swarm service whose task runs `lah-agent` and an unmodified Python runtime
//! client (HTTP to the agent), with its code fetched by content hash and its link over the
//! overlay's gateway. The test checks that instances land on both nodes and answer, that the
//! function's output reaches the invoke's log tail, that a task over its MemorySize is reported
//! as killed out of memory, that services an earlier run left are
//! removed at start, that losing node 2 (its veth taken down) fails the invocations in flight on
//! it within seconds and that new invocations then run on node 1, and that the server's shutdown
//! removes its services.
//!
//! Runs the harness from the test's thread (host namespace) and everything else from one thread
//! that entered node 1's network namespace (the server's threads and the test's clients inherit
//! it; the engines are reached through their unix sockets). Needs what the harness needs (root,
//! dockerd, vxlan and bridges in namespaces) and `lambda-at-home/python:bookworm` on the host's
//! engine; without one it is skipped with the missing piece printed, unless LAH_REQUIRE_SWARM is
//! set (then it fails). Its own prefix (`lahswe`) and state dir keep it apart from other
//! harnesses. The agent image is built on node 1's engine (add-agent.sh) and copied to node 2 with
//! `docker save | docker load`; the host's engine is only read from. Every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lambda_at_home::config::{ExecutorChoice, ScaleOut};
use serde_json::{json, Value};

const NAME: &str = "lahswe";
const NODE1_ADDR: &str = "10.231.0.1";
const BASE_IMAGE: &str = "lambda-at-home/python:bookworm";
const AGENT_IMAGE: &str = "lambda-at-home/python-agent:bookworm";
const EXIT_CANNOT_RUN: i32 = 3;
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// 1 s dispatcher heartbeat: a lost node is marked down in about 4 s (docs/swarm.md).
const HEARTBEAT: &str = "1s";
/// Instances started at once: with spread placement, two per node.
const INSTANCES: usize = 4;
/// How long the in-flight invocations sleep: far longer than node loss takes to notice.
const INFLIGHT_SLEEP_S: u64 = 25;
/// Longest an invocation on the lost node may take to fail after the loss (Swarm's ~4 s plus
/// the executor's watch interval, on a loaded machine).
const LOSS_FAIL_MAX: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("swarm-executor")
}

fn script(action: &str) -> (Option<std::process::ExitStatus>, String, String) {
    let mut cmd = Command::new(repo().join("scripts/swarm-two-node.sh"));
    cmd.arg("--state-dir")
        .arg(state_dir())
        .arg(action)
        .env("LAH_SWARM_NAME", NAME)
        .env("LAH_SWARM_IMAGES", BASE_IMAGE)
        .env_remove("LAH_SWARM_STATE_DIR")
        .env_remove("LAH_SWARM_NET")
        .env("LAH_SWARM_HEARTBEAT", HEARTBEAT);
    run_bounded(&mut cmd, SCRIPT_TIMEOUT)
}

fn skip(why: &str) {
    let required = std::env::var("LAH_REQUIRE_SWARM").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "LAH_REQUIRE_SWARM is set but {why}");
    eprintln!("skipped: {why}");
}

/// What this machine lacks, checked before anything is created (the harness checks the rest).
fn missing() -> Option<String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        return Some("no CAP_NET_ADMIN".into());
    }
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        return Some("no CAP_SYS_ADMIN".into());
    }
    for tool in ["dockerd", "docker", "ip", "nsenter", "unshare", "iptables"] {
        let found = run_bounded(
            Command::new("sh").args(["-c", &format!("command -v {tool}")]),
            CLI_TIMEOUT,
        );
        if !found.0.is_some_and(|s| s.success()) {
            return Some(format!("{tool} not found"));
        }
    }
    let image = run_bounded(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]),
        CLI_TIMEOUT,
    );
    if !image.0.is_some_and(|s| s.success()) {
        return Some(format!("image {BASE_IMAGE} not on the host engine"));
    }
    None
}

/// Runs `down` when dropped, also after a failed assertion.
struct Harness;

impl Drop for Harness {
    fn drop(&mut self) {
        let (status, _, err) = script("down");
        if !status.is_some_and(|s| s.success()) {
            eprintln!("swarm-two-node.sh down failed: {err}");
        }
    }
}

fn socket(node: u8) -> String {
    format!("unix://{}/node{node}/docker.sock", state_dir().display())
}

fn dk(node: u8, args: &[&str]) -> Result<String, String> {
    let (status, out, err) = run_bounded(
        Command::new("docker")
            .arg("-H")
            .arg(socket(node))
            .args(args),
        CLI_TIMEOUT,
    );
    match status {
        Some(s) if s.success() => Ok(out.trim().to_string()),
        _ => Err(format!("docker {args:?} on node {node}: {}", err.trim())),
    }
}

fn must(node: u8, args: &[&str]) -> String {
    dk(node, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Short ids (the containers' hostnames) of the function's containers running on `node`.
fn containers_on(node: u8, function: &str) -> BTreeSet<String> {
    dk(
        node,
        &[
            "ps",
            "--filter",
            &format!("label=lambda-at-home.function={function}"),
            "--format",
            "{{.ID}}",
        ],
    )
    .unwrap_or_default()
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Runs `f` on a thread inside node 1's network namespace (threads it starts stay there).
fn in_node1<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let ns = std::fs::File::open(format!("/run/netns/{NAME}1")).expect("node 1's netns");
            // SAFETY: setns on a namespace fd owned by `ns` for the whole call; it changes only
            // this thread's network namespace (and that of the threads it starts).
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sleeps `sleep` seconds, prints a marker, answers with its hostname (its container's id).
const PY_HOST: &str = r#"
import socket, time
def handler(event, context):
    print("marker:" + str(event.get("marker")))
    time.sleep(event.get("sleep", 0))
    return {"host": socket.gethostname(), "n": event.get("n")}
"#;

/// Takes `mb` MiB and writes them (so the pages are really used).
const PY_EAT: &str = r#"
def handler(event, context):
    block = b"x" * (event["mb"] * 1024 * 1024)
    return len(block)
"#;

/// `count` concurrent invocations; each result with the time it took.
fn invoke_concurrently(
    server: &TestServer,
    name: &str,
    sleep: u64,
    count: usize,
) -> Vec<(Duration, u16, Value, Option<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .map(|n| {
                s.spawn(move || {
                    let started = Instant::now();
                    let payload = json!({"sleep": sleep, "n": n, "marker": n}).to_string();
                    let resp = server.invoke(name, payload.as_bytes(), &[]);
                    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
                    let error = resp.header_str("X-Amz-Function-Error").map(str::to_string);
                    (started.elapsed(), resp.status, body, error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("invoke"))
            .collect()
    })
}

#[test]
fn swarm_executor_runs_on_both_nodes_and_survives_node_loss() {
    if let Some(why) = missing() {
        return skip(&why);
    }
    let guard = Harness;
    let (status, _, err) = script("up");
    match status.and_then(|s| s.code()) {
        Some(0) => {}
        Some(EXIT_CANNOT_RUN) => {
            let why = err
                .lines()
                .filter_map(|l| l.split_once("cannot run: "))
                .map(|(_, why)| why.to_string())
                .next_back()
                .unwrap_or_else(|| err.trim().to_string());
            return skip(&why);
        }
        other => panic!("swarm-two-node.sh up failed ({other:?}):\n{err}"),
    }

    // The agent image, built on node 1 and copied to node 2: no registry.
    let built = run_bounded(
        Command::new(repo().join("runtimes/images/add-agent.sh"))
            .args(["--agent", env!("CARGO_BIN_EXE_lah-agent"), "python"])
            .env("DOCKER_HOST", socket(1)),
        CLI_TIMEOUT,
    );
    assert!(
        built.0.is_some_and(|s| s.success()),
        "add-agent.sh: {}",
        built.2
    );
    let copied = run_bounded(
        Command::new("sh").args([
            "-c",
            &format!(
                "docker -H {} save {AGENT_IMAGE} | docker -H {} load",
                socket(1),
                socket(2)
            ),
        ]),
        CLI_TIMEOUT,
    );
    assert!(
        copied.0.is_some_and(|s| s.success()),
        "save | load: {}",
        copied.2
    );

    // The executor talks to the manager through DOCKER_HOST (this test binary's only test).
    std::env::set_var("DOCKER_HOST", socket(1));
    let data = tempfile::tempdir().expect("data dir");
    let key = lambda_at_home::control::executor::cgroup::data_dir_key(data.path());
    // What a crashed earlier run on this data dir left: removed at start.
    must(
        1,
        &[
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            "lahswe-orphan",
            "--label",
            &format!("lambda-at-home.data-dir={key}"),
            "--restart-condition",
            "none",
            AGENT_IMAGE,
            "sleep",
            "600",
        ],
    );

    in_node1(|| {
        let server = TestServer::start_in(data.path(), |c| {
            c.executor = ExecutorChoice::Swarm;
            c.runtime_bind = Some(NODE1_ADDR.parse().expect("address"));
            c.swarm_network = Some(format!("{NAME}-net"));
            c.scale_out = ScaleOut::Eager;
            // Swarm places and starts a task in seconds; on a loaded two-core host more.
            c.init_timeout_s = 60;
        });
        assert_eq!(
            dk(
                1,
                &["service", "ls", "-q", "--filter", "name=lahswe-orphan"]
            )
            .unwrap_or_default(),
            "",
            "the orphaned service was not removed at start"
        );
        let name = unique_name("swarm");
        server.create_python(&name, PY_HOST, json!({"Timeout": 60}));

        // Cold starts of INSTANCES instances at once: spread over both nodes, each answers.
        let first = invoke_concurrently(&server, &name, 3, INSTANCES);
        for (took, status, body, error) in &first {
            assert!(
                *status == 200 && error.is_none(),
                "{status} {error:?} {body} after {took:?}"
            );
        }
        let answered: BTreeSet<String> = first
            .iter()
            .filter_map(|(_, _, b, _)| b["host"].as_str().map(str::to_string))
            .collect();
        let node1 = containers_on(1, &name);
        let node2 = containers_on(2, &name);
        eprintln!("instances: node 1 {node1:?}, node 2 {node2:?}; answered by {answered:?}");
        assert!(
            !node1.is_empty() && !node2.is_empty(),
            "instances on both nodes"
        );
        assert!(
            answered.iter().any(|h| node1.contains(h)),
            "an answer from node 1"
        );
        assert!(
            answered.iter().any(|h| node2.contains(h)),
            "an answer from node 2"
        );

        // The function's output reaches the tail over the link.
        let resp = server.invoke(
            &name,
            br#"{"marker":"tail-me"}"#,
            &[("X-Amz-Log-Type", "Tail")],
        );
        expect_json(&resp, 200);
        let tail = resp
            .header_str("X-Amz-Log-Result")
            .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
            .unwrap_or_default();
        assert!(tail.contains("marker:tail-me"), "tail: {tail:?}");

        // MemorySize is the task's memory limit, and its OOM kill is reported as such.
        let hungry = unique_name("swarm-oom");
        server.create_python(&hungry, PY_EAT, json!({"MemorySize": 128, "Timeout": 30}));
        assert_eq!(
            server.invoke_ok(&hungry, &json!({"mb": 16})),
            json!(16 * 1024 * 1024)
        );
        let resp = server.invoke(&hungry, br#"{"mb": 300}"#, &[]);
        let error = expect_function_error(&resp);
        assert_eq!(error["errorType"], "Runtime.ExitError", "{error}");
        let message = error["errorMessage"].as_str().unwrap_or_default();
        assert!(message.contains("out of memory"), "{error}");

        // Node 2 disappears while every instance is busy.
        let busy_on_node2 = containers_on(2, &name).len();
        let results = std::thread::scope(|s| {
            let calls =
                s.spawn(|| invoke_concurrently(&server, &name, INFLIGHT_SLEEP_S, INSTANCES));
            std::thread::sleep(Duration::from_secs(3));
            let down = run_bounded(
                Command::new("ip").args([
                    "-n",
                    &format!("{NAME}2"),
                    "link",
                    "set",
                    &format!("{NAME}2-v"),
                    "down",
                ]),
                CLI_TIMEOUT,
            );
            assert!(down.0.is_some_and(|s| s.success()), "veth down: {}", down.2);
            calls.join().expect("calls")
        });
        let failed: Vec<_> = results.iter().filter(|(_, _, _, e)| e.is_some()).collect();
        eprintln!(
            "node loss: {} of {INSTANCES} in flight failed, after {:?}",
            failed.len(),
            failed.iter().map(|(t, ..)| *t).collect::<Vec<_>>()
        );
        assert_eq!(failed.len(), busy_on_node2, "{results:?}");
        for (took, status, body, _) in &failed {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["errorType"], "Runtime.ExitError", "{body}");
            // Loss noticed within seconds, not at the 25 s end of the sleep or the deadline.
            assert!(
                *took < Duration::from_secs(3) + LOSS_FAIL_MAX,
                "failed after {took:?}"
            );
        }
        let node1 = containers_on(1, &name);
        for (_, _, body, error) in results.iter().filter(|(_, _, _, e)| e.is_none()) {
            assert!(error.is_none());
            let host = body["host"].as_str().unwrap_or_default();
            assert!(node1.contains(host), "answered on node 1: {body}");
        }

        // New invocations run on node 1 (replacements are placed where Swarm has room).
        let after = invoke_concurrently(&server, &name, 1, INSTANCES);
        let node1 = containers_on(1, &name);
        for (_, status, body, error) in &after {
            assert!(*status == 200 && error.is_none(), "{body}");
            let host = body["host"].as_str().unwrap_or_default();
            assert!(node1.contains(host), "answered on node 1: {body}");
        }

        // Shutdown removes the services it started, on reachable and lost nodes alike.
        server.shutdown();
        let filter = format!("label=lambda-at-home.function={name}");
        assert!(
            wait_until(Duration::from_secs(30), || {
                dk(1, &["service", "ls", "-q", "--filter", &filter]).is_ok_and(|s| s.is_empty())
            }),
            "services left: {}",
            must(1, &["service", "ls"])
        );
    });
    drop(guard);
}
