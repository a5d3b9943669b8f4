//! Reserved concurrency (Put/Get/DeleteFunctionConcurrency; the 2017-10-31 and 2019-09-30
//! paths) and GetAccountSettings. Reserved concurrency is per function, shared by its versions.

use serde_json::json;

use super::functions::{concurrency, parse_put_concurrency};
use super::input::unqualified_name;
use super::Call;
use crate::control::code::{UNZIPPED_BYTES_MAX, ZIP_BYTES_MAX};
use crate::model::error::ApiError;
use crate::model::ApiAnswer;

/// AWS's account-wide code storage quota, reported by GetAccountSettings.
const TOTAL_CODE_BYTES_MAX: u64 = 80 * 1024 * 1024 * 1024;

pub fn put(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let n = parse_put_concurrency(&call.request.body)?;
    call.registry.put_concurrency(&name, n)?;
    Ok(ApiAnswer::json(200, &concurrency(Some(n))))
}

pub fn get(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    let n = call.registry.get(&name)?.concurrency.reserved();
    Ok(ApiAnswer::json(200, &concurrency(n)))
}

pub fn delete(call: &mut Call, function: &str) -> Result<ApiAnswer, ApiError> {
    let name = unqualified_name(function)?;
    call.registry.delete_concurrency(&name)?;
    Ok(ApiAnswer::empty(204))
}

pub fn account_settings(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let (count, total_code) = call.registry.usage();
    let limit = call.concurrency_limit;
    let body = json!({
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_BYTES_MAX,
            "CodeSizeUnzipped": UNZIPPED_BYTES_MAX,
            "CodeSizeZipped": ZIP_BYTES_MAX,
            "ConcurrentExecutions": limit,
            "UnreservedConcurrentExecutions": limit.saturating_sub(call.registry.reserved_total()),
        },
        "AccountUsage": { "TotalCodeSize": total_code, "FunctionCount": count },
    });
    Ok(ApiAnswer::json(200, &body))
}
