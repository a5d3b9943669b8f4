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

/// Handler of the identity test: reports its uid, and with `target` tries to take the next
/// invocation of another instance's Runtime API address, returning the HTTP status it got.
const PROBE: &str = r#"
import http.client, os, time
INIT_AT = time.time()

def handler(event, context):
    if event.get("hold"):
        time.sleep(event["hold"])
    status = None
    if event.get("target"):
        conn = http.client.HTTPConnection(event["target"], timeout=3)
        try:
            conn.request("GET", "/2018-06-01/runtime/invocation/next")
            status = conn.getresponse().status
        except OSError as e:
            status = str(e)
    return {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "init_at": INIT_AT,
        "api": os.environ["AWS_LAMBDA_RUNTIME_API"],
        "status": status,
    }
"#;

/// With identities (a root server and an interpreter every uid can run): the forks of one
/// function share their template's uid, one from the instance range, and an instance of another
/// function is refused on their Runtime API address. Skipped when not root or without a
/// world-usable `/usr/bin/python3` (a pyenv interpreter under `/root` is not).
#[test]
fn forked_instances_share_their_templates_uid_and_other_functions_are_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIP forked instances' identities: needs root and /usr/bin/python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The instance uids must be able to read the Python bootstrap, wherever the checkout is (a
    // clone under a 0700 directory would otherwise leave Python instances unverified, as the
    // server's start check reports): a copy next to the data dir, passed with --runtimes-dir.
    let data = dir.path().join("data");
    let runtimes = dir.path().join("runtimes");
    std::fs::create_dir(&data).unwrap();
    copy_world_readable(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/python"),
        &runtimes.join("python"),
    );
    for d in [&data, &runtimes] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let runtimes_arg = runtimes.to_string_lossy().into_owned();
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    // A uid range of its own (e2e_isolation's are below it).
    let base = (lambda_at_home::config::INSTANCE_UID_BASE_DEFAULT + 50_000).to_string();
    let server = common::child::ChildServer::start_with_env(
        &data,
        &[
            "--runtimes-dir",
            &runtimes_arg,
            "--instance-uid-base",
            &base,
            "--instance-uids",
            "1000",
            "--scale-out",
            "eager",
        ],
        &[("PATH", &path)],
    );
    let call = |method: &str, path: &str, body: &Value| {
        http_call(server.addr, method, path, &[], body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    let create = |name: &str| {
        let body = json!({
            "FunctionName": name, "Runtime": "python3.12", "Role": ROLE,
            "Handler": "lambda_function.handler", "Timeout": 10,
            "Code": { "ZipFile": zip_b64(&[("lambda_function.py", PROBE.as_bytes(), 0o644)]) },
        });
        expect_json(&call("POST", "/2015-03-31/functions", &body), 201);
    };
    let invoke = |name: &str, payload: Value| {
        let resp = call(
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            &payload,
        );
        assert_eq!(
            resp.header_str("X-Amz-Function-Error"),
            None,
            "{}",
            describe(&resp)
        );
        expect_json(&resp, 200)
    };
    create("victim");
    create("intruder");
    let first = invoke("victim", json!({}));
    let [a, b] = std::thread::scope(|s| {
        let a = s.spawn(|| invoke("victim", json!({ "hold": 2.0 })));
        let b = s.spawn(|| invoke("victim", json!({ "hold": 2.0 })));
        [a.join().unwrap(), b.join().unwrap()]
    });
    assert_ne!(a["pid"], b["pid"], "two instances: {a} {b}");
    let uid = first["uid"].as_u64().unwrap();
    assert!(
        uid >= base.parse::<u64>().unwrap(),
        "an instance uid: {first}"
    );
    for r in [&a, &b] {
        assert_eq!(
            r["init_at"], first["init_at"],
            "forks of one template: {first} {r}"
        );
        assert_eq!(
            r["uid"].as_u64(),
            Some(uid),
            "siblings share the template's uid: {r}"
        );
    }
    // Another function's instance, on the victim's (idle, parked) instance address.
    let intruder = invoke("intruder", json!({ "target": first["api"] }));
    assert_ne!(intruder["uid"].as_u64(), Some(uid), "{intruder}");
    assert_eq!(intruder["status"], 403, "refused by identity: {intruder}");
    // The victim still serves.
    invoke("victim", json!({}));
    // A graceful stop kills the instances and the templates (a kill -9 would leave the forks to
    // exit on their own).
    let mut server = server;
    // SAFETY: kill with our own child's pid.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let stopped = wait_until(std::time::Duration::from_secs(20), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(stopped, "the server did not stop on SIGTERM");
}

/// A template that died (here: killed) never fails an invocation: its spare may still serve one
/// start, the next falls back to an ordinary start, and the one after gets a new template.
#[test]
fn a_dead_template_falls_back_to_normal_starts() {
    let server = server(false);
    let name = unique_name("deadtpl");
    server.create_python(&name, SOURCE, json!({ "Timeout": 10 }));
    let (first, _) = invoke_tail(&server, &name, "first", 0.0);
    let template = first["init_pid"].as_i64().unwrap() as i32;
    // SAFETY: kill with the pid of the template the function reported.
    assert_eq!(unsafe { libc::kill(template, libc::SIGKILL) }, 0);
    let mut results = Vec::new();
    // Each round keeps every existing instance busy and needs one more.
    for round in 2..=4 {
        let got: Vec<Value> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..round)
                .map(|i| {
                    let (server, name) = (&server, &name);
                    s.spawn(move || invoke_tail(server, name, &format!("r{round}-{i}"), 2.0).0)
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        results.extend(got);
    }
    assert!(
        starts_of_kind(&server, "exec") >= 1.0,
        "a fork of the dead template failed and the start fell back"
    );
    assert!(
        results.iter().any(|r| r["init_at"] != first["init_at"]),
        "a new init ran: {results:?}"
    );
}

/// The template runs function code (module init), which can replace `os.fork` so that the
/// template answers a fork request with another process's pid and pidfd. The server must not
/// take it for the fork: no cgroup move, no signal, and the start falls back to a normal one.
#[test]
fn a_template_that_names_a_stranger_as_its_fork_is_not_believed() {
    let server = server(false);
    let name = unique_name("forged");
    let mut victim = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .unwrap();
    let victim_pid = victim.id();
    let cgroup_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cgroup_before = cgroup_of(victim_pid);
    let source = format!(
        "import os\n_real_fork = os.fork\n\n\
         def _forged_fork():\n    pid = _real_fork()\n    return pid if pid == 0 else int(os.environ['VICTIM'])\n\n\
         os.fork = _forged_fork\n{SOURCE}"
    );
    server.create_python(
        &name,
        &source,
        json!({ "Timeout": 10, "Environment": { "Variables": { "VICTIM": victim_pid.to_string() } } }),
    );
    let (first, _) = invoke_tail(&server, &name, "first", 0.0);
    let [(a, _), (b, _)] = invoke_pair(&server, &name, 2.0);
    assert_ne!(a["pid"], b["pid"]);
    assert_eq!(first["pid"], first["init_pid"], "a normal start: {first}");
    assert_eq!(starts_of_kind(&server, "fork"), 0.0);
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the process the template named was killed"
    );
    assert_eq!(
        cgroup_of(victim_pid),
        cgroup_before,
        "the process the template named was moved into a cgroup"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// Copies the directory tree `from` to `to` (created), directories 0755 and files 0644, so that
/// any uid can read it.
fn copy_world_readable(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_world_readable(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// The cgroup2 superblock options of this namespace's first cgroup2 mount, or `None` without one.
fn cgroup2_options() -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|l| {
        let (_, right) = l.split_once(" - ")?;
        let mut f = right.split(' ');
        (f.next()? == "cgroup2").then(|| f.nth(1).unwrap_or("").to_string())
    })
}

#[test]
fn favordynmods_is_on_while_the_server_runs_and_restored_at_stop() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: remounting the cgroup2 hierarchy needs root");
        return;
    }
    let Some(before) = cgroup2_options() else {
        eprintln!("skipped: no cgroup2 hierarchy is mounted");
        return;
    };
    let was_on = before.split(',').any(|o| o == "favordynmods");
    // Exclusive: no other test server starts instances while the host's option changes.
    let server = TestServer::exclusive(|c| c.cgroup_favor_dynmods = true);
    let during = cgroup2_options().expect("still mounted");
    assert!(
        during.split(',').any(|o| o == "favordynmods"),
        "on while the server runs: {during}"
    );
    let name = unique_name("dynmods");
    server.create_python(&name, SOURCE, json!({ "Timeout": 10 }));
    let (body, tail) = invoke_tail(&server, &name, "dynmods", 0.0);
    assert!(tail.contains("FORK-LOG-dynmods"), "{tail}");
    assert!(body["pid"].is_number(), "{body}");
    server.shutdown();
    let after = cgroup2_options().expect("still mounted");
    // Turned off again when this server turned it on; left on when the host had it on.
    assert_eq!(after, before, "the options the host had (was on: {was_on})");
}
