//! Reading User API input: JSON bodies (AWS's PascalCase, with the seed's snake_case accepted
//! where the original API took it), function references (names, qualifiers, ARNs), and AWS's
//! validation-error wording ("1 validation error detected: ...").
//!
//! Control-plane thread only. serde_json, no zero-copy: management bodies are small or parsed
//! once.

use serde_json::{Map, Value};

use crate::model::error::{ApiError, ErrorKind};
pub use crate::model::names::*;

pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::new(
            ErrorKind::InvalidRequestContent,
            "Could not parse request body into json: expected a JSON object",
        )),
    }
}

/// The value under the PascalCase or the snake_case key; JSON `null` counts as absent.
pub fn field<'a>(obj: &'a Map<String, Value>, pascal: &str, snake: &str) -> Option<&'a Value> {
    obj.get(pascal)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

pub fn opt_string(
    obj: &Map<String, Value>,
    pascal: &str,
    snake: &str,
) -> Result<Option<String>, ApiError> {
    match field(obj, pascal, snake) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid_param(format!(
            "{pascal} must be a string"
        ))),
    }
}

pub fn opt_i64(
    obj: &Map<String, Value>,
    pascal: &str,
    snake: &str,
) -> Result<Option<i64>, ApiError> {
    match field(obj, pascal, snake) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid_param(format!("{pascal} must be an integer"))),
    }
}

pub fn opt_bool(
    obj: &Map<String, Value>,
    pascal: &str,
    snake: &str,
) -> Result<Option<bool>, ApiError> {
    match field(obj, pascal, snake) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_param(format!(
            "{pascal} must be a boolean"
        ))),
    }
}

pub fn null_error(field: &str) -> ApiError {
    ApiError::invalid_param(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
    ))
}

pub fn validated_range(
    v: Option<i64>,
    field: &str,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(n) = v else { return Ok(None) };
    if n < i64::from(min) {
        return Err(constraint(
            &n.to_string(),
            field,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .map(Some)
        .ok_or_else(|| {
            constraint(
                &n.to_string(),
                field,
                &format!("Member must have value less than or equal to {max}"),
            )
        })
}

/// The body as a JSON object; an empty body counts as `{}` (boto3 sends none for some calls).
pub fn parse_object_or_empty(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(body)
}

/// A string field that must be present.
pub fn required_string(
    obj: &Map<String, Value>,
    pascal: &str,
    field: &str,
) -> Result<String, ApiError> {
    opt_string(obj, pascal, pascal)?.ok_or_else(|| null_error(field))
}

/// A map of strings (Tags, Environment.Variables).
pub fn opt_string_map(
    obj: &Map<String, Value>,
    pascal: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ApiError> {
    let Some(v) = field(obj, pascal, pascal) else {
        return Ok(None);
    };
    let map = v
        .as_object()
        .ok_or_else(|| ApiError::invalid_param(format!("{pascal} must be an object")))?;
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in map {
        let v = v
            .as_str()
            .ok_or_else(|| ApiError::invalid_param(format!("{pascal}.{k} must be a string")))?;
        out.insert(k.clone(), v.to_string());
    }
    Ok(Some(out))
}

/// A list of strings (Layers, tag keys).
pub fn opt_string_list(
    obj: &Map<String, Value>,
    pascal: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = field(obj, pascal, pascal) else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::invalid_param(format!("{pascal} must be a list")))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::invalid_param(format!("{pascal} must hold strings")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// MaxItems / Marker paging over a sorted list: the page and the next marker (an index).
pub fn page<T: Clone>(
    items: &[T],
    marker: Option<&str>,
    max_items: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = match max_items {
        None => LIST_ITEMS_DEFAULT,
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| ApiError::invalid_param(format!("Invalid MaxItems: {v}")))?;
            validated_range(Some(n), "maxItems", 1, LIST_ITEMS_MAX)?.unwrap_or(LIST_ITEMS_DEFAULT)
        }
    } as usize;
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&i| i <= items.len())
            .ok_or_else(|| ApiError::invalid_param(format!("Invalid Marker: {m}")))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

/// List operations' MaxItems range and default (AWS's).
pub const LIST_ITEMS_MAX: u32 = 10_000;
pub const LIST_ITEMS_DEFAULT: u32 = 50;

/// Every value of query parameter `name` (`?k=a&k=b`), decoded as `Request::query_param` does.
pub fn query_all(request: &crate::protocols::http::Request, name: &str) -> Vec<String> {
    use crate::protocols::percent::decode_query;
    let Some(query) = request.query() else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query(k) == name).then(|| decode_query(v))
        })
        .collect()
}
