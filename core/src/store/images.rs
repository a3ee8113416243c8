//! The image store: configs by id in `imagedb/content/sha256/<hex>` (byte-exact; the id is
//! their sha256), `imagedb/metadata/sha256/<hex>/{parent,lastUpdated}`, and tags in
//! `repositories.json`, Docker's shape, written atomically. Each image holds a reference on
//! its top layer in the [`LayerStore`].
//!
//! Writes are serialised per document: `repositories.json` has one lock, each image's files
//! (config and metadata) one lock per id; an operation that needs both takes the image's
//! first. The in-memory state changes only after its file is written, so what a caller was
//! told is what is on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::digest::{chain_ids, Digest};
pub use super::image_inspect::{GraphDriverData, ImageInspect, ImageMetadata, RootFsInspect};
use super::layers::{LayerInfo, LayerStore};
use super::read_opt;
use super::reference::Reference;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::doc_lock::DocLocks;
use crate::fsutil::{atomic_write, remove_tree};
pub use crate::rfc3339::{now as now_rfc3339, unix_seconds as parse_rfc3339};

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
    /// Held across every read-modify-write of `repositories.json`.
    tags_doc: tokio::sync::Mutex<()>,
    /// Held across every change of one image's config and metadata files.
    image_docs: DocLocks<Digest>,
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
                    let why = format!("its layers are missing: {e}");
                    super::quarantine::quarantine_image(&root, img.id.hex(), &why);
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
                tags_doc: tokio::sync::Mutex::new(()),
                image_docs: DocLocks::new(),
            }),
        })
    }

    pub fn layers(&self) -> &LayerStore {
        &self.inner.layers
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn content_path(&self, id: &Digest) -> PathBuf {
        self.inner
            .root
            .join("imagedb/content/sha256")
            .join(id.hex())
    }

    pub(super) fn metadata_dir(&self, id: &Digest) -> PathBuf {
        self.inner
            .root
            .join("imagedb/metadata/sha256")
            .join(id.hex())
    }

    /// Stores an image config (its layers must be registered). Returns its id and whether it
    /// is new. The image takes a reference on its top layer.
    pub async fn create(&self, raw: Vec<u8>) -> Result<(Digest, bool)> {
        self.create_tagged(raw, &[]).await
    }

    /// [`Self::create`], then points every reference at the image, with the image's lock held
    /// throughout: a concurrent delete cannot remove the image between the two.
    pub async fn create_tagged(
        &self,
        raw: Vec<u8>,
        references: &[Reference],
    ) -> Result<(Digest, bool)> {
        let config = ImageConfig::parse(&raw)?;
        let id = Digest::of_bytes(&raw);
        let _doc = self.inner.image_docs.lock(&id).await;
        let created = self.create_held(config, raw, &id).await?;
        for r in references {
            self.tag_held(r, &id).await?;
        }
        Ok((id, created))
    }

    /// Creates the image; the caller holds its lock.
    async fn create_held(&self, config: ImageConfig, raw: Vec<u8>, id: &Digest) -> Result<bool> {
        let id = id.clone();
        if self.state().images.contains_key(&id) {
            return Ok(false);
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
        let written = tokio::task::spawn_blocking(move || atomic_write(&path, &raw)).await?;
        if let Err(e) = written {
            if let Some(t) = &top {
                self.inner.layers.release(t).await?;
            }
            return Err(e);
        }
        let record = ImageRecord {
            id: id.clone(),
            config: Arc::new(config),
            parent: None,
            last_updated: None,
        };
        self.state().images.insert(id, record);
        Ok(true)
    }

    /// Records the image's parent image (commit and build set it), as Docker's metadata.
    pub async fn set_parent(&self, id: &Digest, parent: &Digest) -> Result<()> {
        let _doc = self.inner.image_docs.lock(id).await;
        self.get(id)?;
        let dir = self.metadata_dir(id);
        let p = parent.clone();
        tokio::task::spawn_blocking(move || {
            crate::fsutil::create_dir_durable(&dir)?;
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
        // The image's lock keeps a concurrent delete from removing it under the new tag.
        let _doc = self.inner.image_docs.lock(id).await;
        self.tag_held(reference, id).await
    }

    /// Tags the image; the caller holds its lock.
    async fn tag_held(&self, reference: &Reference, id: &Digest) -> Result<()> {
        self.get(id)?;
        let now = now_rfc3339();
        self.update_tags(move |tags| {
            tags.insert(reference.clone(), id.clone());
        })
        .await?;
        let dir = self.metadata_dir(id);
        let stamp = now.clone();
        tokio::task::spawn_blocking(move || {
            crate::fsutil::create_dir_durable(&dir)?;
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
        let mut untagged = None;
        self.update_tags(|tags| untagged = tags.remove(reference))
            .await?;
        untagged.ok_or_else(|| Error::not_found(format!("No such image: {reference}")))
    }

    /// Read-modify-write of `repositories.json` under its lock: `change` edits a copy of the
    /// tags, the copy is written, and only then becomes the in-memory state. A change that
    /// changes nothing writes nothing.
    async fn update_tags(
        &self,
        change: impl FnOnce(&mut BTreeMap<Reference, Digest>),
    ) -> Result<()> {
        let _doc = self.inner.tags_doc.lock().await;
        let mut tags = self.state().tags.clone();
        let before = tags.clone();
        change(&mut tags);
        if tags == before {
            return Ok(());
        }
        let bytes = repositories_json(&tags)?;
        let path = self.inner.root.join("repositories.json");
        tokio::task::spawn_blocking(move || atomic_write(&path, &bytes)).await??;
        self.state().tags = tags;
        Ok(())
    }

    /// Deletes an image: its tags, config and metadata; releases its layers. Returns the layers
    /// removed from the driver. The caller checks containers and children first.
    pub async fn delete(&self, id: &Digest) -> Result<Vec<LayerInfo>> {
        let _doc = self.inner.image_docs.lock(id).await;
        let img = self.get(id)?;
        self.update_tags(|tags| tags.retain(|_, v| v != id)).await?;
        let content = self.content_path(id);
        let meta = self.metadata_dir(id);
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&content) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &content, e)),
            }
            if let Some(dir) = content.parent() {
                crate::fsutil::fsync_dir(dir)?;
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
    // What writes interrupted by a crash left (the store is not open yet: no writer runs).
    crate::fsutil::remove_stale_temps(root)?;
    crate::fsutil::remove_stale_temps(&content)?;
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
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) => {
                let why = format!("image config unreadable: {e}");
                super::quarantine::quarantine_image(root, id.hex(), &why);
                continue;
            }
        };
        if Digest::of_bytes(&raw) != id {
            let why = "image config does not match its id";
            super::quarantine::quarantine_image(root, id.hex(), why);
            continue;
        }
        let config = match ImageConfig::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("image config does not parse: {e}");
                super::quarantine::quarantine_image(root, id.hex(), &why);
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

#[cfg(test)]
mod tests {
    use super::*;

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
