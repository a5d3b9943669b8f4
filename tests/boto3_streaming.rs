//! Runs `tests/boto3_streaming.py` (boto3's `invoke_with_response_stream`) against an
//! in-process server, once with the HTTP Runtime API and once with the WebSocket one.
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it, so a missing boto3 fails there instead of passing silently. The script is killed if
//! it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::time::Duration;

use common::boto3::{boto3_available, run_script};
use common::TestServer;

/// Longest one run of the script may take (two cold starts, two timeouts of 3 s, pauses).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn run(ws: bool) {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3 streaming: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::with_config(|c| c.use_websocket = ws);
    let run = run_script(&server, "boto3_streaming.py", SCRIPT_TIMEOUT);
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_streaming.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_streaming.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    common::assert_transport(&server, ws);
    eprintln!("{out}");
}

#[test]
fn boto3_reads_streams_over_http_runtimes() {
    run(false);
}

#[test]
fn boto3_reads_streams_over_websocket_runtimes() {
    run(true);
}
