//! Runs `tests/boto3_streaming.py` (boto3's `invoke_with_response_stream`) against an
//! in-process server, once with the HTTP Runtime API and once with the WebSocket one; the
//! WebSocket run has authentication on (SigV4 over the streaming endpoint).
//!
//! Skipped, with a notice, only when `import boto3` fails and `LAH_REQUIRE_BOTO3` is unset; CI
//! sets it, so a missing boto3 fails there instead of passing silently. The script is killed if
//! it runs longer than `SCRIPT_TIMEOUT`.

mod common;

use std::time::Duration;

use common::boto3::{boto3_available, run_script_with_env};
use common::TestServer;
use lambda_at_home::config::{AuthChoice, Secret};

/// Longest one run of the script may take (two cold starts, two timeouts of 3 s, pauses).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The key the authenticated run signs with.
const KEY_ID: &str = "AKIDSTREAMTEST";
const SECRET: &str = "stream/test+secret";

fn run(ws: bool, auth: bool) {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3 streaming: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::with_config(|c| {
        c.use_websocket = ws;
        if auth {
            c.auth = AuthChoice::On;
            c.access_key_id = Some(KEY_ID.to_string());
            c.secret_access_key = Some(Secret(SECRET.to_string()));
        }
    });
    let env: &[(&str, &str)] = if auth {
        &[("LAH_TEST_KEY_ID", KEY_ID), ("LAH_TEST_SECRET", SECRET)]
    } else {
        &[]
    };
    let run = run_script_with_env(&server, "boto3_streaming.py", env, SCRIPT_TIMEOUT);
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_streaming.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_streaming.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    // The checks that matter most ran (a script that skipped them would still pass).
    for check in [
        "ok   node streams chunks as they are produced",
        "ok   python streams chunks as they are produced",
        "ok   node timeout mid-stream",
    ] {
        assert!(out.contains(check), "{check} missing:\n{out}\n{err}");
    }
    if auth {
        assert!(out.contains("ok   wrong signature refused"), "{out}\n{err}");
    }
    common::assert_transport(&server, ws);
    eprintln!("{out}");
}

#[test]
fn boto3_reads_streams_over_http_runtimes() {
    run(false, false);
}

#[test]
fn boto3_reads_streams_over_websocket_runtimes_with_auth() {
    run(true, true);
}
