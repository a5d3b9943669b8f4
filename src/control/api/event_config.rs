//! Event invoke configs (`/2019-09-25/functions/NAME/event-invoke-config[/list]`): Put
//! (replace), Update (merge), Get, Delete, List. Stored per qualifier (`$LATEST` by default).
//! Destinations must be functions of this server: other destination types are refused here,
//! at configuration time.

use serde_json::{json, Map, Value};

use super::input::{field, opt_i64, page, parse_object, validated_range, FunctionRef};
use super::Call;
use crate::control::registry::EventInvokeConfig;
use crate::model::error::ApiError;
use crate::model::types::LATEST;
use crate::model::ApiAnswer;

/// AWS's ranges.
pub const RETRY_ATTEMPTS_MAX: u32 = 2;
pub const EVENT_AGE_S_MIN: u32 = 60;
pub const EVENT_AGE_S_MAX: u32 = 21_600;

/// Put (`merge` false) or Update (`merge` true).
pub fn put(call: &mut Call, function: &str, merge: bool) -> Result<ApiAnswer, ApiError> {
    let (r, qualifier) = target(call, function)?;
    let obj = parse_object(&call.request.body)?;
    let input = parse(call, &obj)?;
    let stored = call
        .registry
        .put_event_invoke_config(&r.name, &qualifier, input, merge)?;
    Ok(ApiAnswer::json(
        200,
        &render(call, &r.name, &qualifier, &stored),
    ))
}

pub fn get(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (r, qualifier) = target(call, function)?;
    let c = call.registry.event_invoke_config(&r.name, &qualifier)?;
    Ok(ApiAnswer::json(200, &render(call, &r.name, &qualifier, &c)))
}

pub fn delete(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (r, qualifier) = target(call, function)?;
    call.registry
        .delete_event_invoke_config(&r.name, &qualifier)?;
    Ok(ApiAnswer::empty(204))
}

pub fn list(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let r = call.function_ref(function)?;
    let all = call.registry.event_invoke_configs(&r.name)?;
    let marker = call.request.query_param("Marker");
    let max = call.request.query_param("MaxItems");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    let configs: Vec<Value> = items
        .iter()
        .map(|(q, c)| render(call, &r.name, q, c))
        .collect();
    let mut v = json!({ "FunctionEventInvokeConfigs": configs });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}

/// The function and the qualifier the config is for (which must exist).
fn target(call: &Call, function: &str) -> Result<(FunctionRef, String), ApiError> {
    let r = call.function_ref(function)?;
    let qualifier = r.qualifier.clone().unwrap_or_else(|| LATEST.to_string());
    call.registry.resolve(&r.name, Some(&qualifier))?;
    Ok((r, qualifier))
}

fn parse(call: &Call, obj: &Map<String, Value>) -> Result<EventInvokeConfig, ApiError> {
    let retries = validated_range(
        opt_i64(obj, "MaximumRetryAttempts", "MaximumRetryAttempts")?,
        "maximumRetryAttempts",
        0,
        RETRY_ATTEMPTS_MAX,
    )?;
    let age = validated_range(
        opt_i64(obj, "MaximumEventAgeInSeconds", "MaximumEventAgeInSeconds")?,
        "maximumEventAgeInSeconds",
        EVENT_AGE_S_MIN,
        EVENT_AGE_S_MAX,
    )?;
    let (mut on_success, mut on_failure) = (None, None);
    if let Some(dc) = field(obj, "DestinationConfig", "DestinationConfig") {
        let dc = dc
            .as_object()
            .ok_or_else(|| ApiError::invalid_param("DestinationConfig must be an object"))?;
        on_success = destination(call, dc, "OnSuccess")?;
        on_failure = destination(call, dc, "OnFailure")?;
    }
    Ok(EventInvokeConfig {
        maximum_retry_attempts: retries,
        maximum_event_age_s: age,
        on_success,
        on_failure,
        last_modified_s: now_s(),
    })
}

/// `OnSuccess`/`OnFailure.Destination`: a Lambda function ARN of this server (the only
/// destination type it can deliver to).
fn destination(
    call: &Call,
    dc: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let Some(d) = field(dc, key, key) else {
        return Ok(None);
    };
    let arn = d
        .get("Destination")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let Some(arn) = arn else {
        return Ok(None);
    };
    if !arn.starts_with("arn:") || !arn.contains(":lambda:") || !arn.contains(":function:") {
        return Err(ApiError::invalid_param(format!(
            "The destination ARN {arn} is not supported by this server: only Lambda functions of this server can be destinations (SQS, SNS, EventBridge and S3 are not available locally)"
        )));
    }
    let r = super::input::parse_function_ref(arn)?;
    call.registry.resolve(&r.name, r.qualifier.as_deref())?;
    Ok(Some(arn.to_string()))
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// AWS's FunctionEventInvokeConfig.
fn render(call: &Call, name: &str, qualifier: &str, c: &EventInvokeConfig) -> Value {
    let mut v = json!({
        "LastModified": c.last_modified_s,
        "FunctionArn": format!("{}:{qualifier}", call.ctx.function_arn(name)),
        "DestinationConfig": {
            "OnSuccess": c.on_success.as_ref().map_or(json!({}), |d| json!({"Destination": d})),
            "OnFailure": c.on_failure.as_ref().map_or(json!({}), |d| json!({"Destination": d})),
        },
    });
    if let Some(n) = c.maximum_retry_attempts {
        v["MaximumRetryAttempts"] = json!(n);
    }
    if let Some(n) = c.maximum_event_age_s {
        v["MaximumEventAgeInSeconds"] = json!(n);
    }
    v
}
