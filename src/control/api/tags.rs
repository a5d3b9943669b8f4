//! Tags (`/2017-03-31/tags/ARN`: TagResource, UntagResource, ListTags) and the resource-based
//! policy (`/2015-03-31/functions/NAME/policy`: AddPermission, GetPolicy, RemovePermission).
//!
//! Both are stored and returned exactly as AWS shapes them; neither is enforced locally (the
//! README's "Decisions" says so).

use serde_json::{json, Map, Value};

use super::input::{
    opt_string, opt_string_map, parse_function_ref, parse_object, percent_decode, query_all,
    required_string, unqualified_name, validate_qualifier,
};
use super::Call;
use crate::control::registry::PolicyStatement;
use crate::model::error::ApiError;
use crate::model::ApiAnswer;

/// AWS's statement id rules: 1-100 of `[a-zA-Z0-9-_.]`.
pub const STATEMENT_ID_CHARS_MAX: usize = 100;

/// The function a tagging ARN names (tags belong to the function, not to versions).
fn tagged_function(arn: &str) -> Result<String, ApiError> {
    let text = percent_decode(arn)
        .ok_or_else(|| ApiError::invalid_param(format!("Invalid resource ARN: {arn}")))?;
    let r = parse_function_ref(&text)?;
    if r.qualifier.is_some() {
        return Err(ApiError::invalid_param(format!(
            "Tags are supported only on functions, not on versions or aliases: {text}"
        )));
    }
    Ok(r.name)
}

pub fn tag(call: &mut Call, arn: &str) -> Result<ApiAnswer, ApiError> {
    let name = tagged_function(arn)?;
    let obj = parse_object(&call.request.body)?;
    let tags = opt_string_map(&obj, "Tags")?.unwrap_or_default();
    call.registry.tag(&name, tags)?;
    Ok(ApiAnswer::empty(204))
}

/// UntagResource: `?tagKeys=a&tagKeys=b`.
pub fn untag(call: &mut Call, arn: &str) -> Result<ApiAnswer, ApiError> {
    let name = tagged_function(arn)?;
    let keys = query_all(call.request, "tagKeys");
    call.registry.untag(&name, &keys)?;
    Ok(ApiAnswer::empty(204))
}

pub fn list(call: &mut Call, arn: &str) -> Result<ApiAnswer, ApiError> {
    let name = tagged_function(arn)?;
    let tags = call.registry.tags(&name)?;
    Ok(ApiAnswer::json(200, &json!({ "Tags": tags })))
}

/// AddPermission: 201 with the statement as stored.
pub fn add_permission(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let qualifier = call.request.query_param("Qualifier");
    if let Some(q) = &qualifier {
        validate_qualifier(q)?;
        call.registry.resolve(&name, Some(q))?;
    }
    let obj = parse_object(&call.request.body)?;
    let sid = required_string(&obj, "StatementId", "statementId")?;
    validate_statement_id(&sid)?;
    let action = required_string(&obj, "Action", "action")?;
    let valid_action = action == "*"
        || action == "lambda:*"
        || action
            .strip_prefix("lambda:")
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic()));
    if !valid_action {
        return Err(ApiError::invalid_param(format!(
            "1 validation error detected: Value '{action}' at 'action' failed to satisfy constraint: Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])"
        )));
    }
    let principal = required_string(&obj, "Principal", "principal")?;
    let mut resource = call.ctx.function_arn(&name);
    if let Some(q) = &qualifier {
        resource = format!("{resource}:{q}");
    }
    let statement = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal_json(&principal),
        "Action": action,
        "Resource": resource,
    });
    let statement = with_conditions(statement, &obj)?;
    let revision = opt_string(&obj, "RevisionId", "RevisionId")?;
    call.registry.add_permission(
        &name,
        PolicyStatement {
            sid,
            qualifier,
            statement: statement.clone(),
        },
        revision.as_deref(),
    )?;
    Ok(ApiAnswer::json(
        201,
        &json!({ "Statement": statement.to_string() }),
    ))
}

pub fn get_policy(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let qualifier = call.request.query_param("Qualifier");
    let (policy, revision) = call.registry.policy(&name, qualifier.as_deref())?;
    Ok(ApiAnswer::json(
        200,
        &json!({ "Policy": policy, "RevisionId": revision }),
    ))
}

pub fn remove_permission(
    call: &mut Call,
    function: &str,
    sid: &str,
) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let sid = percent_decode(sid)
        .ok_or_else(|| ApiError::invalid_param(format!("Invalid statement id: {sid}")))?;
    let qualifier = call.request.query_param("Qualifier");
    let revision = call.request.query_param("RevisionId");
    call.registry
        .remove_permission(&name, &sid, qualifier.as_deref(), revision.as_deref())?;
    Ok(ApiAnswer::empty(204))
}

fn validate_statement_id(sid: &str) -> Result<(), ApiError> {
    let ok = !sid.is_empty()
        && sid.len() <= STATEMENT_ID_CHARS_MAX
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(format!(
            "1 validation error detected: Value '{sid}' at 'statementId' failed to satisfy constraint: Member must satisfy regular expression pattern: ([a-zA-Z0-9-_.]+)"
        )))
    }
}

/// A principal as IAM renders it in a policy: services, accounts (as their root ARN), `*`,
/// or an ARN.
fn principal_json(principal: &str) -> Value {
    if principal == "*" {
        json!("*")
    } else if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        json!({ "AWS": format!("arn:aws:iam::{principal}:root") })
    } else if principal.starts_with("arn:") {
        json!({ "AWS": principal })
    } else {
        json!({ "Service": principal })
    }
}

/// SourceArn, SourceAccount, PrincipalOrgID, EventSourceToken and FunctionUrlAuthType become
/// the statement's `Condition`, as AWS writes them.
fn with_conditions(mut statement: Value, obj: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut equals = Map::new();
    let mut arn_like = Map::new();
    if let Some(a) = opt_string(obj, "SourceAccount", "SourceAccount")? {
        equals.insert("AWS:SourceAccount".into(), json!(a));
    }
    if let Some(o) = opt_string(obj, "PrincipalOrgID", "PrincipalOrgID")? {
        equals.insert("aws:PrincipalOrgID".into(), json!(o));
    }
    if let Some(t) = opt_string(obj, "EventSourceToken", "EventSourceToken")? {
        equals.insert("lambda:EventSourceToken".into(), json!(t));
    }
    if let Some(t) = opt_string(obj, "FunctionUrlAuthType", "FunctionUrlAuthType")? {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{t}' at 'functionUrlAuthType' failed to satisfy constraint: Member must satisfy enum value set: [NONE, AWS_IAM]"
            )));
        }
        equals.insert("lambda:FunctionUrlAuthType".into(), json!(t));
    }
    if let Some(s) = opt_string(obj, "SourceArn", "SourceArn")? {
        arn_like.insert("AWS:SourceArn".into(), json!(s));
    }
    let mut condition = Map::new();
    if !equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(equals));
    }
    if !arn_like.is_empty() {
        condition.insert("ArnLike".into(), Value::Object(arn_like));
    }
    if !condition.is_empty() {
        statement["Condition"] = Value::Object(condition);
    }
    Ok(statement)
}
