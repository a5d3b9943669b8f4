//! The function registry: the definitions and code of all functions (`$LATEST`, published
//! versions, aliases, tags, policies, event invoke configs), and their persistence.
//!
//! Owned by the control-plane thread (`&mut self`, no locks); the data plane reads the published
//! `FunctionTable` through an `ArcSwap`, stored before every mutating method returns. Every
//! change writes the function's whole `config.json` atomically (see `store`) before it is
//! published, so what a client was told survives `kill -9`. Code dirs are immutable and shared
//! by `$LATEST` and the versions that run the same code; a dir is removed once nothing refers to
//! it. `versions` holds versions and aliases, `meta` tags, policies and event invoke configs,
//! `urls` function URL configs.

pub mod meta;
mod store;
pub mod urls;
pub mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::control::api::functions::{CreateFunctionInput, UpdateCodeInput, UpdateConfigInput};
use crate::control::api::input::validate_name;
use crate::control::code::{sha256_base64, sync_dir, write_atomic};
use crate::control::held::HeldDirs;
use crate::control::layers::LayerStore;
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{
    function_arn, pool_key, AliasRoute, CodeDir, Concurrency, EventSettings, Function,
    FunctionConfig, FunctionCounters, FunctionTable, LayerRef, LATEST,
};
pub use store::civil_from_days;
pub(crate) use store::now_aws;
use store::*;
pub use store::{Alias, EventInvokeConfig, PolicyStatement, StoredFunction, StoredVersion};

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

/// One function in memory: what its config.json holds, and the runnable versions built from it.
#[derive(Debug)]
pub struct Entry {
    pub stored: StoredFunction,
    pub latest: Arc<Function>,
    pub versions: BTreeMap<u32, Arc<Function>>,
}

/// What a change does to `$LATEST`'s runnable snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LatestChange {
    /// Metadata only (tags, policy, aliases, versions): the same `Function`.
    Keep,
    /// Reserved concurrency: a new snapshot, same generation (instances are not affected).
    Refresh,
    /// Code or configuration: a new generation; older instances are retired.
    NewGeneration,
}

pub struct Registry {
    /// Published layer versions and merged `/opt` trees (functions name them in `Layers`).
    pub layers: LayerStore,
    /// `data_dir/functions`, absolute.
    functions_dir: PathBuf,
    defaults: Defaults,
    entries: BTreeMap<String, Entry>,
    table: Arc<ArcSwap<FunctionTable>>,
    /// The next `Function::generation`.
    next_generation: u64,
    /// The code dirs and merged layer trees handed to `Function`s: kept while instances run.
    pub held: HeldDirs,
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
        let layers = LayerStore::open(data_dir).map_err(|source| RegistryError::Io {
            path: data_dir.join("layers"),
            source,
        })?;
        let mut registry = Registry {
            layers,
            functions_dir: functions_dir.clone(),
            defaults,
            entries: BTreeMap::new(),
            table: Arc::new(ArcSwap::from_pointee(FunctionTable::default())),
            next_generation: 1,
            held: HeldDirs::default(),
        };
        for entry in fs::read_dir(&functions_dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if let Some(stored) = load_function_dir(&path) {
                let entry = registry.build_entry(stored, None, LatestChange::NewGeneration);
                registry
                    .entries
                    .insert(entry.latest.config.name.clone(), entry);
            }
        }
        registry.publish();
        registry.collect_layers();
        Ok(registry)
    }

    /// Lets the layer store drop deleted layer versions and merged trees nothing uses.
    pub fn collect_layers(&mut self) {
        let in_use: Vec<Vec<LayerRef>> = self
            .entries
            .values()
            .flat_map(|e| std::iter::once(&e.latest).chain(e.versions.values()))
            .map(|f| f.config.layers.clone())
            .collect();
        self.layers.collect(&in_use, &mut self.held);
    }

    /// Function count and total code size (GetAccountSettings' AccountUsage).
    pub fn usage(&self) -> (usize, u64) {
        let code: u64 = self
            .entries
            .values()
            .flat_map(|e| std::iter::once(&e.latest).chain(e.versions.values()))
            .map(|f| f.config.code_size)
            .sum();
        (self.entries.len(), code)
    }

    /// Concurrency reserved by all functions together.
    pub fn reserved_total(&self) -> u32 {
        self.entries
            .values()
            .filter_map(|e| e.latest.concurrency.reserved())
            .fold(0u32, u32::saturating_add)
    }

    /// The lock-free table the data-plane cores read on every invoke.
    pub fn table(&self) -> Arc<ArcSwap<FunctionTable>> {
        self.table.clone()
    }

    /// Creates the function; with `publish`, also version 1 (then returned instead of `$LATEST`).
    pub fn create(
        &mut self,
        input: CreateFunctionInput,
        tags: BTreeMap<String, String>,
    ) -> Result<Arc<Function>, ApiError> {
        validate_name(&input.name)?;
        meta::validate_tags(&tags)?;
        if self.entries.contains_key(&input.name) {
            return Err(ApiError::new(
                ErrorKind::ResourceConflict,
                format!("Function already exist: {}", input.name),
            ));
        }
        let dir = self.function_dir(&input.name);
        fs::create_dir_all(&dir).map_err(|e| store_error(&dir, e))?;
        self.create_in(&dir, input, tags)
            .inspect_err(|_| remove_unconfigured(&dir, &self.held.held_in(&dir)))
    }

    fn create_in(
        &mut self,
        dir: &Path,
        input: CreateFunctionInput,
        tags: BTreeMap<String, String>,
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
            layers: input.layers.unwrap_or_default(),
            logging: input.logging.unwrap_or_default(),
        };
        self.layers.merged_dir(&config.layers)?;
        let name = config.name.clone();
        let mut stored = StoredFunction {
            config,
            code_dir: dir_name(&staged)?,
            versions: BTreeMap::new(),
            last_version: 0,
            aliases: BTreeMap::new(),
            tags,
            policy: Vec::new(),
            policy_revision_id: new_revision_id(),
            event_invoke_configs: BTreeMap::new(),
            function_urls: BTreeMap::new(),
        };
        let published = input
            .publish
            .then(|| versions::add_version(&mut stored, None));
        self.save(&name, stored, LatestChange::NewGeneration)
            .inspect_err(|_| remove_code(&staged))?;
        Ok(self.result_of(&name, published))
    }

    /// Replaces `$LATEST`'s code; with `publish`, also publishes a version (then returned).
    pub fn update_code(
        &mut self,
        name: &str,
        input: UpdateCodeInput,
    ) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        check_revision(&old, input.revision_id.as_deref())?;
        let revision_id = new_revision_id();
        let staged = stage_code(&self.function_dir(name), &revision_id, &input.zip)?;
        let mut stored = self.entry(name)?.stored.clone();
        stored.config.code_sha256 = sha256_base64(&input.zip);
        stored.config.code_size = input.zip.len() as u64;
        stored.config.last_modified = now_aws();
        stored.config.revision_id = revision_id;
        stored.code_dir = dir_name(&staged)?;
        let published = input
            .publish
            .then(|| versions::publish_if_changed(&mut stored, None));
        self.save(name, stored, LatestChange::NewGeneration)
            .inspect_err(|_| remove_code(&staged))?;
        Ok(self.result_of(name, published))
    }

    pub fn update_config(
        &mut self,
        name: &str,
        input: UpdateConfigInput,
    ) -> Result<Arc<Function>, ApiError> {
        let old = self.get(name)?;
        check_revision(&old, input.revision_id.as_deref())?;
        let mut stored = self.entry(name)?.stored.clone();
        merge_config(&mut stored.config, input)?;
        self.layers.merged_dir(&stored.config.layers)?;
        stored.config.last_modified = now_aws();
        stored.config.revision_id = new_revision_id();
        self.save(name, stored, LatestChange::NewGeneration)?;
        self.get(name)
    }

    /// Removes the function, its versions, aliases and files. Instances still running it are
    /// the data plane's to retire; its counters die with the last reference.
    pub fn delete(&mut self, name: &str) -> Result<Entry, ApiError> {
        self.entry(name)?;
        let dir = self.function_dir(name);
        // config.json goes first and durably: once it is gone, a restart cannot resurrect the
        // function, and `open` removes whatever else remains of the dir.
        let config_path = dir.join(CONFIG_FILE);
        fs::remove_file(&config_path).map_err(|e| store_error(&config_path, e))?;
        if let Err(e) = sync_dir(&dir) {
            tracing::warn!(function = name, error = %e, "fsync after deleting config.json failed");
        }
        let entry = self.entries.remove(name).expect("checked above");
        self.publish();
        // Code that running instances still use stays until they are gone (`HeldDirs`); the
        // rest of the dir goes now, and the dir itself once empty (or at the next start).
        for code_dir in entry.stored.code_dirs() {
            self.held.release(&dir.join(code_dir));
        }
        remove_unconfigured(&dir, &self.held.held_in(&dir));
        self.collect_layers();
        Ok(entry)
    }

    /// `$LATEST` of `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Function>, ApiError> {
        Ok(self.entry(name)?.latest.clone())
    }

    pub fn entry(&self, name: &str) -> Result<&Entry, ApiError> {
        self.entries
            .get(name)
            .ok_or_else(|| ApiError::not_found_function(name))
    }

    /// The version `qualifier` names: `$LATEST`, a version number, or an alias (its primary
    /// version).
    pub fn resolve(&self, name: &str, qualifier: Option<&str>) -> Result<Arc<Function>, ApiError> {
        let entry = self.entry(name)?;
        let not_found = |q: &str| {
            ApiError::new(
                ErrorKind::ResourceNotFound,
                format!("Function not found: {}:{q}", function_arn(name)),
            )
        };
        match qualifier {
            None | Some(LATEST) => Ok(entry.latest.clone()),
            Some(q) => {
                let version = match entry.stored.aliases.get(q) {
                    Some(alias) => alias.function_version.as_str(),
                    None => q,
                };
                if version == LATEST {
                    return Ok(entry.latest.clone());
                }
                version
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| entry.versions.get(&n))
                    .cloned()
                    .ok_or_else(|| not_found(q))
            }
        }
    }

    /// One page of functions (`$LATEST`) sorted by name, and the marker of the next page.
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
            .entries
            .range::<str, _>((start, Bound::Unbounded))
            .take(max + 1)
            .map(|(_, e)| e.latest.clone())
            .collect();
        let next = (page.len() > max).then(|| {
            page.truncate(max);
            encode_marker(&page[max - 1].config.name)
        });
        Ok((page, next))
    }

    /// Sets reserved concurrency (shared by all versions). Instances are not affected, so the
    /// generation is kept: only code and configuration changes retire instances.
    pub fn put_concurrency(&mut self, name: &str, n: u32) -> Result<Arc<Function>, ApiError> {
        self.set_concurrency(name, Some(n))
    }

    pub fn delete_concurrency(&mut self, name: &str) -> Result<Arc<Function>, ApiError> {
        self.set_concurrency(name, None)
    }

    /// The stored original zip of a version (served for GetFunction's Code.Location).
    pub fn zip_path(&self, name: &str, qualifier: Option<&str>) -> Option<PathBuf> {
        self.resolve(name, qualifier)
            .ok()
            .map(|f| zip_path_of(f.code_dir()))
    }

    fn set_concurrency(&mut self, name: &str, n: Option<u32>) -> Result<Arc<Function>, ApiError> {
        let mut stored = self.entry(name)?.stored.clone();
        stored.config.reserved_concurrency = n;
        self.save(name, stored, LatestChange::Refresh)?;
        let latest = self.get(name)?;
        latest.concurrency.set_reserved(n);
        Ok(latest)
    }

    fn function_dir(&self, name: &str) -> PathBuf {
        self.functions_dir.join(name)
    }

    fn take_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// `$LATEST`, or the version a change just published.
    fn result_of(&self, name: &str, published: Option<u32>) -> Arc<Function> {
        let entry = &self.entries[name];
        match published.and_then(|n| entry.versions.get(&n)) {
            Some(v) => v.clone(),
            None => entry.latest.clone(),
        }
    }

    /// Persists `stored` as the function's config.json, then publishes it, then releases the
    /// code dirs nothing refers to any more (removed once no instance runs them).
    fn save(
        &mut self,
        name: &str,
        stored: StoredFunction,
        change: LatestChange,
    ) -> Result<(), ApiError> {
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| ApiError::service(format!("Could not encode the configuration: {e}")))?;
        let path = self.function_dir(name).join(CONFIG_FILE);
        write_atomic(&path, &json).map_err(|e| store_error(&path, e))?;
        let old = self.entries.remove(name);
        let unreferenced: BTreeSet<String> = match &old {
            Some(old) => {
                let live = stored.code_dirs();
                old.stored.code_dirs().difference(&live).cloned().collect()
            }
            None => BTreeSet::new(),
        };
        let entry = self.build_entry(stored, old.as_ref(), change);
        self.entries.insert(name.to_string(), entry);
        self.publish();
        for code_dir in unreferenced {
            self.held.release(&self.function_dir(name).join(code_dir));
        }
        self.collect_layers();
        Ok(())
    }

    /// The runnable snapshots of `stored`, reusing `old`'s where nothing changed.
    fn build_entry(
        &mut self,
        stored: StoredFunction,
        old: Option<&Entry>,
        change: LatestChange,
    ) -> Entry {
        let dir = self.function_dir(&stored.config.name);
        let (counters, concurrency) = match old {
            Some(old) => (old.latest.counters.clone(), old.latest.concurrency.clone()),
            None => (
                Arc::new(FunctionCounters::default()),
                Arc::new(Concurrency::new(stored.config.reserved_concurrency)),
            ),
        };
        let latest = match (old, change) {
            (Some(old), LatestChange::Keep) => old.latest.clone(),
            (old, change) => {
                let generation = match (old, change) {
                    (Some(old), LatestChange::Refresh) => old.latest.generation,
                    _ => self.take_generation(),
                };
                let code = dir.join(&stored.code_dir);
                let mut f = Function::latest(stored.config.clone(), code.clone(), generation);
                f.code = self.held.hold(&code);
                f.opt = self.opt_dir(&stored.config);
                f.counters = counters;
                f.concurrency = concurrency.clone();
                Arc::new(f)
            }
        };
        let mut versions = BTreeMap::new();
        for (&n, v) in &stored.versions {
            let reused = old.and_then(|o| o.versions.get(&n)).cloned();
            let f = match reused {
                Some(f) => f,
                None => {
                    let generation = self.take_generation();
                    let mut f = version_function(&dir, n, v, generation, &concurrency);
                    f.code = self.held.hold(&dir.join(&v.code_dir));
                    f.opt = self.opt_dir(&v.config);
                    Arc::new(f)
                }
            };
            versions.insert(n, f);
        }
        Entry {
            stored,
            latest,
            versions,
        }
    }

    /// The merged layers of `config` (`None` without layers, or when the merge failed: logged,
    /// and the instance then starts without them).
    fn opt_dir(&mut self, config: &FunctionConfig) -> Option<Arc<CodeDir>> {
        match self.layers.merged_dir(&config.layers) {
            Ok(dir) => dir.map(|d| self.held.hold(&d)),
            Err(e) => {
                tracing::error!(function = config.name, error = %e, "could not merge layers");
                None
            }
        }
    }

    fn publish(&self) {
        let mut table = FunctionTable::default();
        for (name, entry) in &self.entries {
            table.versions.insert(name.clone(), entry.latest.clone());
            for f in entry.versions.values() {
                table.versions.insert(f.pool_key.clone(), f.clone());
            }
            for alias in entry.stored.aliases.values() {
                let route = AliasRoute {
                    version: alias.function_version.clone(),
                    additional: alias.weights.iter().next().map(|(v, w)| (v.clone(), *w)),
                };
                table
                    .aliases
                    .insert(format!("{name}:{}", alias.name), route);
            }
            for (qualifier, c) in &entry.stored.event_invoke_configs {
                let defaults = EventSettings::default();
                let settings = EventSettings {
                    maximum_retry_attempts: c
                        .maximum_retry_attempts
                        .unwrap_or(defaults.maximum_retry_attempts),
                    maximum_event_age_s: c
                        .maximum_event_age_s
                        .unwrap_or(defaults.maximum_event_age_s),
                    on_success: c.on_success.clone(),
                    on_failure: c.on_failure.clone(),
                };
                table
                    .event_settings
                    .insert(format!("{name}:{qualifier}"), settings);
            }
            for (qualifier, url) in &entry.stored.function_urls {
                table.urls.insert(
                    url.url_id.clone(),
                    Arc::new(urls::route(name, qualifier, url)),
                );
            }
        }
        self.table.store(Arc::new(table));
    }
}

/// A published version's runnable snapshot.
fn version_function(
    dir: &Path,
    n: u32,
    v: &StoredVersion,
    generation: u64,
    concurrency: &Arc<Concurrency>,
) -> Function {
    let version = n.to_string();
    let mut f = Function::latest(v.config.clone(), dir.join(&v.code_dir), generation);
    f.arn = format!("{}:{version}", function_arn(&v.config.name));
    f.pool_key = pool_key(&v.config.name, &version);
    f.version = version;
    f.concurrency = concurrency.clone();
    f
}

fn dir_name(path: &Path) -> Result<String, ApiError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ApiError::service("code directory has no UTF-8 name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::functions::ROLE_DEFAULT;
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
            layers: None,
            logging: None,
        }
    }

    impl Registry {
        fn create_plain(&mut self, input: CreateFunctionInput) -> Result<Arc<Function>, ApiError> {
            self.create(input, BTreeMap::new())
        }
    }

    fn open(dir: &Path) -> Registry {
        Registry::open(dir, Defaults::default()).unwrap()
    }

    #[test]
    fn create_get_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let f = reg.create_plain(input("f", b"v1")).unwrap();
        assert_eq!(f.config.timeout_s, 3);
        assert_eq!(f.config.memory_mb, 256);
        assert_eq!(f.arn, function_arn("f"));
        assert!(f.code_dir().is_absolute());
        assert_eq!(fs::read(f.code_dir().join("bootstrap")).unwrap(), b"v1");
        let zip = input("f", b"v1").zip;
        assert_eq!(f.config.code_sha256, sha256_base64(&zip));
        assert_eq!(f.config.code_size, zip.len() as u64);
        assert_eq!(fs::read(reg.zip_path("f", None).unwrap()).unwrap(), zip);
        assert!(Arc::ptr_eq(&reg.get("f").unwrap(), &f));
        assert!(Arc::ptr_eq(&reg.table().load().versions["f"], &f));
        let e = reg.create_plain(input("f", b"v2")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceConflict);
        assert_eq!(e.message, "Function already exist: f");
        assert_eq!(reg.get("g").unwrap_err().kind, ErrorKind::ResourceNotFound);
        assert!(reg.zip_path("g", None).is_none());
    }

    #[test]
    fn bad_zip_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let mut bad = input("f", b"");
        bad.zip = b"not a zip".to_vec();
        let e = reg.create_plain(bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        assert!(!dir.path().join("functions/f").exists());
        assert!(reg.table().load().versions.is_empty());
        let e = reg.create_plain(input("../x", b"")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn update_code_replaces_code_and_keeps_counters() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let v1 = reg.create_plain(input("f", b"v1")).unwrap();
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
        assert!(Arc::ptr_eq(&v1.concurrency, &v2.concurrency));
        assert_eq!(fs::read(v2.code_dir().join("bootstrap")).unwrap(), b"v2");
        // `v1` is held here as a running instance holds it: its code stays until let go.
        let old_code = v1.code_dir().to_path_buf();
        assert!(old_code.join("bootstrap").exists());
        drop(v1);
        reg.held.reap();
        assert!(!old_code.exists());
        assert!(!zip_path_of(&old_code).exists());
        assert_eq!(reg.table().load().versions["f"].generation, v2.generation);
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
        let v1 = reg.create_plain(input("f", b"v1")).unwrap();
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
        assert_eq!(v2.code_dir(), v1.code_dir());
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
        let v1 = reg.create_plain(input("f", b"v1")).unwrap();
        let v1_counters = v1.counters.clone();
        let deleted = reg.delete("f").unwrap();
        assert!(Arc::ptr_eq(&deleted.latest, &v1));
        // Held (as by a running instance): the code stays, the config is gone.
        assert!(v1.code_dir().join("bootstrap").exists());
        assert!(!dir.path().join("functions/f/config.json").exists());
        drop((deleted, v1));
        reg.held.reap();
        assert!(!dir.path().join("functions/f").exists());
        assert!(reg.table().load().latest("f").is_none());
        assert_eq!(
            reg.delete("f").unwrap_err().kind,
            ErrorKind::ResourceNotFound
        );
        let again = reg.create_plain(input("f", b"v1")).unwrap();
        assert!(!Arc::ptr_eq(&again.counters, &v1_counters));
    }

    #[test]
    fn list_paginates() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        for name in ["c", "a", "e", "b", "d"] {
            reg.create_plain(input(name, b"x")).unwrap();
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
        let v1 = reg.create_plain(input("f", b"x")).unwrap();
        let v2 = reg.put_concurrency("f", 7).unwrap();
        assert_eq!(v2.config.reserved_concurrency, Some(7));
        assert_eq!(v2.generation, v1.generation);
        assert_eq!(
            reg.table().load().versions["f"].config.reserved_concurrency,
            Some(7)
        );
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
        reg.create_plain(input("f", b"v1")).unwrap();
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
        assert_eq!(after.code_dir(), before.code_dir());
        assert_eq!(fs::read(after.code_dir().join("bootstrap")).unwrap(), b"v2");
        assert!(Arc::ptr_eq(&reg.table().load().versions["f"], &after));
    }

    #[test]
    fn open_cleans_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let f = reg.create_plain(input("f", b"v1")).unwrap();
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
        assert_eq!(
            fs::read(loaded.code_dir().join("bootstrap")).unwrap(),
            b"v1"
        );
        let mut left: Vec<String> = fs::read_dir(&fdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let code = f
            .code_dir()
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
        assert_eq!(reg.table().load().versions.len(), 1);
    }

    #[test]
    fn tags_follow_aws_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = open(dir.path());
        let too_long = BTreeMap::from([("k".to_string(), "v".repeat(257))]);
        let e = reg.create(input("f", b"x"), too_long).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        assert!(reg.get("f").is_err(), "nothing is created on a refused tag");
        reg.create_plain(input("f", b"x")).unwrap();
        for bad in [("", "v"), ("aws:x", "v")] {
            let tags = BTreeMap::from([(bad.0.to_string(), bad.1.to_string())]);
            assert_eq!(
                reg.tag("f", tags).unwrap_err().kind,
                ErrorKind::InvalidParameterValue
            );
        }
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            reg.tag("f", many).unwrap_err().kind,
            ErrorKind::InvalidParameterValue
        );
        reg.tag("f", BTreeMap::from([("team".into(), "a".into())]))
            .unwrap();
        assert_eq!(reg.tags("f").unwrap()["team"], "a");
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
