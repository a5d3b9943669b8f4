//! Aliases (`/2015-03-31/functions/NAME/aliases[/ALIAS]`): Create, Get, Update, Delete, List,
//! with `RoutingConfig.AdditionalVersionWeights` (applied per invocation by the data plane's
//! `FunctionTable::resolve`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::input::{field, opt_string, page, parse_object, percent_decode, unqualified_name};
use super::Call;
use crate::control::registry::versions::AliasInput;
use crate::control::registry::Alias;
use crate::model::error::ApiError;
use crate::model::ApiAnswer;

pub fn create(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let obj = parse_object(&call.request.body)?;
    let alias = opt_string(&obj, "Name", "Name")?.unwrap_or_default();
    let input = alias_input(&obj)?;
    let made = call.registry.create_alias(&name, &alias, input)?;
    Ok(ApiAnswer::json(201, &render(call, &name, &made)))
}

pub fn get(call: &mut Call, function: &str, alias: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let alias = decode(alias)?;
    let a = call.registry.get_alias(&name, &alias)?;
    Ok(ApiAnswer::json(200, &render(call, &name, &a)))
}

pub fn update(call: &mut Call, function: &str, alias: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let alias = decode(alias)?;
    let obj = parse_object(&call.request.body)?;
    let a = call
        .registry
        .update_alias(&name, &alias, alias_input(&obj)?)?;
    Ok(ApiAnswer::json(200, &render(call, &name, &a)))
}

pub fn delete(call: &mut Call, function: &str, alias: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    call.registry.delete_alias(&name, &decode(alias)?)?;
    Ok(ApiAnswer::empty(204))
}

/// ListAliases, optionally only those of `FunctionVersion`; Marker/MaxItems paging.
pub fn list(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let version = call.request.query_param("FunctionVersion");
    let all = call.registry.list_aliases(&name, version.as_deref())?;
    let marker = call.request.query_param("Marker");
    let max = call.request.query_param("MaxItems");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    let aliases: Vec<Value> = items.iter().map(|a| render(call, &name, a)).collect();
    let mut v = json!({ "Aliases": aliases });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}

fn decode(alias: &str) -> Result<String, ApiError> {
    percent_decode(alias).ok_or_else(|| ApiError::invalid_param(format!("Invalid alias: {alias}")))
}

/// FunctionVersion, Description, RoutingConfig.AdditionalVersionWeights, RevisionId.
fn alias_input(obj: &Map<String, Value>) -> Result<AliasInput, ApiError> {
    let weights = match field(obj, "RoutingConfig", "RoutingConfig") {
        None => None,
        Some(rc) => {
            let rc = rc
                .as_object()
                .ok_or_else(|| ApiError::invalid_param("RoutingConfig must be an object"))?;
            let mut weights = BTreeMap::new();
            if let Some(w) = field(rc, "AdditionalVersionWeights", "AdditionalVersionWeights") {
                let w = w.as_object().ok_or_else(|| {
                    ApiError::invalid_param("AdditionalVersionWeights must be an object")
                })?;
                for (version, weight) in w {
                    let weight = weight.as_f64().ok_or_else(|| {
                        ApiError::invalid_param("AdditionalVersionWeights values must be numbers")
                    })?;
                    weights.insert(version.clone(), weight);
                }
            }
            Some(weights)
        }
    };
    Ok(AliasInput {
        function_version: opt_string(obj, "FunctionVersion", "FunctionVersion")?,
        description: opt_string(obj, "Description", "Description")?,
        weights,
        revision_id: opt_string(obj, "RevisionId", "RevisionId")?,
    })
}

/// AWS's AliasConfiguration.
fn render(call: &Call, function: &str, a: &Alias) -> Value {
    let mut v = json!({
        "AliasArn": format!("{}:{}", call.ctx.function_arn(function), a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.weights.is_empty() {
        v["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.weights });
    }
    v
}
