//! The layer store: published layer versions (PublishLayerVersion), immutable and persisted, and
//! the merged `/opt` trees instances see.
//!
//! Control-plane thread only. On disk, under `data_dir/layers/`:
//! - `NAME/N/layer.json` (metadata), `NAME/N/content/` (the unpacked zip), `NAME/N/layer.zip`.
//!   A version is staged as `NAME/.N.tmp/` and renamed into place, so it appears whole or not
//!   at all; `open` removes staging leftovers.
//! - Deleting a version marks it deleted (tombstone in layer.json): it disappears from the API
//!   but stays usable by the functions that already reference it, as on AWS; `collect` removes
//!   its content once nothing does. Numbers are never reused.
//! - `.merged/KEY/`: a function's layers merged in order (later layers override earlier files),
//!   built from hard links, keyed by the hash of the layer list, shared by every version that
//!   uses the same list. `collect` releases a tree no function names to `HeldDirs`, which keeps
//!   it while instances still run it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::control::code::{self, sha256_base64, sync_filesystem, write_atomic};
use crate::control::held::HeldDirs;
use crate::model::error::{ApiError, ErrorKind};
use crate::model::types::{account_id, LayerRef};

const META_FILE: &str = "layer.json";
const CONTENT_DIR: &str = "content";
const ZIP_FILE: &str = "layer.zip";
const MERGED_DIR: &str = ".merged";
/// AWS's layer name limit.
pub const LAYER_NAME_CHARS_MAX: usize = 140;

/// One layer version's metadata (layer.json).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub created_date: String,
    pub code_sha256: String,
    pub code_size: u64,
    #[serde(default)]
    pub compatible_runtimes: Vec<String>,
    #[serde(default)]
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    /// DeleteLayerVersion was called: hidden from the API, kept while functions use it.
    #[serde(default)]
    pub deleted: bool,
}

/// What PublishLayerVersion asks for.
pub struct LayerInput {
    pub description: String,
    pub zip: Vec<u8>,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
}

pub struct LayerStore {
    /// `data_dir/layers`, absolute.
    dir: PathBuf,
    /// Every version ever published and not yet collected, by name then number.
    layers: BTreeMap<String, BTreeMap<u64, LayerVersion>>,
}

impl LayerStore {
    pub fn open(data_dir: &Path) -> io::Result<LayerStore> {
        let dir = std::path::absolute(data_dir.join("layers"))?;
        fs::create_dir_all(dir.join(MERGED_DIR))?;
        let mut layers: BTreeMap<String, BTreeMap<u64, LayerVersion>> = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == MERGED_DIR || validate_layer_name(name).is_err() || !path.is_dir() {
                continue;
            }
            for version in fs::read_dir(&path)? {
                let vpath = version?.path();
                let file = vpath.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if file.starts_with('.') {
                    tracing::info!(path = %vpath.display(), "removing an interrupted layer publish");
                    let _ = fs::remove_dir_all(&vpath);
                    continue;
                }
                match read_meta(&vpath.join(META_FILE)) {
                    Ok(meta) if meta.name == name && meta.version.to_string() == file => {
                        layers
                            .entry(name.to_string())
                            .or_default()
                            .insert(meta.version, meta);
                    }
                    _ => tracing::warn!(path = %vpath.display(), "skipping a broken layer version"),
                }
            }
        }
        Ok(LayerStore { dir, layers })
    }

    /// PublishLayerVersion: the next number of `name`, unpacked and durable before it is listed.
    pub fn publish(&mut self, name: &str, input: LayerInput) -> Result<LayerVersion, ApiError> {
        validate_layer_name(name)?;
        let version = self
            .layers
            .get(name)
            .and_then(|v| v.keys().next_back())
            .map_or(1, |n| n + 1);
        let meta = LayerVersion {
            name: name.to_string(),
            version,
            description: input.description,
            created_date: crate::control::registry::now_aws(),
            code_sha256: sha256_base64(&input.zip),
            code_size: input.zip.len() as u64,
            compatible_runtimes: input.compatible_runtimes,
            compatible_architectures: input.compatible_architectures,
            license_info: input.license_info,
            deleted: false,
        };
        let layer_dir = self.dir.join(name);
        let staging = layer_dir.join(format!(".{version}.tmp"));
        let result = stage(&staging, &input.zip, &meta)
            .and_then(|()| {
                fs::rename(&staging, layer_dir.join(version.to_string()))
                    .map_err(|e| store_error(&layer_dir, e))
            })
            .and_then(|()| code::sync_dir(&layer_dir).map_err(|e| store_error(&layer_dir, e)));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.layers
            .entry(name.to_string())
            .or_default()
            .insert(version, meta.clone());
        Ok(meta)
    }

    /// A visible (not deleted) version.
    pub fn get(&self, name: &str, version: u64) -> Result<&LayerVersion, ApiError> {
        self.layers
            .get(name)
            .and_then(|v| v.get(&version))
            .filter(|m| !m.deleted)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::ResourceNotFound,
                    "The resource you requested does not exist.",
                )
            })
    }

    /// Visible versions of `name`, newest first (AWS's order).
    pub fn versions(&self, name: &str) -> Vec<&LayerVersion> {
        self.layers
            .get(name)
            .map(|v| v.values().rev().filter(|m| !m.deleted).collect())
            .unwrap_or_default()
    }

    /// Layer names with at least one visible version.
    pub fn names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter(|(_, v)| v.values().any(|m| !m.deleted))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// DeleteLayerVersion: a tombstone (idempotent). The content stays until `collect`.
    pub fn delete(&mut self, name: &str, version: u64) -> Result<(), ApiError> {
        let path = self.version_dir(name, version).join(META_FILE);
        let Some(meta) = self.layers.get_mut(name).and_then(|v| v.get_mut(&version)) else {
            return Ok(());
        };
        if meta.deleted {
            return Ok(());
        }
        let mut deleted = meta.clone();
        deleted.deleted = true;
        let json = serde_json::to_vec_pretty(&deleted)
            .map_err(|e| ApiError::service(format!("Could not encode the layer: {e}")))?;
        write_atomic(&path, &json).map_err(|e| store_error(&path, e))?;
        *meta = deleted;
        Ok(())
    }

    /// A function's `Layers` entry: a layer version ARN that exists and is not deleted.
    pub fn resolve(&self, arn: &str) -> Result<LayerRef, ApiError> {
        let missing = || ApiError::invalid_param(format!("Layer version {arn} does not exist."));
        let (name, version) = parse_layer_version_arn(arn).ok_or_else(missing)?;
        let meta = self.get(&name, version).map_err(|_| missing())?;
        Ok(LayerRef {
            arn: arn.to_string(),
            code_size: meta.code_size,
        })
    }

    /// The merged `/opt` tree of `layers` (built once, then shared); `None` without layers.
    /// Deleted versions still merge: functions that used them keep working.
    pub fn merged_dir(&self, layers: &[LayerRef]) -> Result<Option<PathBuf>, ApiError> {
        if layers.is_empty() {
            return Ok(None);
        }
        let merged = self.dir.join(MERGED_DIR).join(merge_key(layers));
        if merged.is_dir() {
            return Ok(Some(merged));
        }
        let staging = merged.with_extension("tmp");
        let _ = fs::remove_dir_all(&staging);
        let result = (|| -> io::Result<()> {
            fs::create_dir_all(&staging)?;
            for layer in layers {
                let (name, version) = parse_layer_version_arn(&layer.arn)
                    .ok_or_else(|| io::Error::other(format!("bad layer ARN {}", layer.arn)))?;
                let content = self.version_dir(&name, version).join(CONTENT_DIR);
                link_tree(&content, &staging)?;
            }
            sync_filesystem(&staging)?;
            fs::rename(&staging, &merged)
        })();
        match result {
            Ok(()) => Ok(Some(merged)),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(store_error(&merged, e))
            }
        }
    }

    /// Removes what nothing needs any more: deleted versions no function references, and
    /// merged trees of layer lists no function uses.
    /// Merged trees that instances still run are released to `held`, which removes them once
    /// the last one is gone.
    pub fn collect(&mut self, in_use: &[Vec<LayerRef>], held: &mut HeldDirs) {
        let referenced: BTreeSet<(String, u64)> = in_use
            .iter()
            .flatten()
            .filter_map(|l| parse_layer_version_arn(&l.arn))
            .collect();
        let merged_keys: BTreeSet<String> = in_use
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| merge_key(l))
            .collect();
        let mut gone = Vec::new();
        for (name, versions) in &self.layers {
            for (n, meta) in versions {
                if meta.deleted && !referenced.contains(&(name.clone(), *n)) {
                    gone.push((name.clone(), *n));
                }
            }
        }
        for (name, n) in gone {
            // The tombstone's layer.json stays (numbers are never reused); the content goes.
            let dir = self.version_dir(&name, n);
            let _ = fs::remove_dir_all(dir.join(CONTENT_DIR));
            let _ = fs::remove_file(dir.join(ZIP_FILE));
        }
        if let Ok(entries) = fs::read_dir(self.dir.join(MERGED_DIR)) {
            for entry in entries.flatten() {
                let key = entry.file_name().to_string_lossy().to_string();
                if !merged_keys.contains(&key) {
                    held.release(&entry.path());
                }
            }
        }
    }

    /// The stored zip of a visible version (GetLayerVersion's Content.Location).
    pub fn zip_path(&self, name: &str, version: u64) -> Result<PathBuf, ApiError> {
        self.get(name, version)?;
        Ok(self.version_dir(name, version).join(ZIP_FILE))
    }

    fn version_dir(&self, name: &str, version: u64) -> PathBuf {
        self.dir.join(name).join(version.to_string())
    }
}

/// Unpacks and describes a version in `staging`, durably.
fn stage(staging: &Path, zip: &[u8], meta: &LayerVersion) -> Result<(), ApiError> {
    let _ = fs::remove_dir_all(staging);
    fs::create_dir_all(staging).map_err(|e| store_error(staging, e))?;
    code::unpack_zip(zip, &staging.join(CONTENT_DIR)).map_err(ApiError::from)?;
    let zip_path = staging.join(ZIP_FILE);
    write_atomic(&zip_path, zip).map_err(|e| store_error(&zip_path, e))?;
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| ApiError::service(format!("Could not encode the layer: {e}")))?;
    let meta_path = staging.join(META_FILE);
    write_atomic(&meta_path, &json).map_err(|e| store_error(&meta_path, e))?;
    sync_filesystem(staging).map_err(|e| store_error(staging, e))
}

/// Hard-links every file of `from` into `to` (directories created, symlinks copied), replacing
/// what an earlier layer put at the same path.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if fs::symlink_metadata(&dst).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&dst)?;
            }
            fs::create_dir_all(&dst)?;
            link_tree(&src, &dst)?;
            continue;
        }
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&dst)?,
            Ok(_) => fs::remove_file(&dst)?,
            Err(_) => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            fs::hard_link(&src, &dst)?;
        }
    }
    Ok(())
}

fn merge_key(layers: &[LayerRef]) -> String {
    let mut h = Sha256::new();
    for l in layers {
        if let Some((name, n)) = parse_layer_version_arn(&l.arn) {
            h.update(format!("{name}:{n}\n"));
        }
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_meta(path: &Path) -> Result<LayerVersion, Box<dyn std::error::Error>> {
    Ok(serde_json::from_slice(&fs::read(path)?)?)
}

fn store_error(path: &Path, e: io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "layer store write failed");
    ApiError::service(format!("Could not store the layer: {e}"))
}

/// 1-140 of `[a-zA-Z0-9-_]` (a name; ARNs are parsed before this).
pub fn validate_layer_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= LAYER_NAME_CHARS_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(format!(
            "1 validation error detected: Value '{name}' at 'layerName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{{12}}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
        )))
    }
}

/// A layer name from a path segment: the name itself or a layer ARN.
pub fn layer_name(text: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = text.split(':').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        ["arn", _, "lambda", _, _, "layer", name] => *name,
        _ => text,
    };
    validate_layer_name(name)?;
    Ok(name.to_string())
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:N` to (NAME, N).
pub fn parse_layer_version_arn(arn: &str) -> Option<(String, u64)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "layer", name, n] => {
            validate_layer_name(name).ok()?;
            Some((name.to_string(), n.parse().ok().filter(|n| *n > 0)?))
        }
        _ => None,
    }
}

/// The layer's ARN in `region`.
pub fn layer_arn(region: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{}:layer:{name}", account_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in files {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn input(files: &[(&str, &[u8])]) -> LayerInput {
        LayerInput {
            description: "d".into(),
            zip: zip_of(files),
            compatible_runtimes: vec!["python3.12".into()],
            compatible_architectures: vec![],
            license_info: None,
        }
    }

    fn arn(name: &str, n: u64) -> LayerRef {
        LayerRef {
            arn: format!("{}:{n}", layer_arn("us-east-1", name)),
            code_size: 0,
        }
    }

    #[test]
    fn publish_numbers_persist_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LayerStore::open(dir.path()).unwrap();
        assert_eq!(
            store.publish("a", input(&[("x", b"1")])).unwrap().version,
            1
        );
        assert_eq!(
            store.publish("a", input(&[("x", b"2")])).unwrap().version,
            2
        );
        // An interrupted publish leaves only a staging dir, removed at open.
        fs::create_dir_all(dir.path().join("layers/a/.3.tmp/content")).unwrap();
        let mut store = LayerStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("layers/a/.3.tmp").exists());
        let versions: Vec<u64> = store.versions("a").iter().map(|m| m.version).collect();
        assert_eq!(versions, [2, 1]);
        store.delete("a", 2).unwrap();
        assert!(store.get("a", 2).is_err());
        // Numbers are never reused, even after a delete and a restart.
        let mut store = LayerStore::open(dir.path()).unwrap();
        assert_eq!(
            store.publish("a", input(&[("x", b"3")])).unwrap().version,
            3
        );
        assert!(store.resolve(&arn("a", 2).arn).is_err());
        assert_eq!(
            store.resolve(&arn("a", 3).arn).unwrap().code_size,
            input(&[("x", b"3")]).zip.len() as u64
        );
        assert!(store.publish("bad name", input(&[])).is_err());
    }

    #[test]
    fn merge_overrides_in_order_and_keeps_deleted_layers_for_users() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LayerStore::open(dir.path()).unwrap();
        store
            .publish("a", input(&[("python/m.py", b"a"), ("bin/only-a", b"a")]))
            .unwrap();
        store.publish("b", input(&[("python/m.py", b"b")])).unwrap();
        let layers = [arn("a", 1), arn("b", 1)];
        let merged = store.merged_dir(&layers).unwrap().unwrap();
        assert_eq!(fs::read(merged.join("python/m.py")).unwrap(), b"b");
        assert_eq!(fs::read(merged.join("bin/only-a")).unwrap(), b"a");
        assert!(store.merged_dir(&[]).unwrap().is_none());
        store.delete("a", 1).unwrap();
        // Still used by a function: content and merged tree stay.
        store.collect(&[layers.to_vec()], &mut HeldDirs::default());
        assert!(merged.join("bin/only-a").exists());
        assert!(dir.path().join("layers/a/1/content").exists());
        // Nothing uses it: both go; the tombstone keeps the number.
        store.collect(&[], &mut HeldDirs::default());
        assert!(!merged.exists());
        assert!(!dir.path().join("layers/a/1/content").exists());
        assert!(dir.path().join("layers/a/1/layer.json").exists());
    }
}
