//! Pooled Node starts (docs/cold-starts.md, "Node: pooled starts"), end to end on the process
//! executor: after the first Node start, `--node-pool` Node processes wait with the bootstrap
//! loaded; a later cold start is one of them (`lah_executor_starts_total{kind="pooled"}`), which
//! the test proves by what the handler sees (its function's environment, code dir and log
//! stream, an `Init Duration` in its REPORT) and by the pooled processes it finds in `/proc`
//! (their start environment marks them). Opting out (the function's `LAMBDA_USE_POOL=false`), a
//! function the pool cannot honour (`NODE_OPTIONS`) and the server flag give ordinary starts; no
//! pooled process outlives the server. With instance identities (root), each pooled process runs
//! under its own uid, sees no other function's code, and another function's handler can neither
//! signal nor read it.
//!
//! Every wait is bounded; all traffic stays on 127.0.0.1.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lambda_at_home::config::ScaleOut;
use serde_json::{json, Value};

/// Reports what the instance sees; `hold` keeps it busy (seconds); `peek` lists a directory;
/// `kill` and `read` try to signal, and read the start environment of, other processes.
const SOURCE: &str = r#"
const fs = require('fs');
const INIT_AT = Date.now();
// What the function's init sees of the runtime's invocation state: the first line it logs, as
// the runtime formats it, and the trace id variable.
const TRACE_AT_INIT = process.env._X_AMZN_TRACE_ID === undefined ? null : process.env._X_AMZN_TRACE_ID;
let INIT_LINE = null;
{
  const write = process.stdout.write;
  process.stdout.write = function (chunk, ...rest) {
    if (INIT_LINE === null) INIT_LINE = String(chunk);
    return write.call(this, chunk, ...rest);
  };
  console.log('pool-init');
  process.stdout.write = write;
}
exports.handler = async (event, context) => {
  if (event.hold) await new Promise((r) => setTimeout(r, event.hold * 1000));
  return report(event, context);
};
// Callback style: AWS's runtime answers once the event loop is empty, so a handle the pooled
// process left open (its warm-up's) would hold the answer back.
exports.callback = (event, context, callback) => {
  setImmediate(() => callback(null, report(event, context)));
};
function report(event, context) {
  console.log('POOL-LOG-' + (event.tag || ''));
  const attempt = (f) => { try { return f(); } catch (e) { return e.code || String(e); } };
  const others = (event.kill || []).filter((pid) => pid !== process.pid);
  return {
    pid: process.pid,
    uid: process.getuid(),
    gc: typeof globalThis.gc,
    vm_gc: require('vm').runInNewContext('typeof gc'),
    init_line: INIT_LINE,
    trace_at_init: TRACE_AT_INIT,
    init_at: INIT_AT,
    env: process.env,
    cwd: process.cwd(),
    stream: context.logStreamName,
    peek: event.peek ? attempt(() => fs.readdirSync(event.peek)) : null,
    kill: others.map((pid) => attempt(() => { process.kill(pid, 'SIGKILL'); return 'ok'; })),
    read: others.map((pid) => attempt(() => fs.readFileSync(`/proc/${pid}/environ`).length)),
    memory_max: attempt(() => {
      const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
      return fs.readFileSync(`/sys/fs/cgroup${line.slice(3)}/memory.max`, 'utf8').trim();
    }),
  };
}
"#;

/// Bound of every wait for the pool to (re)fill: a Node start takes tens of milliseconds, a
/// loaded 2-core test machine makes it seconds.
const FILL_WAIT: Duration = Duration::from_secs(20);

fn server(adjust: impl FnOnce(&mut lambda_at_home::config::Config)) -> TestServer {
    TestServer::with_config(|c| {
        c.node_pool = 2;
        c.use_websocket = false;
        c.scale_out = ScaleOut::Eager;
        adjust(c);
    })
}

/// The function's MemorySize: not the pool's idle limit (128 MB), so that a claim must set it.
const MEMORY_MB: u64 = 256;

fn create_node(server: &TestServer, name: &str, env: Value) {
    create_node_with(server, name, "index.handler", env);
}

fn create_node_with(server: &TestServer, name: &str, handler: &str, env: Value) {
    let resp = server.create_function(
        name,
        "nodejs20.x",
        handler,
        &[("index.js", SOURCE.as_bytes(), 0o644)],
        json!({ "Timeout": 10, "MemorySize": MEMORY_MB, "Environment": { "Variables": env } }),
    );
    expect_json(&resp, 201);
}

/// Invokes `name` with `payload` (asking for the log tail); returns the result and the tail.
fn invoke_tail(server: &TestServer, name: &str, payload: Value) -> (Value, String) {
    let resp = server.invoke(
        name,
        payload.to_string().as_bytes(),
        &[("X-Amz-Log-Type", "Tail")],
    );
    let body = expect_success(&resp);
    let tail = resp
        .header_str("X-Amz-Log-Result")
        .map(|t| String::from_utf8_lossy(&b64_decode(t)).into_owned())
        .unwrap_or_else(|| panic!("no X-Amz-Log-Result: {}", describe(&resp)));
    (body, tail)
}

/// The labelled sample `lah_executor_starts_total{kind="KIND"}` of the metrics text `text`.
fn starts_in(text: &str, kind: &str) -> f64 {
    let prefix = format!("lah_executor_starts_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

fn starts_of_kind(server: &TestServer, kind: &str) -> f64 {
    let resp = server.call("GET", "/metrics", &[], b"");
    starts_in(&String::from_utf8_lossy(&resp.body), kind)
}

fn init_duration_ms(tail: &str) -> Option<f64> {
    let rest = tail.split("Init Duration: ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// Live processes started by the pool of the server on `data_dir`: their start environment (what
/// `/proc/PID/environ` shows for good, also once claimed) carries the pool's task root.
fn pool_processes(data_dir: &Path) -> Vec<i32> {
    let data_dir = std::path::absolute(data_dir).unwrap();
    let marker = format!(
        "LAMBDA_TASK_ROOT={}",
        data_dir.join("functions/.node-pool").display()
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && environ.split(|&b| b == 0).any(|v| v == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` is blocked reading (its main thread in `read`): a pooled process waiting for its
/// start message, its bootstrap loaded.
fn waiting_in_read(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
        == Some(libc::SYS_read)
}

/// Waits until `want` pooled processes other than `claimed` wait for a start; returns them.
fn wait_for_pool(data_dir: &Path, claimed: &[i32], want: usize) -> Vec<i32> {
    let mut idle = Vec::new();
    let filled = wait_until(FILL_WAIT, || {
        idle = pool_processes(data_dir)
            .into_iter()
            .filter(|p| !claimed.contains(p) && waiting_in_read(*p))
            .collect();
        idle.len() >= want
    });
    assert!(filled, "the pool did not fill: {idle:?}");
    idle
}

fn pid_of(result: &Value) -> i32 {
    result["pid"].as_i64().unwrap() as i32
}

#[test]
fn a_pooled_start_serves_with_the_functions_own_environment_and_nothing_outlives_the_server() {
    let server = server(|_| {});
    let data_dir = server.data_dir.clone();
    let name = unique_name("pooled");
    create_node(&server, &name, json!({ "MY_VAR": "mine" }));
    assert!(
        pool_processes(&data_dir).is_empty(),
        "the pool waits for a Node start"
    );

    // The first start is ordinary, and makes the pool fill.
    let (first, first_tail) = invoke_tail(&server, &name, json!({ "tag": "first" }));
    assert!(!pool_processes(&data_dir).contains(&pid_of(&first)));
    assert_eq!(starts_of_kind(&server, "exec"), 1.0);
    let mut claimed = vec![pid_of(&first)];
    let idle = wait_for_pool(&data_dir, &claimed, 2);

    // A second instance (the first is busy): a pooled process.
    let [(a, a_tail), (b, b_tail)] = std::thread::scope(|s| {
        let a = s.spawn(|| invoke_tail(&server, &name, json!({ "tag": "a", "hold": 1.5 })));
        let b = s.spawn(|| invoke_tail(&server, &name, json!({ "tag": "b", "hold": 1.5 })));
        [a.join().unwrap(), b.join().unwrap()]
    });
    let (pooled, tail) = if pid_of(&a) == pid_of(&first) {
        (b, b_tail)
    } else {
        (a, a_tail)
    };
    assert!(
        idle.contains(&pid_of(&pooled)),
        "the new instance is one of the waiting processes {idle:?}: {pooled}"
    );
    claimed.push(pid_of(&pooled));
    assert_eq!(starts_of_kind(&server, "pooled"), 1.0);
    assert_eq!(starts_of_kind(&server, "exec"), 1.0);
    // The function's environment, not the pool's.
    let env = &pooled["env"];
    assert_eq!(env["MY_VAR"], "mine", "{pooled}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], name.as_str(), "{pooled}");
    assert!(env.get("_LAMBDA_POOL_CONTROL_FD").is_none(), "{pooled}");
    let instance_id = env["LAMBDA_INSTANCE_ID"].as_str().unwrap();
    assert!(!instance_id.starts_with("pool-"), "{pooled}");
    assert_eq!(env["LAMBDA_TASK_ROOT"], first["env"]["LAMBDA_TASK_ROOT"]);
    assert_eq!(pooled["cwd"], env["LAMBDA_TASK_ROOT"], "{pooled}");
    // The pool collects its garbage before it waits (runtimes/node/bootstrap.js
    // `collectGarbage`); the function's code does not get the `gc` that takes.
    assert_eq!(pooled["gc"], "undefined", "{pooled}");
    assert_eq!(
        pooled["vm_gc"], "undefined",
        "nor do contexts it makes: {pooled}"
    );
    // Its warm-up ran invocations through both transports' code; none of their state reaches
    // the function: its init logs with the request id "undefined" and sees no trace id, as an
    // ordinary start's does.
    for r in [&first, &pooled] {
        let line = r["init_line"].as_str().unwrap_or_default();
        assert!(line.ends_with("\tundefined\tINFO\tpool-init\n"), "{r}");
        assert_eq!(r["trace_at_init"], Value::Null, "{r}");
    }
    for (key, value) in first["env"].as_object().unwrap() {
        let per_instance = [
            "LAMBDA_INSTANCE_ID",
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "AWS_LAMBDA_RUNTIME_API",
            "LAMBDA_RUNTIME_API_SOCKET",
            "_X_AMZN_TRACE_ID",
        ];
        if !per_instance.contains(&key.as_str()) {
            assert_eq!(
                &env[key], value,
                "{key} as an ordinary start sets it: {pooled}"
            );
        }
    }
    assert_eq!(
        env.as_object().unwrap().len(),
        first["env"].as_object().unwrap().len(),
        "the same variables as an ordinary start: {first} {pooled}"
    );
    assert_eq!(pooled["stream"], env["AWS_LAMBDA_LOG_STREAM_NAME"]);
    assert_ne!(pooled["stream"], first["stream"]);
    // Its output is its invocation's, and its REPORT says what its start took.
    assert!(tail.contains("POOL-LOG-"), "{tail}");
    let init = init_duration_ms(&tail);
    assert!(
        init.is_some(),
        "a cold start reports its Init Duration: {tail}"
    );

    // Further cold starts (each configuration change retires the instances): each a pooled one.
    let mut inits = vec![init.unwrap()];
    for round in 0..3 {
        wait_for_pool(&data_dir, &claimed, 2);
        let resp = server.call_json(
            "PUT",
            &format!("/2015-03-31/functions/{name}/configuration"),
            &json!({ "Environment": { "Variables": { "MY_VAR": format!("round-{round}") } } }),
        );
        assert_eq!(resp.status, 200, "{}", describe(&resp));
        let (r, tail) = invoke_tail(&server, &name, json!({ "tag": round }));
        assert_eq!(r["env"]["MY_VAR"], format!("round-{round}"), "{r}");
        claimed.push(pid_of(&r));
        inits.push(init_duration_ms(&tail).expect("a cold start"));
    }
    assert_eq!(starts_of_kind(&server, "pooled"), 4.0);
    eprintln!(
        "Init Duration: ordinary start {:?} ms, pooled starts {inits:?} ms",
        init_duration_ms(&first_tail)
    );

    let waiting = pool_processes(&data_dir);
    assert!(!waiting.is_empty());
    server.shutdown();
    let gone = wait_until(Duration::from_secs(10), || {
        pool_processes(&data_dir).is_empty()
    });
    assert!(
        gone,
        "pooled processes outlived the server: {:?}",
        pool_processes(&data_dir)
    );
}

/// Over the WebSocket Runtime API: the pooled process learns the transport (and its secret
/// `LAMBDA_INSTANCE_ID` for `register`) from its start message; a callback-style handler answers
/// when its event loop is empty, as on an ordinary start.
#[test]
fn a_pooled_start_serves_over_websocket() {
    let server = server(|c| c.use_websocket = true);
    let data_dir = server.data_dir.clone();
    let name = unique_name("pooledws");
    create_node_with(&server, &name, "index.callback", json!({ "MY_VAR": "one" }));
    let (first, _) = invoke_tail(&server, &name, json!({}));
    wait_for_pool(&data_dir, &[pid_of(&first)], 2);
    let resp = server.call_json(
        "PUT",
        &format!("/2015-03-31/functions/{name}/configuration"),
        &json!({ "Environment": { "Variables": { "MY_VAR": "two" } } }),
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    let (pooled, tail) = invoke_tail(&server, &name, json!({ "tag": "ws" }));
    assert_eq!(pooled["env"]["MY_VAR"], "two", "{pooled}");
    assert_eq!(pooled["env"]["LAMBDA_USE_WEBSOCKET"], "true", "{pooled}");
    assert!(tail.contains("POOL-LOG-ws"), "{tail}");
    // Answered as soon as its event loop was empty: nothing of the pooled process's own start
    // (its warm-up's sockets and timers) was left in it.
    let duration: f64 = tail
        .split("\tDuration: ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Duration: {tail}"));
    assert!(
        duration < 1000.0,
        "a callback handler took {duration} ms: {tail}"
    );
    assert_eq!(starts_of_kind(&server, "pooled"), 1.0);
    assert_transport(&server, true);
    eprintln!(
        "Init Duration of a pooled start over WebSocket: {:?} ms",
        init_duration_ms(&tail)
    );
}

#[test]
fn opted_out_and_unsupported_functions_start_normally() {
    let server = server(|_| {});
    let data_dir = server.data_dir.clone();
    let plain = unique_name("plain");
    let opted = unique_name("optout");
    let options = unique_name("nodeopts");
    create_node(&server, &plain, json!({}));
    create_node(&server, &opted, json!({ "LAMBDA_USE_POOL": "false" }));
    create_node(
        &server,
        &options,
        json!({ "NODE_OPTIONS": "--max-old-space-size=100" }),
    );
    // Starts the pool can serve make it fill; the others do not.
    let (first, _) = invoke_tail(&server, &opted, json!({}));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(pool_processes(&data_dir).is_empty());
    let (plain_first, _) = invoke_tail(&server, &plain, json!({}));
    wait_for_pool(&data_dir, &[pid_of(&plain_first)], 2);
    let (other, _) = invoke_tail(&server, &options, json!({}));
    // A second instance of the opted-out function, too.
    let pair: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2)
            .map(|_| s.spawn(|| invoke_tail(&server, &opted, json!({ "hold": 1.0 })).0))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_ne!(pid_of(&pair[0]), pid_of(&pair[1]));
    let pooled = pool_processes(&data_dir);
    for r in [&first, &other, &pair[0], &pair[1]] {
        assert!(!pooled.contains(&pid_of(r)), "not a pooled process: {r}");
    }
    assert_eq!(other["env"]["NODE_OPTIONS"], "--max-old-space-size=100");
    assert_eq!(starts_of_kind(&server, "pooled"), 0.0);
    assert!(starts_of_kind(&server, "exec") >= 4.0);
    assert_eq!(pooled.len(), 2, "the pool is still waiting: {pooled:?}");
}

#[test]
fn the_server_flag_turns_the_pool_off() {
    let server = server(|c| c.node_pool = 0);
    let name = unique_name("nopool");
    create_node(&server, &name, json!({}));
    invoke_tail(&server, &name, json!({}));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(pool_processes(&server.data_dir).is_empty());
    assert_eq!(starts_of_kind(&server, "pooled"), 0.0);
}

/// Copies the directory tree `from` to `to` (created), directories 0755 and files 0644, so that
/// any uid can read it.
fn copy_world_readable(from: &Path, to: &Path) {
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

/// With identities (a root server, a Node every uid can run): pooled processes run under uids of
/// their own (never root), a pooled instance sees its own code only, and another function's
/// handler can neither signal the waiting processes nor read their environment; they still serve.
/// Skipped when not root or without a world-usable `/usr/bin/node`.
#[test]
fn pooled_instances_are_isolated_from_each_other_and_from_other_functions() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/node").exists() {
        eprintln!("SKIP pooled instances' isolation: needs root and /usr/bin/node");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The instance uids must be able to read the bootstrap wherever the checkout is: a copy next
    // to the data dir, passed with --runtimes-dir.
    let data = dir.path().join("data");
    let runtimes = dir.path().join("runtimes");
    std::fs::create_dir(&data).unwrap();
    copy_world_readable(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/node"),
        &runtimes.join("node"),
    );
    for d in [&data, &runtimes] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let runtimes_arg = runtimes.to_string_lossy().into_owned();
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    // A uid range of its own (e2e_isolation's and e2e_fork's are below it).
    let base = lambda_at_home::config::INSTANCE_UID_BASE_DEFAULT + 60_000;
    let base_arg = base.to_string();
    let server = common::child::ChildServer::start_with_env(
        &data,
        &[
            "--runtimes-dir",
            &runtimes_arg,
            "--instance-uid-base",
            &base_arg,
            "--instance-uids",
            "1000",
            "--node-pool",
            "2",
            "--use-websocket",
            "false",
        ],
        &[("PATH", &path)],
    );
    let call = |method: &str, path: &str, body: &Value| {
        http_call(server.addr, method, path, &[], body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    let create = |name: &str| {
        let body = json!({
            "FunctionName": name, "Runtime": "nodejs20.x", "Role": ROLE,
            "Handler": "index.handler", "Timeout": 10,
            "Code": { "ZipFile": zip_b64(&[("index.js", SOURCE.as_bytes(), 0o644)]) },
        });
        expect_json(&call("POST", "/2015-03-31/functions", &body), 201);
    };
    let invoke = |name: &str, payload: Value| {
        let resp = call(
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            &payload,
        );
        expect_success(&resp)
    };
    let pooled_starts = || {
        let resp = call("GET", "/metrics", &json!(null));
        starts_in(&String::from_utf8_lossy(&resp.body), "pooled")
    };
    create("victim");
    create("intruder");
    let first = invoke("victim", json!({}));
    let mut claimed = vec![pid_of(&first)];
    let idle = wait_for_pool(&data, &claimed, 2);
    // A pooled instance of the intruder tries the waiting processes and the victim's code.
    let victim_root = first["env"]["LAMBDA_TASK_ROOT"]
        .as_str()
        .unwrap()
        .to_string();
    let intruder = invoke("intruder", json!({ "peek": victim_root, "kill": idle }));
    assert_eq!(pooled_starts(), 1.0);
    assert!(idle.contains(&pid_of(&intruder)), "{intruder}");
    claimed.push(pid_of(&intruder));
    let uid = intruder["uid"].as_u64().unwrap();
    assert!(
        uid >= u64::from(base),
        "its own instance uid, not root: {intruder}"
    );
    assert_ne!(intruder["uid"], first["uid"]);
    assert_eq!(
        intruder["peek"], "ENOENT",
        "another function's code: {intruder}"
    );
    // The other waiting process (the handler skips its own pid).
    assert_eq!(intruder["kill"], json!(["EPERM"]), "{intruder}");
    assert_eq!(intruder["read"], json!(["EACCES"]), "{intruder}");
    // Its own code is there, read-only; the functions dir holds nothing else.
    let own_root = intruder["env"]["LAMBDA_TASK_ROOT"]
        .as_str()
        .unwrap()
        .to_string();
    let own = invoke("intruder", json!({ "peek": own_root }));
    assert_eq!(own["peek"], json!(["index.js"]), "{own}");
    let functions = data.join("functions").to_string_lossy().into_owned();
    let listing = invoke("intruder", json!({ "peek": functions }));
    assert_eq!(listing["peek"], json!(["intruder"]), "{listing}");

    // The victim's next instance (a configuration change retires the first): the other waiting
    // process, untouched by the intruder, serves it, and sees none of the intruder's code.
    wait_for_pool(&data, &claimed, 2);
    let resp = call(
        "PUT",
        "/2015-03-31/functions/victim/configuration",
        &json!({ "Environment": { "Variables": { "ROUND": "2" } } }),
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    let resp = http_call(
        server.addr,
        "POST",
        "/2015-03-31/functions/victim/invocations",
        &[("X-Amz-Log-Type", "Tail")],
        json!({ "peek": own_root }).to_string().as_bytes(),
    )
    .unwrap();
    let second = expect_success(&resp);
    let tail = String::from_utf8_lossy(&b64_decode(resp.header_str("X-Amz-Log-Result").unwrap()))
        .into_owned();
    eprintln!(
        "Init Duration of a pooled start with identities (code attached on the claim): {:?} ms",
        init_duration_ms(&tail)
    );
    assert_eq!(pooled_starts(), 2.0);
    assert_eq!(second["env"]["ROUND"], "2");
    assert_eq!(second["peek"], "ENOENT", "{second}");
    assert_ne!(second["uid"], intruder["uid"]);
    assert!(second["uid"].as_u64().unwrap() >= u64::from(base));

    // A graceful stop leaves no pooled process behind.
    let mut server = server;
    // SAFETY: kill with our own child's pid.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let stopped = wait_until(Duration::from_secs(20), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(stopped, "the server did not stop on SIGTERM");
    let gone = wait_until(Duration::from_secs(10), || pool_processes(&data).is_empty());
    assert!(
        gone,
        "pooled processes outlived the server: {:?}",
        pool_processes(&data)
    );
}
