//! Layers (`/2018-10-31/layers...`): PublishLayerVersion, GetLayerVersion,
//! GetLayerVersionByArn, ListLayers, ListLayerVersions, DeleteLayerVersion. The store and the
//! merge into `/opt` are `control::layers`.

use serde_json::{json, Value};

use super::input::{field, opt_string, opt_string_list, page, parse_object, percent_decode};
use super::Call;
use crate::control::layers::{
    layer_arn, layer_name, parse_layer_version_arn, LayerInput, LayerVersion,
};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::ApiAnswer;

pub fn publish(call: &mut Call, layer: &str) -> Result<ApiAnswer, ApiError> {
    let name = layer_name(&decode(layer)?)?;
    let obj = parse_object(&call.request.body)?;
    let content = field(&obj, "Content", "Content")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null",
            )
        })?;
    let zip = super::functions::zip_file(content)?
        .ok_or_else(|| ApiError::invalid_param("Content.ZipFile is required"))?;
    let input = LayerInput {
        description: opt_string(&obj, "Description", "Description")?.unwrap_or_default(),
        zip,
        compatible_runtimes: opt_string_list(&obj, "CompatibleRuntimes")?.unwrap_or_default(),
        compatible_architectures: opt_string_list(&obj, "CompatibleArchitectures")?
            .unwrap_or_default(),
        license_info: opt_string(&obj, "LicenseInfo", "LicenseInfo")?,
    };
    let meta = call.registry.layers.publish(&name, input)?;
    Ok(ApiAnswer::json(201, &render_full(call, &meta)))
}

pub fn get(call: &mut Call, layer: &str, version: &str) -> Result<ApiAnswer, ApiError> {
    let name = layer_name(&decode(layer)?)?;
    let n = parse_version(version)?;
    let meta = call.registry.layers.get(&name, n)?.clone();
    Ok(ApiAnswer::json(200, &render_full(call, &meta)))
}

/// GetLayerVersionByArn: `GET /2018-10-31/layers?find=LayerVersion&Arn=ARN`.
pub fn get_by_arn(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let arn = call.request.query_param("Arn").unwrap_or_default();
    let (name, n) = parse_layer_version_arn(&arn).ok_or_else(|| {
        ApiError::invalid_param(format!(
            "1 validation error detected: Value '{arn}' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{{12}}:layer:[a-zA-Z0-9-_]+:[0-9]+"
        ))
    })?;
    let meta = call.registry.layers.get(&name, n)?.clone();
    Ok(ApiAnswer::json(200, &render_full(call, &meta)))
}

pub fn delete(call: &mut Call, layer: &str, version: &str) -> Result<ApiAnswer, ApiError> {
    let name = layer_name(&decode(layer)?)?;
    let n = parse_version(version)?;
    call.registry.layers.delete(&name, n)?;
    call.registry.collect_layers();
    Ok(ApiAnswer::empty(204))
}

/// The stored zip of a version (GetLayerVersion's Content.Location points here).
pub fn content_zip(call: &mut Call, layer: &str, version: &str) -> Result<ApiAnswer, ApiError> {
    let name = layer_name(&decode(layer)?)?;
    let path = call
        .registry
        .layers
        .zip_path(&name, parse_version(version)?)?;
    let zip = std::fs::read(path).map_err(|e| ApiError::service(e.to_string()))?;
    let mut answer = ApiAnswer::empty(200).header("Content-Type", "application/zip");
    answer.body = zip.into();
    Ok(answer)
}

/// ListLayerVersions: newest first, filtered by CompatibleRuntime/CompatibleArchitecture.
pub fn list_versions(call: &mut Call, layer: &str) -> Result<ApiAnswer, ApiError> {
    let name = layer_name(&decode(layer)?)?;
    let all: Vec<LayerVersion> = call
        .registry
        .layers
        .versions(&name)
        .into_iter()
        .filter(|m| compatible(call, m))
        .cloned()
        .collect();
    let marker = call.request.query_param("Marker");
    let max = call.request.query_param("MaxItems");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    let list: Vec<Value> = items.iter().map(|m| render_item(call, m)).collect();
    let mut v = json!({ "LayerVersions": list });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}

/// ListLayers: each layer with its newest matching version.
pub fn list(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let mut all = Vec::new();
    for name in call.registry.layers.names() {
        let newest = call
            .registry
            .layers
            .versions(name)
            .into_iter()
            .find(|m| compatible(call, m));
        if let Some(m) = newest {
            all.push(json!({
                "LayerName": name,
                "LayerArn": layer_arn(&call.ctx.region, name),
                "LatestMatchingVersion": render_item(call, m),
            }));
        }
    }
    let marker = call.request.query_param("Marker");
    let max = call.request.query_param("MaxItems");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    let mut v = json!({ "Layers": items });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}

fn decode(segment: &str) -> Result<String, ApiError> {
    percent_decode(segment)
        .ok_or_else(|| ApiError::invalid_param(format!("Invalid layer name: {segment}")))
}

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            ErrorKind::ResourceNotFound,
            "The resource you requested does not exist.",
        )
    })
}

fn compatible(call: &Call, m: &LayerVersion) -> bool {
    let runtime = call.request.query_param("CompatibleRuntime");
    let arch = call.request.query_param("CompatibleArchitecture");
    runtime.is_none_or(|r| m.compatible_runtimes.contains(&r))
        && arch.is_none_or(|a| m.compatible_architectures.contains(&a))
}

fn version_arn(call: &Call, m: &LayerVersion) -> String {
    format!("{}:{}", layer_arn(&call.ctx.region, &m.name), m.version)
}

/// LayerVersionsListItem.
fn render_item(call: &Call, m: &LayerVersion) -> Value {
    let mut v = json!({
        "LayerVersionArn": version_arn(call, m),
        "Version": m.version,
        "Description": m.description,
        "CreatedDate": m.created_date,
        "CompatibleRuntimes": m.compatible_runtimes,
        "CompatibleArchitectures": m.compatible_architectures,
    });
    if let Some(l) = &m.license_info {
        v["LicenseInfo"] = json!(l);
    }
    v
}

/// PublishLayerVersion / GetLayerVersion response.
fn render_full(call: &Call, m: &LayerVersion) -> Value {
    let mut v = render_item(call, m);
    v["LayerArn"] = json!(layer_arn(&call.ctx.region, &m.name));
    v["Content"] = json!({
        "Location": format!("http://{}/2018-10-31/layers/{}/versions/{}/content.zip", call.ctx.host, m.name, m.version),
        "CodeSha256": m.code_sha256,
        "CodeSize": m.code_size,
    });
    v
}
