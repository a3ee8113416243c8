//! The image store: configs by id in `imagedb/content/sha256/<hex>` (byte-exact; the id is
//! their sha256), `imagedb/metadata/sha256/<hex>/{parent,lastUpdated}`, and tags in
//! `repositories.json`, Docker's shape, written atomically. Each image holds a reference on
//! its top layer in the [`LayerStore`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::digest::{chain_ids, Digest};
use super::layers::{LayerInfo, LayerStore};
use super::read_opt;
use super::reference::Reference;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{atomic_write, remove_tree};

/// The parts of a Docker/OCI image config the engine reads. The stored bytes stay as given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub docker_version: Option<String>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub container_config: Option<Value>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let c: Self = serde_json::from_slice(raw)
            .map_err(|e| Error::invalid(format!("image config is not valid JSON: {e}")))?;
        if c.rootfs.kind != "layers" {
            return Err(Error::invalid(format!(
                "image config rootfs type is {:?}, expected \"layers\"",
                c.rootfs.kind
            )));
        }
        Ok(c)
    }

    /// The chain id of the image's top layer (None for an image without layers).
    pub fn top_layer(&self) -> Option<Digest> {
        chain_ids(&self.rootfs.diff_ids).pop()
    }
}

/// An image known to the store.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub id: Digest,
    pub config: Arc<ImageConfig>,
    pub parent: Option<Digest>,
    /// RFC 3339 time of the last tag change (Docker's Metadata.LastTagTime).
    pub last_updated: Option<String>,
}

impl ImageRecord {
    pub fn top_layer(&self) -> Option<Digest> {
        self.config.top_layer()
    }
}

/// `GET /images/{name}/json`, Docker's field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub container: String,
    pub container_config: Value,
    pub docker_version: String,
    pub author: String,
    pub config: Value,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: i64,
    pub virtual_size: i64,
    pub graph_driver: GraphDriverData,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFsInspect,
    pub metadata: ImageMetadata,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriverData {
    /// `null` when the driver has nothing to show (vfs, btrfs).
    pub data: Option<BTreeMap<String, String>>,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RootFsInspect {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageMetadata {
    pub last_tag_time: String,
}

/// Docker's zero time, shown when an image was never tagged.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Default, Serialize, Deserialize)]
struct RepositoriesFile {
    #[serde(rename = "Repositories")]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Default)]
struct State {
    images: BTreeMap<Digest, ImageRecord>,
    /// Reference to image id.
    tags: BTreeMap<Reference, Digest>,
}

struct Inner {
    root: PathBuf,
    layers: LayerStore,
    state: Mutex<State>,
}

/// Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl ImageStore {
    /// Opens the image store under `image_root` (`<data-root>/image/<driver>`). Every image
    /// takes its reference on its top layer; an image whose layers are missing is skipped
    /// with a warning.
    pub async fn open(image_root: &Path, layers: LayerStore) -> Result<Self> {
        let root = image_root.to_path_buf();
        let r = root.clone();
        let (images, tags) = tokio::task::spawn_blocking(move || load(&r)).await??;
        let mut kept = BTreeMap::new();
        for img in images {
            if let Some(top) = img.top_layer() {
                if let Err(e) = layers.acquire(&top) {
                    warn!(image = %img.id, error = %e, "image skipped: its layers are missing");
                    continue;
                }
            }
            kept.insert(img.id.clone(), img);
        }
        let tags = tags
            .into_iter()
            .filter(|(_, id)| kept.contains_key(id))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                layers,
                state: Mutex::new(State { images: kept, tags }),
            }),
        })
    }

    pub fn layers(&self) -> &LayerStore {
        &self.inner.layers
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn content_path(&self, id: &Digest) -> PathBuf {
        self.inner
            .root
            .join("imagedb/content/sha256")
            .join(id.hex())
    }

    fn metadata_dir(&self, id: &Digest) -> PathBuf {
        self.inner
            .root
            .join("imagedb/metadata/sha256")
            .join(id.hex())
    }

    /// Stores an image config (its layers must be registered). Returns its id and whether it
    /// is new. The image takes a reference on its top layer.
    pub async fn create(&self, raw: Vec<u8>) -> Result<(Digest, bool)> {
        let config = ImageConfig::parse(&raw)?;
        let id = Digest::of_bytes(&raw);
        if self.state().images.contains_key(&id) {
            return Ok((id, false));
        }
        let top = config.top_layer();
        if let Some(t) = &top {
            self.inner.layers.acquire(t).map_err(|_| {
                Error::invalid(format!(
                    "image {id} names layers that are not registered (top chain id {t})"
                ))
            })?;
        }
        let path = self.content_path(&id);
        let store = self.clone();
        let record = ImageRecord {
            id: id.clone(),
            config: Arc::new(config),
            parent: None,
            last_updated: None,
        };
        let written = tokio::task::spawn_blocking(move || {
            atomic_write(&path, &raw)?;
            let mut state = store.state();
            if state.images.contains_key(&record.id) {
                return Ok(false); // raced with an identical create
            }
            state.images.insert(record.id.clone(), record);
            Ok::<_, Error>(true)
        })
        .await?;
        match written {
            Ok(true) => Ok((id, true)),
            Ok(false) | Err(_) => {
                if let Some(t) = &top {
                    self.inner.layers.release(t).await?;
                }
                written.map(|_| (id, false))
            }
        }
    }

    /// Records the image's parent image (commit and build set it), as Docker's metadata.
    pub async fn set_parent(&self, id: &Digest, parent: &Digest) -> Result<()> {
        self.get(id)?;
        let dir = self.metadata_dir(id);
        let p = parent.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            atomic_write(&dir.join("parent"), p.as_str().as_bytes())
        })
        .await??;
        if let Some(img) = self.state().images.get_mut(id) {
            img.parent = Some(parent.clone());
        }
        Ok(())
    }

    /// Docker's `RepoDigests` (`name@sha256:<manifest digest>`) the image was pulled or pushed
    /// as, kept in its metadata directory (`repoDigests`, a JSON list).
    pub fn repo_digests(&self, id: &Digest) -> Vec<String> {
        std::fs::read(self.metadata_dir(id).join("repoDigests"))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    /// Adds `name@digest` to the image's `RepoDigests`, replacing that name's older digest.
    pub async fn add_repo_digest(&self, id: &Digest, repo_digest: &str) -> Result<()> {
        self.get(id)?;
        let name = repo_digest.split('@').next().unwrap_or_default();
        let mut list = self.repo_digests(id);
        list.retain(|d| d.split('@').next() != Some(name));
        list.push(repo_digest.to_string());
        let dir = self.metadata_dir(id);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            let raw = serde_json::to_vec(&list).map_err(|e| Error::Other(e.to_string()))?;
            atomic_write(&dir.join("repoDigests"), &raw)
        })
        .await?
    }

    pub fn get(&self, id: &Digest) -> Result<ImageRecord> {
        self.state()
            .images
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No such image: {id}")))
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.state().images.values().cloned().collect()
    }

    /// The raw config bytes of an image.
    pub async fn raw_config(&self, id: &Digest) -> Result<Vec<u8>> {
        let path = self.content_path(id);
        tokio::task::spawn_blocking(move || std::fs::read(&path).ctx("read", &path)).await?
    }

    /// Finds an image by reference (`bb`, `bb:latest`), full id (`sha256:...` or 64 hex) or
    /// unique id prefix, in Docker's order.
    pub fn resolve(&self, name: &str) -> Result<Digest> {
        if name.contains('@') {
            return self.resolve_repo_digest(name);
        }
        let state = self.state();
        if let Ok(d) = Digest::parse(name) {
            if state.images.contains_key(&d) {
                return Ok(d);
            }
        }
        if let Ok(r) = Reference::parse(name) {
            if let Some(id) = state.tags.get(&r) {
                return Ok(id.clone());
            }
        }
        let prefix = name.strip_prefix("sha256:").unwrap_or(name);
        if !prefix.is_empty() && prefix.len() < 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let found: Vec<&Digest> = state
                .images
                .keys()
                .filter(|id| id.hex().starts_with(prefix))
                .collect();
            match found.len() {
                1 => return Ok(found[0].clone()),
                0 => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "image id prefix {name:?} is ambiguous"
                    )))
                }
            }
        }
        Err(Error::not_found(format!("No such image: {name}")))
    }

    /// `name@sha256:...`: the image with that `RepoDigests` entry (Docker's short names).
    fn resolve_repo_digest(&self, name: &str) -> Result<Digest> {
        let short = name
            .strip_prefix("docker.io/")
            .map(|n| n.strip_prefix("library/").unwrap_or(n))
            .unwrap_or(name);
        let ids: Vec<Digest> = self.state().images.keys().cloned().collect();
        ids.into_iter()
            .find(|id| self.repo_digests(id).iter().any(|d| d == short))
            .ok_or_else(|| Error::not_found(format!("No such image: {name}")))
    }

    /// The `repo:tag`s pointing at an image, sorted.
    pub fn tags_of(&self, id: &Digest) -> Vec<String> {
        self.state()
            .tags
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(r, _)| r.to_string())
            .collect()
    }

    /// Every tag and its image.
    pub fn all_tags(&self) -> Vec<(Reference, Digest)> {
        self.state()
            .tags
            .iter()
            .map(|(r, d)| (r.clone(), d.clone()))
            .collect()
    }

    /// Points `reference` at `id` (moving it from another image if needed).
    pub async fn tag(&self, reference: &Reference, id: &Digest) -> Result<()> {
        self.get(id)?;
        let now = now_rfc3339();
        self.update_tags(move |tags| {
            tags.insert(reference.clone(), id.clone());
        })
        .await?;
        let dir = self.metadata_dir(id);
        let stamp = now.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            atomic_write(&dir.join("lastUpdated"), stamp.as_bytes())
        })
        .await??;
        if let Some(img) = self.state().images.get_mut(id) {
            img.last_updated = Some(now);
        }
        Ok(())
    }

    /// Removes a tag; returns the image it named.
    pub async fn untag(&self, reference: &Reference) -> Result<Digest> {
        let id = self
            .state()
            .tags
            .get(reference)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No such image: {reference}")))?;
        self.update_tags(|tags| {
            tags.remove(reference);
        })
        .await?;
        Ok(id)
    }

    async fn update_tags(
        &self,
        change: impl FnOnce(&mut BTreeMap<Reference, Digest>),
    ) -> Result<()> {
        let (bytes, previous) = {
            let mut state = self.state();
            let previous = state.tags.clone();
            change(&mut state.tags);
            (repositories_json(&state.tags)?, previous)
        };
        let path = self.inner.root.join("repositories.json");
        let written = tokio::task::spawn_blocking(move || atomic_write(&path, &bytes)).await?;
        if written.is_err() {
            self.state().tags = previous;
        }
        written
    }

    /// Deletes an image: its tags, config and metadata; releases its layers. Returns the layers
    /// removed from the driver. The caller checks containers and children first.
    pub async fn delete(&self, id: &Digest) -> Result<Vec<LayerInfo>> {
        let img = self.get(id)?;
        let had_tags = !self.tags_of(id).is_empty();
        if had_tags {
            self.update_tags(|tags| tags.retain(|_, v| v != id)).await?;
        }
        let content = self.content_path(id);
        let meta = self.metadata_dir(id);
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&content) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &content, e)),
            }
            remove_tree(&meta)
        })
        .await??;
        self.state().images.remove(id);
        match img.top_layer() {
            Some(t) => self.inner.layers.release(&t).await,
            None => Ok(Vec::new()),
        }
    }

    /// Images whose recorded parent is `id`.
    pub fn children(&self, id: &Digest) -> Vec<Digest> {
        self.state()
            .images
            .values()
            .filter(|i| i.parent.as_ref() == Some(id))
            .map(|i| i.id.clone())
            .collect()
    }

    /// Bytes of all the image's layers (Docker's Size).
    pub fn size(&self, id: &Digest) -> Result<u64> {
        let img = self.get(id)?;
        match img.top_layer() {
            Some(t) => Ok(self.inner.layers.stack(&t)?.iter().map(|l| l.size).sum()),
            None => Ok(0),
        }
    }

    /// `docker image inspect`.
    pub async fn inspect(&self, id: &Digest) -> Result<ImageInspect> {
        let img = self.get(id)?;
        let c = &img.config;
        let size = self.size(id)? as i64;
        let driver = self.inner.layers.driver();
        let data = match img.top_layer() {
            Some(t) => {
                let info = self
                    .inner
                    .layers
                    .get(&t)
                    .ok_or_else(|| Error::not_found(format!("layer {t}")))?;
                let m = driver.metadata(&info.cache_id).await?;
                (!m.is_empty()).then_some(m)
            }
            None => None,
        };
        Ok(ImageInspect {
            id: id.to_string(),
            repo_tags: self.tags_of(id),
            repo_digests: self.repo_digests(id),
            parent: img
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            comment: c.comment.clone().unwrap_or_default(),
            created: c.created.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
            container: c.container.clone().unwrap_or_default(),
            container_config: c.container_config.clone().unwrap_or(Value::Null),
            docker_version: c.docker_version.clone().unwrap_or_default(),
            author: c.author.clone().unwrap_or_default(),
            config: c.config.clone().unwrap_or(Value::Null),
            architecture: c.architecture.clone(),
            variant: c.variant.clone(),
            os: c.os.clone(),
            size,
            virtual_size: size,
            graph_driver: GraphDriverData {
                data,
                name: driver.name().to_string(),
            },
            root_fs: RootFsInspect {
                kind: c.rootfs.kind.clone(),
                layers: c.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata: ImageMetadata {
                last_tag_time: img
                    .last_updated
                    .clone()
                    .unwrap_or_else(|| ZERO_TIME.to_string()),
            },
        })
    }
}

fn repositories_json(tags: &BTreeMap<Reference, Digest>) -> Result<Vec<u8>> {
    let mut file = RepositoriesFile::default();
    for (r, id) in tags {
        file.repositories
            .entry(r.repo.clone())
            .or_default()
            .insert(r.to_string(), id.to_string());
    }
    serde_json::to_vec(&file).map_err(|e| Error::Other(e.to_string()))
}

fn load(root: &Path) -> Result<(Vec<ImageRecord>, BTreeMap<Reference, Digest>)> {
    let content = root.join("imagedb/content/sha256");
    let metadata = root.join("imagedb/metadata/sha256");
    for d in [&content, &metadata] {
        std::fs::create_dir_all(d).ctx("create directory", d)?;
    }
    let mut images = Vec::new();
    for entry in std::fs::read_dir(&content).ctx("read directory", &content)? {
        let path = entry.ctx("read directory", &content)?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Ok(id) = Digest::parse(&name) else {
            continue; // a temporary file of an interrupted atomic write
        };
        let raw = std::fs::read(&path).ctx("read", &path)?;
        if Digest::of_bytes(&raw) != id {
            warn!(image = %id, "image config does not match its id; ignored");
            continue;
        }
        let config = match ImageConfig::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                warn!(image = %id, error = %e, "unreadable image config; ignored");
                continue;
            }
        };
        let meta = metadata.join(id.hex());
        let parent = read_opt(&meta.join("parent"))?.and_then(|p| Digest::parse(&p).ok());
        let last_updated = read_opt(&meta.join("lastUpdated"))?;
        images.push(ImageRecord {
            id,
            config: Arc::new(config),
            parent,
            last_updated,
        });
    }
    let mut tags = BTreeMap::new();
    let repos_path = root.join("repositories.json");
    if let Some(text) = read_opt(&repos_path)? {
        let file: RepositoriesFile = serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("{} is not valid: {e}", repos_path.display())))?;
        let known: BTreeSet<&Digest> = images.iter().map(|i| &i.id).collect();
        for refs in file.repositories.values() {
            for (r, id) in refs {
                match (Reference::parse(r), Digest::parse(id)) {
                    (Ok(r), Ok(id)) if known.contains(&id) => {
                        tags.insert(r, id);
                    }
                    _ => warn!(reference = %r, "repositories.json entry ignored"),
                }
            }
        }
    }
    Ok((images, tags))
}

/// The current time as RFC 3339 with nanoseconds, UTC (Docker's time format).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats a unix time as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (fraction trimmed as Go does).
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses the RFC 3339 times Docker writes (`2026-11-27T23:14:56.403413452Z`, offsets
/// allowed) to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let s = "2026-11-27T23:14:56.403413452Z";
        let secs = parse_rfc3339(s).unwrap();
        assert_eq!(format_rfc3339(secs, 403_413_452), s);
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
    }

    #[test]
    fn repositories_json_has_dockers_shape() {
        let mut tags = BTreeMap::new();
        let id = Digest::parse(&"a".repeat(64)).unwrap();
        tags.insert(Reference::parse("bb").unwrap(), id.clone());
        let text = String::from_utf8(repositories_json(&tags).unwrap()).unwrap();
        assert_eq!(
            text,
            format!("{{\"Repositories\":{{\"bb\":{{\"bb:latest\":\"{id}\"}}}}}}")
        );
    }
}
