//! The function store on disk: `functions/NAME/config.json` (a `StoredFunction`: `$LATEST`, its
//! published versions, aliases, tags, policy, event invoke configs and function URLs) next to the code dirs it
//! names (`code-REV/` with `code-REV.zip`, the original upload).
//!
//! Control-plane thread only. Every write is atomic (temp file, fsync, rename, fsync dir); code is
//! unpacked and flushed before the config that names it is written, so a crash at any point
//! leaves the previous state, and `load_function_dir` removes what no config refers to.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::control::api::functions::{validate_handler, UpdateConfigInput};
use crate::control::api::input::{validate_name, LIST_ITEMS_DEFAULT, LIST_ITEMS_MAX};
use crate::control::code::{self, sync_filesystem, write_atomic};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{Function, FunctionConfig, RequestId};

pub(super) const CONFIG_FILE: &str = "config.json";
pub(super) const CODE_DIR_PREFIX: &str = "code-";
const TEMP_SUFFIX: &str = ".tmp";

/// config.json: everything about one function, written whole and atomically.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredFunction {
    /// `$LATEST`.
    pub config: FunctionConfig,
    /// Name of `$LATEST`'s code dir inside the function's dir (`code-REV`).
    pub code_dir: String,
    /// Published versions by number. Immutable once written.
    #[serde(default)]
    pub versions: BTreeMap<u32, StoredVersion>,
    /// The highest version number ever published (AWS never reuses a number).
    #[serde(default)]
    pub last_version: u32,
    #[serde(default)]
    pub aliases: BTreeMap<String, Alias>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Resource-based policy statements (AddPermission), in the order they were added.
    #[serde(default)]
    pub policy: Vec<PolicyStatement>,
    /// Its own revision, changed by AddPermission/RemovePermission (GetPolicy's RevisionId).
    #[serde(default)]
    pub policy_revision_id: String,
    /// Event invoke configs by qualifier (`$LATEST`, a version, an alias).
    #[serde(default)]
    pub event_invoke_configs: BTreeMap<String, EventInvokeConfig>,
    /// Function URL configs by qualifier (`$LATEST` or an alias).
    #[serde(default)]
    pub function_urls: BTreeMap<String, crate::model::urls::UrlConfig>,
}

impl StoredFunction {
    /// Every code dir this function references ($LATEST's and its versions').
    pub fn code_dirs(&self) -> BTreeSet<String> {
        let mut dirs: BTreeSet<String> =
            self.versions.values().map(|v| v.code_dir.clone()).collect();
        dirs.insert(self.code_dir.clone());
        dirs
    }
}

/// A published version: a frozen configuration and the code dir it runs (shared with `$LATEST`
/// or an earlier version while they have the same code: code dirs are never modified).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredVersion {
    pub config: FunctionConfig,
    pub code_dir: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alias {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// RoutingConfig.AdditionalVersionWeights (at most one entry, weight in 0..=1).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

/// One AddPermission statement: stored as AWS renders it, keyed by statement id and qualifier.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyStatement {
    pub sid: String,
    /// The qualifier the permission was added for (`None`: the unqualified function).
    pub qualifier: Option<String>,
    pub statement: serde_json::Value,
}

/// PutFunctionEventInvokeConfig's settings, published to the event queue as `EventSettings`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_s: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// Unix seconds (AWS renders LastModified as a timestamp number).
    pub last_modified_s: f64,
}

pub(super) fn store_error(path: &Path, e: io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "function store write failed");
    ApiError::service(format!("Could not store the function: {e}"))
}

/// Unpacks `zip` into `dir/code-REV/`, stores it as `dir/code-REV.zip`, and makes both durable.
/// On failure nothing of it is left behind.
pub(super) fn stage_code(dir: &Path, revision_id: &str, zip: &[u8]) -> Result<PathBuf, ApiError> {
    let code_dir = dir.join(format!("{CODE_DIR_PREFIX}{revision_id}"));
    let result = code::unpack_zip(zip, &code_dir)
        .map_err(ApiError::from)
        .and_then(|_| {
            let zip_path = zip_path_of(&code_dir);
            write_atomic(&zip_path, zip).map_err(|e| store_error(&zip_path, e))
        })
        .and_then(|()| sync_filesystem(&code_dir).map_err(|e| store_error(&code_dir, e)));
    match result {
        Ok(()) => Ok(code_dir),
        Err(e) => {
            remove_code(&code_dir);
            Err(e)
        }
    }
}

pub(super) fn zip_path_of(code_dir: &Path) -> PathBuf {
    let mut path = code_dir.as_os_str().to_owned();
    path.push(".zip");
    PathBuf::from(path)
}

pub(super) use crate::control::held::{remove_dir_and_zip as remove_code, remove_tree};

/// Cleans up a function dir that a failed create made, unless a config.json (a broken function
/// left for the operator to inspect) is in it: what is ours and not `held` (code that instances
/// of a deleted function of the same name still run) goes, then the dir if it is empty.
pub(super) fn remove_unconfigured(dir: &Path, held: &BTreeSet<String>) {
    if !dir.join(CONFIG_FILE).exists() {
        remove_leftovers(dir, held);
        let _ = fs::remove_dir(dir);
    }
}

pub(super) fn check_revision(f: &Function, expected: Option<&str>) -> Result<(), ApiError> {
    check_revision_id(&f.config.revision_id, expected)
}

/// `expected`, when given, must be `current` (AWS's optimistic locking with RevisionId).
pub(crate) fn check_revision_id(current: &str, expected: Option<&str>) -> Result<(), ApiError> {
    match expected {
        Some(r) if r != current => Err(ApiError::new(
            ErrorKind::PreconditionFailed,
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        )),
        _ => Ok(()),
    }
}

pub(super) fn merge_config(
    config: &mut FunctionConfig,
    input: UpdateConfigInput,
) -> Result<(), ApiError> {
    if let Some(h) = input.handler {
        validate_handler(&h)?;
        config.handler = h;
    }
    let fields = [
        (input.runtime, &mut config.runtime),
        (input.role, &mut config.role),
        (input.description, &mut config.description),
    ];
    for (value, slot) in fields {
        if let Some(v) = value {
            *slot = v;
        }
    }
    if let Some(t) = input.timeout_s {
        config.timeout_s = t;
    }
    if let Some(m) = input.memory_mb {
        config.memory_mb = m;
    }
    if let Some(layers) = input.layers {
        config.layers = layers;
    }
    if let Some(env) = input.environment {
        crate::control::api::functions::validate_environment(&env)?;
        config.environment = env;
    }
    if let Some(logging) = input.logging {
        crate::control::api::functions::apply_logging(&mut config.logging, logging)?;
    }
    Ok(())
}

pub(super) fn validate_max_items(max_items: Option<u32>) -> Result<u32, ApiError> {
    let n = max_items.unwrap_or(LIST_ITEMS_DEFAULT);
    let rule = match n {
        0 => "Member must have value greater than or equal to 1",
        n if n > LIST_ITEMS_MAX => "Member must have value less than or equal to 10000",
        n => return Ok(n),
    };
    Err(ApiError::invalid_param(format!(
        "1 validation error detected: Value '{n}' at 'maxItems' failed to satisfy constraint: {rule}"
    )))
}

/// The marker is the last name of the previous page, base64url so clients treat it as opaque.
pub(super) fn encode_marker(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

pub(super) fn decode_marker(marker: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid_param(format!("Invalid Marker: {marker}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .map_err(|_| invalid())?;
    let name = String::from_utf8(bytes).map_err(|_| invalid())?;
    validate_name(&name).map_err(|_| invalid())?;
    Ok(name)
}

pub(super) fn new_revision_id() -> String {
    RequestId::random().to_string()
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Reads one function dir; `None` (logged) when it cannot be used. Removes leftovers of
/// interrupted changes: a dir without config.json (an interrupted create), unreferenced code
/// dirs and zips, and temp files.
pub(super) fn load_function_dir(dir: &Path) -> Option<StoredFunction> {
    if !dir.is_dir() {
        tracing::warn!(path = %dir.display(), "ignoring a non-directory in the function store");
        return None;
    }
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        tracing::warn!(path = %dir.display(), "removing an incomplete function (no config.json)");
        remove_tree(dir);
        return None;
    }
    let stored = match read_stored(&config_path) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(path = %config_path.display(), error = %e, "skipping a broken function");
            return None;
        }
    };
    let dir_name = dir.file_name().and_then(|n| n.to_str());
    if dir_name != Some(stored.config.name.as_str()) || validate_name(&stored.config.name).is_err()
    {
        tracing::warn!(path = %dir.display(), "skipping a function whose name does not match its dir");
        return None;
    }
    let live = stored.code_dirs();
    if let Some(missing) = live
        .iter()
        .find(|d| !d.starts_with(CODE_DIR_PREFIX) || !dir.join(d).is_dir())
    {
        tracing::warn!(path = %dir.display(), code = missing, "skipping a function whose code is missing");
        return None;
    }
    remove_leftovers(dir, &live);
    Some(stored)
}

pub(super) fn read_stored(path: &Path) -> Result<StoredFunction, Box<dyn std::error::Error>> {
    let bytes = fs::read(path)?;
    Ok(serde_json::from_slice(&bytes)?)
}

pub(super) fn remove_leftovers(dir: &Path, live: &BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with(CODE_DIR_PREFIX) || name.ends_with(TEMP_SUFFIX);
        let referenced = live.contains(name.strip_suffix(".zip").unwrap_or(name));
        if ours && !referenced {
            tracing::info!(path = %entry.path().display(), "removing a leftover of an interrupted change");
            remove_tree(&entry.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time

/// The current time in AWS's LastModified format.
pub(crate) fn now_aws() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_aws_time(since_epoch.as_secs(), since_epoch.subsec_millis())
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+0000` (UTC).
pub(super) fn format_aws_time(unix_s: u64, millis: u32) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}+0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's civil_from_days: days since 1970-01-01 to (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
