//! The User API's JSON model: parsing request bodies of the function-management operations and
//! rendering AWS's response shapes (FunctionConfiguration, GetFunction, ListFunctions).
//!
//! Accepts AWS REST-JSON as boto3/aws-cli send it (PascalCase) and the seed spec's snake_case
//! create body (`function_name`, `runtime`, `handler`, `code.zip_file`). Validation follows AWS's
//! constraints and words its messages like AWS ("1 validation error detected: ..."), so clients
//! written against Lambda see familiar errors. Control path only: serde_json, no zero-copy.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::input::*;
use super::{Call, Ctx};
use crate::model::error::ApiError;
use crate::model::logsink::{LogFormat, LoggingConfig, APPLICATION_LOG_LEVELS, SYSTEM_LOG_LEVELS};
use crate::model::types::{Function, LayerRef};
use crate::model::ApiAnswer;

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

/// AWS's limit on layers per function.
pub const LAYERS_MAX: usize = 5;
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
    /// Also publish version 1.
    pub publish: bool,
    /// CreateFunction never sets it; PutFunctionConcurrency does.
    pub reserved_concurrency: Option<u32>,
    /// Layer version ARNs as given (sizes are filled in when the layers are resolved).
    pub layers: Option<Vec<LayerRef>>,
    /// LoggingConfig, validated (`None`: Text to `/aws/lambda/NAME`).
    pub logging: Option<LoggingConfig>,
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
    /// `Some(empty)` removes every layer.
    pub layers: Option<Vec<LayerRef>>,
    /// The LoggingConfig fields given (each replaces the stored one).
    pub logging: Option<LoggingInput>,
    /// When set, the update applies only if it equals the function's current RevisionId.
    pub revision_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing

pub fn parse_create(body: &[u8]) -> Result<CreateFunctionInput, ApiError> {
    let obj = parse_object(body)?;
    let name = match opt_string(&obj, "FunctionName", "function_name")? {
        Some(n) => parse_function_ref(&n)?.name,
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
        layers: parse_layers(&obj)?,
        logging: parse_logging(&obj)?
            .map(|input| {
                let mut c = LoggingConfig::default();
                apply_logging(&mut c, input).map(|()| c)
            })
            .transpose()?,
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
        layers: parse_layers(&obj)?,
        logging: parse_logging(&obj)?,
        revision_id: opt_string(&obj, "RevisionId", "revision_id")?,
    })
}

/// The fields of a `LoggingConfig` object, each optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoggingInput {
    pub log_format: Option<LogFormat>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

/// Longest log group name AWS accepts.
const LOG_GROUP_NAME_LEN_MAX: usize = 512;

fn parse_logging(obj: &Map<String, Value>) -> Result<Option<LoggingInput>, ApiError> {
    let Some(v) = field(obj, "LoggingConfig", "logging_config") else {
        return Ok(None);
    };
    let o = v
        .as_object()
        .ok_or_else(|| ApiError::invalid_param("LoggingConfig must be an object"))?;
    let enum_value = |key: &str,
                      field: &str,
                      allowed: &[&str]|
     -> Result<Option<String>, ApiError> {
        match opt_string(o, key, key)? {
            Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{v}' at 'loggingConfig.{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ))),
            other => Ok(other),
        }
    };
    let log_format = enum_value("LogFormat", "logFormat", &["JSON", "Text"])?.map(|f| {
        if f == "JSON" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    });
    let log_group = opt_string(o, "LogGroup", "LogGroup")?;
    if let Some(g) = &log_group {
        let valid_chars = g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
        if g.is_empty() || g.len() > LOG_GROUP_NAME_LEN_MAX || !valid_chars {
            return Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{g}' at 'loggingConfig.logGroup' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
            )));
        }
    }
    Ok(Some(LoggingInput {
        log_format,
        application_log_level: enum_value(
            "ApplicationLogLevel",
            "applicationLogLevel",
            &APPLICATION_LOG_LEVELS,
        )?,
        system_log_level: enum_value("SystemLogLevel", "systemLogLevel", &SYSTEM_LOG_LEVELS)?,
        log_group,
    }))
}

/// Applies the given LoggingConfig fields. Levels exist only with the JSON format, as on AWS: a
/// level with Text is refused, and switching to Text drops the stored levels.
pub fn apply_logging(c: &mut LoggingConfig, input: LoggingInput) -> Result<(), ApiError> {
    if let Some(f) = input.log_format {
        c.log_format = f;
    }
    if let Some(g) = input.log_group {
        c.log_group = Some(g);
    }
    let levels_given = input.application_log_level.is_some() || input.system_log_level.is_some();
    if c.log_format == LogFormat::Text {
        if levels_given {
            return Err(ApiError::invalid_param(
                "ApplicationLogLevel and SystemLogLevel can be set only when LogFormat is JSON.",
            ));
        }
        c.application_log_level = None;
        c.system_log_level = None;
        return Ok(());
    }
    if let Some(l) = input.application_log_level {
        c.application_log_level = Some(l);
    }
    if let Some(l) = input.system_log_level {
        c.system_log_level = Some(l);
    }
    Ok(())
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

/// Code.ZipFile (or `zip_file`) decoded; S3 and image sources are refused.
pub fn zip_file(code: &Map<String, Value>) -> Result<Option<Vec<u8>>, ApiError> {
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

/// `Layers`: at most `LAYERS_MAX` layer version ARNs (resolved against the layer store later).
fn parse_layers(obj: &Map<String, Value>) -> Result<Option<Vec<LayerRef>>, ApiError> {
    let Some(arns) = opt_string_list(obj, "Layers")? else {
        return Ok(None);
    };
    if arns.len() > LAYERS_MAX {
        return Err(ApiError::invalid_param(format!(
            "1 validation error detected: Value '[{}]' at 'layers' failed to satisfy constraint: Member must have length less than or equal to {LAYERS_MAX}",
            arns.join(", ")
        )));
    }
    Ok(Some(
        arns.into_iter()
            .map(|arn| LayerRef { arn, code_size: 0 })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Validation

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

fn validated_timeout(v: Option<i64>) -> Result<Option<u32>, ApiError> {
    validated_range(v, "timeout", TIMEOUT_S_MIN, TIMEOUT_S_MAX)
}

fn validated_memory(v: Option<i64>) -> Result<Option<u32>, ApiError> {
    validated_range(v, "memorySize", MEMORY_MB_MIN, MEMORY_MB_MAX)
}

/// Variables the server sets for its own runtimes and bootstraps (`control::instance_env`): a
/// function's Environment cannot replace them, so an instance's token and the runtime's view of
/// its name and timeout stay the server's. Set by a function, they are ignored.
pub const SERVER_ENV_KEYS: &[&str] = &[
    "LAMBDA_INSTANCE_ID",
    "LAMBDA_RUNTIME_API_SOCKET",
    "LAMBDA_RUNTIME_NAME",
    "AWS_LAMBDA_FUNCTION_TIMEOUT",
];

/// Keys `[a-zA-Z][a-zA-Z0-9_]+` (AWS refuses one-letter keys too), none reserved, values without
/// NUL (no process environment can carry one), 4 KB in all.
pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if let Some(key) = vars.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
        return Err(ApiError::invalid_param(format!(
            "Lambda was unable to configure your environment variables because the value of {key} contains a NUL character."
        )));
    }
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
// Operations (control-plane thread; routed by `super::route`)

/// CreateFunction: 201 with the new function's (or, with `Publish`, version 1's) configuration.
pub fn create(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let obj = parse_object(&call.request.body)?;
    let tags = opt_string_map(&obj, "Tags")?.unwrap_or_default();
    let mut input = parse_create(&call.request.body)?;
    if let Some(layers) = input.layers.take() {
        input.layers = Some(call.resolve_layers(layers)?);
    }
    let f = call.registry.create(input, tags)?;
    Ok(ApiAnswer::json(201, &function_configuration(&f, &call.ctx)))
}

/// GetFunction: Configuration, Code (a download URL on this server), Tags, Concurrency.
pub fn get(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let r = call.function_ref(function)?;
    let f = call.registry.resolve(&r.name, r.qualifier.as_deref())?;
    let entry = call.registry.entry(&r.name)?;
    let mut location = format!(
        "http://{}/2015-03-31/functions/{}/code.zip",
        call.ctx.host, r.name
    );
    if !f.is_latest() {
        location.push_str(&format!("?Qualifier={}", f.version));
    }
    let mut v = json!({
        "Configuration": function_configuration(&f, &call.ctx),
        "Code": {"RepositoryType": "S3", "Location": location},
    });
    if !entry.stored.tags.is_empty() {
        v["Tags"] = json!(entry.stored.tags);
    }
    if let Some(n) = entry.latest.concurrency.reserved() {
        v["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    Ok(ApiAnswer::json(200, &v))
}

pub fn get_configuration(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let r = call.function_ref(function)?;
    let f = call.registry.resolve(&r.name, r.qualifier.as_deref())?;
    Ok(ApiAnswer::json(200, &function_configuration(&f, &call.ctx)))
}

/// ListFunctions (`$LATEST` of each; `FunctionVersion=ALL` adds every published version).
pub fn list(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let marker = call.request.query_param("Marker");
    let max_items = match call.request.query_param("MaxItems") {
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| ApiError::invalid_param(format!("Invalid MaxItems: {v}")))?,
        ),
        None => None,
    };
    let all_versions = match call.request.query_param("FunctionVersion").as_deref() {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to satisfy constraint: Member must satisfy enum value set: [ALL]"
            )))
        }
    };
    let (page, next) = call.registry.list(marker.as_deref(), max_items)?;
    let mut functions = Vec::new();
    for f in &page {
        functions.push(function_configuration(f, &call.ctx));
        if all_versions {
            for v in call.registry.list_versions(&f.config.name)?.iter().skip(1) {
                functions.push(function_configuration(v, &call.ctx));
            }
        }
    }
    let mut v = json!({ "Functions": functions });
    if let Some(marker) = next {
        v["NextMarker"] = json!(marker);
    }
    Ok(ApiAnswer::json(200, &v))
}

/// UpdateFunctionCode: `$LATEST`'s code (and, with `Publish`, a new version).
pub fn update_code(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let input = parse_update_code(&call.request.body)?;
    let f = call.registry.update_code(&name, input)?;
    call.retire.push(name);
    Ok(ApiAnswer::json(200, &function_configuration(&f, &call.ctx)))
}

pub fn update_configuration(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let mut input = parse_update_config(&call.request.body)?;
    if let Some(layers) = input.layers.take() {
        input.layers = Some(call.resolve_layers(layers)?);
    }
    let f = call.registry.update_config(&name, input)?;
    call.retire.push(name);
    Ok(ApiAnswer::json(200, &function_configuration(&f, &call.ctx)))
}

/// DeleteFunction: the whole function, or (with a version qualifier) one version.
pub fn delete(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let mut r = call.function_ref(function)?;
    if let Some(q) = call.request.query_param("Qualifier") {
        validate_qualifier(&q)?;
        r.qualifier = Some(q);
    }
    match r.qualifier.as_deref() {
        None => {
            let entry = call.registry.delete(&r.name)?;
            call.deleted.push(r.name.clone());
            call.retire.push(entry.latest.pool_key.clone());
            call.retire
                .extend(entry.versions.values().map(|f| f.pool_key.clone()));
        }
        Some(q) => {
            let removed = call.registry.delete_version(&r.name, q)?;
            call.retire.push(removed.pool_key.clone());
        }
    }
    Ok(ApiAnswer::empty(204))
}

/// The stored zip of a version (GetFunction's Code.Location points here).
pub fn code_zip(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let r = call.function_ref(function)?;
    let path = call
        .registry
        .zip_path(&r.name, r.qualifier.as_deref())
        .ok_or_else(|| ApiError::not_found_function(&r.name))?;
    let zip = std::fs::read(path).map_err(|e| ApiError::service(e.to_string()))?;
    let mut answer = ApiAnswer::empty(200).header("Content-Type", "application/zip");
    answer.body = zip.into();
    Ok(answer)
}

/// GetFunctionCodeSigningConfig: code signing is not supported, so every function answers as
/// one without a config.
pub fn code_signing_config(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    call.registry.entry(&name)?;
    Ok(ApiAnswer::json(
        200,
        &json!({"CodeSigningConfigArn": "", "FunctionName": name}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// AWS's FunctionConfiguration of one version.
pub fn function_configuration(f: &Function, ctx: &Ctx) -> Value {
    let c = &f.config;
    let mut v = json!({
        "FunctionName": c.name,
        "FunctionArn": ctx.version_arn(f),
        "Runtime": c.runtime,
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": c.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_mb,
        "LastModified": c.last_modified,
        "CodeSha256": c.code_sha256,
        "Version": f.version,
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": c.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "LoggingConfig": logging_configuration(&c.logging, &c.name),
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "RuntimeVersionConfig": {"RuntimeVersionArn": format!("arn:aws:lambda:{}::runtime:{}", ctx.region, c.runtime)},
    });
    if !c.environment.is_empty() {
        v["Environment"] = json!({ "Variables": c.environment });
    }
    if !c.layers.is_empty() {
        let layers: Vec<Value> = c
            .layers
            .iter()
            .map(|l| json!({"Arn": l.arn, "CodeSize": l.code_size}))
            .collect();
        v["Layers"] = json!(layers);
    }
    v
}

/// FunctionConfiguration.LoggingConfig: levels (AWS's defaults filled in) only with JSON.
pub fn logging_configuration(c: &LoggingConfig, function: &str) -> Value {
    let mut v = json!({"LogFormat": c.log_format.as_str(), "LogGroup": c.group_for(function)});
    if let (Some(app), Some(sys)) = (c.application_level(), c.system_level()) {
        v["ApplicationLogLevel"] = json!(app);
        v["SystemLogLevel"] = json!(sys);
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
    use crate::model::error::ErrorKind;
    use crate::model::types::{function_arn, FunctionConfig};

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
    fn parses_function_references() {
        let arn = function_arn("f");
        let r = |text: &str| function_ref_from_path(text).map(|r| (r.name, r.qualifier));
        let plain = |name: &str| Ok((name.to_string(), None));
        let with = |name: &str, q: &str| Ok((name.to_string(), Some(q.to_string())));
        assert_eq!(r("f"), plain("f"));
        assert_eq!(r(&arn), plain("f"));
        assert_eq!(r(&format!("{arn}:$LATEST")), with("f", "$LATEST"));
        assert_eq!(
            r("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-fn"),
            plain("my-fn")
        );
        assert_eq!(r("123456789012:function:f"), plain("f"));
        assert_eq!(r("f:%24LATEST"), with("f", "$LATEST"));
        assert_eq!(r(&format!("{arn}:prod")), with("f", "prod"));
        assert_eq!(r("123456789012:function:f:7"), with("f", "7"));
        for bad in [
            "",
            "a%2",
            "a%zz",
            "x:y:z",
            "arn:aws:s3:::b",
            "a%20b",
            "a:b:c:d:e",
            "f:a.b",
        ] {
            let e = function_ref_from_path(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameterValue, "{bad}");
        }
        assert!(unqualified_name("f:1").is_err());
        assert_eq!(unqualified_name("f").unwrap(), "f");
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
        Function::latest(
            FunctionConfig {
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
                layers: Vec::new(),
                logging: Default::default(),
            },
            "/tmp/x".into(),
            1,
        )
    }

    fn ctx(region: &str) -> Ctx {
        Ctx {
            region: region.into(),
            host: "127.0.0.1:9000".into(),
        }
    }

    #[test]
    fn nul_in_a_value_is_refused_and_server_variables_are_not_overridden() {
        let vars = BTreeMap::from([("GOOD".to_string(), "a\0b".to_string())]);
        let e = validate_environment(&vars).unwrap_err();
        assert_eq!(
            e.kind,
            crate::model::error::ErrorKind::InvalidParameterValue
        );
        assert!(e.message.contains("GOOD"), "{e:?}");

        let f = sample_function(
            &[
                ("LAMBDA_INSTANCE_ID", "forged"),
                ("LAMBDA_RUNTIME_NAME", "forged"),
                ("AWS_LAMBDA_FUNCTION_TIMEOUT", "999"),
                ("LAMBDA_USE_WEBSOCKET", "false"),
                ("MINE", "1"),
            ],
            None,
        );
        let addr = "127.10.0.1:9001".parse().unwrap();
        let env = crate::control::instance_env(
            &f,
            addr,
            crate::model::types::InstanceId(1),
            "token",
            true,
            7,
        );
        let get = |k: &str| {
            let found: Vec<&str> = env
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(found.len(), 1, "{k}: {found:?}");
            found[0].to_string()
        };
        assert_eq!(get("LAMBDA_INSTANCE_ID"), "token");
        assert_eq!(get("LAMBDA_RUNTIME_NAME"), "python3.12");
        assert_eq!(get("AWS_LAMBDA_FUNCTION_TIMEOUT"), "3");
        // Ours to offer: a function may choose its Runtime API transport.
        assert_eq!(get("LAMBDA_USE_WEBSOCKET"), "false");
        assert_eq!(get("MINE"), "1");
    }

    #[test]
    fn renders_function_configuration() {
        let v = function_configuration(&sample_function(&[], None), &ctx("us-east-1"));
        assert_eq!(v["FunctionName"], "f");
        assert_eq!(v["FunctionArn"], function_arn("f"));
        assert_eq!(v["Version"], "$LATEST");
        assert_eq!(v["CodeSize"], 22);
        assert_eq!(v["LoggingConfig"]["LogGroup"], "/aws/lambda/f");
        assert_eq!(v["Architectures"][0], "x86_64");
        assert!(v.get("Environment").is_none());
        assert!(v.get("StateReason").is_none());
        assert!(v.get("Layers").is_none());
        let v = function_configuration(&sample_function(&[("AB", "1")], None), &ctx("us-east-1"));
        assert_eq!(v["Environment"]["Variables"]["AB"], "1");
    }

    #[test]
    fn renders_versions_regions_layers_and_concurrency() {
        let mut f = sample_function(&[], Some(4));
        f.version = "3".into();
        f.config.layers = vec![LayerRef {
            arn: "arn:aws:lambda:eu-west-1:000000000000:layer:l:2".into(),
            code_size: 9,
        }];
        let v = function_configuration(&f, &ctx("eu-west-1"));
        assert_eq!(
            v["FunctionArn"],
            "arn:aws:lambda:eu-west-1:000000000000:function:f:3"
        );
        assert_eq!(v["Version"], "3");
        assert_eq!(v["Layers"][0]["CodeSize"], 9);
        assert_eq!(
            concurrency(Some(3)),
            json!({"ReservedConcurrentExecutions": 3})
        );
        assert_eq!(concurrency(None), json!({}));
    }
}
