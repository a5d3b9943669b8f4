//! Runs `tests/boto3_urls.py` (boto3, the AWS SDK for Python: function URL management) against
//! an in-process server.
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it, so a missing boto3 fails there instead of passing silently. The script is killed if
//! it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::time::Duration;

use common::boto3::{boto3_available, run_script};
use common::TestServer;

/// Longest the whole script may run (about 20 calls, two cold starts).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn boto3_manages_function_urls() {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3_manages_function_urls: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::new();
    let run = run_script(&server, "boto3_urls.py", SCRIPT_TIMEOUT);
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_urls.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_urls.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    eprintln!("{out}");
}
