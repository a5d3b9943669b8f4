//! The User API's JSON model: parsing request bodies of the function-management operations and
//! rendering AWS's response shapes (FunctionConfiguration, GetFunction, ListFunctions).
//!
//! Accepts AWS REST-JSON as boto3/aws-cli send it (PascalCase) and the seed spec's snake_case
//! create body (`function_name`, `runtime`, `handler`, `code.zip_file`). Validation follows AWS's
//! constraints and words its messages like AWS ("1 validation error detected: ..."), so clients
//! written against Lambda see familiar errors. Control path only: serde_json, no zero-copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ErrorKind};
use crate::types::{Function, LATEST};

/// Runtimes this server can run (AWS spellings).
pub const SUPPORTED_RUNTIMES: &[&str] = &[
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "python3.11",
    "python3.12",
    "python3.13",
    "provided",
    "provided.al2",
    "provided.al2023",
];
/// Other spellings accepted for a runtime; the seed spec's examples use `python311`.
const RUNTIME_ALIASES: &[(&str, &str)] = &[
    ("python311", "python3.11"),
    ("python312", "python3.12"),
    ("python313", "python3.13"),
];
/// Handler used for `provided*` runtimes when none is given (AWS's custom-runtime convention).
pub const PROVIDED_HANDLER_DEFAULT: &str = "bootstrap";
/// Role reported when the caller sends none (IAM is not enforced here).
pub const ROLE_DEFAULT: &str = "arn:aws:iam::000000000000:role/lambda-role";

pub const FUNCTION_NAME_CHARS_MAX: usize = 64;
pub const HANDLER_CHARS_MAX: usize = 128;
pub const DESCRIPTION_CHARS_MAX: usize = 256;
pub const ROLE_CHARS_MAX: usize = 2048;
pub const TIMEOUT_S_MIN: u32 = 1;
pub const TIMEOUT_S_MAX: u32 = 900;
pub const MEMORY_MB_MIN: u32 = 128;
pub const MEMORY_MB_MAX: u32 = 10240;
/// AWS's limit on the environment, measured as the JSON of the variables map.
pub const ENVIRONMENT_BYTES_MAX: usize = 4096;

/// Keys Lambda sets itself and refuses in Environment.Variables (AWS's documented list).
pub const RESERVED_ENV_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// AWS's FunctionName pattern, quoted in its validation message.
const FUNCTION_NAME_PATTERN: &str = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?";

/// A validated CreateFunction request.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateFunctionInput {
    pub name: String,
    /// Normalised to AWS's spelling (`python311` becomes `python3.11`).
    pub runtime: String,
    /// Defaulted to `bootstrap` for `provided*` runtimes.
    pub handler: String,
    pub role: String,
    pub description: String,
    /// `None`: the registry's default.
    pub timeout_s: Option<u32>,
    pub memory_mb: Option<u32>,
    pub environment: Option<BTreeMap<String, String>>,
    /// The decoded zip (Code.ZipFile).
    pub zip: Vec<u8>,
    /// Accepted for compatibility; this server keeps only `$LATEST`.
    pub publish: bool,
    /// CreateFunction never sets it; PutFunctionConcurrency does.
    pub reserved_concurrency: Option<u32>,
}

/// A validated UpdateFunctionCode request.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateCodeInput {
    pub zip: Vec<u8>,
    pub publish: bool,
    /// When set, the update applies only if it equals the function's current RevisionId.
    pub revision_id: Option<String>,
}

/// A validated UpdateFunctionConfiguration request: `None` leaves a field unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateConfigInput {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout_s: Option<u32>,
    pub memory_mb: Option<u32>,
    /// `Some(empty)` clears the variables.
    pub environment: Option<BTreeMap<String, String>>,
    /// When set, the update applies only if it equals the function's current RevisionId.
    pub revision_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing

pub fn parse_create(body: &[u8]) -> Result<CreateFunctionInput, ApiError> {
    let obj = parse_object(body)?;
    let name = match opt_string(&obj, "FunctionName", "function_name")? {
        Some(n) => function_name_from_ref(&n)?,
        None => return Err(null_error("functionName")),
    };
    let runtime = match opt_string(&obj, "Runtime", "runtime")? {
        Some(r) => normalize_runtime(&r)?,
        None => return Err(null_error("runtime")),
    };
    let handler = opt_string(&obj, "Handler", "handler")?;
    let handler = resolve_handler(&runtime, handler.as_deref())?;
    let role = opt_string(&obj, "Role", "role")?;
    let description = opt_string(&obj, "Description", "description")?;
    let code = field(&obj, "Code", "code").ok_or_else(|| null_error("code"))?;
    let code = code
        .as_object()
        .ok_or_else(|| ApiError::invalid_param("Code must be an object"))?;
    refuse_package_type(&obj)?;
    Ok(CreateFunctionInput {
        name,
        runtime,
        handler,
        role: validated_role(role)?,
        description: validated_description(description)?.unwrap_or_default(),
        timeout_s: validated_timeout(opt_i64(&obj, "Timeout", "timeout")?)?,
        memory_mb: validated_memory(opt_i64(&obj, "MemorySize", "memory_size")?)?,
        environment: parse_environment(&obj)?,
        zip: zip_file(code)?.ok_or_else(|| null_error("code.zipFile"))?,
        publish: opt_bool(&obj, "Publish", "publish")?.unwrap_or(false),
        reserved_concurrency: None,
    })
}

pub fn parse_update_code(body: &[u8]) -> Result<UpdateCodeInput, ApiError> {
    let obj = parse_object(body)?;
    // UpdateFunctionCode sends ZipFile at the top level; a snake_case client may nest it.
    let zip = match zip_file(&obj)? {
        Some(zip) => zip,
        None => match field(&obj, "Code", "code").and_then(Value::as_object) {
            Some(code) => zip_file(code)?.ok_or_else(|| null_error("zipFile"))?,
            None => return Err(null_error("zipFile")),
        },
    };
    Ok(UpdateCodeInput {
        zip,
        publish: opt_bool(&obj, "Publish", "publish")?.unwrap_or(false),
        revision_id: opt_string(&obj, "RevisionId", "revision_id")?,
    })
}

pub fn parse_update_config(body: &[u8]) -> Result<UpdateConfigInput, ApiError> {
    let obj = parse_object(body)?;
    let runtime = opt_string(&obj, "Runtime", "runtime")?
        .map(|r| normalize_runtime(&r))
        .transpose()?;
    let handler = opt_string(&obj, "Handler", "handler")?;
    if let Some(h) = &handler {
        validate_handler(h)?;
    }
    let role = opt_string(&obj, "Role", "role")?;
    Ok(UpdateConfigInput {
        runtime,
        handler,
        role: role.map(|r| validated_role(Some(r))).transpose()?,
        description: validated_description(opt_string(&obj, "Description", "description")?)?,
        timeout_s: validated_timeout(opt_i64(&obj, "Timeout", "timeout")?)?,
        memory_mb: validated_memory(opt_i64(&obj, "MemorySize", "memory_size")?)?,
        environment: parse_environment(&obj)?,
        revision_id: opt_string(&obj, "RevisionId", "revision_id")?,
    })
}

/// PutFunctionConcurrency's `ReservedConcurrentExecutions` (>= 0).
pub fn parse_put_concurrency(body: &[u8]) -> Result<u32, ApiError> {
    let obj = parse_object(body)?;
    let n = opt_i64(
        &obj,
        "ReservedConcurrentExecutions",
        "reserved_concurrent_executions",
    )?;
    let field = "reservedConcurrentExecutions";
    validated_range(n, field, 0, u32::MAX)?.ok_or_else(|| null_error(field))
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
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
fn field<'a>(obj: &'a Map<String, Value>, pascal: &str, snake: &str) -> Option<&'a Value> {
    obj.get(pascal)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn opt_string(
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

fn opt_i64(obj: &Map<String, Value>, pascal: &str, snake: &str) -> Result<Option<i64>, ApiError> {
    match field(obj, pascal, snake) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid_param(format!("{pascal} must be an integer"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, pascal: &str, snake: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, pascal, snake) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_param(format!(
            "{pascal} must be a boolean"
        ))),
    }
}

/// Code.ZipFile (or `zip_file`) decoded; S3 and image sources are refused.
fn zip_file(code: &Map<String, Value>) -> Result<Option<Vec<u8>>, ApiError> {
    for key in [
        "S3Bucket",
        "S3Key",
        "S3ObjectVersion",
        "ImageUri",
        "s3_bucket",
        "image_uri",
    ] {
        if code.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_param(format!(
                "{key} is not supported by this server: upload the code as Code.ZipFile (base64)"
            )));
        }
    }
    match opt_string(code, "ZipFile", "zip_file")? {
        None => Ok(None),
        Some(b64) => decode_base64(&b64).map(Some),
    }
}

/// Standard base64, padding optional; whitespace is skipped (`base64` wraps lines at 76).
fn decode_base64(text: &str) -> Result<Vec<u8>, ApiError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    engine
        .decode(compact)
        .map_err(|e| ApiError::invalid_param(format!("Code.ZipFile is not valid base64: {e}")))
}

fn refuse_package_type(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match opt_string(obj, "PackageType", "package_type")? {
        Some(p) if p != "Zip" => Err(ApiError::invalid_param(format!(
            "PackageType {p} is not supported by this server: only Zip"
        ))),
        _ => Ok(()),
    }
}

fn parse_environment(
    obj: &Map<String, Value>,
) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(env) = field(obj, "Environment", "environment") else {
        return Ok(None);
    };
    let env = env
        .as_object()
        .ok_or_else(|| ApiError::invalid_param("Environment must be an object"))?;
    let mut out = BTreeMap::new();
    if let Some(vars) = field(env, "Variables", "variables") {
        let vars = vars
            .as_object()
            .ok_or_else(|| ApiError::invalid_param("Environment.Variables must be an object"))?;
        for (k, v) in vars {
            let v = v.as_str().ok_or_else(|| {
                ApiError::invalid_param(format!("Environment variable {k} must be a string"))
            })?;
            out.insert(k.clone(), v.to_string());
        }
    }
    validate_environment(&out)?;
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// Validation

/// "1 validation error detected: Value 'v' at 'field' failed to satisfy constraint: ..."
fn constraint(value: &str, field: &str, rule: &str) -> ApiError {
    ApiError::invalid_param(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

fn null_error(field: &str) -> ApiError {
    ApiError::invalid_param(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
    ))
}

/// 1-64 characters of `[A-Za-z0-9-_]`.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(constraint(
            name,
            "functionName",
            "Member must have length greater than or equal to 1",
        ));
    }
    if name.chars().count() > FUNCTION_NAME_CHARS_MAX {
        return Err(constraint(
            name,
            "functionName",
            "Member must have length less than or equal to 64",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(pattern_error(name));
    }
    Ok(())
}

fn pattern_error(value: &str) -> ApiError {
    constraint(
        value,
        "functionName",
        &format!("Member must satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}"),
    )
}

/// The function name in a URL path segment: a name, `NAME:QUALIFIER`, a partial ARN
/// (`ACCOUNT:function:NAME[:QUALIFIER]`) or a full ARN, percent-encoded or not. Only the
/// `$LATEST` qualifier exists here; any other is not found.
pub fn normalize_function_name(path_segment: &str) -> Result<String, ApiError> {
    let decoded = crate::protocols::percent::decode_path_segment(path_segment)
        .ok_or_else(|| pattern_error(path_segment))?;
    function_name_from_ref(&decoded)
}

/// As `normalize_function_name`, for text that is not percent-encoded (a JSON field).
fn function_name_from_ref(reference: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = reference.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        _ => return Err(pattern_error(reference)),
    };
    validate_name(name)?;
    match qualifier {
        None => Ok(name.to_string()),
        Some(q) if q == LATEST => Ok(name.to_string()),
        Some(q) => Err(ApiError::new(
            ErrorKind::ResourceNotFound,
            format!(
                "Function not found: {}:{q}",
                crate::types::function_arn(name)
            ),
        )),
    }
}

/// AWS's runtime spelling for `runtime`, or AWS's enum error.
pub fn normalize_runtime(runtime: &str) -> Result<String, ApiError> {
    if SUPPORTED_RUNTIMES.contains(&runtime) {
        return Ok(runtime.to_string());
    }
    if let Some((_, canonical)) = RUNTIME_ALIASES.iter().find(|(alias, _)| *alias == runtime) {
        return Ok((*canonical).to_string());
    }
    Err(constraint(
        runtime,
        "runtime",
        &format!(
            "Member must satisfy enum value set: [{}]",
            SUPPORTED_RUNTIMES.join(", ")
        ),
    ))
}

pub fn is_provided_runtime(runtime: &str) -> bool {
    runtime.starts_with("provided")
}

/// Non-empty, no whitespace, at most 128 characters.
pub fn validate_handler(handler: &str) -> Result<(), ApiError> {
    if handler.chars().count() > HANDLER_CHARS_MAX {
        return Err(constraint(
            handler,
            "handler",
            "Member must have length less than or equal to 128",
        ));
    }
    if handler.is_empty() || handler.chars().any(char::is_whitespace) {
        return Err(constraint(
            handler,
            "handler",
            r"Member must satisfy regular expression pattern: [^\s]+",
        ));
    }
    Ok(())
}

/// The handler to store: required for Node/Python, `bootstrap` by default for `provided*`.
pub fn resolve_handler(runtime: &str, handler: Option<&str>) -> Result<String, ApiError> {
    match handler {
        Some(h) => validate_handler(h).map(|()| h.to_string()),
        None if is_provided_runtime(runtime) => Ok(PROVIDED_HANDLER_DEFAULT.to_string()),
        None => Err(ApiError::invalid_param(format!(
            "Handler is required for runtime {runtime}"
        ))),
    }
}

fn validated_role(role: Option<String>) -> Result<String, ApiError> {
    match role {
        None => Ok(ROLE_DEFAULT.to_string()),
        Some(r) if r.chars().count() > ROLE_CHARS_MAX => Err(constraint(
            &r,
            "role",
            "Member must have length less than or equal to 2048",
        )),
        Some(r) => Ok(r),
    }
}

fn validated_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > DESCRIPTION_CHARS_MAX => Err(constraint(
            &d,
            "description",
            "Member must have length less than or equal to 256",
        )),
        d => Ok(d),
    }
}

fn validated_range(
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

fn validated_timeout(v: Option<i64>) -> Result<Option<u32>, ApiError> {
    validated_range(v, "timeout", TIMEOUT_S_MIN, TIMEOUT_S_MAX)
}

fn validated_memory(v: Option<i64>) -> Result<Option<u32>, ApiError> {
    validated_range(v, "memorySize", MEMORY_MB_MIN, MEMORY_MB_MAX)
}

/// Keys `[a-zA-Z][a-zA-Z0-9_]+` (AWS refuses one-letter keys too), none reserved, 4 KB in all.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if let Some(key) = vars.keys().find(|k| !is_env_key(k)) {
        return Err(ApiError::invalid_param(format!(
            "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+] (key '{key}')"
        )));
    }
    let reserved: Vec<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ENV_KEYS.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(ApiError::invalid_param(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    let measured = serde_json::to_string(vars).unwrap_or_default();
    if measured.len() > ENVIRONMENT_BYTES_MAX {
        return Err(ApiError::invalid_param(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(())
}

fn is_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && key.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// AWS's FunctionConfiguration.
pub fn function_configuration(f: &Function) -> Value {
    let c = &f.config;
    let mut v = json!({
        "FunctionName": c.name,
        "FunctionArn": f.arn,
        "Runtime": c.runtime,
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": c.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_mb,
        "LastModified": c.last_modified,
        "CodeSha256": c.code_sha256,
        "Version": LATEST,
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": c.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", c.name)},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    });
    if !c.environment.is_empty() {
        v["Environment"] = json!({ "Variables": c.environment });
    }
    v
}

/// GetFunction's response; `code_location` is where the stored zip can be downloaded.
pub fn get_function(f: &Function, code_location: &str) -> Value {
    let mut v = json!({
        "Configuration": function_configuration(f),
        "Code": {"RepositoryType": "S3", "Location": code_location},
    });
    if let Some(n) = f.config.reserved_concurrency {
        v["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    v
}

pub fn list_functions(fs: &[Arc<Function>], next_marker: Option<&str>) -> Value {
    let functions: Vec<Value> = fs.iter().map(|f| function_configuration(f)).collect();
    let mut v = json!({ "Functions": functions });
    if let Some(marker) = next_marker {
        v["NextMarker"] = json!(marker);
    }
    v
}

/// PutFunctionConcurrency / GetFunctionConcurrency response.
pub fn concurrency(n: Option<u32>) -> Value {
    match n {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{function_arn, FunctionConfig};

    const ZIP_B64: &str = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="; // an empty zip

    fn boto3_body() -> String {
        format!(
            r#"{{"FunctionName":"f","Runtime":"python3.12","Role":"arn:aws:iam::123456789012:role/x","Handler":"lambda_function.handler","Code":{{"ZipFile":"{ZIP_B64}"}},"Timeout":3,"MemorySize":128,"Publish":false,"Environment":{{"Variables":{{"AB":"1"}}}}}}"#
        )
    }

    #[test]
    fn parses_boto3_create_body() {
        let input = parse_create(boto3_body().as_bytes()).unwrap();
        assert_eq!(input.name, "f");
        assert_eq!(input.runtime, "python3.12");
        assert_eq!(input.role, "arn:aws:iam::123456789012:role/x");
        assert_eq!(input.handler, "lambda_function.handler");
        assert_eq!(input.timeout_s, Some(3));
        assert_eq!(input.memory_mb, Some(128));
        assert!(!input.publish);
        assert_eq!(input.environment.unwrap()["AB"], "1");
        assert_eq!(input.zip.len(), 22);
        assert_eq!(input.reserved_concurrency, None);
        assert_eq!(input.description, "");
    }

    #[test]
    fn parses_spec_snake_case_body() {
        let body = format!(
            r#"{{
       "function_name": "my-function",
       "runtime": "python311",
       "handler": "lambda_function.handler",
       "code": {{"zip_file": "{ZIP_B64}"}}
     }}"#
        );
        let input = parse_create(body.as_bytes()).unwrap();
        assert_eq!(input.name, "my-function");
        assert_eq!(input.runtime, "python3.11");
        assert_eq!(input.handler, "lambda_function.handler");
        assert_eq!(input.role, ROLE_DEFAULT);
        assert_eq!((input.timeout_s, input.memory_mb), (None, None));
        assert_eq!(input.environment, None);
    }

    #[test]
    fn parses_snake_case_optional_fields() {
        let body = format!(
            r#"{{"function_name":"g","runtime":"provided.al2023","code":{{"zip_file":"{ZIP_B64}"}},
            "timeout":30,"memory_size":256,"description":"d","role":"r",
            "environment":{{"variables":{{"KEY_1":"v"}}}}}}"#
        );
        let input = parse_create(body.as_bytes()).unwrap();
        assert_eq!(input.handler, "bootstrap");
        assert_eq!((input.timeout_s, input.memory_mb), (Some(30), Some(256)));
        assert_eq!(
            (input.description.as_str(), input.role.as_str()),
            ("d", "r")
        );
        assert_eq!(input.environment.unwrap()["KEY_1"], "v");
    }

    fn create_err(body: &str) -> ApiError {
        parse_create(body.as_bytes()).unwrap_err()
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(&boto3_body()).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v: Value = serde_json::from_str(&boto3_body()).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    fn assert_invalid(e: &ApiError, needle: &str) {
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue, "{e}");
        assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
    }

    #[test]
    fn invalid_json_is_invalid_request_content() {
        for body in ["{", "[1]", ""] {
            let e = create_err(body);
            assert_eq!(e.kind, ErrorKind::InvalidRequestContent);
            assert!(e
                .message
                .starts_with("Could not parse request body into json"));
        }
    }

    #[test]
    fn missing_and_wrong_fields() {
        assert_invalid(
            &create_err(&without("FunctionName")),
            "Value null at 'functionName'",
        );
        assert_invalid(&create_err(&without("Runtime")), "Value null at 'runtime'");
        assert_invalid(&create_err(&without("Code")), "Value null at 'code'");
        assert_invalid(&create_err(&without("Handler")), "Handler is required");
        assert_invalid(
            &create_err(&with("Code", "{}")),
            "Value null at 'code.zipFile'",
        );
        assert_invalid(
            &create_err(&with("Timeout", "\"3\"")),
            "Timeout must be an integer",
        );
        assert_invalid(
            &create_err(&with("FunctionName", "7")),
            "FunctionName must be a string",
        );
        assert_invalid(
            &create_err(&with("Publish", "1")),
            "Publish must be a boolean",
        );
    }

    #[test]
    fn invalid_values() {
        assert_invalid(
            &create_err(&with("FunctionName", "\"a b\"")),
            "regular expression pattern",
        );
        assert_invalid(
            &create_err(&with("FunctionName", &format!("\"{}\"", "a".repeat(65)))),
            "Member must have length less than or equal to 64",
        );
        assert_invalid(
            &create_err(&with("Runtime", "\"java8\"")),
            "Member must satisfy enum value set: [nodejs18.x,",
        );
        assert_invalid(&create_err(&with("Timeout", "0")), "Value '0' at 'timeout'");
        assert_invalid(
            &create_err(&with("Timeout", "901")),
            "less than or equal to 900",
        );
        assert_invalid(
            &create_err(&with("MemorySize", "64")),
            "Value '64' at 'memorySize'",
        );
        assert_invalid(
            &create_err(&with("MemorySize", "10241")),
            "less than or equal to 10240",
        );
        assert_invalid(
            &create_err(&with("Handler", &format!("\"{}\"", "h".repeat(129)))),
            "at 'handler'",
        );
        assert_invalid(&create_err(&with("Handler", "\"a b\"")), "at 'handler'");
        assert_invalid(
            &create_err(&with("Description", &format!("\"{}\"", "d".repeat(257)))),
            "at 'description'",
        );
        assert_invalid(&create_err(&with("PackageType", "\"Image\"")), "only Zip");
    }

    #[test]
    fn code_sources() {
        let e = create_err(&with("Code", r#"{"S3Bucket":"b","S3Key":"k"}"#));
        assert_invalid(&e, "Code.ZipFile");
        let e = create_err(&with("Code", r#"{"ImageUri":"x"}"#));
        assert_invalid(&e, "ImageUri is not supported");
        let e = create_err(&with("Code", r#"{"ZipFile":"not base64!"}"#));
        assert_invalid(&e, "not valid base64");
        // Line-wrapped output of `base64` without `tr -d '\n'` is accepted.
        let input = parse_create(
            with("Code", r#"{"ZipFile":"UEsFBgAAAAAAAAAA\nAAAAAAAAAAAAAA"}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(input.zip.len(), 22);
    }

    #[test]
    fn environment_rules() {
        let env = |vars: &str| with("Environment", &format!(r#"{{"Variables":{vars}}}"#));
        assert_invalid(&create_err(&env(r#"{"A":"1"}"#)), "[a-zA-Z]([a-zA-Z0-9_])+");
        assert_invalid(&create_err(&env(r#"{"1A":"1"}"#)), "Map keys must satisfy");
        assert_invalid(&create_err(&env(r#"{"A-B":"1"}"#)), "Map keys must satisfy");
        assert_invalid(&create_err(&env(r#"{"AB":1}"#)), "must be a string");
        let e = create_err(&env(r#"{"AWS_REGION":"x","LAMBDA_TASK_ROOT":"y"}"#));
        assert_invalid(
            &e,
            "Reserved keys used in this request: AWS_REGION, LAMBDA_TASK_ROOT",
        );
        let big = format!(r#"{{"BIG":"{}"}}"#, "x".repeat(4096));
        assert_invalid(&create_err(&env(&big)), "exceeded the 4KB limit");
        let ok = format!(r#"{{"BIG":"{}"}}"#, "x".repeat(4000));
        assert!(parse_create(env(&ok).as_bytes()).is_ok());
    }

    #[test]
    fn normalizes_function_names() {
        let arn = function_arn("f");
        assert_eq!(normalize_function_name("f").unwrap(), "f");
        assert_eq!(normalize_function_name(&arn).unwrap(), "f");
        assert_eq!(
            normalize_function_name(&format!("{arn}:$LATEST")).unwrap(),
            "f"
        );
        assert_eq!(
            normalize_function_name(
                "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-fn"
            )
            .unwrap(),
            "my-fn"
        );
        assert_eq!(
            normalize_function_name("123456789012:function:f").unwrap(),
            "f"
        );
        assert_eq!(normalize_function_name("f:%24LATEST").unwrap(), "f");
        let e = normalize_function_name(&format!("{arn}:prod")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceNotFound);
        for bad in [
            "",
            "a%2",
            "a%zz",
            "x:y:z",
            "arn:aws:s3:::b",
            "a%20b",
            "a:b:c:d:e",
        ] {
            let e = normalize_function_name(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameterValue, "{bad}");
        }
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("Ab-_9").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert_invalid(
            &validate_name(&"a".repeat(65)).unwrap_err(),
            "less than or equal to 64",
        );
        assert_invalid(
            &validate_name("").unwrap_err(),
            "greater than or equal to 1",
        );
        assert_invalid(
            &validate_name("a.b").unwrap_err(),
            "1 validation error detected: Value 'a.b' at 'functionName'",
        );
    }

    #[test]
    fn update_code_and_config_bodies() {
        let code =
            parse_update_code(format!(r#"{{"ZipFile":"{ZIP_B64}","Publish":true}}"#).as_bytes())
                .unwrap();
        assert_eq!((code.zip.len(), code.publish), (22, true));
        let code = parse_update_code(format!(r#"{{"zip_file":"{ZIP_B64}"}}"#).as_bytes()).unwrap();
        assert_eq!(code.zip.len(), 22);
        assert_invalid(
            &parse_update_code(b"{}").unwrap_err(),
            "Value null at 'zipFile'",
        );
        assert_invalid(
            &parse_update_code(br#"{"S3Bucket":"b"}"#).unwrap_err(),
            "not supported",
        );

        let cfg = parse_update_config(br#"{"Timeout":10,"Environment":{"Variables":{}},"Runtime":"python311","RevisionId":"r"}"#).unwrap();
        assert_eq!(cfg.timeout_s, Some(10));
        assert_eq!(cfg.runtime.as_deref(), Some("python3.11"));
        assert_eq!(cfg.environment, Some(BTreeMap::new()));
        assert_eq!(cfg.revision_id.as_deref(), Some("r"));
        assert_eq!(cfg.handler, None);
        assert_eq!(
            parse_update_config(b"{}").unwrap(),
            UpdateConfigInput::default()
        );
        assert_invalid(
            &parse_update_config(br#"{"MemorySize":1}"#).unwrap_err(),
            "memorySize",
        );
    }

    #[test]
    fn put_concurrency_body() {
        assert_eq!(
            parse_put_concurrency(br#"{"ReservedConcurrentExecutions":5}"#).unwrap(),
            5
        );
        assert_eq!(
            parse_put_concurrency(br#"{"ReservedConcurrentExecutions":0}"#).unwrap(),
            0
        );
        assert_invalid(
            &parse_put_concurrency(br#"{"ReservedConcurrentExecutions":-1}"#).unwrap_err(),
            "greater than or equal to 0",
        );
        assert_invalid(
            &parse_put_concurrency(b"{}").unwrap_err(),
            "Value null at 'reservedConcurrentExecutions'",
        );
        assert_invalid(
            &parse_put_concurrency(br#"{"ReservedConcurrentExecutions":"5"}"#).unwrap_err(),
            "integer",
        );
    }

    fn sample_function(env: &[(&str, &str)], reserved: Option<u32>) -> Function {
        Function {
            config: FunctionConfig {
                name: "f".into(),
                runtime: "python3.12".into(),
                handler: "h.handler".into(),
                role: ROLE_DEFAULT.into(),
                description: String::new(),
                timeout_s: 3,
                memory_mb: 128,
                environment: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                code_sha256: "abc=".into(),
                code_size: 22,
                last_modified: "2024-01-01T00:00:00.000+0000".into(),
                revision_id: "rev".into(),
                reserved_concurrency: reserved,
            },
            code_dir: "/tmp/x".into(),
            generation: 1,
            arn: function_arn("f"),
            counters: Default::default(),
        }
    }

    #[test]
    fn renders_function_configuration() {
        let v = function_configuration(&sample_function(&[], None));
        assert_eq!(v["FunctionName"], "f");
        assert_eq!(v["FunctionArn"], function_arn("f"));
        assert_eq!(v["Version"], "$LATEST");
        assert_eq!(v["CodeSize"], 22);
        assert_eq!(v["LoggingConfig"]["LogGroup"], "/aws/lambda/f");
        assert_eq!(v["Architectures"][0], "x86_64");
        assert!(v.get("Environment").is_none());
        assert!(v.get("StateReason").is_none());
        let v = function_configuration(&sample_function(&[("AB", "1")], None));
        assert_eq!(v["Environment"]["Variables"]["AB"], "1");
    }

    #[test]
    fn renders_get_list_and_concurrency() {
        let f = Arc::new(sample_function(&[], Some(4)));
        let v = get_function(&f, "http://127.0.0.1:9000/code/f.zip");
        assert_eq!(v["Code"]["Location"], "http://127.0.0.1:9000/code/f.zip");
        assert_eq!(v["Code"]["RepositoryType"], "S3");
        assert_eq!(v["Concurrency"]["ReservedConcurrentExecutions"], 4);
        assert_eq!(v["Configuration"]["FunctionName"], "f");
        let v = get_function(&sample_function(&[], None), "x");
        assert!(v.get("Concurrency").is_none());
        let v = list_functions(&[f.clone(), f], Some("m"));
        assert_eq!(v["Functions"].as_array().unwrap().len(), 2);
        assert_eq!(v["NextMarker"], "m");
        assert!(list_functions(&[], None).get("NextMarker").is_none());
        assert_eq!(
            concurrency(Some(3)),
            json!({"ReservedConcurrentExecutions": 3})
        );
        assert_eq!(concurrency(None), json!({}));
    }
}
