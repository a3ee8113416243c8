//! `docker save`: one tar with both forms Docker 25+ writes: the OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) and the classic `manifest.json` +
//! `repositories`, whose `<config>.json` and `<layer>/layer.tar` are links to the blobs, so
//! each layer is written once. Metadata comes first and layers base first, so `load` can
//! stream every layer straight into place. Layers are the exact bytes they were loaded with
//! (see `LayerStore::layer_tar`), so ids and diffIDs survive a save and load on any driver.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use strata_core::layer::TarStream;
use strata_core::store::{Digest, ImageStore, Reference};
use strata_core::stream::blocking_writer_stream;
use strata_core::{Error, Result};
use tokio_util::io::SyncIoBridge;

use super::manifest::{
    blob_path, to_json, Descriptor, DockerManifestEntry, OciIndex, OciManifest,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MT_CONFIG, MT_INDEX, MT_LAYER, MT_MANIFEST,
    OCI_LAYOUT,
};

/// One image to write and the tags to give it.
struct Selected {
    id: Digest,
    tags: Vec<Reference>,
}

/// Resolves `names` (references or ids) and streams the archive. A name that is a tag puts
/// that tag in the archive; an id alone carries no tag (as Docker).
pub async fn save(images: &ImageStore, names: &[String]) -> Result<TarStream> {
    if names.is_empty() {
        return Err(Error::invalid("save needs at least one image name"));
    }
    let mut selected: Vec<Selected> = Vec::new();
    for name in names {
        let id = images.resolve(name)?;
        let tag = Reference::parse(name)
            .ok()
            .filter(|r| images.tags_of(&id).contains(&r.to_string()));
        match selected.iter_mut().find(|s| s.id == id) {
            Some(s) => s.tags.extend(tag),
            None => selected.push(Selected {
                id,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    let plan = plan(images, &selected).await?;
    let layers = images.layers().clone();
    let handle = tokio::runtime::Handle::current();
    Ok(blocking_writer_stream(move |out| {
        let mut tar = tar::Builder::new(out);
        for (path, data) in &plan.files {
            append_file(&mut tar, path, data)?;
        }
        for (path, target) in &plan.links {
            append_link(&mut tar, path, target)?;
        }
        for chain in &plan.layer_order {
            let lt = handle.block_on(layers.layer_tar(chain))?;
            let path = blob_path(&lt.diff_id);
            let mut counted = Counted {
                inner: SyncIoBridge::new_with_handle(lt.stream, handle.clone()),
                n: 0,
            };
            let mut h = header(tar::EntryType::Regular, lt.size, 0o644);
            tar.append_data(&mut h, &path, &mut counted)
                .map_err(|e| Error::io("write", &path, e))?;
            if counted.n != lt.size {
                return Err(Error::Other(format!(
                    "layer {chain} gave {} bytes, expected {}",
                    counted.n, lt.size
                )));
            }
        }
        tar.into_inner()
            .and_then(|w| w.flush())
            .map_err(|e| Error::io("write", "image archive", e))
    }))
}

struct Plan {
    /// Metadata files and blobs, in order.
    files: Vec<(String, Vec<u8>)>,
    links: Vec<(String, String)>,
    /// Layer chains to write, base first, each once.
    layer_order: Vec<Digest>,
}

async fn plan(images: &ImageStore, selected: &[Selected]) -> Result<Plan> {
    let mut manifest_json = Vec::new();
    let mut index = OciIndex {
        schema_version: 2,
        media_type: MT_INDEX.into(),
        manifests: Vec::new(),
    };
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut links = Vec::new();
    let mut layer_order = Vec::new();
    let mut seen_layers = BTreeSet::new();
    for s in selected {
        let raw = images.raw_config(&s.id).await?;
        let img = images.get(&s.id)?;
        let stack = match img.top_layer() {
            Some(t) => images.layers().stack(&t)?,
            None => Vec::new(),
        };
        let mut layer_paths = Vec::new();
        let mut layer_descs = Vec::new();
        for l in &stack {
            let dir_link = format!("{}/layer.tar", l.diff_id.hex());
            layer_paths.push(dir_link.clone());
            layer_descs.push(Descriptor {
                media_type: MT_LAYER.into(),
                digest: l.diff_id.clone(),
                size: l.tar_size,
                annotations: BTreeMap::new(),
            });
            if seen_layers.insert(l.diff_id.clone()) {
                links.push((dir_link, format!("../{}", blob_path(&l.diff_id))));
                layer_order.push(l.chain_id.clone());
            }
        }
        let config_link = format!("{}.json", s.id.hex());
        links.push((config_link.clone(), blob_path(&s.id)));
        let manifest = OciManifest {
            schema_version: 2,
            media_type: MT_MANIFEST.into(),
            config: Descriptor {
                media_type: MT_CONFIG.into(),
                digest: s.id.clone(),
                size: raw.len() as u64,
                annotations: BTreeMap::new(),
            },
            layers: layer_descs,
        };
        let manifest_bytes = to_json(&manifest)?;
        let manifest_digest = Digest::of_bytes(&manifest_bytes);
        let descs: Vec<Descriptor> = if s.tags.is_empty() {
            vec![descriptor(&manifest_digest, manifest_bytes.len(), None)]
        } else {
            s.tags
                .iter()
                .map(|t| descriptor(&manifest_digest, manifest_bytes.len(), Some(t)))
                .collect()
        };
        index.manifests.extend(descs);
        blobs.push((blob_path(&s.id), raw));
        blobs.push((blob_path(&manifest_digest), manifest_bytes));
        let top_dir = stack.last().map(|l| l.diff_id.hex().to_string());
        for t in &s.tags {
            if let Some(top) = &top_dir {
                repositories
                    .entry(t.repo.clone())
                    .or_default()
                    .insert(t.tag.clone(), top.clone());
            }
        }
        manifest_json.push(DockerManifestEntry {
            config: config_link,
            repo_tags: (!s.tags.is_empty()).then(|| s.tags.iter().map(|t| t.to_string()).collect()),
            layers: layer_paths,
        });
    }
    let mut files = vec![
        ("oci-layout".to_string(), OCI_LAYOUT.as_bytes().to_vec()),
        ("index.json".to_string(), to_json(&index)?),
        ("manifest.json".to_string(), to_json(&manifest_json)?),
    ];
    if !repositories.is_empty() {
        files.push(("repositories".to_string(), to_json(&repositories)?));
    }
    let mut seen_blobs = BTreeSet::new();
    files.extend(
        blobs
            .into_iter()
            .filter(|(p, _)| seen_blobs.insert(p.clone())),
    );
    Ok(Plan {
        files,
        links,
        layer_order,
    })
}

fn descriptor(d: &Digest, size: usize, tag: Option<&Reference>) -> Descriptor {
    let mut annotations = BTreeMap::new();
    if let Some(t) = tag {
        let full = if t.repo.contains('/') {
            let first = t.repo.split('/').next().unwrap_or("");
            if first.contains('.') || first.contains(':') || first == "localhost" {
                t.to_string()
            } else {
                format!("docker.io/{t}")
            }
        } else {
            format!("docker.io/library/{t}")
        };
        annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), full);
        annotations.insert(ANNOTATION_REF_NAME.to_string(), t.tag.clone());
    }
    Descriptor {
        media_type: MT_MANIFEST.into(),
        digest: d.clone(),
        size: size as u64,
        annotations,
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    tar.append_data(&mut h, path, data)
        .map_err(|e| Error::io("write", path, e))
}

fn append_link<W: Write>(tar: &mut tar::Builder<W>, path: &str, target: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    tar.append_link(&mut h, path, target)
        .map_err(|e| Error::io("write", path, e))
}

struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
