//! Published versions and aliases of a function (PublishVersion, ListVersionsByFunction,
//! DeleteFunction with a version qualifier, Create/Get/Update/Delete/ListAliases).
//!
//! A version is a frozen copy of `$LATEST`'s configuration that names `$LATEST`'s code dir at
//! the time (code dirs are immutable, so sharing one is safe). Numbers start at 1 and are never
//! reused. An alias names a version and may send a weighted share of invocations to one more.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::store::{check_revision_id, new_revision_id, Alias, StoredFunction, StoredVersion};
use super::{LatestChange, Registry};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{function_arn, Function, LATEST};

/// AWS's alias name rules: 1-128 of `[a-zA-Z0-9-_]`, not all digits.
pub const ALIAS_NAME_CHARS_MAX: usize = 128;
/// AWS's alias pattern, quoted in its validation message.
const ALIAS_NAME_PATTERN: &str = "(?!^[0-9]+$)([a-zA-Z0-9-_]+)";

/// Publishes `$LATEST` as the next version number; returns it.
pub(super) fn add_version(stored: &mut StoredFunction, description: Option<&str>) -> u32 {
    let n = stored.last_version + 1;
    stored.last_version = n;
    let mut config = stored.config.clone();
    if let Some(d) = description {
        config.description = d.to_string();
    }
    config.revision_id = new_revision_id();
    stored.versions.insert(
        n,
        StoredVersion {
            config,
            code_dir: stored.code_dir.clone(),
        },
    );
    n
}

/// As AWS: a publish with code and configuration unchanged since the newest version returns
/// that version instead of making a new one.
pub(super) fn publish_if_changed(stored: &mut StoredFunction, description: Option<&str>) -> u32 {
    if let Some((&n, newest)) = stored.versions.iter().next_back() {
        if same_function(&newest.config, &stored.config) {
            return n;
        }
    }
    add_version(stored, description)
}

/// Whether two configurations run the same code the same way (what a version freezes).
fn same_function(
    a: &crate::model::types::FunctionConfig,
    b: &crate::model::types::FunctionConfig,
) -> bool {
    a.code_sha256 == b.code_sha256
        && a.runtime == b.runtime
        && a.handler == b.handler
        && a.role == b.role
        && a.timeout_s == b.timeout_s
        && a.memory_mb == b.memory_mb
        && a.environment == b.environment
        && a.layers == b.layers
}

fn version_not_found(name: &str, q: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!("Function not found: {}:{q}", function_arn(name)),
    )
}

fn alias_not_found(name: &str, alias: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!("Alias not found: {}:{alias}", function_arn(name)),
    )
}

/// What CreateAlias/UpdateAlias ask for (`None`: unchanged, on update).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AliasInput {
    pub function_version: Option<String>,
    pub description: Option<String>,
    /// `Some(empty)` removes the routing config.
    pub weights: Option<BTreeMap<String, f64>>,
    pub revision_id: Option<String>,
}

impl Registry {
    /// PublishVersion: `code_sha256` and `revision_id`, when given, must match `$LATEST`.
    pub fn publish_version(
        &mut self,
        name: &str,
        code_sha256: Option<&str>,
        description: Option<&str>,
        revision_id: Option<&str>,
    ) -> Result<Arc<Function>, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        check_revision_id(&stored.config.revision_id, revision_id)?;
        if let Some(sha) = code_sha256 {
            if sha != stored.config.code_sha256 {
                return Err(ApiError::invalid_param(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
                    stored.config.code_sha256
                )));
            }
        }
        let n = publish_if_changed(&mut stored, description);
        self.save(name, stored, LatestChange::Keep)?;
        Ok(self.entries[name].versions[&n].clone())
    }

    /// `$LATEST` first, then the versions in order.
    pub fn list_versions(&self, name: &str) -> Result<Vec<Arc<Function>>, ApiError> {
        let entry = self.entry(name)?;
        let mut all = vec![entry.latest.clone()];
        all.extend(entry.versions.values().cloned());
        Ok(all)
    }

    /// DeleteFunction with a version qualifier: that version only. Refused while an alias
    /// routes to it, as AWS does.
    pub fn delete_version(
        &mut self,
        name: &str,
        qualifier: &str,
    ) -> Result<Arc<Function>, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if qualifier == LATEST {
            return Err(ApiError::invalid_param(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        let Some(n) = qualifier.parse::<u32>().ok() else {
            return Err(ApiError::invalid_param(format!(
                "Deletion of aliases is not supported: use DeleteAlias ({qualifier})"
            )));
        };
        if !stored.versions.contains_key(&n) {
            return Err(version_not_found(name, qualifier));
        }
        let users: Vec<&str> = stored
            .aliases
            .values()
            .filter(|a| a.function_version == qualifier || a.weights.contains_key(qualifier))
            .map(|a| a.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!(
                    "Unable to delete version because the following aliases reference it: [{}]",
                    users.join(", ")
                ),
            ));
        }
        let removed = self.entries[name].versions[&n].clone();
        stored.versions.remove(&n);
        stored.event_invoke_configs.remove(qualifier);
        stored
            .policy
            .retain(|s| s.qualifier.as_deref() != Some(qualifier));
        self.save(name, stored, LatestChange::Keep)?;
        Ok(removed)
    }

    pub fn create_alias(
        &mut self,
        name: &str,
        alias: &str,
        input: AliasInput,
    ) -> Result<Alias, ApiError> {
        validate_alias_name(alias)?;
        let mut stored = self.entry(name)?.stored.clone();
        if stored.aliases.contains_key(alias) {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!("Alias already exists: {}:{alias}", function_arn(name)),
            ));
        }
        let version = input.function_version.ok_or_else(|| {
            ApiError::invalid_param(
                "1 validation error detected: Value null at 'functionVersion' failed to satisfy constraint: Member must not be null",
            )
        })?;
        let made = Alias {
            name: alias.to_string(),
            function_version: version,
            description: input.description.unwrap_or_default(),
            weights: input.weights.unwrap_or_default(),
            revision_id: new_revision_id(),
        };
        validate_alias_target(name, &stored, &made)?;
        stored.aliases.insert(alias.to_string(), made.clone());
        self.save(name, stored, LatestChange::Keep)?;
        Ok(made)
    }

    pub fn get_alias(&self, name: &str, alias: &str) -> Result<Alias, ApiError> {
        self.entry(name)?
            .stored
            .aliases
            .get(alias)
            .cloned()
            .ok_or_else(|| alias_not_found(name, alias))
    }

    pub fn update_alias(
        &mut self,
        name: &str,
        alias: &str,
        input: AliasInput,
    ) -> Result<Alias, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        let mut updated = stored
            .aliases
            .get(alias)
            .cloned()
            .ok_or_else(|| alias_not_found(name, alias))?;
        check_revision_id(&updated.revision_id, input.revision_id.as_deref())?;
        if let Some(v) = input.function_version {
            updated.function_version = v;
        }
        if let Some(d) = input.description {
            updated.description = d;
        }
        if let Some(w) = input.weights {
            updated.weights = w;
        }
        updated.revision_id = new_revision_id();
        validate_alias_target(name, &stored, &updated)?;
        stored.aliases.insert(alias.to_string(), updated.clone());
        self.save(name, stored, LatestChange::Keep)?;
        Ok(updated)
    }

    /// DeleteAlias: also drops the alias's event invoke config and permissions.
    pub fn delete_alias(&mut self, name: &str, alias: &str) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if stored.aliases.remove(alias).is_none() {
            // AWS answers 204 for an alias that does not exist.
            return Ok(());
        }
        stored.event_invoke_configs.remove(alias);
        // AWS deletes an alias's function URL with the alias.
        stored.function_urls.remove(alias);
        stored
            .policy
            .retain(|s| s.qualifier.as_deref() != Some(alias));
        self.save(name, stored, LatestChange::Keep)
    }

    /// Aliases in name order, optionally only those routing to `version`.
    pub fn list_aliases(&self, name: &str, version: Option<&str>) -> Result<Vec<Alias>, ApiError> {
        Ok(self
            .entry(name)?
            .stored
            .aliases
            .values()
            .filter(|a| version.is_none_or(|v| a.function_version == v))
            .cloned()
            .collect())
    }
}

pub fn validate_alias_name(alias: &str) -> Result<(), ApiError> {
    let ok = !alias.is_empty()
        && alias.len() <= ALIAS_NAME_CHARS_MAX
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !alias.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Validation,
            format!(
                "1 validation error detected: Value '{alias}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: {ALIAS_NAME_PATTERN}"
            ),
        ))
    }
}

/// The alias's versions exist; routing weights name one other published version with a
/// weight in 0..=1, and never `$LATEST`.
fn validate_alias_target(
    name: &str,
    stored: &StoredFunction,
    alias: &Alias,
) -> Result<(), ApiError> {
    let exists = |v: &str| {
        v == LATEST
            || v.parse::<u32>()
                .is_ok_and(|n| stored.versions.contains_key(&n))
    };
    if !exists(&alias.function_version) {
        return Err(version_not_found(name, &alias.function_version));
    }
    if alias.weights.len() > 1 {
        return Err(ApiError::invalid_param(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (v, w) in &alias.weights {
        if !(0.0..=1.0).contains(w) || !w.is_finite() {
            return Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{w}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]"
            )));
        }
        if v == LATEST || alias.function_version == LATEST {
            return Err(ApiError::invalid_param(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        if *v == alias.function_version {
            return Err(ApiError::invalid_param(
                "Alias with weights can not point to the same version as the primary version",
            ));
        }
        if !exists(v) {
            return Err(version_not_found(name, v));
        }
    }
    Ok(())
}
