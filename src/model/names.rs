//! Names of things as AWS spells and validates them: function references (a name,
//! `NAME:QUALIFIER`, partial and full ARNs), qualifiers, and AWS's validation-error wording.
//!
//! Pure functions, used by both planes: the data plane resolves Invoke's function reference
//! with them, the control plane every management call's.

use crate::model::error::ApiError;

/// Longest qualifier (version or alias name), AWS's limit.
pub const QUALIFIER_CHARS_MAX: usize = 128;

/// AWS's FunctionName pattern, quoted in its validation message.
pub const FUNCTION_NAME_PATTERN: &str = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?";

pub const FUNCTION_NAME_CHARS_MAX: usize = 64;

/// "1 validation error detected: Value 'v' at 'field' failed to satisfy constraint: ..."
pub fn constraint(value: &str, field: &str, rule: &str) -> ApiError {
    ApiError::invalid_param(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
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

pub fn pattern_error(value: &str) -> ApiError {
    constraint(
        value,
        "functionName",
        &format!("Member must satisfy regular expression pattern: {FUNCTION_NAME_PATTERN}"),
    )
}

/// A function reference as AWS accepts it: a name, `NAME:QUALIFIER`, a partial ARN
/// (`ACCOUNT:function:NAME[:QUALIFIER]`) or a full ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    /// `$LATEST`, a version number or an alias name, as written.
    pub qualifier: Option<String>,
}

/// A function reference in a URL path segment, percent-encoded or not.
pub fn function_ref_from_path(path_segment: &str) -> Result<FunctionRef, ApiError> {
    let decoded = percent_decode(path_segment).ok_or_else(|| pattern_error(path_segment))?;
    parse_function_ref(&decoded)
}

/// A function reference in text that is not percent-encoded (a JSON field).
pub fn parse_function_ref(reference: &str) -> Result<FunctionRef, ApiError> {
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
    if let Some(q) = qualifier {
        validate_qualifier(q)?;
    }
    Ok(FunctionRef {
        name: name.to_string(),
        qualifier: qualifier.map(str::to_string),
    })
}

/// A function name that must not carry a qualifier (operations on the function as a whole).
pub fn unqualified_name(path_segment: &str) -> Result<String, ApiError> {
    let r = function_ref_from_path(path_segment)?;
    match r.qualifier {
        None => Ok(r.name),
        Some(_) => Err(ApiError::invalid_param(format!(
            "Qualified function names are not supported for this operation: {path_segment}"
        ))),
    }
}

/// `$LATEST`, a version number, or an alias name: 1-128 of `[a-zA-Z0-9$_-]`.
pub fn validate_qualifier(q: &str) -> Result<(), ApiError> {
    let ok = !q.is_empty()
        && q.len() <= QUALIFIER_CHARS_MAX
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'$');
    if ok {
        Ok(())
    } else {
        Err(constraint(
            q,
            "qualifier",
            "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
        ))
    }
}

/// A percent-encoded path segment, decoded (`+` stays `+`); `None` on a malformed escape or a
/// non-UTF-8 result (see `protocols::percent`).
pub use crate::protocols::percent::decode_path_segment as percent_decode;
