//! `docker pull`: resolves a reference on its registry (a manifest list or OCI index is
//! narrowed to the wanted platform), fetches the config, then downloads the layers the layer
//! store does not have, several at a time, each verified against its blob digest while it
//! streams into a spool file. Layers are applied base first, each while its download streams
//! in (the apply follows the growing spool file, see [`super::spool`]), through the same
//! [`LayerStore::register`] path `docker load` uses, and checked against the config's diffID.
//! Any failure releases what the pull registered, so nothing of a failed pull is left.
//!
//! Two phases, so the API can answer resolution errors (unknown manifest, auth) as HTTP
//! errors before its progress stream starts: [`resolve`], then [`PullPlan::fetch`].

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use strata_core::store::{
    chain_ids, Digest, ImageConfig, ImageStore, LayerStore, Reference, RegisterOpts,
};
use strata_core::TarStream;
use strata_distribution::auth::repository_scope;
use strata_distribution::blob::{body_stream, verified, verified_after};
use strata_distribution::manifest::{select_platform, ImageManifest, Manifest};
use strata_distribution::{
    AuthConfig, BlobMetadata, BlobSource, ClientConfig, Descriptor, DistError, ImageRef, Platform,
    Registry,
};

use super::partial::PartialBlob;
use super::spool::{spool_file, SpoolFollower, SpoolWriter};

type Result<T> = std::result::Result<T, DistError>;
type Download = tokio::task::JoinHandle<Result<()>>;

/// One layer's download: the task, the spool file's follower (taken by the apply), and the
/// claim on the blob's resumable partial file (None: spooled privately).
struct LayerDownload {
    task: Download,
    follower: Option<SpoolFollower>,
    partial: Option<Arc<PartialBlob>>,
}

/// Bytes of a layer download gathered before each spool write.
const SPOOL_WRITE: usize = 1 << 20;

/// Image configs larger than this are refused.
const MAX_CONFIG_BYTES: usize = 8 << 20;

/// A layer's progress, as Docker's pull reports it (`id`: 12 hex of the blob digest).
#[derive(Debug, Clone, PartialEq)]
pub enum PullProgress {
    AlreadyExists {
        id: String,
    },
    PullingFsLayer {
        id: String,
    },
    Waiting {
        id: String,
    },
    Downloading {
        id: String,
        current: u64,
        total: u64,
    },
    VerifyingChecksum {
        id: String,
    },
    DownloadComplete {
        id: String,
    },
    Extracting {
        id: String,
        current: u64,
    },
    PullComplete {
        id: String,
    },
}

pub type PullProgressFn = Arc<dyn Fn(PullProgress) + Send + Sync>;

#[derive(Clone)]
pub struct PullOptions {
    pub client: ClientConfig,
    pub auth: Option<AuthConfig>,
    pub platform: Platform,
    pub max_concurrent_downloads: usize,
    /// Where layers are spooled while they download (`<data-root>/tmp`).
    pub spool_dir: PathBuf,
    pub metadata: BlobMetadata,
}

/// A resolved pull: what to fetch.
pub struct PullPlan {
    registry: Arc<Registry>,
    pub reference: ImageRef,
    /// The digest the reference resolved to (a list's digest when it named a list).
    pub manifest_digest: Digest,
    manifest: ImageManifest,
    raw_config: Vec<u8>,
    config: ImageConfig,
    opts: PullOptions,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: Digest,
    pub manifest_digest: Digest,
    /// False when the reference already named this image.
    pub updated: bool,
}

fn scope(r: &ImageRef) -> String {
    repository_scope(&r.repository, false)
}

/// Connects, fetches the manifest (the platform's, from a list) and the config.
pub async fn resolve(reference: &ImageRef, opts: PullOptions) -> Result<PullPlan> {
    let registry = Registry::connect(&opts.client, reference.api_host(), opts.auth.clone()).await?;
    let scope = scope(reference);
    let repo = &reference.repository;
    let top = registry
        .get_manifest(repo, &reference.manifest_reference(), &scope)
        .await?;
    let manifest = match Manifest::parse(&top.media_type, &top.body)? {
        Manifest::Image(m) => m,
        Manifest::Index(index) => {
            let entry = select_platform(&index, &opts.platform).ok_or_else(|| {
                DistError::Invalid(format!(
                    "no matching manifest for {} in the manifest list entries",
                    opts.platform
                ))
            })?;
            let m = registry
                .get_manifest(repo, entry.digest.as_str(), &scope)
                .await?;
            match Manifest::parse(&m.media_type, &m.body)? {
                Manifest::Image(m) => m,
                Manifest::Index(_) => {
                    return Err(DistError::Invalid(
                        "the manifest list names another list for the platform".into(),
                    ))
                }
            }
        }
    };
    if let Some(l) = manifest.layers.iter().find(|l| l.is_foreign()) {
        return Err(DistError::Invalid(format!(
            "layer {} is a foreign (non-distributable) layer, which Strata does not fetch",
            l.digest
        )));
    }
    let raw_config = fetch_small(&registry, repo, &manifest.config, &scope).await?;
    let config = ImageConfig::parse(&raw_config)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(DistError::Invalid(format!(
            "the image config lists {} layers but the manifest names {}",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    Ok(PullPlan {
        registry: Arc::new(registry),
        reference: reference.clone(),
        manifest_digest: top.digest,
        manifest,
        raw_config,
        config,
        opts,
    })
}

/// A small blob (a config), read whole and verified.
async fn fetch_small(
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    scope: &str,
) -> Result<Vec<u8>> {
    if desc.size > MAX_CONFIG_BYTES as u64 {
        return Err(DistError::Invalid(format!(
            "the image config is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
            desc.size
        )));
    }
    let resp = registry.get_blob(repo, &desc.digest, scope).await?;
    let mut s = verified(body_stream(resp), desc.digest.clone(), desc.size);
    let mut out = Vec::with_capacity(desc.size as usize);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

impl PullPlan {
    /// The image id the pull creates (the config's digest).
    pub fn image_id(&self) -> Digest {
        Digest::of_bytes(&self.raw_config)
    }

    /// Downloads and applies the missing layers, then creates and tags the image.
    pub async fn fetch(self, images: &ImageStore, progress: PullProgressFn) -> Result<Pulled> {
        let layers = images.layers().clone();
        let mut held: Vec<Digest> = Vec::new();
        let result = self.fetch_layers(images, &progress, &mut held).await;
        for chain in held {
            if let Err(e) = layers.release(&chain).await {
                tracing::warn!(%chain, error = %e, "releasing a layer after pull failed");
            }
        }
        result
    }

    async fn fetch_layers(
        &self,
        images: &ImageStore,
        progress: &PullProgressFn,
        held: &mut Vec<Digest>,
    ) -> Result<Pulled> {
        let layers = images.layers();
        let diffs = &self.config.rootfs.diff_ids;
        let chains = chain_ids(diffs);
        // Chains build on each other: the first missing layer and all above it are fetched.
        let first_missing = chains
            .iter()
            .position(|c| !layers.exists(c))
            .unwrap_or(chains.len());
        if first_missing > 0 {
            layers.acquire(&chains[first_missing - 1])?;
            held.push(chains[first_missing - 1].clone());
        }
        // Docker names present layers only when the image itself is new.
        let image_known = images.get(&self.image_id()).is_ok() && first_missing == chains.len();
        let present = if image_known { 0 } else { first_missing };
        for l in &self.manifest.layers[..present] {
            progress(PullProgress::AlreadyExists {
                id: short(&l.digest),
            });
        }
        let spool = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(&self.opts.spool_dir)?;
        let mut downloads = self.start_downloads(first_missing, spool.path(), progress);
        let outcome = self
            .apply_in_order(layers, first_missing, &mut downloads, progress, held)
            .await;
        for d in &downloads {
            d.task.abort();
        }
        outcome?;
        self.create_image(images).await
    }

    /// Applies the layers from `from` up, base first, each as its download streams in.
    async fn apply_in_order(
        &self,
        layers: &LayerStore,
        from: usize,
        downloads: &mut [LayerDownload],
        progress: &PullProgressFn,
        held: &mut Vec<Digest>,
    ) -> Result<()> {
        let diffs = &self.config.rootfs.diff_ids;
        let chains = chain_ids(diffs);
        for (i, download) in (from..).zip(downloads.iter_mut()) {
            let desc = &self.manifest.layers[i];
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            let body = download.follower.take().map(SpoolFollower::stream);
            let registered = match body {
                Some(body) => {
                    self.apply(layers, desc, &diffs[i], parent, body, progress)
                        .await
                }
                None => Err(DistError::Invalid("layer applied twice".into())),
            };
            // The download's own error (a digest mismatch) explains a failed apply best.
            let downloaded = (&mut download.task)
                .await
                .map_err(|e| DistError::Invalid(format!("layer download stopped: {e}")))?;
            downloaded?;
            held.push(registered?);
            // Applied: nothing to resume any more.
            if let Some(p) = &download.partial {
                p.discard();
            }
            progress(PullProgress::PullComplete {
                id: short(&desc.digest),
            });
        }
        Ok(())
    }

    /// Spawns every missing layer's download into its spool file; at most
    /// `max_concurrent_downloads` run at once.
    fn start_downloads(
        &self,
        from: usize,
        dir: &std::path::Path,
        progress: &PullProgressFn,
    ) -> Vec<LayerDownload> {
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.opts.max_concurrent_downloads.max(1),
        ));
        for desc in &self.manifest.layers[from..] {
            progress(PullProgress::PullingFsLayer {
                id: short(&desc.digest),
            });
        }
        let mut out = Vec::new();
        for (i, desc) in self.manifest.layers.iter().enumerate().skip(from) {
            progress(PullProgress::Waiting {
                id: short(&desc.digest),
            });
            let (registry, limit, progress) =
                (self.registry.clone(), limit.clone(), progress.clone());
            let (desc, repo) = (desc.clone(), self.reference.repository.clone());
            let partial = PartialBlob::claim(&self.opts.spool_dir, &desc.digest).map(Arc::new);
            let path = match &partial {
                Some(p) => p.path().to_path_buf(),
                None => dir.join(format!("layer-{i}")),
            };
            let (writer, follower) = spool_file(&path);
            let resume = partial.clone();
            let task = tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                download(&registry, &repo, &desc, writer, resume, &progress).await
            });
            out.push(LayerDownload {
                task,
                follower: Some(follower),
                partial,
            });
        }
        out
    }

    /// Applies one downloaded layer on `parent`; returns its chain id (held).
    async fn apply(
        &self,
        layers: &LayerStore,
        desc: &Descriptor,
        diff_id: &Digest,
        parent: Option<Digest>,
        body: TarStream,
        progress: &PullProgressFn,
    ) -> Result<Digest> {
        let id = short(&desc.digest);
        let p = progress.clone();
        let opts = RegisterOpts {
            expected_diff_id: Some(diff_id.clone()),
            progress: Some(Arc::new(move |current| {
                p(PullProgress::Extracting {
                    id: id.clone(),
                    current,
                })
            })),
        };
        let r = layers
            .register(parent.as_ref(), body, opts)
            .await
            .map_err(|e| match e {
                strata_core::Error::InvalidInput(m) => {
                    DistError::Invalid(format!("layer {}: {m}", desc.digest))
                }
                other => other.into(),
            })?;
        let source = BlobSource {
            digest: desc.digest.clone(),
            source_repository: format!("{}/{}", self.reference.registry, self.reference.repository),
            size: Some(desc.size),
        };
        if let Err(e) = self.opts.metadata.record(diff_id, source) {
            tracing::warn!(error = %e, "could not remember the layer's blob digest");
        }
        Ok(r.layer.chain_id)
    }

    async fn create_image(&self, images: &ImageStore) -> Result<Pulled> {
        let (id, _) = images.create(self.raw_config.clone()).await?;
        let name = self.reference.familiar_name();
        let mut updated = true;
        if let Some(tag) = &self.reference.tag {
            let r = Reference::parse(&format!("{name}:{tag}"))?;
            updated = images.resolve(&r.to_string()).ok().as_ref() != Some(&id);
            images.tag(&r, &id).await?;
        }
        images
            .add_repo_digest(&id, &format!("{name}@{}", self.manifest_digest))
            .await?;
        Ok(Pulled {
            id,
            manifest_digest: self.manifest_digest.clone(),
            updated,
        })
    }
}

/// Streams one layer blob into its spool file, verifying its digest and size as it goes; the
/// follower sees the end only once the blob verified.
async fn download(
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    mut out: SpoolWriter,
    partial: Option<Arc<PartialBlob>>,
    progress: &PullProgressFn,
) -> Result<()> {
    let result = copy_verified(registry, repo, desc, &mut out, partial.as_deref(), progress).await;
    match &result {
        Ok(()) => out.finish(),
        Err(e) => {
            // Wrong bytes are never resumed from; a broken connection's are.
            if let (Some(p), DistError::DigestMismatch { .. }) = (&partial, e) {
                p.discard();
            }
            out.fail(&e.to_string())
        }
    }
    result
}

async fn copy_verified(
    registry: &Registry,
    repo: &str,
    desc: &Descriptor,
    out: &mut SpoolWriter,
    partial: Option<&PartialBlob>,
    progress: &PullProgressFn,
) -> Result<()> {
    let id = short(&desc.digest);
    let scope = repository_scope(repo, false);
    let kept = match partial {
        Some(p) => Some(p.resume(desc.size).await?),
        None => None,
    };
    let (have, prefix) = kept.map_or((0, Default::default()), |k| (k.have, k.prefix));
    if have == desc.size && Digest::from_hasher(prefix.clone()) == desc.digest {
        // Fetched whole before (its apply did not finish): nothing to download.
        out.open_keeping(have).await?;
        progress(PullProgress::DownloadComplete { id });
        return Ok(());
    }
    let (resp, resumed) = registry
        .get_blob_from(repo, &desc.digest, &scope, have.min(desc.size - 1))
        .await?;
    let (have, prefix) = if resumed {
        tracing::info!(blob = %desc.digest, from = have, "resuming a layer download");
        (have, prefix)
    } else {
        (0, Default::default())
    };
    let mut body = verified_after(
        body_stream(resp),
        desc.digest.clone(),
        desc.size,
        prefix,
        have,
    );
    out.open_keeping(have).await?;
    let mut current = have;
    // Network chunks are small; the spool file is written (and its follower woken) per MiB.
    let mut pending = Vec::with_capacity(SPOOL_WRITE);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(unwrap_io)?;
        pending.extend_from_slice(&chunk);
        current += chunk.len() as u64;
        if pending.len() >= SPOOL_WRITE || current == desc.size {
            out.write(&pending).await?;
            pending.clear();
            progress(PullProgress::Downloading {
                id: id.clone(),
                current,
                total: desc.size,
            });
        }
    }
    // Written only once the stream ended, i.e. after the digest verified.
    if !pending.is_empty() {
        out.write(&pending).await?;
    }
    progress(PullProgress::VerifyingChecksum { id: id.clone() });
    progress(PullProgress::DownloadComplete { id });
    Ok(())
}

/// The registry client's error inside an I/O error (a digest mismatch), or the I/O error.
fn unwrap_io(e: std::io::Error) -> DistError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DistError>())
    {
        Some(DistError::DigestMismatch {
            what,
            expected,
            got,
        }) => DistError::DigestMismatch {
            what,
            expected: expected.clone(),
            got: got.clone(),
        },
        _ => DistError::Io(e),
    }
}

/// 12 hex digits of a digest, for progress lines.
pub fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}
