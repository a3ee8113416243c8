//! `docker load`: reads an image archive in one sequential pass (plain or gzip; Docker's
//! classic form, the OCI layout, or both in one archive) and streams each layer straight into
//! the layer store.
//!
//! A layer's chain id depends on its parent, so a layer can be applied as it streams only when
//! its place in the stack is known when it arrives:
//! - from a manifest read earlier (`manifest.json` + config, or `index.json` + OCI manifest +
//!   config): the layer's expected diffID and parent are known. If its chain exists already it
//!   is skipped unread; otherwise it is applied on its parent and checked against the diffID.
//!   Archives written by `save` put the metadata first, so they always load this way.
//! - from the classic `<v1-id>/json` `parent` field (dockerd 20.10 writes the layer directories
//!   before `manifest.json`, but in an order where a parent often comes first): applied on the
//!   parent's layer if no layer with that parent exists yet (so it cannot be a duplicate).
//! - otherwise (parent not yet seen, or a possible duplicate, or OCI blobs that precede
//!   `index.json`) the layer is spooled, compressed as it came, to a temporary file while its
//!   diffID is computed; it is registered (or found to exist and skipped) as soon as its parent
//!   is known.
//!
//! At the end every image's layers are checked against its config's diff_ids; only then are
//! images created and tagged. On any error the references this load took are released, so the
//! layers it registered leave the driver and no image is created.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_core::layer::TarStream;
use strata_core::store::ingest::decompressed;
use strata_core::store::{
    chain_id, chain_ids, Digest, ImageConfig, ImageStore, LayerStore, Reference, RegisterOpts,
};
use strata_core::{Error, IoContext, Result};
use tracing::debug;

use super::manifest::{
    blob_digest, blob_path, normalize, parse_json, DockerManifestEntry, OciIndex, OciManifest,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MT_DOCKER_LIST, MT_INDEX,
};
use super::outer::{read_archive, Event};

/// Metadata files (manifests, configs, indexes) are kept in memory while a load runs; this
/// bounds them.
const MAX_METADATA_BYTES: u64 = 256 << 20;

/// What a load reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadProgress {
    /// Bytes of a layer read from the archive (`id`: 12 hex digits naming the layer entry).
    LayerBytes {
        id: String,
        current: u64,
        total: u64,
    },
    /// The layer was present already and was not applied.
    LayerExists { id: String },
    /// The layer was applied.
    LayerLoaded { id: String },
    /// An image was created (or existed) and got its tags.
    ImageLoaded { id: Digest, tags: Vec<String> },
}

pub type LoadProgressFn = Arc<dyn Fn(LoadProgress) + Send + Sync>;

#[derive(Clone)]
pub struct LoadOptions {
    /// Where layers that cannot be streamed are spooled (`<data-root>/tmp`).
    pub spool_dir: PathBuf,
    pub progress: Option<LoadProgressFn>,
}

/// One image of the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    pub id: Digest,
    pub tags: Vec<String>,
}

/// Loads every image of the archive. See the module docs for the order rules.
pub async fn load(
    images: &ImageStore,
    input: TarStream,
    opts: LoadOptions,
) -> Result<Vec<LoadedImage>> {
    std::fs::create_dir_all(&opts.spool_dir).ctx("create directory", &opts.spool_dir)?;
    let spool = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(&opts.spool_dir)
        .ctx("create directory", &opts.spool_dir)?;
    let mut loader = Loader {
        images,
        layers: images.layers().clone(),
        progress: opts.progress.clone(),
        spool_dir: spool.path().to_path_buf(),
        smalls: HashMap::new(),
        links: HashMap::new(),
        placed: HashMap::new(),
        spooled: HashMap::new(),
        held: Vec::new(),
    };
    let result = loader.run(input).await;
    // The images (if created) hold their layers now; what this load held goes.
    for chain in std::mem::take(&mut loader.held) {
        if let Err(e) = loader.layers.release(&chain).await {
            tracing::warn!(%chain, error = %e, "releasing a layer after load failed");
        }
    }
    drop(spool);
    result
}

/// Where a layer sits in some image: its diffID and parent chain.
#[derive(Debug, Clone)]
struct Position {
    diff_id: Digest,
    chain: Digest,
    parent: Option<Digest>,
}

struct Spooled {
    file: PathBuf,
    diff_id: Digest,
}

/// One image to create: config path and layer paths as the archive names them.
struct Planned {
    config: String,
    layers: Vec<String>,
    tags: Vec<String>,
}

struct Loader<'a> {
    images: &'a ImageStore,
    layers: LayerStore,
    progress: Option<LoadProgressFn>,
    spool_dir: PathBuf,
    smalls: HashMap<String, Vec<u8>>,
    links: HashMap<String, String>,
    /// Layer path to the chains it was registered (or found) under.
    placed: HashMap<String, Vec<Digest>>,
    spooled: HashMap<String, Spooled>,
    /// References taken by this load, released at its end.
    held: Vec<Digest>,
}

impl Loader<'_> {
    async fn run(&mut self, input: TarStream) -> Result<Vec<LoadedImage>> {
        let bytes_progress = self.progress.clone().map(|p| {
            Arc::new(move |path: &str, current: u64, total: u64| {
                p(LoadProgress::LayerBytes {
                    id: short_name(path),
                    current,
                    total,
                })
            }) as super::outer::LayerBytesFn
        });
        let (mut events, reader) = read_archive(input, bytes_progress);
        let mut outcome = Ok(());
        let mut metadata_bytes: u64 = 0;
        while let Some(event) = events.recv().await {
            let step = match event {
                Event::Small { path, data } => {
                    metadata_bytes += data.len() as u64;
                    if metadata_bytes > MAX_METADATA_BYTES {
                        outcome = Err(Error::invalid(
                            "the image archive holds more than 256 MiB of metadata files; it is \
                             not an image archive Docker would write",
                        ));
                        break;
                    }
                    self.smalls.insert(path, data);
                    self.resolve_spooled().await
                }
                Event::Link { path, target } => {
                    self.links.insert(path, target);
                    self.resolve_spooled().await
                }
                Event::Layer { path, size, body } => self.on_layer(path, size, body).await,
            };
            if let Err(e) = step {
                outcome = Err(e);
                break;
            }
        }
        drop(events);
        let read = reader.await?;
        // A reading error explains a failed layer best; report it first.
        read?;
        outcome?;
        self.finish().await
    }

    fn note(&self, p: LoadProgress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// Follows archive links (Docker 25 links `<id>/layer.tar` to `blobs/sha256/...`).
    fn resolve(&self, path: &str) -> String {
        let mut p = normalize("", path).unwrap_or_default();
        for _ in 0..16 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    /// The images the metadata read so far describes.
    fn plans(&self) -> Result<Vec<Planned>> {
        if let Some(data) = self.smalls.get("manifest.json") {
            let entries: Vec<DockerManifestEntry> = parse_json("manifest.json", data)?;
            return Ok(entries
                .into_iter()
                .map(|e| Planned {
                    config: e.config,
                    layers: e.layers,
                    tags: e.repo_tags.unwrap_or_default(),
                })
                .collect());
        }
        let Some(data) = self.smalls.get("index.json") else {
            return Ok(Vec::new());
        };
        let index: OciIndex = parse_json("index.json", data)?;
        let mut out = Vec::new();
        let mut todo: Vec<(super::manifest::Descriptor, usize)> =
            index.manifests.into_iter().map(|d| (d, 0)).collect();
        while let Some((desc, depth)) = todo.pop() {
            let Some(blob) = self.blob(&desc.digest)? else {
                continue; // not read yet
            };
            if desc.media_type == MT_INDEX || desc.media_type == MT_DOCKER_LIST {
                if depth < 4 {
                    let nested: OciIndex = parse_json("nested image index", &blob)?;
                    todo.extend(nested.manifests.into_iter().map(|d| (d, depth + 1)));
                }
                continue;
            }
            let m: OciManifest = parse_json("OCI image manifest", &blob)?;
            let tags = image_name(&desc).into_iter().collect();
            out.push(Planned {
                config: blob_path(&m.config.digest),
                layers: m.layers.iter().map(|l| blob_path(&l.digest)).collect(),
                tags,
            });
        }
        Ok(out)
    }

    /// A small blob, checked against its digest.
    fn blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let Some(data) = self.smalls.get(&self.resolve(&blob_path(d))) else {
            return Ok(None);
        };
        if Digest::of_bytes(data) != *d {
            return Err(Error::invalid(format!(
                "blob {d} in the archive does not match its digest (the archive is corrupt)"
            )));
        }
        Ok(Some(data.clone()))
    }

    fn config_of(&self, plan: &Planned) -> Result<Option<(Vec<u8>, ImageConfig)>> {
        let path = self.resolve(&plan.config);
        let Some(data) = self.smalls.get(&path) else {
            return Ok(None);
        };
        if let Some(d) = blob_digest(&path) {
            if Digest::of_bytes(data) != d {
                return Err(Error::invalid(format!(
                    "image config {path} does not match its digest (the archive is corrupt)"
                )));
            }
        }
        let config = ImageConfig::parse(data)?;
        Ok(Some((data.clone(), config)))
    }

    /// Positions of every layer the known manifests and configs place.
    fn positions(&self) -> Result<HashMap<String, Position>> {
        let mut out = HashMap::new();
        for plan in self.plans()? {
            let Some((_, config)) = self.config_of(&plan)? else {
                continue;
            };
            let chains = chain_ids(&config.rootfs.diff_ids);
            for (i, layer) in plan.layers.iter().enumerate() {
                let (Some(diff), Some(chain)) = (config.rootfs.diff_ids.get(i), chains.get(i))
                else {
                    continue;
                };
                out.insert(
                    self.resolve(layer),
                    Position {
                        diff_id: diff.clone(),
                        chain: chain.clone(),
                        parent: i.checked_sub(1).map(|p| chains[p].clone()),
                    },
                );
            }
        }
        Ok(out)
    }

    /// The parent chain of a classic `<id>/layer.tar` from `<id>/json`: `Some(None)` for a
    /// base layer, `Some(Some(chain))` when the parent was placed, `None` when unknown.
    fn v1_parent(&self, path: &str) -> Option<Option<Digest>> {
        let dir = path.strip_suffix("/layer.tar")?;
        let json: serde_json::Value =
            serde_json::from_slice(self.smalls.get(&format!("{dir}/json"))?).ok()?;
        match json.get("parent").and_then(|p| p.as_str()) {
            None | Some("") => Some(None),
            Some(parent) => {
                let parent_path = self.resolve(&format!("{parent}/layer.tar"));
                self.placed
                    .get(&parent_path)
                    .and_then(|c| c.first())
                    .map(|c| Some(c.clone()))
            }
        }
    }

    async fn on_layer(&mut self, path: String, size: u64, body: TarStream) -> Result<()> {
        let positions = self.positions()?;
        if let Some(pos) = positions.get(&path) {
            if self.layers.exists(&pos.chain) {
                drop(body);
                self.hold_existing(&path, &pos.chain)?;
                return self.resolve_spooled().await;
            }
            if pos.parent.as_ref().is_none_or(|p| self.layers.exists(p)) {
                let expected = Some(pos.diff_id.clone());
                self.register(&path, pos.parent.clone(), body, expected)
                    .await?;
                return self.resolve_spooled().await;
            }
        } else if let Some(parent) = self.v1_parent(&path) {
            if !self.layers.has_children(parent.as_ref()) {
                self.register(&path, parent, body, None).await?;
                return self.resolve_spooled().await;
            }
        }
        debug!(%path, size, "spooling a layer whose place is not known yet");
        self.spool(&path, body).await?;
        self.resolve_spooled().await
    }

    fn hold_existing(&mut self, path: &str, chain: &Digest) -> Result<()> {
        self.layers.acquire(chain)?;
        self.held.push(chain.clone());
        self.place(path, chain);
        self.note(LoadProgress::LayerExists {
            id: short_name(path),
        });
        Ok(())
    }

    fn place(&mut self, path: &str, chain: &Digest) {
        let chains = self.placed.entry(path.to_string()).or_default();
        if !chains.contains(chain) {
            chains.push(chain.clone());
        }
    }

    async fn register(
        &mut self,
        path: &str,
        parent: Option<Digest>,
        body: TarStream,
        expected: Option<Digest>,
    ) -> Result<()> {
        let opts = RegisterOpts {
            expected_diff_id: expected,
            progress: None,
        };
        let r = self
            .layers
            .register(parent.as_ref(), body, opts)
            .await
            .map_err(|e| match e {
                Error::InvalidInput(m) => Error::invalid(format!("layer {path}: {m}")),
                other => other,
            })?;
        self.held.push(r.layer.chain_id.clone());
        self.place(path, &r.layer.chain_id);
        self.note(if r.applied {
            LoadProgress::LayerLoaded {
                id: short_name(path),
            }
        } else {
            LoadProgress::LayerExists {
                id: short_name(path),
            }
        });
        Ok(())
    }

    async fn spool(&mut self, path: &str, mut body: TarStream) -> Result<()> {
        let file = self.spool_dir.join(format!("layer-{}", self.spooled.len()));
        let mut out = tokio::fs::File::create(&file).await.ctx("create", &file)?;
        tokio::io::copy(&mut body, &mut out)
            .await
            .ctx("write", &file)?;
        drop(out);
        let f = file.clone();
        let diff_id = tokio::task::spawn_blocking(move || diff_id_of_file(&f)).await??;
        self.spooled
            .insert(path.to_string(), Spooled { file, diff_id });
        Ok(())
    }

    /// Registers (or finds) every spooled layer whose parent is now known, base first.
    async fn resolve_spooled(&mut self) -> Result<()> {
        loop {
            if self.spooled.is_empty() {
                return Ok(());
            }
            let positions = self.positions()?;
            let mut ready = None;
            for (path, s) in &self.spooled {
                let parent = match positions.get(path) {
                    Some(pos) => {
                        if pos.parent.as_ref().is_some_and(|p| !self.layers.exists(p)) {
                            continue;
                        }
                        pos.parent.clone()
                    }
                    None => match self.v1_parent(path) {
                        Some(parent) => parent,
                        None => continue,
                    },
                };
                let expected = positions.get(path).map(|p| p.diff_id.clone());
                ready = Some((path.clone(), parent, expected, s.diff_id.clone()));
                break;
            }
            let Some((path, parent, expected, diff_id)) = ready else {
                return Ok(());
            };
            self.register_spooled(&path, parent, expected, &diff_id)
                .await?;
        }
    }

    async fn register_spooled(
        &mut self,
        path: &str,
        parent: Option<Digest>,
        expected: Option<Digest>,
        diff_id: &Digest,
    ) -> Result<()> {
        let Some(s) = self.spooled.remove(path) else {
            return Ok(());
        };
        if let Some(e) = &expected {
            if e != diff_id {
                return Err(Error::invalid(format!(
                    "layer {path}: layer content does not match its digest: expected {e}, got \
                     {diff_id} (the archive is corrupt or was modified)"
                )));
            }
        }
        let chain = chain_id(parent.as_ref(), diff_id);
        if self.layers.exists(&chain) {
            self.hold_existing(path, &chain)?;
        } else {
            let file = tokio::fs::File::open(&s.file).await.ctx("open", &s.file)?;
            let body: TarStream = Box::pin(file);
            self.register(path, parent, body, Some(diff_id.clone()))
                .await?;
        }
        let _ = tokio::fs::remove_file(&s.file).await;
        Ok(())
    }

    /// Checks every image's layers against its config, then creates and tags the images.
    async fn finish(&mut self) -> Result<Vec<LoadedImage>> {
        let plans = self.plans()?;
        if plans.is_empty() {
            return Err(Error::invalid(
                "not an image archive: it has neither manifest.json nor an OCI index.json \
                 naming an image",
            ));
        }
        let mut ready = Vec::new();
        for plan in &plans {
            let (raw, config) = self.config_of(plan)?.ok_or_else(|| {
                Error::invalid(format!(
                    "the archive's manifest names config {}, which is not in the archive",
                    plan.config
                ))
            })?;
            let diffs = &config.rootfs.diff_ids;
            if diffs.len() != plan.layers.len() {
                return Err(Error::invalid(format!(
                    "image config {} lists {} layers but the manifest names {}",
                    plan.config,
                    diffs.len(),
                    plan.layers.len()
                )));
            }
            let chains = chain_ids(diffs);
            for (i, layer) in plan.layers.iter().enumerate() {
                let path = self.resolve(layer);
                let parent = i.checked_sub(1).map(|p| chains[p].clone());
                if self.spooled.contains_key(&path) {
                    let diff = self.spooled[&path].diff_id.clone();
                    self.register_spooled(&path, parent, Some(diffs[i].clone()), &diff)
                        .await?;
                }
                let placed = self.placed.get(&path).cloned().unwrap_or_default();
                if placed.is_empty() {
                    return Err(Error::invalid(format!(
                        "the archive's manifest names layer {layer}, which is not in the archive"
                    )));
                }
                // The file's content was checked against this diffID wherever it was placed.
                let same_content = placed.iter().any(|c| {
                    *c == chains[i] || self.layers.get(c).is_some_and(|l| l.diff_id == diffs[i])
                });
                if !same_content || !self.layers.exists(&chains[i]) {
                    return Err(Error::invalid(format!(
                        "layer {path} does not match the image config (expected diffID {}): \
                         the archive is corrupt or its layer order is wrong",
                        diffs[i]
                    )));
                }
                self.layers.acquire(&chains[i])?;
                self.held.push(chains[i].clone());
            }
            let tags = plan
                .tags
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>>>()?;
            ready.push((raw, tags));
        }
        let mut loaded = Vec::new();
        for (raw, tags) in ready {
            let (id, _) = self.images.create_tagged(raw, &tags).await?;
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            self.note(LoadProgress::ImageLoaded {
                id: id.clone(),
                tags: tags.clone(),
            });
            loaded.push(LoadedImage { id, tags });
        }
        Ok(loaded)
    }
}

/// The image name an index entry carries, if any.
fn image_name(desc: &super::manifest::Descriptor) -> Option<String> {
    if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
        return Some(n.clone());
    }
    // A bare ref name is only a tag; a full reference is usable.
    desc.annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|n| n.contains(':') || n.contains('/'))
        .cloned()
}

/// 12 hex digits naming a layer entry, for progress lines.
fn short_name(path: &str) -> String {
    let name = path
        .strip_suffix("/layer.tar")
        .unwrap_or(path)
        .rsplit('/')
        .next()
        .unwrap_or(path);
    name.chars().take(12).collect()
}

fn diff_id_of_file(path: &Path) -> Result<Digest> {
    let file = std::fs::File::open(path).ctx("open", path)?;
    let mut reader = decompressed(file)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(hasher))
}
