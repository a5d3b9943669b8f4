//! The User API's management operations (everything but Invoke), served on the control-plane
//! thread: one module per resource family, each holding its operations' request parsing,
//! handler and AWS response shapes, and `route`, the one routing table.
//!
//! A core forwards the decoded request (`ControlMsg::Api`) and writes back the `ApiAnswer`
//! rendered here; Invoke never comes here. Families: `functions` (Create/Get/List/Update/Delete,
//! code signing), `versions` (PublishVersion, ListVersionsByFunction), `aliases`, `layers`,
//! `tags` (tags and the resource policy), `concurrency` (reserved concurrency, account settings),
//! `event_config` (event invoke configs), `urls` (function URL configs). `input` reads bodies
//! and function references.
//! Paths and shapes follow AWS Lambda's REST API (botocore's `lambda/2015-03-31` model).

pub mod aliases;
pub mod concurrency;
pub mod event_config;
pub mod functions;
pub mod input;
pub mod layers;
pub mod tags;
pub mod urls;
pub mod versions;

use crate::control::registry::Registry;
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{function_arn_in, region, Function, LayerRef};
use crate::model::ApiAnswer;
use crate::protocols::http::{Method, Request};
use input::{function_ref_from_path, FunctionRef};

/// Who is asking, as far as rendering goes: ARNs name the region the client signed for (its
/// SigV4 credential scope), else the server's default; URLs name the host it connected to.
pub struct Ctx {
    pub region: String,
    pub host: String,
}

impl Ctx {
    pub fn from_request(request: &Request, default_host: &str) -> Ctx {
        Ctx {
            region: signed_region(request).unwrap_or_else(|| region().to_string()),
            host: request
                .header_str("host")
                .filter(|h| !h.is_empty())
                .unwrap_or(default_host)
                .to_string(),
        }
    }

    /// The unqualified ARN of function `name`.
    pub fn function_arn(&self, name: &str) -> String {
        function_arn_in(&self.region, name)
    }

    /// `FunctionArn` as AWS renders a version's configuration: unqualified for `$LATEST`.
    pub fn version_arn(&self, f: &Function) -> String {
        let arn = self.function_arn(&f.config.name);
        if f.is_latest() {
            arn
        } else {
            format!("{arn}:{}", f.version)
        }
    }
}

/// The region of a SigV4 `Authorization` header (`Credential=AKID/DATE/REGION/lambda/...`).
fn signed_region(request: &Request) -> Option<String> {
    let auth = request.header_str("authorization")?;
    let credential = auth.split("Credential=").nth(1)?;
    let region = credential.split('/').nth(2)?;
    let valid = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| region.to_string())
}

/// One management call in progress: what it may change, and what it tells the data plane.
pub struct Call<'a> {
    pub registry: &'a mut Registry,
    pub request: &'a Request,
    pub ctx: Ctx,
    /// The server's concurrency limit (GetAccountSettings).
    pub concurrency_limit: u32,
    /// Pool keys (`Function::pool_key`) whose instances must take no new work after this call.
    pub retire: Vec<String>,
    /// Functions this call deleted: their logs are deleted after it.
    pub deleted: Vec<String>,
}

impl Call<'_> {
    /// A function reference from a path segment, with the `Qualifier` query parameter (which
    /// must agree with a qualifier in the reference, as AWS requires).
    pub fn function_ref(&self, segment: &str) -> Result<FunctionRef, ApiError> {
        let mut r = function_ref_from_path(segment)?;
        if let Some(q) = self.request.query_param("Qualifier") {
            input::validate_qualifier(&q)?;
            match &r.qualifier {
                Some(existing) if *existing != q => {
                    return Err(ApiError::invalid_param(
                        "The derived qualifier from the function name does not match the specified qualifier.",
                    ))
                }
                _ => r.qualifier = Some(q),
            }
        }
        Ok(r)
    }

    /// Layer version ARNs checked against the layer store, with their sizes.
    pub fn resolve_layers(&self, layers: Vec<LayerRef>) -> Result<Vec<LayerRef>, ApiError> {
        layers
            .into_iter()
            .map(|l| self.registry.layers.resolve(&l.arn))
            .collect()
    }
}

/// The one routing table of the management operations: `(method, path segments)` to handler.
pub fn route(call: &mut Call) -> Result<ApiAnswer, ApiError> {
    let path = call.request.path().to_string();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    use Method::{Delete, Get, Post, Put};
    match (call.request.method, segs.as_slice()) {
        (Post, ["2015-03-31", "functions"]) => functions::create(call),
        (Get, ["2015-03-31", "functions"]) => functions::list(call),
        (Get, ["2015-03-31", "functions", f]) => functions::get(call, f),
        (Delete, ["2015-03-31", "functions", f]) => functions::delete(call, f),
        (Get, ["2015-03-31", "functions", f, "configuration"]) => {
            functions::get_configuration(call, f)
        }
        (Put, ["2015-03-31", "functions", f, "configuration"]) => {
            functions::update_configuration(call, f)
        }
        (Put, ["2015-03-31", "functions", f, "code"]) => functions::update_code(call, f),
        (Get, ["2015-03-31", "functions", f, "code.zip"]) => functions::code_zip(call, f),
        (Get, ["2020-06-30", "functions", f, "code-signing-config"]) => {
            functions::code_signing_config(call, f)
        }
        (Post, ["2015-03-31", "functions", f, "versions"]) => versions::publish(call, f),
        (Get, ["2015-03-31", "functions", f, "versions"]) => versions::list(call, f),
        (Post, ["2015-03-31", "functions", f, "aliases"]) => aliases::create(call, f),
        (Get, ["2015-03-31", "functions", f, "aliases"]) => aliases::list(call, f),
        (Get, ["2015-03-31", "functions", f, "aliases", a]) => aliases::get(call, f, a),
        (Put, ["2015-03-31", "functions", f, "aliases", a]) => aliases::update(call, f, a),
        (Delete, ["2015-03-31", "functions", f, "aliases", a]) => aliases::delete(call, f, a),
        (Post, ["2015-03-31", "functions", f, "policy"]) => tags::add_permission(call, f),
        (Get, ["2015-03-31", "functions", f, "policy"]) => tags::get_policy(call, f),
        (Delete, ["2015-03-31", "functions", f, "policy", sid]) => {
            tags::remove_permission(call, f, sid)
        }
        (Post, ["2017-03-31", "tags", arn]) => tags::tag(call, arn),
        (Delete, ["2017-03-31", "tags", arn]) => tags::untag(call, arn),
        (Get, ["2017-03-31", "tags", arn]) => tags::list(call, arn),
        (Put, ["2017-10-31", "functions", f, "concurrency"]) => concurrency::put(call, f),
        (Delete, ["2017-10-31", "functions", f, "concurrency"]) => concurrency::delete(call, f),
        (Get, ["2019-09-30", "functions", f, "concurrency"]) => concurrency::get(call, f),
        (Get, ["2016-08-19", "account-settings"]) => concurrency::account_settings(call),
        (Put, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_config::put(call, f, false)
        }
        (Post, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_config::put(call, f, true)
        }
        (Get, ["2019-09-25", "functions", f, "event-invoke-config"]) => event_config::get(call, f),
        (Delete, ["2019-09-25", "functions", f, "event-invoke-config"]) => {
            event_config::delete(call, f)
        }
        (Get, ["2019-09-25", "functions", f, "event-invoke-config", "list"]) => {
            event_config::list(call, f)
        }
        (Post, ["2021-10-31", "functions", f, "url"]) => urls::create(call, f),
        (Get, ["2021-10-31", "functions", f, "url"]) => urls::get(call, f),
        (Put, ["2021-10-31", "functions", f, "url"]) => urls::update(call, f),
        (Delete, ["2021-10-31", "functions", f, "url"]) => urls::delete(call, f),
        (Get, ["2021-10-31", "functions", f, "urls"]) => urls::list(call, f),
        (Post, ["2018-10-31", "layers", l, "versions"]) => layers::publish(call, l),
        (Get, ["2018-10-31", "layers", l, "versions"]) => layers::list_versions(call, l),
        (Get, ["2018-10-31", "layers", l, "versions", n]) => layers::get(call, l, n),
        (Delete, ["2018-10-31", "layers", l, "versions", n]) => layers::delete(call, l, n),
        (Get, ["2018-10-31", "layers", l, "versions", n, "content.zip"]) => {
            layers::content_zip(call, l, n)
        }
        (Get, ["2018-10-31", "layers"]) => match call.request.query_param("find").as_deref() {
            Some("LayerVersion") => layers::get_by_arn(call),
            _ => layers::list(call),
        },
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!(
                "Unknown operation: {} {}",
                call.request.method_str(),
                call.request.path()
            ),
        )),
    }
}
