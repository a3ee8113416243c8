//! `docker push`: uploads an image's layers (gzip-compressed as they stream out of the layer
//! store), its config and a Docker schema2 manifest. A layer the target repository has
//! already (HEAD on a digest remembered from an earlier pull or push) is not uploaded again;
//! one known in another repository of the same registry is mounted from there. The digest of
//! every compressed layer is remembered, so the next push does not compress again.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};
use strata_core::store::{chain_ids, Digest, ImageStore};
use strata_distribution::auth::repository_scope;
use strata_distribution::manifest::{
    ImageManifest, MT_DOCKER_CONFIG, MT_DOCKER_LAYER_GZIP, MT_DOCKER_MANIFEST,
};
use strata_distribution::{
    AuthConfig, BlobMetadata, BlobSource, ClientConfig, Descriptor, DistError, ImageRef, Registry,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::SyncIoBridge;

type Result<T> = std::result::Result<T, DistError>;

/// Docker pushes five layers at a time.
const CONCURRENT_UPLOADS: usize = 5;

/// A layer's progress, as Docker's push reports it (`id`: 12 hex of the diffID).
#[derive(Debug, Clone, PartialEq)]
pub enum PushProgress {
    Preparing {
        id: String,
    },
    Waiting {
        id: String,
    },
    Pushing {
        id: String,
        current: u64,
        total: u64,
    },
    Pushed {
        id: String,
    },
    LayerExists {
        id: String,
    },
    Mounted {
        id: String,
        from: String,
    },
}

pub type PushProgressFn = Arc<dyn Fn(PushProgress) + Send + Sync>;

#[derive(Clone)]
pub struct PushOptions {
    pub client: ClientConfig,
    pub auth: Option<AuthConfig>,
    pub metadata: BlobMetadata,
}

/// One pushed tag.
#[derive(Debug, Clone)]
pub struct PushedTag {
    pub tag: String,
    pub digest: Digest,
    pub size: u64,
}

/// Pushes `image` (local image id) as `target` (which carries the tag).
pub async fn push(
    images: &ImageStore,
    image: &Digest,
    target: &ImageRef,
    opts: &PushOptions,
    progress: PushProgressFn,
) -> Result<PushedTag> {
    let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
    let registry =
        Arc::new(Registry::connect(&opts.client, target.api_host(), opts.auth.clone()).await?);
    let record = images.get(image)?;
    let diffs = record.config.rootfs.diff_ids.clone();
    let chains = chain_ids(&diffs);
    // Docker lists the top layer first.
    for d in diffs.iter().rev() {
        progress(PushProgress::Preparing { id: short(d) });
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS));
    let mut handles = Vec::new();
    for (diff, chain) in diffs.iter().zip(&chains) {
        progress(PushProgress::Waiting { id: short(diff) });
        let job = LayerJob {
            registry: registry.clone(),
            images: images.clone(),
            target: target.clone(),
            metadata: opts.metadata.clone(),
            diff: diff.clone(),
            chain: chain.clone(),
            progress: progress.clone(),
        };
        let limit = limit.clone();
        handles.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            job.run().await
        }));
    }
    let mut layers = Vec::new();
    for h in handles {
        let desc = h
            .await
            .map_err(|e| DistError::Invalid(format!("layer upload stopped: {e}")))??;
        layers.push(desc);
    }
    let raw_config = images.raw_config(image).await?;
    let config = push_config(&registry, target, raw_config).await?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MT_DOCKER_MANIFEST.into()),
        config,
        layers,
    };
    let body = Bytes::from(manifest_json(&manifest)?);
    let size = body.len() as u64;
    let scope = repository_scope(&target.repository, true);
    let digest = registry
        .put_manifest(&target.repository, &tag, MT_DOCKER_MANIFEST, body, &scope)
        .await?;
    images
        .add_repo_digest(image, &format!("{}@{digest}", target.familiar_name()))
        .await?;
    Ok(PushedTag { tag, digest, size })
}

/// The manifest as Docker writes it: indented by three spaces (Go's `MarshalIndent`).
fn manifest_json(m: &ImageManifest) -> Result<Vec<u8>> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    m.serialize(&mut ser).map_err(std::io::Error::other)?;
    Ok(out)
}

/// The config blob, uploaded unless the repository has it.
async fn push_config(registry: &Registry, target: &ImageRef, raw: Vec<u8>) -> Result<Descriptor> {
    let digest = Digest::of_bytes(&raw);
    let scope = repository_scope(&target.repository, true);
    let repo = &target.repository;
    let size = raw.len() as u64;
    if registry.blob_size(repo, &digest, &scope).await?.is_none() {
        let location = registry.start_upload(repo, &scope).await?;
        registry
            .finish_upload(location, &digest, &scope, Bytes::from(raw))
            .await?;
    }
    Ok(descriptor(MT_DOCKER_CONFIG, digest, size))
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        urls: Vec::new(),
        platform: None,
        annotations: Default::default(),
    }
}

struct LayerJob {
    registry: Arc<Registry>,
    images: ImageStore,
    target: ImageRef,
    metadata: BlobMetadata,
    diff: Digest,
    chain: Digest,
    progress: PushProgressFn,
}

impl LayerJob {
    fn full_repo(&self) -> String {
        format!("{}/{}", self.target.registry, self.target.repository)
    }

    async fn run(self) -> Result<Descriptor> {
        let id = short(&self.diff);
        if let Some(desc) = self.reuse().await? {
            return Ok(desc);
        }
        let (digest, size) = self.upload().await?;
        let source = BlobSource {
            digest: digest.clone(),
            source_repository: self.full_repo(),
            size: Some(size),
        };
        if let Err(e) = self.metadata.record(&self.diff, source) {
            tracing::warn!(error = %e, "could not remember the pushed layer's digest");
        }
        (self.progress)(PushProgress::Pushed { id });
        Ok(descriptor(MT_DOCKER_LAYER_GZIP, digest, size))
    }

    /// A blob the registry has already: in the target repository, or mountable from another.
    async fn reuse(&self) -> Result<Option<Descriptor>> {
        let id = short(&self.diff);
        let scope = repository_scope(&self.target.repository, true);
        let repo = &self.target.repository;
        let prefix = format!("{}/", self.target.registry);
        let sources = self.metadata.sources(&self.diff);
        let on_registry = sources
            .iter()
            .filter(|s| s.source_repository.starts_with(&prefix));
        for s in on_registry.clone() {
            if let Some(size) = self.registry.blob_size(repo, &s.digest, &scope).await? {
                (self.progress)(PushProgress::LayerExists { id });
                return Ok(Some(descriptor(
                    MT_DOCKER_LAYER_GZIP,
                    s.digest.clone(),
                    size,
                )));
            }
        }
        for s in on_registry {
            let from = &s.source_repository[prefix.len()..];
            if from == repo.as_str() {
                continue;
            }
            match self
                .registry
                .mount_blob(repo, &s.digest, from, &scope)
                .await
            {
                Ok(true) => {
                    let size = match s.size {
                        Some(n) => n,
                        None => self
                            .registry
                            .blob_size(repo, &s.digest, &scope)
                            .await?
                            .unwrap_or(0),
                    };
                    (self.progress)(PushProgress::Mounted {
                        id,
                        from: from.to_string(),
                    });
                    return Ok(Some(descriptor(
                        MT_DOCKER_LAYER_GZIP,
                        s.digest.clone(),
                        size,
                    )));
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, from, "cross-repository mount failed"),
            }
        }
        Ok(None)
    }

    /// Compresses the layer as it streams into one `PATCH`; returns the blob digest and size.
    async fn upload(&self) -> Result<(Digest, u64)> {
        let id = short(&self.diff);
        let scope = repository_scope(&self.target.repository, true);
        let location = self
            .registry
            .start_upload(&self.target.repository, &scope)
            .await?;
        let tar = self.images.layers().layer_tar(&self.chain).await?;
        let total = tar.size;
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let (done_tx, done_rx) = oneshot::channel();
        let input = SyncIoBridge::new(tar.stream);
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(compress(input, &tx));
        });
        let progress = self.progress.clone();
        let mut sent = 0u64;
        let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).inspect_ok(move |b| {
            sent += b.len() as u64;
            progress(PushProgress::Pushing {
                id: id.clone(),
                current: sent,
                total,
            });
        });
        let next = self
            .registry
            .upload_stream(location, &scope, Box::pin(body))
            .await;
        let (digest, size) = done_rx
            .await
            .map_err(|_| DistError::Invalid("layer compression stopped".into()))??;
        self.registry
            .finish_upload(next?, &digest, &scope, Bytes::new())
            .await?;
        Ok((digest, size))
    }
}

/// Gzips `input` into `tx` in 256 KiB pieces; the digest and size of the compressed bytes.
fn compress(
    mut input: impl Read,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(Digest, u64)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let flush = |data: Vec<u8>, hasher: &mut Sha256, size: &mut u64| -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        hasher.update(&data);
        *size += data.len() as u64;
        tx.blocking_send(Ok(Bytes::from(data)))
            .map_err(|_| DistError::Invalid("the upload stopped".into()))
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return Err(e.into());
            }
        };
        gz.write_all(&buf[..n])?;
        if gz.get_ref().len() >= buf.len() {
            let data = std::mem::take(gz.get_mut());
            flush(data, &mut hasher, &mut size)?;
        }
    }
    let rest = gz.finish()?;
    flush(rest, &mut hasher, &mut size)?;
    Ok((Digest::from_hasher(hasher), size))
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_read_as_dockers() {
        let d = Digest::of_bytes(b"c");
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(MT_DOCKER_MANIFEST.into()),
            config: descriptor(MT_DOCKER_CONFIG, d.clone(), 1),
            layers: vec![],
        };
        let text = String::from_utf8(manifest_json(&m).unwrap()).unwrap();
        let want = format!(
            "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{MT_DOCKER_MANIFEST}\",\n   \
             \"config\": {{\n      \"mediaType\": \"{MT_DOCKER_CONFIG}\",\n      \
             \"size\": 1,\n      \"digest\": \"{d}\"\n   }},\n   \"layers\": []\n}}"
        );
        assert_eq!(text, want);
    }

    #[tokio::test]
    async fn compress_streams_and_digests_what_it_sent() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (tx, mut rx) = mpsc::channel(4);
        let input = std::io::Cursor::new(data.clone());
        let job = tokio::task::spawn_blocking(move || compress(input, &tx));
        let mut sent = Vec::new();
        while let Some(chunk) = rx.recv().await {
            sent.extend_from_slice(&chunk.unwrap());
        }
        let (digest, size) = job.await.unwrap().unwrap();
        assert_eq!(digest, Digest::of_bytes(&sent));
        assert_eq!(size, sent.len() as u64);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&sent[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
