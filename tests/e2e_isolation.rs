//! Instance isolation, end to end: the attack of issue 10 as code. Function `evil` connects to the
//! per-instance Runtime API address of function B's instance and asks for B's next invocation
//! (on the process executor, on B's Unix socket too), calls the User API, and reads B's code file
//! on the host; each must be refused, and B's next invocation must complete normally.
//!
//! Runs on the process executor (only as root: a non-root server cannot give instances their own
//! uids, and the test says so and skips) and on the Docker executor (skipped without a daemon and
//! images unless LAH_REQUIRE_DOCKER is set, which makes that a failure). A control run with
//! identities off shows that the same functions do get through without them, so the test can
//! fail. The functions are bash scripts: bash is usable by any uid on the host and in the
//! `provided` image. Every network wait is bounded; all traffic stays on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use lambda_at_home::config::{Config, ExecutorChoice, INSTANCE_UID_BASE_DEFAULT};
use serde_json::{json, Value};

/// A minimal Runtime API client in bash (one connection per request): answers each invocation
/// with `handle` (a shell function reading `$body`, printing the response JSON).
const RUNTIME_LOOP: &str = r#"
export LC_ALL=C
api=$AWS_LAMBDA_RUNTIME_API
host=${api%:*}; port=${api##*:}
# request METHOD PATH [BODY] -> sets status, rid, body
request() {
  exec 3<>"/dev/tcp/$host/$port" || exit 1
  printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "$api" "${#3}" "$3" >&3
  IFS= read -r line <&3; line=${line%$'\r'}; status=${line#* }; status=${status%% *}
  rid=""; len=0
  while IFS= read -r line <&3; do
    line=${line%$'\r'}; [ -z "$line" ] && break
    case "${line,,}" in
      lambda-runtime-aws-request-id:*) rid=${line#*: } ;;
      content-length:*) len=${line#*: } ;;
    esac
  done
  body=""; [ "$len" -gt 0 ] && IFS= read -r -N "$len" body <&3
  exec 3<&-
}
while true; do
  request GET /2018-06-01/runtime/invocation/next
  [ "$status" = 200 ] || exit 0
  out=$(handle)
  request POST "/2018-06-01/runtime/invocation/$rid/response" "$out"
done
"#;

/// B: reports where its Runtime API is (its address, its Unix socket if it has one) and echoes
/// the event.
const VICTIM: &str = r#"#!/bin/bash
handle() {
  printf '{"api":"%s","sock":"%s","uid":%d,"token":"%s","event":%s}' \
    "$AWS_LAMBDA_RUNTIME_API" "${LAMBDA_RUNTIME_API_SOCKET:--}" "$(id -u)" \
    "$LAMBDA_INSTANCE_ID" "$body"
}
"#;

/// evil: the event is a JSON string "TARGET USER_API FILE SOCKET". It asks TARGET (another
/// instance's Runtime API address) and SOCKET (its abstract Unix socket, `@NAME`, or `-`) for the
/// next invocation, lists functions on USER_API, reads FILE.
const EVIL: &str = r#"#!/bin/bash
# unix_status @NAME -> the HTTP status of GET /next on that abstract socket, "none" if none
unix_status() {
  [ "$1" = "-" ] && { echo none; return; }
  python3 - "$1" <<'PY' 2>/dev/null || echo none
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(b"\0" + sys.argv[1][1:].encode().ljust(107, b"\0"))
s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n"
          b"Connection: close\r\n\r\n")
line = s.makefile("rb").readline().decode()
print(line.split()[1] if line else "none")
PY
}
# status_of HOST:PORT PATH -> the HTTP status of a GET, or "none" when nothing answered
status_of() {
  local h=${1%:*} p=${1##*:} line
  exec 4<>"/dev/tcp/$h/$p" || { echo none; return; }
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&4
  if IFS= read -r -t 5 line <&4; then line=${line#* }; echo "${line%% *}"; else echo none; fi
  exec 4<&-
}
handle() {
  local args=${body#\"}; args=${args%\"}
  read -r target user file sock <<< "$args"
  local next unix user_status read
  next=$(status_of "$target" /2018-06-01/runtime/invocation/next)
  unix=$(unix_status "$sock")
  user_status=$(status_of "$user" /2015-03-31/functions/)
  if cat "$file" >/dev/null 2>&1; then read=readable; else read=denied; fi
  printf '{"next":"%s","unix":"%s","user":"%s","read":"%s","uid":%d}' \
    "$next" "$unix" "$user_status" "$read" "$(id -u)"
}
"#;

fn script(head: &str) -> String {
    format!("{head}{RUNTIME_LOOP}")
}

fn docker_required() -> bool {
    std::env::var("LAH_REQUIRE_DOCKER").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the Docker daemon answers and has the `provided` image; a reason when not.
fn docker_missing() -> Option<String> {
    let run = |args: &[&str]| {
        Command::new("timeout")
            .arg("60")
            .arg("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&["version"]) {
        return Some("docker is unreachable".into());
    }
    if !run(&["image", "inspect", "lambda-at-home/provided:bookworm"]) {
        return Some("image lambda-at-home/provided:bookworm is missing".into());
    }
    None
}

/// A server on a data dir any uid may traverse and list (0755, unlike tempfile's 0700): only the
/// isolation under test may keep one function from another's files.
fn open_server(
    executor: ExecutorChoice,
    adjust: impl FnOnce(&mut Config),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    for path in [dir.path(), data.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let server = TestServer::start_in(&data, |c| {
        c.executor = executor;
        adjust(c);
    });
    (server, dir)
}

/// Uids each test's server may use: servers running at the same time need disjoint ranges (a
/// server kills whatever runs under a uid before reusing it).
const UIDS_PER_TEST: u32 = 1000;

/// Identities on (the test config turns them off for tests that play runtimes themselves), from
/// the default base, in range number `slot` of this file's tests.
fn with_identities(slot: u32) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.instance_uid_base = INSTANCE_UID_BASE_DEFAULT + slot * UIDS_PER_TEST;
        c.instance_uids = UIDS_PER_TEST;
    }
}

/// B's `bootstrap` on the host (under the data dir's functions), made readable by everyone.
fn victim_code_file(data_dir: &Path, name: &str) -> PathBuf {
    let function_dir = data_dir.join("functions").join(name);
    let file = std::fs::read_dir(&function_dir)
        .expect("the function's dir")
        .flatten()
        .map(|e| e.path().join("bootstrap"))
        .find(|p| p.is_file())
        .expect("B's bootstrap on disk");
    for dir in [data_dir.join("functions"), function_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    file
}

/// What evil achieved against a warm instance of B, and B's next invocation afterwards.
struct Outcome {
    evil: Value,
    victim_uid: i64,
    victim_after: Value,
}

fn attack(server: &TestServer) -> Outcome {
    let victim = unique_name("victim");
    let evil = unique_name("evil");
    server.create_provided(&victim, &script(VICTIM), json!({}));
    server.create_provided(&evil, &script(EVIL), json!({"Timeout": 20}));
    // A first invocation starts B and tells its instance address; B then parks in /next.
    let first = server.invoke_ok(&victim, &json!({"n": 1}));
    let target = first["api"].as_str().expect("B's address").to_string();
    assert!(target.starts_with("127."), "{first}");
    let sock = first["sock"].as_str().expect("B's socket or -").to_string();
    let file = victim_code_file(&server.data_dir, &victim);
    let args = format!("{target} {} {} {sock}", server.addr, file.display());
    let evil_says = server.invoke_ok(&evil, &json!(args));
    // B was not disturbed: its next invocation is answered by B itself.
    let after = server.invoke_ok(&victim, &json!({"n": 2}));
    Outcome {
        evil: evil_says,
        victim_uid: first["uid"].as_i64().expect("B's uid"),
        victim_after: after,
    }
}

fn assert_isolated(o: &Outcome, executor: &str, slot: u32) {
    eprintln!(
        "{executor}: evil got {}; B runs as {}",
        o.evil, o.victim_uid
    );
    assert_eq!(
        o.evil["next"], "403",
        "{executor}: evil asked B's /next: {}",
        o.evil
    );
    // Only the process executor's instances have a Unix socket (`unix_runtime_api`).
    let unix = if executor == "process" { "403" } else { "none" };
    assert_eq!(
        o.evil["unix"], unix,
        "{executor}: evil asked B's /next on its Unix socket: {}",
        o.evil
    );
    assert_eq!(
        o.evil["user"], "403",
        "{executor}: evil called the User API: {}",
        o.evil
    );
    assert_eq!(
        o.evil["read"], "denied",
        "{executor}: evil read B's code: {}",
        o.evil
    );
    assert_eq!(
        o.victim_after["event"],
        json!({"n": 2}),
        "{}",
        o.victim_after
    );
    let evil_uid = o.evil["uid"].as_i64().expect("evil's uid");
    let base = i64::from(INSTANCE_UID_BASE_DEFAULT + slot * UIDS_PER_TEST);
    let range = base..base + i64::from(UIDS_PER_TEST);
    assert!(
        range.contains(&evil_uid),
        "{executor}: evil runs as {evil_uid}"
    );
    assert!(
        range.contains(&o.victim_uid),
        "{executor}: B runs as {}",
        o.victim_uid
    );
    assert_ne!(evil_uid, o.victim_uid, "{executor}: instances share a uid");
}

#[test]
fn process_executor_instances_cannot_reach_each_other() {
    if !is_root() {
        eprintln!(
            "SKIP process_executor_instances_cannot_reach_each_other: the server is not root, \
             so the process executor cannot give instances their own uids"
        );
        return;
    }
    let (server, _dir) = open_server(ExecutorChoice::Process, with_identities(0));
    let outcome = attack(&server);
    assert_isolated(&outcome, "process", 0);
    assert!(server.metric("lah_identity_refusals_total") >= 3.0);
    server.shutdown();
}

#[test]
fn docker_executor_instances_cannot_reach_each_other() {
    if let Some(why) = docker_missing() {
        assert!(!docker_required(), "LAH_REQUIRE_DOCKER is set but {why}");
        eprintln!("SKIP docker_executor_instances_cannot_reach_each_other: {why}");
        return;
    }
    let (server, _dir) = open_server(ExecutorChoice::Docker, with_identities(1));
    let outcome = attack(&server);
    assert_isolated(&outcome, "docker", 1);
    server.shutdown();
}

/// The same attack with B's instance (and evil's, when the refill was quick enough) started in a
/// container of the Docker pool (`--docker-pool-mb`), which ran under a uid of its own before it
/// was given B's code: B's address still admits only that instance.
#[test]
fn docker_pooled_instances_cannot_reach_each_other() {
    let test = "docker_pooled_instances_cannot_reach_each_other";
    if let Some(why) = docker_missing() {
        assert!(!docker_required(), "LAH_REQUIRE_DOCKER is set but {why}");
        eprintln!("SKIP {test}: {why}");
        return;
    }
    if !is_root() {
        eprintln!("SKIP {test}: the pool mounts code into containers and needs root");
        return;
    }
    let (server, _dir) = open_server(ExecutorChoice::Docker, |c| {
        with_identities(4)(c);
        c.docker_pool_mb = 512;
    });
    // One start of the default size teaches the pool to keep a slot of it.
    let warm = unique_name("warm");
    server.create_provided(&warm, &script(VICTIM), json!({}));
    server.invoke_ok(&warm, &json!({"n": 0}));
    assert!(
        wait_until(std::time::Duration::from_secs(60), || server
            .metric("lah_docker_pool_idle_slots")
            >= 1.0),
        "no pool slot appeared"
    );
    let outcome = attack(&server);
    let metrics = server.call("GET", "/metrics", &[], b"").body.clone();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("lah_executor_starts_total{kind=\"pooled\"} ")
            && !metrics.contains("lah_executor_starts_total{kind=\"pooled\"} 0\n"),
        "B was not started from the pool: {metrics}"
    );
    assert_isolated(&outcome, "docker-pooled", 4);
    server.shutdown();
}

/// The Node runtime under an identity: when the process executor says `nodejs` is usable by an
/// unprivileged uid (root, and node, the bootstrap and the WebSocket packages reachable), an
/// instance runs under its own uid and talks to the server over its verified WebSocket; when it
/// is not, the instance is counted as unverified (and the test says which case it saw).
#[test]
fn node_instances_run_under_their_own_uid_or_are_counted_unverified() {
    if !is_root() {
        eprintln!("SKIP node_instances_run_under_their_own_uid: the server is not root");
        return;
    }
    let (server, _dir) = open_server(ExecutorChoice::Process, with_identities(3));
    let name = unique_name("nodeuid");
    let handler = "exports.handler = async () => ({ uid: process.getuid() });\n";
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "index.handler",
        &[("index.js", handler.as_bytes(), 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    let got = server.invoke_ok(&name, &json!({}));
    let uid = got["uid"].as_i64().expect("uid");
    let base = i64::from(INSTANCE_UID_BASE_DEFAULT + 3 * UIDS_PER_TEST);
    if server.metric("lah_instances_unverified_total") == 0.0 {
        assert!((base..base + 1000).contains(&uid), "node runs as {uid}");
        assert_eq!(server.metric("lah_identity_refusals_total"), 0.0);
        // Its WebSocket on its own address was admitted by its uid.
        assert_transport(&server, true);
        eprintln!("node instance ran under its own uid {uid}");
    } else {
        assert_eq!(uid, 0, "an unverified instance runs as the server's user");
        eprintln!("node is not usable by an unprivileged uid here: instance ran unverified");
    }
    server.shutdown();
}

/// The WebSocket endpoint on the shared port: a register naming B, with B's real secret token,
/// from another uid (this test process) is refused, as a message and in the upgrade request's
/// headers, and B keeps serving.
#[test]
fn shared_port_register_from_another_uid_is_refused() {
    if !is_root() {
        eprintln!("SKIP shared_port_register_from_another_uid_is_refused: the server is not root");
        return;
    }
    let (server, _dir) = open_server(ExecutorChoice::Process, with_identities(2));
    let victim = unique_name("victim");
    server.create_provided(&victim, &script(VICTIM), json!({}));
    let first = server.invoke_ok(&victim, &json!({"n": 1}));
    let token = first["token"].as_str().expect("B's token");
    let refusals = server.metric("lah_identity_refusals_total");

    // As a `register` message, and as a registration in the upgrade request's headers.
    for by_header in [false, true] {
        let mut stream = TcpStream::connect(server.runtime_addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let header = if by_header {
            format!("Lambda-Runtime-Instance-Id: {token}\r\n")
        } else {
            String::new()
        };
        let upgrade = format!(
            "GET /2018-06-01/runtime/websocket?fn={victim} HTTP/1.1\r\nHost: x\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n{header}\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(upgrade.as_bytes()).expect("upgrade");
        if !by_header {
            let register = json!({
                "type": "register", "function_name": victim, "runtime": "provided.al2023",
                "version": "$LATEST", "instance_id": token, "binary": false,
            })
            .to_string();
            stream
                .write_all(&masked_text_frame(register.as_bytes()))
                .expect("register");
        }
        // Everything the server sends until it closes: the 101, an error_response, a close frame.
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        assert_eq!(
            answer.contains("Lambda-Runtime-Registered: true"),
            by_header,
            "{answer}"
        );
        assert!(answer.contains("REGISTER_REJECTED"), "{answer}");
        assert!(answer.contains("another instance"), "{answer}");
    }
    assert_eq!(server.metric("lah_identity_refusals_total"), refusals + 2.0);
    // B was not disturbed.
    let after = server.invoke_ok(&victim, &json!({"n": 2}));
    assert_eq!(after["event"], json!({"n": 2}), "{after}");
    server.shutdown();
}

/// A client's text frame (masked, as RFC 6455 requires of clients) carrying `payload`.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The control: without identities (the old behaviour), the same attack gets through, so the
/// checks above are what stops it.
#[test]
fn without_identities_the_attack_gets_through() {
    let (server, _dir) = open_server(ExecutorChoice::Process, |c| c.instance_uids = 0);
    let outcome = attack(&server);
    // B is parked in /next: a second /next is refused as such (409), not for who asks.
    assert_eq!(outcome.evil["next"], "409", "{}", outcome.evil);
    assert_eq!(outcome.evil["unix"], "409", "{}", outcome.evil);
    assert_eq!(outcome.evil["user"], "200", "{}", outcome.evil);
    assert_eq!(outcome.evil["read"], "readable", "{}", outcome.evil);
    assert_eq!(outcome.victim_after["event"], json!({"n": 2}));
    server.shutdown();
}
