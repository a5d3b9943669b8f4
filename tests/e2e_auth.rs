//! User API authentication end to end: a real server with `--auth on` (or `auto`), requests
//! signed in the test with the crate's SigV4 signer (checked against AWS's test vectors in its
//! unit tests) and by boto3 (`tests/boto3_auth.py`), and the AWS exceptions for everything else.
//!
//! The boto3 part is skipped, with a notice, only when `import boto3` fails and
//! `LAH_REQUIRE_BOTO3` is unset (CI sets it).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::boto3::{boto3_available, run_script_with_env};
use common::{expect_aws_error, expect_json, TestServer};
use lambda_at_home::config::{AuthChoice, Secret};
use lambda_at_home::protocols::http::ClientResponse;
use lambda_at_home::protocols::sigv4::{self, CanonicalInput, Signer};
use serde_json::json;

const KEY_ID: &str = "AKIDLAHTEST";
const SECRET: &str = "lah/test+secret";
/// Longest the boto3 script may run (a dozen calls, one cold start).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn auth_on(config: &mut lambda_at_home::config::Config) {
    config.auth = AuthChoice::On;
    config.access_key_id = Some(KEY_ID.to_string());
    config.secret_access_key = Some(Secret(SECRET.to_string()));
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// One request signed (host, x-amz-date and the body's hash, as botocore signs) with `key_id` and
/// `secret` at `signed_at`, carrying `sent_body` (which may differ from the signed `body`).
#[allow(clippy::too_many_arguments)]
fn signed_call(
    server: &TestServer,
    key_id: &str,
    secret: &str,
    signed_at: u64,
    method: &str,
    target: &str,
    body: &[u8],
    sent_body: &[u8],
) -> ClientResponse {
    let host = server.addr.to_string();
    let amz_date = sigv4::format_amz_date(signed_at);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let headers: Vec<(&str, &[u8])> = vec![
        ("host", host.as_bytes()),
        ("x-amz-date", amz_date.as_bytes()),
    ];
    let hash = sigv4::sha256_hex(body);
    let input = CanonicalInput {
        method,
        path,
        query,
        headers: || headers.iter().copied(),
        signed_headers: "host;x-amz-date",
        payload_hash: &hash,
    };
    let signer = Signer {
        access_key_id: key_id,
        secret,
        region: "us-west-2",
        service: "lambda",
    };
    let authorization = signer.authorization(&amz_date, &input);
    server.call(
        method,
        target,
        &[("X-Amz-Date", &amz_date), ("Authorization", &authorization)],
        sent_body,
    )
}

fn create_body(name: &str) -> Vec<u8> {
    json!({
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": common::ROLE,
        "Handler": "lambda_function.handler",
        "Code": { "ZipFile": common::zip_b64(&[(
            "lambda_function.py",
            b"def handler(event, context):\n    return {'echo': event}\n",
            0o644,
        )]) },
    })
    .to_string()
    .into_bytes()
}

#[test]
fn auth_auto_is_off_on_loopback() {
    // Credentials alone do not turn it on: `auto` on 127.0.0.1 is off.
    let server = TestServer::with_config(|c| {
        c.access_key_id = Some(KEY_ID.to_string());
        c.secret_access_key = Some(Secret(SECRET.to_string()));
    });
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    let resp = server.call("GET", "/2015-03-31/functions", &[], b"");
    expect_json(&resp, 200);
    // A signature with an unknown key is not checked either.
    let resp = signed_call(
        &server,
        "AKIDUNKNOWN",
        "x",
        now_s(),
        "GET",
        "/2015-03-31/functions",
        b"",
        b"",
    );
    expect_json(&resp, 200);
}

#[test]
fn auth_on_checks_every_request() {
    let server = TestServer::with_config(auth_on);
    let now = now_s();

    // Probes and scrapers stay open.
    assert_eq!(server.call("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(server.call("GET", "/metrics", &[], b"").status, 200);

    // Unsigned: management and invoke.
    let body = expect_aws_error(
        &server.call("GET", "/2015-03-31/functions", &[], b""),
        403,
        "MissingAuthenticationTokenException",
    );
    assert_eq!(body["Message"], "Missing Authentication Token");
    expect_aws_error(
        &server.call("POST", "/2015-03-31/functions/f/invocations", &[], b"{}"),
        403,
        "MissingAuthenticationTokenException",
    );
    // Not SigV4 at all.
    expect_aws_error(
        &server.call(
            "GET",
            "/2015-03-31/functions",
            &[("Authorization", "Bearer abc")],
            b"",
        ),
        403,
        "IncompleteSignatureException",
    );

    // Signed right: create (signature checked on the control plane), list, invoke (on the core).
    let name = "authed";
    let create = create_body(name);
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "POST",
        "/2015-03-31/functions",
        &create,
        &create,
    );
    let created = expect_json(&resp, 201);
    // The ARN names the region the request was signed for.
    assert_eq!(
        created["FunctionArn"],
        "arn:aws:lambda:us-west-2:000000000000:function:authed"
    );
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "GET",
        "/2015-03-31/functions?MaxItems=10",
        b"",
        b"",
    );
    expect_json(&resp, 200);
    let invoke_path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A000000000000%3Afunction%3Aauthed/invocations?Qualifier=%24LATEST";
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "POST",
        invoke_path,
        b"{\"a\":1}",
        b"{\"a\":1}",
    );
    assert_eq!(expect_json(&resp, 200), json!({"echo": {"a": 1}}));

    // Wrong secret, on the control plane's path and the core's.
    let mismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
    let resp = signed_call(
        &server,
        KEY_ID,
        "wrong",
        now,
        "GET",
        "/2015-03-31/functions",
        b"",
        b"",
    );
    assert_eq!(
        expect_aws_error(&resp, 403, "InvalidSignatureException")["Message"],
        mismatch
    );
    let resp = signed_call(
        &server,
        KEY_ID,
        "wrong",
        now,
        "POST",
        invoke_path,
        b"{}",
        b"{}",
    );
    assert_eq!(
        expect_aws_error(&resp, 403, "InvalidSignatureException")["Message"],
        mismatch
    );

    // Unknown key.
    let resp = signed_call(
        &server,
        "AKIDUNKNOWN",
        SECRET,
        now,
        "POST",
        invoke_path,
        b"{}",
        b"{}",
    );
    let body = expect_aws_error(&resp, 403, "UnrecognizedClientException");
    assert_eq!(
        body["Message"],
        "The security token included in the request is invalid."
    );

    // A body changed after signing: invoke (core) and a management call (control plane).
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "POST",
        invoke_path,
        b"{\"a\":1}",
        b"{\"a\":2}",
    );
    expect_aws_error(&resp, 403, "InvalidSignatureException");
    let other = create_body("other");
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "POST",
        "/2015-03-31/functions",
        &create,
        &other,
    );
    expect_aws_error(&resp, 403, "InvalidSignatureException");
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now,
        "GET",
        "/2015-03-31/functions/other",
        b"",
        b"",
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");

    // Signed ten minutes ago.
    let resp = signed_call(
        &server,
        KEY_ID,
        SECRET,
        now - 600,
        "POST",
        invoke_path,
        b"{}",
        b"{}",
    );
    let body = expect_aws_error(&resp, 403, "InvalidSignatureException");
    let message = body["Message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Signature expired: "), "{message}");
    assert!(message.ends_with(" - 5 min.)"), "{message}");

    // Every refusal is counted.
    assert_eq!(server.metric("lah_auth_failures_total"), 9.0);
}

#[test]
fn auth_on_without_credentials_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = common::test_config(dir.path().to_path_buf());
    config.auth = AuthChoice::On;
    config.credentials_file = None;
    config.access_key_id = None;
    config.secret_access_key = None;
    let err = lambda_at_home::server::Server::start(config)
        .err()
        .expect("the server must not start");
    let message = err.to_string();
    assert!(
        message.contains("no credentials are configured"),
        "{message}"
    );
    assert!(message.contains("--credentials-file"), "{message}");
}

#[test]
fn credentials_file_keys_are_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDFILE1\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AKIDFILE2\naws_secret_access_key=s2\n",
    )
    .expect("write credentials");
    let server = TestServer::with_config(|c| {
        c.auth = AuthChoice::On;
        c.credentials_file = Some(file.clone());
    });
    for (id, secret) in [("AKIDFILE1", "s1"), ("AKIDFILE2", "s2")] {
        let resp = signed_call(
            &server,
            id,
            secret,
            now_s(),
            "GET",
            "/2015-03-31/functions",
            b"",
            b"",
        );
        expect_json(&resp, 200);
    }
    let resp = signed_call(
        &server,
        "AKIDFILE1",
        "s2",
        now_s(),
        "GET",
        "/2015-03-31/functions",
        b"",
        b"",
    );
    expect_aws_error(&resp, 403, "InvalidSignatureException");
}

#[test]
fn boto3_signs_and_the_server_verifies() {
    if !boto3_available() {
        assert!(
            std::env::var_os("LAH_REQUIRE_BOTO3").is_none(),
            "LAH_REQUIRE_BOTO3 is set but `python3 -c 'import boto3'` fails"
        );
        eprintln!("SKIPPED boto3_signs_and_the_server_verifies: boto3 is not installed (pip install boto3; set LAH_REQUIRE_BOTO3=1 to require it)");
        return;
    }
    let server = TestServer::with_config(auth_on);
    let run = run_script_with_env(
        &server,
        "boto3_auth.py",
        &[("LAH_TEST_KEY_ID", KEY_ID), ("LAH_TEST_SECRET", SECRET)],
        SCRIPT_TIMEOUT,
    );
    let (out, err) = (run.stdout, run.stderr);
    let status = run.status.unwrap_or_else(|| {
        panic!("boto3_auth.py did not finish in {SCRIPT_TIMEOUT:?}\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "boto3_auth.py failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed, 0 failed"), "{out}\n{err}");
    eprintln!("{out}");
}
