//! Runs `tests/boto3_deploy.py` (boto3, the AWS SDK for Python) against an in-process server:
//! versions, aliases with weighted routing, layers, tags, resource policy, code signing config,
//! event invoke config and qualified invokes, including the errors AWS returns for each.
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it, so a missing boto3 fails there instead of passing silently. The script is killed if
//! it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::time::Duration;

use common::boto3::{boto3_available, run_script};
use common::TestServer;

/// Longest the whole script may run: ~150 calls, of which ~70 invocations across four published
/// versions and $LATEST (a cold start each), plus a few update waiters polling every second.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn boto3_deploys_versions_aliases_layers_and_policies() {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3_deploys_versions_aliases_layers_and_policies: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::new();
    let run = run_script(&server, "boto3_deploy.py", SCRIPT_TIMEOUT);
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_deploy.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_deploy.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    eprintln!("{out}");
}
