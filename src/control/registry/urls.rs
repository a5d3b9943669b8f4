//! Function URL configs (Create/Get/Update/Delete/ListFunctionUrlConfigs): at most one per
//! function and qualifier (`$LATEST` or an alias, as AWS allows), stored in the function's
//! config.json with the rest of it and published to the cores as `FunctionTable::urls`.
//!
//! Control-plane thread only. The URL id is drawn once, at creation, and never changes: it is
//! persisted, so the URL a client was given survives restarts; deleting the URL, its alias or
//! its function removes it (the function's whole config, and so the table entry, goes).

use std::time::{SystemTime, UNIX_EPOCH};

use super::store::civil_from_days;
use super::{LatestChange, Registry};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::names::constraint;
use crate::model::types::{function_arn, LATEST};
use crate::model::urls::{new_url_id, Cors, InvokeMode, UrlAuth, UrlConfig, UrlRoute};

/// What Create sets, or Update changes (`None`: unchanged on Update; on Create, `auth_type` is
/// required and the rest default to no CORS and `BUFFERED`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UrlInput {
    pub auth_type: Option<UrlAuth>,
    pub cors: Option<Cors>,
    pub invoke_mode: Option<InvokeMode>,
}

impl Registry {
    /// CreateFunctionUrlConfig: a new URL with a fresh id. One per function and qualifier.
    pub fn create_url(
        &mut self,
        name: &str,
        qualifier: &str,
        input: UrlInput,
    ) -> Result<UrlConfig, ApiError> {
        self.check_url_qualifier(name, qualifier)?;
        let mut stored = self.entry(name)?.stored.clone();
        if stored.function_urls.contains_key(qualifier) {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!(
                    "Failed to create function url config for [functionArn = {}]. Error message:  FunctionUrlConfig exists for this Lambda function",
                    qualified_arn(name, qualifier)
                ),
            ));
        }
        let auth_type = input
            .auth_type
            .ok_or_else(|| crate::control::api::input::null_error("authType"))?;
        let url_id = loop {
            // 36^32 ids: a clash is astronomically unlikely, and checked anyway.
            let id = new_url_id();
            if !self.table.load().urls.contains_key(&id) {
                break id;
            }
        };
        let now = now_iso();
        let config = UrlConfig {
            url_id,
            auth_type,
            cors: input.cors,
            invoke_mode: input.invoke_mode.unwrap_or_default(),
            creation_time: now.clone(),
            last_modified_time: now,
        };
        stored
            .function_urls
            .insert(qualifier.to_string(), config.clone());
        self.save(name, stored, LatestChange::Keep)?;
        Ok(config)
    }

    /// GetFunctionUrlConfig.
    pub fn url_config(&self, name: &str, qualifier: &str) -> Result<UrlConfig, ApiError> {
        self.entry(name)?
            .stored
            .function_urls
            .get(qualifier)
            .cloned()
            .ok_or_else(no_url)
    }

    /// UpdateFunctionUrlConfig: the fields given replace the stored ones (`Cors` whole).
    pub fn update_url(
        &mut self,
        name: &str,
        qualifier: &str,
        input: UrlInput,
    ) -> Result<UrlConfig, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        let config = stored.function_urls.get_mut(qualifier).ok_or_else(no_url)?;
        if let Some(auth) = input.auth_type {
            config.auth_type = auth;
        }
        if let Some(cors) = input.cors {
            config.cors = Some(cors);
        }
        if let Some(mode) = input.invoke_mode {
            config.invoke_mode = mode;
        }
        config.last_modified_time = now_iso();
        let config = config.clone();
        self.save(name, stored, LatestChange::Keep)?;
        Ok(config)
    }

    /// DeleteFunctionUrlConfig: the URL stops answering once this returns.
    pub fn delete_url(&mut self, name: &str, qualifier: &str) -> Result<(), ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        if stored.function_urls.remove(qualifier).is_none() {
            return Err(no_url());
        }
        self.save(name, stored, LatestChange::Keep)
    }

    /// Every URL config of the function, by qualifier.
    pub fn url_configs(&self, name: &str) -> Result<Vec<(String, UrlConfig)>, ApiError> {
        Ok(self
            .entry(name)?
            .stored
            .function_urls
            .iter()
            .map(|(q, c)| (q.clone(), c.clone()))
            .collect())
    }

    /// A URL may be attached to `$LATEST` or to an existing alias, never to a version number.
    pub fn check_url_qualifier(&self, name: &str, qualifier: &str) -> Result<(), ApiError> {
        let entry = self.entry(name)?;
        if qualifier == LATEST {
            return Ok(());
        }
        if qualifier.bytes().all(|b| b.is_ascii_digit()) || qualifier.contains('$') {
            return Err(constraint(
                qualifier,
                "qualifier",
                "Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)",
            ));
        }
        if !entry.stored.aliases.contains_key(qualifier) {
            return Err(ApiError::new(
                ErrorKind::ResourceNotFound,
                format!("Function not found: {}", qualified_arn(name, qualifier)),
            ));
        }
        Ok(())
    }
}

/// The table entry of one URL.
pub fn route(name: &str, qualifier: &str, c: &UrlConfig) -> UrlRoute {
    UrlRoute {
        function: name.to_string(),
        qualifier: qualifier.to_string(),
        auth_type: c.auth_type,
        cors: c.cors.clone(),
        invoke_mode: c.invoke_mode,
    }
}

fn qualified_arn(name: &str, qualifier: &str) -> String {
    if qualifier == LATEST {
        function_arn(name)
    } else {
        format!("{}:{qualifier}", function_arn(name))
    }
}

fn no_url() -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        "The resource you requested does not exist.",
    )
}

/// Now as AWS renders a function URL's CreationTime: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn now_iso() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = t.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::functions::{CreateFunctionInput, ROLE_DEFAULT};
    use crate::control::registry::Defaults;
    use std::collections::BTreeMap;

    fn input(name: &str) -> CreateFunctionInput {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("bootstrap", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"#!/bin/sh\n").unwrap();
        CreateFunctionInput {
            name: name.to_string(),
            runtime: "provided.al2023".to_string(),
            handler: "bootstrap".to_string(),
            role: ROLE_DEFAULT.to_string(),
            description: String::new(),
            timeout_s: None,
            memory_mb: None,
            environment: None,
            zip: w.finish().unwrap().into_inner(),
            publish: false,
            reserved_concurrency: None,
            layers: None,
            logging: None,
        }
    }

    #[test]
    fn urls_are_created_once_persisted_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path(), Defaults::default()).unwrap();
        reg.create(input("f"), BTreeMap::new()).unwrap();
        let make = || UrlInput {
            auth_type: Some(UrlAuth::None),
            ..UrlInput::default()
        };
        let url = reg.create_url("f", LATEST, make()).unwrap();
        assert!(crate::model::urls::is_url_id(&url.url_id));
        let e = reg.create_url("f", LATEST, make()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceConflict);
        let e = reg.create_url("f", "1", make()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        let e = reg.create_url("f", "live", make()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceNotFound);
        assert_eq!(reg.table().load().urls[&url.url_id].function, "f");
        drop(reg);

        let mut reg = Registry::open(dir.path(), Defaults::default()).unwrap();
        assert_eq!(reg.url_config("f", LATEST).unwrap(), url);
        let updated = reg
            .update_url(
                "f",
                LATEST,
                UrlInput {
                    invoke_mode: Some(InvokeMode::ResponseStream),
                    ..UrlInput::default()
                },
            )
            .unwrap();
        assert_eq!(updated.url_id, url.url_id);
        assert_eq!(updated.auth_type, UrlAuth::None);
        assert_eq!(updated.invoke_mode, InvokeMode::ResponseStream);
        reg.delete_url("f", LATEST).unwrap();
        assert!(reg.table().load().urls.is_empty());
        assert_eq!(
            reg.delete_url("f", LATEST).unwrap_err().kind,
            ErrorKind::ResourceNotFound
        );
        reg.create_url("f", LATEST, make()).unwrap();
        reg.delete("f").unwrap();
        assert!(reg.table().load().urls.is_empty());
    }
}
