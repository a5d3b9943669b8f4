//! Runs `tests/boto3_compat.py` (boto3, the AWS SDK for Python) against an in-process server.
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it, so a missing boto3 fails there instead of passing silently. The script is killed if
//! it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

/// Longest the whole script may run (it makes ~40 calls, a few cold starts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// python3 with the test-only packages (scripts/test.sh installs boto3 privately and names the
/// folder in LAH_TEST_PYTHONPATH).
fn python3() -> Command {
    let mut cmd = Command::new("python3");
    if let Some(path) = std::env::var_os("LAH_TEST_PYTHONPATH") {
        cmd.env("PYTHONPATH", path);
    }
    cmd
}

fn boto3_available() -> bool {
    python3()
        .args(["-c", "import boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn boto3_client_works_against_the_server() {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3_client_works_against_the_server: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/boto3_compat.py");
    let endpoint = format!("http://{}", server.addr);
    let mut child = python3()
        .arg(script)
        .arg(&endpoint)
        // No profile, proxy or region from the machine may change what the SDK sends.
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("boto3_compat.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_compat.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    eprintln!("{out}");
}
