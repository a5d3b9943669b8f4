//! Metadata of a function that does not change what it runs: tags (TagResource, UntagResource,
//! ListTags), the resource-based policy (AddPermission, RemovePermission, GetPolicy) and event
//! invoke configs (Put/Update/Get/Delete/ListFunctionEventInvokeConfigs).
//!
//! Stored and returned as AWS does. Tags and policies are not enforced (see README,
//! "Decisions"); event invoke configs are published with the function table and honoured by the
//! asynchronous event queue (`events`). Changes persist atomically with the rest of the function (`Registry::save`).

use std::collections::BTreeMap;

use super::store::{new_revision_id, EventInvokeConfig, PolicyStatement};
use super::{LatestChange, Registry};
use crate::model::error::{ApiError, ErrorKind};

/// AWS's limits on tags per function, and on a tag's key and value.
pub const TAGS_MAX: usize = 50;
pub const TAG_KEY_CHARS_MAX: usize = 128;
pub const TAG_VALUE_CHARS_MAX: usize = 256;
/// AWS's limit on the size of a function's resource policy, in bytes of its JSON.
pub const POLICY_BYTES_MAX: usize = 20 * 1024;

impl Registry {
    pub fn tags(&self, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
        Ok(self.entry(name)?.stored.tags.clone())
    }

    pub fn tag(&mut self, name: &str, tags: BTreeMap<String, String>) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        stored.tags.extend(tags);
        validate_tags(&stored.tags)?;
        self.save(name, stored, LatestChange::Keep)
    }

    pub fn untag(&mut self, name: &str, keys: &[String]) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        for k in keys {
            stored.tags.remove(k);
        }
        self.save(name, stored, LatestChange::Keep)
    }

    /// Adds a statement; statement ids are unique per function and qualifier.
    pub fn add_permission(
        &mut self,
        name: &str,
        statement: PolicyStatement,
        revision_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if let Some(r) = revision_id {
            super::store::check_revision_id(&stored.policy_revision_id, Some(r))?;
        }
        if stored
            .policy
            .iter()
            .any(|s| s.sid == statement.sid && s.qualifier == statement.qualifier)
        {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!(
                    "The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.",
                    statement.sid
                ),
            ));
        }
        let qualifier = statement.qualifier.clone();
        stored.policy.push(statement);
        let size = policy_document(&stored.policy, qualifier.as_deref()).len();
        if size > POLICY_BYTES_MAX {
            return Err(ApiError::new(
                ErrorKind::PolicyLengthExceeded,
                format!(
                    "The final policy size ({size}) is bigger than the limit ({POLICY_BYTES_MAX})."
                ),
            ));
        }
        stored.policy_revision_id = new_revision_id();
        self.save(name, stored, LatestChange::Keep)
    }

    pub fn remove_permission(
        &mut self,
        name: &str,
        sid: &str,
        qualifier: Option<&str>,
        revision_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if let Some(r) = revision_id {
            super::store::check_revision_id(&stored.policy_revision_id, Some(r))?;
        }
        let before = stored.policy.len();
        stored
            .policy
            .retain(|s| !(s.sid == sid && s.qualifier.as_deref() == qualifier));
        if stored.policy.len() == before {
            return Err(ApiError::new(
                ErrorKind::ResourceNotFound,
                format!("Statement {sid} is not found in resource policy."),
            ));
        }
        stored.policy_revision_id = new_revision_id();
        self.save(name, stored, LatestChange::Keep)
    }

    /// The policy document (JSON text) of `qualifier`, and its revision id.
    pub fn policy(
        &self,
        name: &str,
        qualifier: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let stored = &self.entry(name)?.stored;
        if !stored
            .policy
            .iter()
            .any(|s| s.qualifier.as_deref() == qualifier)
        {
            return Err(ApiError::new(
                ErrorKind::ResourceNotFound,
                "The resource you requested does not exist.",
            ));
        }
        Ok((
            policy_document(&stored.policy, qualifier),
            stored.policy_revision_id.clone(),
        ))
    }

    /// PutFunctionEventInvokeConfig (`merge` false: replaces) or Update (`merge`: only the
    /// given fields change; the config must exist).
    pub fn put_event_invoke_config(
        &mut self,
        name: &str,
        qualifier: &str,
        input: EventInvokeConfig,
        merge: bool,
    ) -> Result<EventInvokeConfig, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        let config = match (merge, stored.event_invoke_configs.get(qualifier)) {
            (false, _) => input,
            (true, Some(old)) => EventInvokeConfig {
                maximum_retry_attempts: input.maximum_retry_attempts.or(old.maximum_retry_attempts),
                maximum_event_age_s: input.maximum_event_age_s.or(old.maximum_event_age_s),
                on_success: input.on_success.or_else(|| old.on_success.clone()),
                on_failure: input.on_failure.or_else(|| old.on_failure.clone()),
                last_modified_s: input.last_modified_s,
            },
            (true, None) => return Err(no_event_invoke_config(name, qualifier)),
        };
        stored
            .event_invoke_configs
            .insert(qualifier.to_string(), config.clone());
        self.save(name, stored, LatestChange::Keep)?;
        Ok(config)
    }

    pub fn event_invoke_config(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<EventInvokeConfig, ApiError> {
        self.entry(name)?
            .stored
            .event_invoke_configs
            .get(qualifier)
            .cloned()
            .ok_or_else(|| no_event_invoke_config(name, qualifier))
    }

    pub fn delete_event_invoke_config(
        &mut self,
        name: &str,
        qualifier: &str,
    ) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if stored.event_invoke_configs.remove(qualifier).is_none() {
            return Err(no_event_invoke_config(name, qualifier));
        }
        self.save(name, stored, LatestChange::Keep)
    }

    /// Every event invoke config of the function, by qualifier.
    pub fn event_invoke_configs(
        &self,
        name: &str,
    ) -> Result<Vec<(String, EventInvokeConfig)>, ApiError> {
        Ok(self
            .entry(name)?
            .stored
            .event_invoke_configs
            .iter()
            .map(|(q, c)| (q.clone(), c.clone()))
            .collect())
    }
}

/// AWS's tag rules: at most `TAGS_MAX`, keys of 1-128 characters not starting with `aws:`,
/// values of at most 256 characters.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > TAGS_MAX {
        return Err(ApiError::invalid_param(format!(
            "A function can have at most {TAGS_MAX} tags"
        )));
    }
    for (k, v) in tags {
        let key_ok = (1..=TAG_KEY_CHARS_MAX).contains(&k.chars().count())
            && !k.to_ascii_lowercase().starts_with("aws:");
        if !key_ok {
            return Err(ApiError::invalid_param(format!(
                "Tag key '{k}' must be 1-{TAG_KEY_CHARS_MAX} characters and not start with 'aws:'"
            )));
        }
        if v.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(ApiError::invalid_param(format!(
                "The value of tag '{k}' must be at most {TAG_VALUE_CHARS_MAX} characters"
            )));
        }
    }
    Ok(())
}

fn no_event_invoke_config(name: &str, qualifier: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!(
            "The function {}:{qualifier} doesn't have an EventInvokeConfig",
            crate::model::types::function_arn(name)
        ),
    )
}

/// AWS's policy document: `{"Version":"2012-10-17","Id":"default","Statement":[...]}`.
fn policy_document(policy: &[PolicyStatement], qualifier: Option<&str>) -> String {
    let statements: Vec<&serde_json::Value> = policy
        .iter()
        .filter(|s| s.qualifier.as_deref() == qualifier)
        .map(|s| &s.statement)
        .collect();
    serde_json::json!({"Version": "2012-10-17", "Id": "default", "Statement": statements})
        .to_string()
}
