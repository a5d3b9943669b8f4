//! Runs a Python script that drives a test server with boto3 (the AWS SDK for Python), for the
//! `boto3_*` end-to-end tests.
//!
//! The script gets the server's endpoint as its only argument and a clean AWS environment (no
//! profile, proxy or region from the machine). It is killed after the caller's timeout, so a stuck
//! server fails a test instead of hanging it. Runs on the test thread, plus two reader threads
//! that drain the script's stdout and stderr.

use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::TestServer;

/// python3 with the test-only packages (scripts/test.sh installs boto3 privately and names the
/// folder in LAH_TEST_PYTHONPATH).
pub fn python3() -> Command {
    let mut cmd = Command::new("python3");
    if let Some(path) = std::env::var_os("LAH_TEST_PYTHONPATH") {
        cmd.env("PYTHONPATH", path);
    }
    cmd
}

/// Whether `import boto3` works in that python3.
pub fn boto3_available() -> bool {
    python3()
        .args(["-c", "import boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a script printed and how it ended (`None`: killed after the timeout).
pub struct ScriptRun {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tests/<script>` against `server`, killing it after `timeout`.
pub fn run_script(server: &TestServer, script: &str, timeout: Duration) -> ScriptRun {
    run_script_with_env(server, script, &[], timeout)
}

/// `run_script` with extra environment variables for the script (e.g. the keys to sign with).
pub fn run_script_with_env(
    server: &TestServer,
    script: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> ScriptRun {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let endpoint = format!("http://{}", server.addr);
    let mut command = python3();
    command
        .envs(env.iter().copied())
        .arg(&path)
        .arg(&endpoint)
        // No profile, proxy or region from the machine may change what the SDK sends.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let (status, stdout, stderr) = super::run_bounded(&mut command, timeout);
    ScriptRun {
        status,
        stdout,
        stderr,
    }
}
