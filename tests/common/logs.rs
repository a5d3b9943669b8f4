//! CloudWatch Logs API calls (AWS JSON 1.1: `POST /` with `X-Amz-Target`) against a test server,
//! for the tests that read function logs back. Runs on the test thread; every call is bounded by
//! the harness's `IO_TIMEOUT`.

use lambda_at_home::protocols::http::ClientResponse;
use serde_json::{json, Value};

use super::{describe, TestServer};

/// One CloudWatch Logs operation.
pub fn logs_call(server: &TestServer, operation: &str, body: &Value) -> ClientResponse {
    let target = format!("Logs_20140328.{operation}");
    server.call(
        "POST",
        "/",
        &[
            ("X-Amz-Target", target.as_str()),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        body.to_string().as_bytes(),
    )
}

/// One operation that must succeed; its JSON answer.
pub fn logs_ok(server: &TestServer, operation: &str, body: &Value) -> Value {
    let resp = logs_call(server, operation, body);
    assert_eq!(resp.status, 200, "{operation}: {}", describe(&resp));
    serde_json::from_slice(&resp.body).expect("JSON answer")
}

/// The messages FilterLogEvents finds in `group` for `pattern`, following every page.
pub fn filter_messages(server: &TestServer, group: &str, pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": group, "filterPattern": pattern});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = logs_ok(server, "FilterLogEvents", &body);
        for e in v["events"].as_array().into_iter().flatten() {
            out.push(e["message"].as_str().unwrap_or_default().to_string());
        }
        match v["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}
