//! Function URL configs (`/2021-10-31/functions/NAME/url[s]`): Create (POST), Get, Update (PUT),
//! Delete and List, with `?Qualifier=` (`$LATEST` or an alias), AWS's validation of `AuthType`,
//! `Cors` and `InvokeMode`, and AWS's response shapes.
//!
//! Control-plane thread. The `FunctionUrl` returned is `http://<id>.lambda-url.<region>.localhost:<port>/`
//! with the port the caller reached the User API on: the data plane serves it on that same port,
//! routing by `Host` (see `dataplane::function_url`). Serving does not come back here.

use serde_json::{json, Map, Value};

use super::input::{constraint, field, opt_bool, opt_i64, page, parse_object_or_empty};
use super::Call;
use crate::control::registry::urls::UrlInput;
use crate::model::error::ApiError;
use crate::model::types::LATEST;
use crate::model::urls::{function_url, Cors, InvokeMode, UrlAuth, UrlConfig};
use crate::model::ApiAnswer;

/// AWS's limits on a URL's CORS settings.
pub const CORS_LIST_ITEMS_MAX: usize = 100;
pub const CORS_METHODS_MAX: usize = 6;
pub const CORS_METHOD_CHARS_MAX: usize = 6;
pub const CORS_HEADER_CHARS_MAX: usize = 1024;
pub const CORS_ORIGIN_CHARS_MAX: usize = 253;
pub const CORS_MAX_AGE_S_MAX: u32 = 86_400;
/// ListFunctionUrlConfigs' MaxItems range is 1..=50 (AWS's).
pub const URL_LIST_ITEMS_MAX: i64 = 50;

pub fn create(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (name, qualifier) = target(call, function)?;
    let input = parse(&call.request.body)?;
    let c = call.registry.create_url(&name, &qualifier, input)?;
    let mut v = render(call, &name, &qualifier, &c);
    // CreateFunctionUrlConfig's response has no LastModifiedTime.
    if let Some(obj) = v.as_object_mut() {
        obj.remove("LastModifiedTime");
    }
    Ok(ApiAnswer::json(201, &v))
}

pub fn get(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (name, qualifier) = target(call, function)?;
    let c = call.registry.url_config(&name, &qualifier)?;
    Ok(ApiAnswer::json(200, &render(call, &name, &qualifier, &c)))
}

pub fn update(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (name, qualifier) = target(call, function)?;
    let input = parse(&call.request.body)?;
    let c = call.registry.update_url(&name, &qualifier, input)?;
    Ok(ApiAnswer::json(200, &render(call, &name, &qualifier, &c)))
}

pub fn delete(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let (name, qualifier) = target(call, function)?;
    call.registry.delete_url(&name, &qualifier)?;
    Ok(ApiAnswer::empty(204))
}

pub fn list(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let r = call.function_ref(function)?;
    let max = call.request.query_param("MaxItems");
    if let Some(m) = &max {
        let ok = m
            .parse::<i64>()
            .is_ok_and(|n| (1..=URL_LIST_ITEMS_MAX).contains(&n));
        if !ok {
            return Err(constraint(
                m,
                "maxItems",
                &format!("Member must have value between 1 and {URL_LIST_ITEMS_MAX}"),
            ));
        }
    }
    let all = call.registry.url_configs(&r.name)?;
    let marker = call.request.query_param("Marker");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    let configs: Vec<Value> = items
        .iter()
        .map(|(q, c)| render(call, &r.name, q, c))
        .collect();
    let mut v = json!({ "FunctionUrlConfigs": configs });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}

/// The function and the qualifier (`$LATEST` when none) the URL is for.
fn target(call: &Call, function: &str) -> Result<(String, String), ApiError> {
    let r = call.function_ref(function)?;
    let qualifier = r.qualifier.unwrap_or_else(|| LATEST.to_string());
    call.registry.check_url_qualifier(&r.name, &qualifier)?;
    Ok((r.name, qualifier))
}

/// Create's and Update's body. Unknown keys are ignored, as AWS's JSON protocol does.
fn parse(body: &[u8]) -> Result<UrlInput, ApiError> {
    let obj = parse_object_or_empty(body)?;
    let auth_type = match field(&obj, "AuthType", "AuthType") {
        None => None,
        Some(Value::String(s)) if s == "NONE" => Some(UrlAuth::None),
        Some(Value::String(s)) if s == "AWS_IAM" => Some(UrlAuth::AwsIam),
        Some(v) => {
            return Err(constraint(
                v.as_str().unwrap_or(&v.to_string()),
                "authType",
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            ))
        }
    };
    let invoke_mode = match field(&obj, "InvokeMode", "InvokeMode") {
        None => None,
        Some(Value::String(s)) if s == "BUFFERED" => Some(InvokeMode::Buffered),
        Some(Value::String(s)) if s == "RESPONSE_STREAM" => Some(InvokeMode::ResponseStream),
        Some(v) => {
            return Err(constraint(
                v.as_str().unwrap_or(&v.to_string()),
                "invokeMode",
                "Member must satisfy enum value set: [BUFFERED, RESPONSE_STREAM]",
            ))
        }
    };
    let cors = match field(&obj, "Cors", "Cors") {
        None => None,
        Some(Value::Object(c)) => Some(parse_cors(c)?),
        Some(_) => return Err(ApiError::invalid_param("Cors must be an object")),
    };
    Ok(UrlInput {
        auth_type,
        cors,
        invoke_mode,
    })
}

fn parse_cors(c: &Map<String, Value>) -> Result<Cors, ApiError> {
    let max_age = opt_i64(c, "MaxAge", "MaxAge")?;
    let max_age_s = match max_age {
        None => None,
        Some(n) if (0..=i64::from(CORS_MAX_AGE_S_MAX)).contains(&n) => Some(n as u32),
        Some(n) => {
            return Err(constraint(
                &n.to_string(),
                "cors.maxAge",
                &format!("Member must have value between 0 and {CORS_MAX_AGE_S_MAX}"),
            ))
        }
    };
    let methods = bounded_list(
        c,
        "AllowMethods",
        "cors.allowMethods",
        CORS_METHODS_MAX,
        1,
        CORS_METHOD_CHARS_MAX,
    )?;
    if let Some(methods) = &methods {
        for m in methods {
            let token = m == "*" || m.bytes().all(|b| b.is_ascii_alphabetic());
            if !token {
                return Err(ApiError::invalid_param(format!(
                    "Invalid CORS method '{m}': AllowMethods takes HTTP method names or *"
                )));
            }
        }
    }
    Ok(Cors {
        allow_credentials: opt_bool(c, "AllowCredentials", "AllowCredentials")?,
        allow_headers: bounded_list(
            c,
            "AllowHeaders",
            "cors.allowHeaders",
            CORS_LIST_ITEMS_MAX,
            0,
            CORS_HEADER_CHARS_MAX,
        )?,
        allow_methods: methods,
        allow_origins: bounded_list(
            c,
            "AllowOrigins",
            "cors.allowOrigins",
            CORS_LIST_ITEMS_MAX,
            1,
            CORS_ORIGIN_CHARS_MAX,
        )?,
        expose_headers: bounded_list(
            c,
            "ExposeHeaders",
            "cors.exposeHeaders",
            CORS_LIST_ITEMS_MAX,
            0,
            CORS_HEADER_CHARS_MAX,
        )?,
        max_age_s,
    })
}

/// A list of strings with AWS's bounds on its length and on each item's.
fn bounded_list(
    c: &Map<String, Value>,
    key: &str,
    member: &str,
    items_max: usize,
    chars_min: usize,
    chars_max: usize,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = field(c, key, key) else {
        return Ok(None);
    };
    let items = v
        .as_array()
        .ok_or_else(|| ApiError::invalid_param(format!("Cors.{key} must be a list")))?;
    if items.len() > items_max {
        return Err(constraint(
            &v.to_string(),
            member,
            &format!("Member must have length less than or equal to {items_max}"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = item
            .as_str()
            .ok_or_else(|| ApiError::invalid_param(format!("Cors.{key} must hold strings")))?;
        let n = s.chars().count();
        if n < chars_min || n > chars_max {
            return Err(constraint(
                s,
                &format!("{member}.member"),
                &format!("Member must have length between {chars_min} and {chars_max}"),
            ));
        }
        out.push(s.to_string());
    }
    Ok(Some(out))
}

/// AWS's FunctionUrlConfig (Get's and List's shape; Create drops LastModifiedTime).
fn render(call: &Call, name: &str, qualifier: &str, c: &UrlConfig) -> Value {
    let arn = call.ctx.function_arn(name);
    let arn = if qualifier == LATEST {
        arn
    } else {
        format!("{arn}:{qualifier}")
    };
    let port = call
        .ctx
        .host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let mut v = json!({
        "FunctionUrl": function_url(&c.url_id, &call.ctx.region, port),
        "FunctionArn": arn,
        "AuthType": c.auth_type.name(),
        "CreationTime": c.creation_time,
        "LastModifiedTime": c.last_modified_time,
        "InvokeMode": c.invoke_mode.name(),
    });
    if let Some(cors) = &c.cors {
        v["Cors"] = render_cors(cors);
    }
    v
}

fn render_cors(c: &Cors) -> Value {
    let mut v = json!({});
    if let Some(b) = c.allow_credentials {
        v["AllowCredentials"] = json!(b);
    }
    if let Some(l) = &c.allow_headers {
        v["AllowHeaders"] = json!(l);
    }
    if let Some(l) = &c.allow_methods {
        v["AllowMethods"] = json!(l);
    }
    if let Some(l) = &c.allow_origins {
        v["AllowOrigins"] = json!(l);
    }
    if let Some(l) = &c.expose_headers {
        v["ExposeHeaders"] = json!(l);
    }
    if let Some(n) = c.max_age_s {
        v["MaxAge"] = json!(n);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::ErrorKind;

    #[test]
    fn bodies_are_validated_as_aws_does() {
        let ok = parse(br#"{"AuthType":"NONE","InvokeMode":"RESPONSE_STREAM","Cors":{"AllowOrigins":["*"],"AllowMethods":["GET","POST"],"MaxAge":60,"AllowCredentials":true}}"#).unwrap();
        assert_eq!(ok.auth_type, Some(UrlAuth::None));
        assert_eq!(ok.invoke_mode, Some(InvokeMode::ResponseStream));
        let cors = ok.cors.unwrap();
        assert_eq!(cors.max_age_s, Some(60));
        assert_eq!(cors.allow_credentials, Some(true));
        for bad in [
            &br#"{"AuthType":"OPEN"}"#[..],
            br#"{"AuthType":"NONE","InvokeMode":"STREAM"}"#,
            br#"{"AuthType":"NONE","Cors":{"MaxAge":86401}}"#,
            br#"{"AuthType":"NONE","Cors":{"AllowMethods":["OPTIONS"]}}"#,
            br#"{"AuthType":"NONE","Cors":{"AllowMethods":["GET","PUT","POST","HEAD","PATCH","DELETE","*"]}}"#,
            br#"{"AuthType":"NONE","Cors":{"AllowOrigins":[""]}}"#,
            br#"{"AuthType":"NONE","Cors":"*"}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::InvalidParameterValue,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
