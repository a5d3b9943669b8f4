//! PublishVersion and ListVersionsByFunction (`/2015-03-31/functions/NAME/versions`).

use serde_json::json;

use super::functions::function_configuration;
use super::input::{opt_string, page, parse_object_or_empty, unqualified_name};
use super::Call;
use crate::model::error::ApiError;
use crate::model::types::LATEST;
use crate::model::ApiAnswer;

/// PublishVersion: 201 with the version's configuration (an unchanged function returns its
/// newest version, as AWS does).
pub fn publish(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let obj = parse_object_or_empty(&call.request.body)?;
    let sha = opt_string(&obj, "CodeSha256", "CodeSha256")?;
    let description = opt_string(&obj, "Description", "Description")?;
    let revision = opt_string(&obj, "RevisionId", "RevisionId")?;
    let f = call.registry.publish_version(
        &name,
        sha.as_deref(),
        description.as_deref(),
        revision.as_deref(),
    )?;
    Ok(ApiAnswer::json(201, &function_configuration(&f, &call.ctx)))
}

/// ListVersionsByFunction: `$LATEST` first, then versions in order; Marker/MaxItems paging.
pub fn list(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let all = call.registry.list_versions(&name)?;
    let marker = call.request.query_param("Marker");
    let max = call.request.query_param("MaxItems");
    let (items, next) = page(&all, marker.as_deref(), max.as_deref())?;
    // Here AWS qualifies `$LATEST`'s ARN too (`...:function:NAME:$LATEST`).
    let versions: Vec<_> = items
        .iter()
        .map(|f| {
            let mut v = function_configuration(f, &call.ctx);
            if f.is_latest() {
                v["FunctionArn"] = json!(format!(
                    "{}:{LATEST}",
                    call.ctx.function_arn(&f.config.name)
                ));
            }
            v
        })
        .collect();
    let mut v = json!({ "Versions": versions });
    if let Some(m) = next {
        v["NextMarker"] = json!(m);
    }
    Ok(ApiAnswer::json(200, &v))
}
