//! AWS's official Runtime API clients, unmodified, as `provided.al2023` functions on the process
//! executor: `awslambdaric` (PyPI), the `lambda_runtime` crate (the fixture crate in
//! `tests/fixtures/rust-lambda`, built here with cargo) and `aws-lambda-ric` (npm, native code).
//!
//! Each test zips the client with a handler and an executable `bootstrap`, then checks a cold and a
//! warm invocation (echoed payload, the invocation's request id, one instance reused) and a handler
//! error (200 + `X-Amz-Function-Error` + the client's own error document). The Python and Node
//! clients come from folders named by `LAH_AWSLAMBDARIC_DIR` / `LAH_AWS_LAMBDA_RIC_DIR`
//! (`scripts/test.sh` installs them); when one is unset the test is skipped with a notice, unless
//! `LAH_REQUIRE_CLIENTS` is set, which makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Set (to anything) to make a missing client a failure instead of a skip.
const REQUIRE_VAR: &str = "LAH_REQUIRE_CLIENTS";
/// A `pip install --target DIR awslambdaric` folder.
const AWSLAMBDARIC_VAR: &str = "LAH_AWSLAMBDARIC_DIR";
/// An `npm install --prefix DIR aws-lambda-ric` folder (holding `node_modules/aws-lambda-ric`).
const AWS_LAMBDA_RIC_VAR: &str = "LAH_AWS_LAMBDA_RIC_DIR";
/// Zip entries a packaged client may have at most (a guard against zipping the wrong folder).
const PACKAGE_FILES_MAX: usize = 2_000;

/// Longest a client may take to ask for its next invocation after answering one.
const IDLE_WAIT: Duration = Duration::from_secs(10);

/// A file for the function's zip: path inside the zip, content, unix mode.
type ZipEntry = (String, Vec<u8>, u32);

/// The awslambdaric handler: an echo with the request id and a per-process invocation count (which
/// shows whether the instance was reused); `{"fail": true}` raises.
const PY_HANDLER: &str = r#"import os

count = 0


class FixtureError(Exception):
    pass


def handler(event, context):
    global count
    count += 1
    if event.get("fail") is True:
        raise FixtureError("failing as asked (request %s)" % context.aws_request_id)
    return {
        "client": "awslambdaric",
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": int(context.memory_limit_in_mb),
        "arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "count": count,
        "pid": os.getpid(),
    }
"#;

/// The awslambdaric bootstrap, as AWS documents it for custom images: the module is the runtime.
const PY_BOOTSTRAP: &str = "#!/bin/sh\n\
cd \"$LAMBDA_TASK_ROOT\" || exit 1\n\
exec python3 -m awslambdaric \"$_HANDLER\"\n";

/// The aws-lambda-ric handler (an ES module): same contract as `PY_HANDLER`.
const NODE_HANDLER: &str = r#"let count = 0;

class FixtureError extends Error {
  constructor(message) {
    super(message);
    this.name = "FixtureError";
  }
}

export const handler = async (event, context) => {
  count += 1;
  if (event.fail === true) {
    throw new FixtureError(`failing as asked (request ${context.awsRequestId})`);
  }
  return {
    client: "aws-lambda-ric",
    event,
    request_id: context.awsRequestId,
    function_name: context.functionName,
    memory: Number(context.memoryLimitInMB),
    arn: context.invokedFunctionArn,
    remaining_ms: context.getRemainingTimeInMillis(),
    count,
    pid: process.pid,
  };
};
"#;

/// The aws-lambda-ric bootstrap: the package's own CLI, given the handler.
const NODE_BOOTSTRAP: &str = "#!/bin/sh\n\
cd \"$LAMBDA_TASK_ROOT\" || exit 1\n\
exec node node_modules/aws-lambda-ric/bin/index.mjs \"$_HANDLER\"\n";

/// The folder a client was installed in, from `var`; `None` (after a notice) when it is unset and
/// clients are not required. Panics when required and missing, or when the folder lacks `probe`.
fn client_dir(var: &str, client: &str, probe: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        if std::env::var_os(REQUIRE_VAR).is_some() {
            panic!("{var} is unset but {REQUIRE_VAR} is set: install {client} (scripts/test.sh)");
        }
        eprintln!("SKIPPED: {client} test: set {var} to its install folder (scripts/test.sh does)");
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.join(probe).exists(),
        "{var}={} has no {probe}: is {client} installed there?",
        dir.display()
    );
    Some(dir)
}

/// Every regular file under `root` (skipping `__pycache__`), as entries named `prefix` + the path
/// relative to `root`, with their unix modes.
fn tree_entries(root: &Path, prefix: &str) -> Vec<ZipEntry> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path());
        for path in entries {
            let meta =
                std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if meta.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__") {
                    pending.push(path);
                }
                continue;
            }
            let rel = path.strip_prefix(root).expect("path under its root");
            let content =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let mode = meta.permissions().mode() & 0o777;
            out.push((format!("{prefix}{}", rel.display()), content, mode));
        }
    }
    assert!(
        !out.is_empty() && out.len() <= PACKAGE_FILES_MAX,
        "{} files under {}",
        out.len(),
        root.display()
    );
    out
}

/// Builds `tests/fixtures/rust-lambda` (a no-op when up to date) and returns its binary.
fn build_rust_fixture() -> PathBuf {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rust-lambda/Cargo.toml");
    // Its own target dir inside ours: the fixture is its own workspace, and a separate dir keeps
    // its build from waiting on the lock of the build that runs this test.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-lambda-fixture");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = std::time::Instant::now();
    let status = Command::new(cargo)
        .args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo to build the lambda_runtime fixture");
    assert!(status.success(), "building {} failed", manifest.display());
    eprintln!(
        "lambda_runtime fixture ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    target.join("debug/rust-lambda-fixture")
}

/// Creates a `provided.al2023` function from `entries`, invokes it cold, warm and failing, and
/// checks what every client must answer; `check` adds the client's own expectations.
fn exercise(client: &str, entries: &[ZipEntry], check: impl Fn(&Value)) {
    let server = TestServer::new();
    let name = unique_name(client);
    let files: Vec<(&str, &[u8], u32)> = entries
        .iter()
        .map(|(path, content, mode)| (path.as_str(), content.as_slice(), *mode))
        .collect();
    let resp = server.create_function(
        &name,
        "provided.al2023",
        "lambda_function.handler",
        &files,
        json!({ "MemorySize": 256, "Timeout": 30 }),
    );
    let created = expect_json(&resp, 201);
    assert_eq!(created["State"], "Active", "{created}");

    let cold_event = json!({"hello": "cold", "n": 1, "nested": {"list": [1, 2, 3]}});
    let cold = invoke_echo(&server, &name, client, &cold_event);
    wait_idle(&server);
    let warm_event = json!({"hello": "warm", "n": 2, "unicode": "λ@home ✓"});
    let warm = invoke_echo(&server, &name, client, &warm_event);
    assert_ne!(cold["request_id"], warm["request_id"], "request ids repeat");
    assert_eq!(cold["count"], 1, "cold start is a fresh instance: {cold}");
    assert_eq!(warm["count"], 2, "warm start reuses the instance: {warm}");
    assert_eq!(cold["pid"], warm["pid"], "one process served both");
    for got in [&cold, &warm] {
        assert_eq!(got["function_name"], name.as_str(), "{got}");
        assert_eq!(got["memory"], 256, "{got}");
        check(got);
    }

    wait_idle(&server);
    let resp = server.invoke(&name, br#"{"fail": true}"#, &[]);
    let error = expect_function_error(&resp);
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        Some("Unhandled"),
        "{}",
        describe(&resp)
    );
    assert_eq!(error["errorType"], "FixtureError", "{}", describe(&resp));
    let request_id = resp.header_str("x-amzn-RequestId").expect("a request id");
    let message = error["errorMessage"].as_str().unwrap_or("");
    assert_eq!(
        message,
        format!("failing as asked (request {request_id})"),
        "{}",
        describe(&resp)
    );

    // The client survives its handler's error: the same instance answers again.
    wait_idle(&server);
    let after = invoke_echo(&server, &name, client, &json!({"after": "error"}));
    assert_eq!(after["pid"], cold["pid"], "{after}");
}

/// Waits until an instance is back on the idle list. A client is idle only once it has asked for
/// its next invocation, some time after it answered the last one; an invocation arriving before
/// that starts a second instance, which would make "warm" a cold start (seen with aws-lambda-ric).
fn wait_idle(server: &TestServer) {
    let idle = || {
        let resp = server.call("GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        text.lines()
            .filter(|l| l.starts_with("lah_instances{") && l.contains("state=\"idle\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .any(|v| v >= 1.0)
    };
    assert!(
        wait_until(IDLE_WAIT, idle),
        "no idle instance within {IDLE_WAIT:?}"
    );
}

/// One successful invocation: the body echoes `event`, names `client` and carries the request id
/// the server answered with. Returns the body.
fn invoke_echo(server: &TestServer, name: &str, client: &str, event: &Value) -> Value {
    let resp = server.invoke(name, event.to_string().as_bytes(), &[]);
    let got = expect_success(&resp);
    assert_eq!(got["client"], client, "{got}");
    assert_eq!(&got["event"], event, "{got}");
    let request_id = resp.header_str("x-amzn-RequestId").expect("a request id");
    assert_eq!(got["request_id"], request_id, "{got}");
    got
}

/// The function's ARN as AWS (and this server) forms it.
fn arn(got: &Value) -> String {
    let name = got["function_name"].as_str().unwrap_or("");
    format!("arn:aws:lambda:us-east-1:000000000000:function:{name}")
}

/// Checks the remaining time a client computed from `Lambda-Runtime-Deadline-Ms` (timeout 30 s).
fn check_remaining(got: &Value) {
    let remaining = got["remaining_ms"].as_i64().unwrap_or(-1);
    assert!((1..=30_000).contains(&remaining), "{got}");
}

#[test]
fn awslambdaric_python_client() {
    let Some(dir) = client_dir(AWSLAMBDARIC_VAR, "awslambdaric", "awslambdaric") else {
        return;
    };
    let mut entries = tree_entries(&dir, "");
    entries.push(("lambda_function.py".into(), PY_HANDLER.into(), 0o644));
    entries.push(("bootstrap".into(), PY_BOOTSTRAP.into(), 0o755));
    exercise("awslambdaric", &entries, |got| {
        assert_eq!(got["arn"], arn(got), "{got}");
        check_remaining(got);
    });
}

#[test]
fn lambda_runtime_rust_crate() {
    let binary = build_rust_fixture();
    let content =
        std::fs::read(&binary).unwrap_or_else(|e| panic!("read {}: {e}", binary.display()));
    let entries = vec![("bootstrap".to_string(), content, 0o755)];
    // The crate reads AWS_LAMBDA_FUNCTION_{NAME,MEMORY_SIZE,VERSION} at start and panics without
    // them, so answering at all shows the server set them.
    let check = |got: &Value| {
        assert_eq!(got["version"], "$LATEST", "{got}");
        assert_eq!(got["arn"], arn(got), "{got}");
        let deadline = got["deadline_ms"].as_u64().unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        assert!(deadline > now && deadline <= now + 30_000, "{got}");
    };
    exercise("lambda_runtime", &entries, check);
}

#[test]
fn aws_lambda_ric_node_client() {
    let probe = "node_modules/aws-lambda-ric/package.json";
    let Some(dir) = client_dir(AWS_LAMBDA_RIC_VAR, "aws-lambda-ric", probe) else {
        return;
    };
    // Only what runs: the CLI, the bundled JS and the compiled native client (the package's build
    // sources under deps/ are ~150 MB).
    let package = dir.join("node_modules/aws-lambda-ric");
    let mut entries = Vec::new();
    for sub in ["bin", "dist"] {
        entries.extend(tree_entries(
            &package.join(sub),
            &format!("node_modules/aws-lambda-ric/{sub}/"),
        ));
    }
    let manifest = std::fs::read(package.join("package.json")).expect("read package.json");
    entries.push((
        "node_modules/aws-lambda-ric/package.json".into(),
        manifest,
        0o644,
    ));
    entries.push(("lambda_function.mjs".into(), NODE_HANDLER.into(), 0o644));
    entries.push(("bootstrap".into(), NODE_BOOTSTRAP.into(), 0o755));
    exercise("aws-lambda-ric", &entries, |got| {
        assert_eq!(got["arn"], arn(got), "{got}");
        check_remaining(got);
    });
}
