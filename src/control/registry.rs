//! The function registry: the definitions and code of all functions, and their persistence.
//!
//! Owned by the control-plane thread (`&mut self`, no locks); the data plane reads the published
//! `FunctionTable` through an `ArcSwap`, stored before every mutating method returns.
//! On disk: `functions/NAME/config.json` names the live `code-REV/` dir (with `code-REV.zip`, the
//! original upload). A change unpacks new code into a new dir, flushes it, then replaces
//! config.json atomically, publishes, and only then removes the old code: a crash at any point
//! leaves the previous version intact, and `open` removes what no config.json refers to.
//! Implements DESIGN.md "Function definitions and code are persisted".

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::api_model::{
    validate_handler, validate_name, CreateFunctionInput, UpdateCodeInput, UpdateConfigInput,
};
use crate::control::code::{self, sha256_base64, sync_dir, sync_filesystem, write_atomic};
use crate::error::{ApiError, ErrorKind};
use crate::types::{function_arn, Function, FunctionConfig, FunctionCounters, RequestId};

/// What the data-plane cores look functions up in, by name.
pub type FunctionTable = HashMap<String, Arc<Function>>;

const CONFIG_FILE: &str = "config.json";
const CODE_DIR_PREFIX: &str = "code-";
const TEMP_SUFFIX: &str = ".tmp";
/// ListFunctions' MaxItems range and default (AWS's).
pub const LIST_ITEMS_MAX: u32 = 10_000;
pub const LIST_ITEMS_DEFAULT: u32 = 50;

/// Values used when CreateFunction leaves them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub timeout_s: u32,
    pub memory_mb: u32,
}

impl Default for Defaults {
    /// AWS's defaults: 3 seconds, 128 MB.
    fn default() -> Self {
        Defaults {
            timeout_s: 3,
            memory_mb: 128,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("function store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// config.json: the configuration and the code dir it runs.
#[derive(Serialize, Deserialize)]
struct StoredFunction {
    config: FunctionConfig,
    /// Name of the code dir inside the function's dir (`code-REV`).
    code_dir: String,
}

pub struct Registry {
    /// `data_dir/functions`, absolute.
    functions_dir: PathBuf,
    defaults: Defaults,
    functions: BTreeMap<String, Arc<Function>>,
    table: Arc<ArcSwap<FunctionTable>>,
    /// The next `Function::generation`.
    next_generation: u64,
}

impl Registry {
    /// Loads every persisted function from data_dir/functions/*/config.json, skipping (with a
    /// warning) broken ones and removing what a crash left behind.
    pub fn open(data_dir: &Path, defaults: Defaults) -> Result<Registry, RegistryError> {
        let functions_dir = std::path::absolute(data_dir.join("functions"));
        let functions_dir = functions_dir.map_err(|source| RegistryError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let io_err = |source| RegistryError::Io {
            path: functions_dir.clone(),
            source,
        };
        fs::create_dir_all(&functions_dir).map_err(io_err)?;
        let mut registry = Registry {
            functions_dir: functions_dir.clone(),
            defaults,
            functions: BTreeMap::new(),
            table: Arc::new(ArcSwap::from_pointee(FunctionTable::new())),
            next_generation: 1,
        };
        for entry in fs::read_dir(&functions_dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if let Some(stored) = load_function_dir(&path) {
                let code_dir = path.join(&stored.code_dir);
                let counters = Arc::new(FunctionCounters::default());
                let generation = registry.take_generation();
                registry.insert(stored.config, code_dir, counters, generation);
            }
        }
        registry.publish();
        Ok(registry)
    }

    /// The lock-free table the data-plane cores read on every invoke.
    pub fn table(&self) -> Arc<ArcSwap<FunctionTable>> {
        self.table.clone()
    }

    pub fn create(&mut self, input: CreateFunctionInput) -> Result<Arc<Function>, ApiError> {
        validate_name(&input.name)?;
        if self.functions.contains_key(&input.name) {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!("Function already exist: {}", input.name),
            ));
        }
        let dir = self.function_dir(&input.name);
        fs::create_dir_all(&dir).map_err(|e| store_error(&dir, e))?;
        self.create_in(&dir, input)
            .inspect_err(|_| remove_unconfigured(&dir))
    }

    fn create_in(
        &mut self,
        dir: &Path,
        input: CreateFunctionInput,
    ) -> Result<Arc<Function>, ApiError> {
        let revision_id = new_revision_id();
        let staged = stage_code(dir, &revision_id, &input.zip)?;
        let config = FunctionConfig {
            name: input.name,
            runtime: input.runtime,
            handler: input.handler,
            role: input.role,
            description: input.description,
            timeout_s: input.timeout_s.unwrap_or(self.defaults.timeout_s),
            memory_mb: input.memory_mb.unwrap_or(self.defaults.memory_mb),
            environment: input.environment.unwrap_or_default(),
            code_sha256: sha256_base64(&input.zip),
            code_size: input.zip.len() as u64,
            last_modified: now_aws(),
            revision_id,
            reserved_concurrency: input.reserved_concurrency,
        };
        let counters = Arc::new(FunctionCounters::default());
        let generation = self.take_generation();
        self.commit(config, &staged, counters, generation)
            .inspect_err(|_| remove_code(&staged))
    }

    pub fn update_code(
        &mut self,
        name: &str,
        input: UpdateCodeInput,
    ) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        check_revision(&old, input.revision_id.as_deref())?;
        let revision_id = new_revision_id();
        let staged = stage_code(&self.function_dir(name), &revision_id, &input.zip)?;
        let mut config = old.config.clone();
        config.code_sha256 = sha256_base64(&input.zip);
        config.code_size = input.zip.len() as u64;
        config.last_modified = now_aws();
        config.revision_id = revision_id;
        let generation = self.take_generation();
        let new = self
            .commit(config, &staged, old.counters.clone(), generation)
            .inspect_err(|_| remove_code(&staged))?;
        remove_code(&old.code_dir);
        Ok(new)
    }

    pub fn update_config(
        &mut self,
        name: &str,
        input: UpdateConfigInput,
    ) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        check_revision(&old, input.revision_id.as_deref())?;
        let mut config = old.config.clone();
        merge_config(&mut config, input)?;
        config.last_modified = now_aws();
        config.revision_id = new_revision_id();
        let generation = self.take_generation();
        self.commit(config, &old.code_dir, old.counters.clone(), generation)
    }

    /// Removes the function and its files. Instances still running it are the data plane's to
    /// retire; its counters die with the last reference.
    pub fn delete(&mut self, name: &str) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        let dir = self.function_dir(name);
        // config.json goes first and durably: once it is gone, a restart cannot resurrect the
        // function, and `open` removes whatever else remains of the dir.
        let config_path = dir.join(CONFIG_FILE);
        fs::remove_file(&config_path).map_err(|e| store_error(&config_path, e))?;
        if let Err(e) = sync_dir(&dir) {
            tracing::warn!(function = name, error = %e, "fsync after deleting config.json failed");
        }
        self.functions.remove(name);
        self.publish();
        remove_tree(&dir);
        Ok(old)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Function>, ApiError> {
        self.functions
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found_function(name))
    }

    /// One page of functions sorted by name, and the marker of the next page if there is one.
    pub fn list(
        &self,
        marker: Option<&str>,
        max_items: Option<u32>,
    ) -> Result<(Vec<Arc<Function>>, Option<String>), ApiError> {
        let max = validate_max_items(max_items)? as usize;
        let after = marker.map(decode_marker).transpose()?;
        let start = match &after {
            Some(name) => Bound::Excluded(name.as_str()),
            None => Bound::Unbounded,
        };
        let mut page: Vec<Arc<Function>> = self
            .functions
            .range::<str, _>((start, Bound::Unbounded))
            .take(max + 1)
            .map(|(_, f)| f.clone())
            .collect();
        let next = (page.len() > max).then(|| {
            page.truncate(max);
            encode_marker(&page[max - 1].config.name)
        });
        Ok((page, next))
    }

    /// Sets reserved concurrency. Instances are not affected, so the generation is kept: only
    /// code and configuration changes retire instances.
    pub fn put_concurrency(&mut self, name: &str, n: u32) -> Result<Arc<Function>, ApiError> {
        self.set_concurrency(name, Some(n))
    }

    pub fn delete_concurrency(&mut self, name: &str) -> Result<Arc<Function>, ApiError> {
        self.set_concurrency(name, None)
    }

    /// The stored original zip (served for GetFunction's Code.Location).
    pub fn zip_path(&self, name: &str) -> Option<PathBuf> {
        self.functions.get(name).map(|f| zip_path_of(&f.code_dir))
    }

    fn set_concurrency(&mut self, name: &str, n: Option<u32>) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        let mut config = old.config.clone();
        config.reserved_concurrency = n;
        self.commit(config, &old.code_dir, old.counters.clone(), old.generation)
    }

    fn function_dir(&self, name: &str) -> PathBuf {
        self.functions_dir.join(name)
    }

    fn take_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// Persists `config` (pointing at `code_dir`), then publishes the new `Function`.
    fn commit(
        &mut self,
        config: FunctionConfig,
        code_dir: &Path,
        counters: Arc<FunctionCounters>,
        generation: u64,
    ) -> Result<Arc<Function>, ApiError> {
        let dir = self.function_dir(&config.name);
        let code_dir_name = code_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ApiError::service("code directory has no UTF-8 name"))?;
        let stored = StoredFunction {
            config,
            code_dir: code_dir_name.to_string(),
        };
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| ApiError::service(format!("Could not encode the configuration: {e}")))?;
        let path = dir.join(CONFIG_FILE);
        write_atomic(&path, &json).map_err(|e| store_error(&path, e))?;
        let function = self.insert(stored.config, code_dir.to_path_buf(), counters, generation);
        self.publish();
        Ok(function)
    }

    fn insert(
        &mut self,
        config: FunctionConfig,
        code_dir: PathBuf,
        counters: Arc<FunctionCounters>,
        generation: u64,
    ) -> Arc<Function> {
        let function = Arc::new(Function {
            arn: function_arn(&config.name),
            config,
            code_dir,
            generation,
            counters,
        });
        self.functions
            .insert(function.config.name.clone(), function.clone());
        function
    }

    fn publish(&self) {
        let table: FunctionTable = self
            .functions
            .iter()
            .map(|(name, f)| (name.clone(), f.clone()))
            .collect();
        self.table.store(Arc::new(table));
    }
}

fn store_error(path: &Path, e: io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "function store write failed");
    ApiError::service(format!("Could not store the function: {e}"))
}

/// Unpacks `zip` into `dir/code-REV/`, stores it as `dir/code-REV.zip`, and makes both durable.
/// On failure nothing of it is left behind.
fn stage_code(dir: &Path, revision_id: &str, zip: &[u8]) -> Result<PathBuf, ApiError> {
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

fn zip_path_of(code_dir: &Path) -> PathBuf {
    let mut path = code_dir.as_os_str().to_owned();
    path.push(".zip");
    PathBuf::from(path)
}

/// Removes a code dir and its zip; a failure only leaks disk space until the next `open`.
fn remove_code(code_dir: &Path) {
    remove_tree(code_dir);
    remove_tree(&zip_path_of(code_dir));
}

fn remove_tree(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not remove");
    }
}

/// Removes a function dir that a failed create made, unless a config.json (a broken function
/// left for the operator to inspect) is in it.
fn remove_unconfigured(dir: &Path) {
    if !dir.join(CONFIG_FILE).exists() {
        remove_tree(dir);
    }
}

fn check_revision(f: &Function, expected: Option<&str>) -> Result<(), ApiError> {
    match expected {
        Some(r) if r != f.config.revision_id => Err(ApiError::new(
            ErrorKind::PreconditionFailed,
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        )),
        _ => Ok(()),
    }
}

fn merge_config(config: &mut FunctionConfig, input: UpdateConfigInput) -> Result<(), ApiError> {
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
    if let Some(env) = input.environment {
        crate::api_model::validate_environment(&env)?;
        config.environment = env;
    }
    Ok(())
}

fn validate_max_items(max_items: Option<u32>) -> Result<u32, ApiError> {
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
fn encode_marker(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_marker(marker: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid_param(format!("Invalid Marker: {marker}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .map_err(|_| invalid())?;
    let name = String::from_utf8(bytes).map_err(|_| invalid())?;
    validate_name(&name).map_err(|_| invalid())?;
    Ok(name)
}

fn new_revision_id() -> String {
    RequestId::random().to_string()
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Reads one function dir; `None` (logged) when it cannot be used. Removes leftovers of
/// interrupted changes: a dir without config.json (an interrupted create), unreferenced code
/// dirs and zips, and temp files.
fn load_function_dir(dir: &Path) -> Option<StoredFunction> {
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
    if !stored.code_dir.starts_with(CODE_DIR_PREFIX) || !dir.join(&stored.code_dir).is_dir() {
        tracing::warn!(path = %dir.display(), code = stored.code_dir, "skipping a function whose code is missing");
        return None;
    }
    remove_leftovers(dir, &stored.code_dir);
    Some(stored)
}

fn read_stored(path: &Path) -> Result<StoredFunction, Box<dyn std::error::Error>> {
    let bytes = fs::read(path)?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn remove_leftovers(dir: &Path, live_code_dir: &str) {
    let live_zip = format!("{live_code_dir}.zip");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with(CODE_DIR_PREFIX) || name.ends_with(TEMP_SUFFIX);
        if ours && name != live_code_dir && name != live_zip {
            tracing::info!(path = %entry.path().display(), "removing a leftover of an interrupted change");
            remove_tree(&entry.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time

/// The current time in AWS's LastModified format.
fn now_aws() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_aws_time(since_epoch.as_secs(), since_epoch.subsec_millis())
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+0000` (UTC).
fn format_aws_time(unix_s: u64, millis: u32) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_model::ROLE_DEFAULT;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    fn zip_with(file: &str, content: &[u8]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default().unix_permissions(0o755);
        w.start_file(file, opts).unwrap();
        w.write_all(content).unwrap();
        w.finish().unwrap().into_inner()
    }

    fn input(name: &str, content: &[u8]) -> CreateFunctionInput {
        CreateFunctionInput {
            name: name.to_string(),
            runtime: "provided.al2023".to_string(),
            handler: "bootstrap".to_string(),
            role: ROLE_DEFAULT.to_string(),
            description: String::new(),
            timeout_s: None,
            memory_mb: Some(256),
            environment: Some(BTreeMap::from([("KEY".to_string(), "v".to_string())])),
            zip: zip_with("bootstrap", content),
            publish: false,
            reserved_concurrency: None,
        }
    }

    fn open(dir: &Path) -> Registry {
        Registry::open(dir, Defaults::default()).unwrap()
    }

    #[test]
    fn create_get_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let f = reg.create(input("f", b"v1")).unwrap();
        assert_eq!(f.config.timeout_s, 3);
        assert_eq!(f.config.memory_mb, 256);
        assert_eq!(f.arn, function_arn("f"));
        assert!(f.code_dir.is_absolute());
        assert_eq!(fs::read(f.code_dir.join("bootstrap")).unwrap(), b"v1");
        let zip = input("f", b"v1").zip;
        assert_eq!(f.config.code_sha256, sha256_base64(&zip));
        assert_eq!(f.config.code_size, zip.len() as u64);
        assert_eq!(fs::read(reg.zip_path("f").unwrap()).unwrap(), zip);
        assert!(Arc::ptr_eq(&reg.get("f").unwrap(), &f));
        assert!(Arc::ptr_eq(&reg.table().load()["f"], &f));
        let e = reg.create(input("f", b"v2")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceConflict);
        assert_eq!(e.message, "Function already exist: f");
        assert_eq!(reg.get("g").unwrap_err().kind, ErrorKind::ResourceNotFound);
        assert!(reg.zip_path("g").is_none());
    }

    #[test]
    fn bad_zip_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let mut bad = input("f", b"");
        bad.zip = b"not a zip".to_vec();
        let e = reg.create(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        assert!(!dir.path().join("functions/f").exists());
        assert!(reg.table().load().is_empty());
        let e = reg.create(input("../x", b"")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn update_code_replaces_code_and_keeps_counters() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let v1 = reg.create(input("f", b"v1")).unwrap();
        let zip = zip_with("bootstrap", b"v2");
        let stale = UpdateCodeInput {
            zip: zip.clone(),
            publish: false,
            revision_id: Some("stale".into()),
        };
        assert_eq!(
            reg.update_code("f", stale).unwrap_err().kind,
            ErrorKind::PreconditionFailed
        );
        let update = UpdateCodeInput {
            zip,
            publish: false,
            revision_id: Some(v1.config.revision_id.clone()),
        };
        let v2 = reg.update_code("f", update).unwrap();
        assert!(v2.generation > v1.generation);
        assert_ne!(v2.config.revision_id, v1.config.revision_id);
        assert_ne!(v2.config.code_sha256, v1.config.code_sha256);
        assert!(Arc::ptr_eq(&v1.counters, &v2.counters));
        assert_eq!(fs::read(v2.code_dir.join("bootstrap")).unwrap(), b"v2");
        assert!(!v1.code_dir.exists());
        assert!(!zip_path_of(&v1.code_dir).exists());
        assert_eq!(reg.table().load()["f"].generation, v2.generation);
        let missing = UpdateCodeInput {
            zip: vec![],
            publish: false,
            revision_id: None,
        };
        let e = reg.update_code("nope", missing).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceNotFound);
    }

    #[test]
    fn update_config_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let v1 = reg.create(input("f", b"v1")).unwrap();
        let update = UpdateConfigInput {
            timeout_s: Some(60),
            environment: Some(BTreeMap::new()),
            description: Some("d".into()),
            handler: Some("h".into()),
            ..Default::default()
        };
        let v2 = reg.update_config("f", update).unwrap();
        assert_eq!(v2.config.timeout_s, 60);
        assert_eq!(v2.config.memory_mb, 256);
        assert_eq!(v2.config.description, "d");
        assert_eq!(v2.config.handler, "h");
        assert!(v2.config.environment.is_empty());
        assert_eq!(v2.code_dir, v1.code_dir);
        assert!(v2.generation > v1.generation);
        assert_ne!(v2.config.revision_id, v1.config.revision_id);
        let reserved = UpdateConfigInput {
            environment: Some(BTreeMap::from([("AWS_REGION".into(), "x".into())])),
            ..Default::default()
        };
        let e = reg.update_config("f", reserved).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
    }

    #[test]
    fn delete_removes_files_and_fresh_counters_after_recreate() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let v1 = reg.create(input("f", b"v1")).unwrap();
        let deleted = reg.delete("f").unwrap();
        assert!(Arc::ptr_eq(&deleted, &v1));
        assert!(!dir.path().join("functions/f").exists());
        assert!(reg.table().load().get("f").is_none());
        assert_eq!(
            reg.delete("f").unwrap_err().kind,
            ErrorKind::ResourceNotFound
        );
        let again = reg.create(input("f", b"v1")).unwrap();
        assert!(!Arc::ptr_eq(&again.counters, &v1.counters));
    }

    #[test]
    fn list_paginates() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        for name in ["c", "a", "e", "b", "d"] {
            reg.create(input(name, b"x")).unwrap();
        }
        let names = |fs: &[Arc<Function>]| -> Vec<String> {
            fs.iter().map(|f| f.config.name.clone()).collect()
        };
        let (page, next) = reg.list(None, Some(2)).unwrap();
        assert_eq!(names(&page), ["a", "b"]);
        let (page, next) = reg.list(next.as_deref(), Some(2)).unwrap();
        assert_eq!(names(&page), ["c", "d"]);
        let (page, next) = reg.list(next.as_deref(), Some(2)).unwrap();
        assert_eq!((names(&page), next), (vec!["e".to_string()], None));
        let (page, next) = reg.list(None, None).unwrap();
        assert_eq!((page.len(), next), (5, None));
        let (page, next) = reg.list(None, Some(5)).unwrap();
        assert_eq!((page.len(), next), (5, None));
        for bad in [Some(0), Some(10_001)] {
            let e = reg.list(None, bad).unwrap_err();
            assert!(e.message.contains("at 'maxItems'"), "{}", e.message);
        }
        for marker in ["!!!", "Li4vZXRj"] {
            let e = reg.list(Some(marker), None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        }
    }

    #[test]
    fn concurrency_is_set_cleared_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let v1 = reg.create(input("f", b"x")).unwrap();
        let v2 = reg.put_concurrency("f", 7).unwrap();
        assert_eq!(v2.config.reserved_concurrency, Some(7));
        assert_eq!(v2.generation, v1.generation);
        assert_eq!(reg.table().load()["f"].config.reserved_concurrency, Some(7));
        drop(reg);
        let mut reg = open(dir.path());
        assert_eq!(reg.get("f").unwrap().config.reserved_concurrency, Some(7));
        let v3 = reg.delete_concurrency("f").unwrap();
        assert_eq!(v3.config.reserved_concurrency, None);
        assert_eq!(
            reg.put_concurrency("g", 1).unwrap_err().kind,
            ErrorKind::ResourceNotFound
        );
    }

    #[test]
    fn survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        reg.create(input("f", b"v1")).unwrap();
        let update = UpdateCodeInput {
            zip: zip_with("bootstrap", b"v2"),
            publish: false,
            revision_id: None,
        };
        let before = reg.update_code("f", update).unwrap();
        drop(reg);
        let reg = open(dir.path());
        let after = reg.get("f").unwrap();
        assert_eq!(after.config, before.config);
        assert_eq!(after.code_dir, before.code_dir);
        assert_eq!(fs::read(after.code_dir.join("bootstrap")).unwrap(), b"v2");
        assert!(Arc::ptr_eq(&reg.table().load()["f"], &after));
    }

    #[test]
    fn open_cleans_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let f = reg.create(input("f", b"v1")).unwrap();
        drop(reg);
        let fdir = dir.path().join("functions/f");
        // An interrupted update: unpacked code and zip never referenced, a half-written config.
        fs::create_dir_all(fdir.join("code-half/sub")).unwrap();
        fs::write(fdir.join("code-half/sub/x"), b"partial").unwrap();
        fs::write(fdir.join("code-half.zip.tmp"), b"partial").unwrap();
        fs::write(fdir.join("config.json.tmp"), b"{\"config\":").unwrap();
        // An interrupted create: a dir without config.json.
        fs::create_dir_all(dir.path().join("functions/g/code-1")).unwrap();
        // A broken config is skipped, not deleted.
        fs::create_dir_all(dir.path().join("functions/h")).unwrap();
        fs::write(dir.path().join("functions/h/config.json"), b"garbage").unwrap();

        let reg = open(dir.path());
        let loaded = reg.get("f").unwrap();
        assert_eq!(loaded.config, f.config);
        assert_eq!(fs::read(loaded.code_dir.join("bootstrap")).unwrap(), b"v1");
        let mut left: Vec<String> = fs::read_dir(&fdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let code = f
            .code_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            left,
            [code.clone(), format!("{code}.zip"), CONFIG_FILE.to_string()]
        );
        assert!(!dir.path().join("functions/g").exists());
        assert!(dir.path().join("functions/h").exists());
        assert_eq!(reg.table().load().len(), 1);
    }

    #[test]
    fn formats_aws_time() {
        assert_eq!(format_aws_time(0, 0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            format_aws_time(1_709_210_096, 7),
            "2024-02-29T12:34:56.007+0000"
        );
        assert_eq!(
            format_aws_time(4_102_444_799, 999),
            "2099-12-31T23:59:59.999+0000"
        );
        assert_eq!(now_aws().len(), "2024-01-01T00:00:00.000+0000".len());
    }
}
