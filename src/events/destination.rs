//! The invocation record an asynchronous invocation's destination receives, in AWS's shape:
//!
//! ```json
//! {"version":"1.0","timestamp":"2019-11-14T18:16:05.568Z",
//!  "requestContext":{"requestId":"…","functionArn":"arn:…:function:NAME:$LATEST",
//!                    "condition":"Success"|"RetriesExhausted"|"EventAgeExceeded",
//!                    "approximateInvokeCount":3},
//!  "requestPayload":{…},
//!  "responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},
//!  "responsePayload":{…}}
//! ```
//!
//! `responseContext` and `responsePayload` are present when the function ran at least once (the
//! last attempt's answer); an event that expired before any attempt has neither. Payloads that
//! are not JSON are carried as JSON strings. Pure: runs on the event queue's thread.

use serde_json::{json, Value};

/// Why the record is sent (`requestContext.condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// The last attempt's answer.
#[derive(Clone, Debug)]
pub struct LastResponse {
    pub executed_version: String,
    /// `Unhandled` or `Handled` for a function error; `None` on success.
    pub function_error: Option<&'static str>,
    pub body: bytes::Bytes,
}

/// What the record is about.
pub struct RecordInput<'a> {
    pub request_id: &'a str,
    /// The function ARN with the qualifier that was invoked.
    pub function_arn: &'a str,
    pub condition: Condition,
    pub approximate_invoke_count: u32,
    pub request_payload: &'a [u8],
    pub response: Option<&'a LastResponse>,
    /// Unix milliseconds.
    pub now_ms: u64,
}

/// The record as JSON bytes.
pub fn record(r: &RecordInput) -> Vec<u8> {
    let mut v = json!({
        "version": "1.0",
        "timestamp": iso8601_ms(r.now_ms),
        "requestContext": {
            "requestId": r.request_id,
            "functionArn": r.function_arn,
            "condition": r.condition.name(),
            "approximateInvokeCount": r.approximate_invoke_count,
        },
        "requestPayload": json_or_string(r.request_payload),
    });
    if let Some(resp) = r.response {
        let mut ctx = json!({"statusCode": 200, "executedVersion": resp.executed_version});
        if let Some(fe) = resp.function_error {
            ctx["functionError"] = json!(fe);
        }
        v["responseContext"] = ctx;
        v["responsePayload"] = json_or_string(&resp.body);
    }
    v.to_string().into_bytes()
}

fn json_or_string(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `2019-11-14T18:16:05.568Z`.
pub fn iso8601_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_with_milliseconds() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_573_755_365_568), "2019-11-14T18:16:05.568Z");
        assert_eq!(iso8601_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
    }

    #[test]
    fn a_failure_record_has_aws_shape() {
        let resp = LastResponse {
            executed_version: "$LATEST".into(),
            function_error: Some("Unhandled"),
            body: bytes::Bytes::from_static(br#"{"errorMessage":"boom"}"#),
        };
        let bytes = record(&RecordInput {
            request_id: "id-1",
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            condition: Condition::RetriesExhausted,
            approximate_invoke_count: 3,
            request_payload: br#"{"n":1}"#,
            response: Some(&resp),
            now_ms: 1_573_755_365_568,
        });
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({
                "version": "1.0",
                "timestamp": "2019-11-14T18:16:05.568Z",
                "requestContext": {
                    "requestId": "id-1",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": {"n": 1},
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled"
                },
                "responsePayload": {"errorMessage": "boom"}
            })
        );
    }

    #[test]
    fn an_expired_event_that_never_ran_has_no_response() {
        let bytes = record(&RecordInput {
            request_id: "id-2",
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            condition: Condition::EventAgeExceeded,
            approximate_invoke_count: 0,
            request_payload: b"not json",
            response: None,
            now_ms: 0,
        });
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["requestContext"]["condition"], "EventAgeExceeded");
        assert_eq!(v["requestPayload"], "not json");
        assert!(v.get("responseContext").is_none());
        assert!(v.get("responsePayload").is_none());
    }
}
