//! Runs `tests/boto3_logs.py` (boto3's `logs` client) against an in-process server: every
//! CloudWatch Logs operation the server serves, over the functions' real output.
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it. The script is killed if it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::time::Duration;

use common::boto3::{boto3_available, run_script};
use common::TestServer;

/// Longest the whole script may run (about 60 calls, five cold starts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn boto3_logs_client_reads_function_logs() {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3_logs_client_reads_function_logs: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::new();
    let run = run_script(&server, "boto3_logs.py", SCRIPT_TIMEOUT);
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_logs.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_logs.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    eprintln!("{out}");
}
