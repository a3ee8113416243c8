//! A small directory driver for the stores' tests (and, with the `test-driver` feature, for
//! other crates' tests): each layer is a full copy of its parent under `<root>/<id>`, tars are
//! applied with the `tar` crate (whiteouts honoured), and failures can be injected per
//! operation to test crash and error paths. Not a production driver.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_tree, usage::tree_usage};
use crate::ids::LayerId;
use crate::layer::{Capabilities, Change, CreateOpts, LayerDriver, TarStream, Usage};
use crate::stream::{blocking_writer_stream, with_blocking_reader};

/// What an injected failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation returns an error.
    Fail,
    /// The operation never completes (for dropping futures mid-way).
    Hang,
}

pub struct DirDriver {
    root: PathBuf,
    mounts: Mutex<HashMap<LayerId, usize>>,
    faults: Mutex<HashMap<&'static str, Fault>>,
}

impl DirDriver {
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).ctx("create directory", root)?;
        Ok(Self {
            root: root.to_path_buf(),
            mounts: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
        })
    }

    /// Makes `op` (`create`, `apply_diff`, `usage`, `remove`, `diff`) fail or hang from now on.
    pub fn inject(&self, op: &'static str, fault: Fault) {
        self.faults.lock().unwrap().insert(op, fault);
    }

    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// The ids of the layers on disk.
    pub fn layer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(id.as_str())
    }

    async fn check(&self, op: &'static str) -> Result<()> {
        let fault = self.faults.lock().unwrap().get(op).copied();
        match fault {
            Some(Fault::Fail) => Err(Error::Other(format!("injected failure in {op}"))),
            Some(Fault::Hang) => {
                futures::future::pending::<()>().await;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl LayerDriver for DirDriver {
    fn name(&self) -> &str {
        "testdir"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            reproducible_diff: true,
            ..Capabilities::default()
        }
    }

    async fn create(&self, id: &LayerId, parent: Option<&LayerId>, _: &CreateOpts) -> Result<()> {
        self.check("create").await?;
        let dir = self.dir(id);
        if dir.exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        let tmp = self.root.join(format!(".{id}.creating"));
        remove_tree(&tmp)?;
        match parent {
            Some(p) => copy_tree(&self.dir(p), &tmp)?,
            None => std::fs::create_dir(&tmp).ctx("create directory", &tmp)?,
        }
        std::fs::rename(&tmp, &dir).ctx("rename", &dir)
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        self.check("remove").await?;
        if self.mounts.lock().unwrap().get(id).copied().unwrap_or(0) > 0 {
            return Err(Error::busy(format!("layer {id} is mounted")));
        }
        remove_tree(&self.dir(id))
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.dir(id).exists())
    }

    async fn mount(&self, id: &LayerId, _: &str) -> Result<PathBuf> {
        if !self.dir(id).exists() {
            return Err(Error::not_found(format!("layer {id}")));
        }
        *self.mounts.lock().unwrap().entry(id.clone()).or_default() += 1;
        Ok(self.dir(id))
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let mut m = self.mounts.lock().unwrap();
        if let Some(n) = m.get_mut(id) {
            *n = n.saturating_sub(1);
        }
        Ok(())
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let (layer, parent) = (self.dir(id), parent.map(|p| self.dir(p)));
        tokio::task::spawn_blocking(move || naive_changes(&layer, parent.as_deref())).await?
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        self.check("diff").await?;
        let changes = self.changes(id, parent).await?;
        let layer = self.dir(id);
        Ok(blocking_writer_stream(move |w| {
            write_changes(w, &layer, &changes)
        }))
    }

    async fn apply_diff(&self, id: &LayerId, _: Option<&LayerId>, tar: TarStream) -> Result<u64> {
        self.check("apply_diff").await?;
        let dir = self.dir(id);
        with_blocking_reader(tar, move |r| unpack(r, &dir)).await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let changes = self.changes(id, parent).await?;
        let mut total = 0;
        for c in changes {
            let p = self
                .dir(id)
                .join(c.path.strip_prefix("/").unwrap_or(&c.path));
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.is_file() {
                    total += m.len();
                }
            }
        }
        Ok(total)
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        self.check("usage").await?;
        tree_usage(&self.dir(id))
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    async fn metadata(&self, _: &LayerId) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    async fn cleanup(&self) -> Result<()> {
        Ok(())
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .ctx("run cp", from)?;
    if !status.success() {
        return Err(Error::Other(format!("cp -a {} failed", from.display())));
    }
    Ok(())
}

/// Unpacks a tar into `dir`, turning whiteouts into deletions. Returns regular-file bytes.
fn unpack(r: &mut dyn std::io::Read, dir: &Path) -> Result<u64> {
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let mut content = 0;
    let entries = archive.entries().ctx("read", "layer tar")?;
    for entry in entries {
        let mut entry = entry.ctx("read", "layer tar")?;
        let path = entry.path().ctx("read", "layer tar")?.into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.as_deref().and_then(|n| n.strip_prefix(".wh.")) {
            let parent = dir.join(path.parent().unwrap_or(Path::new("")));
            if name == ".wh..opq" {
                if let Ok(rd) = std::fs::read_dir(&parent) {
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.is_dir() && !p.is_symlink() {
                            remove_tree(&p)?;
                        } else {
                            std::fs::remove_file(&p).ctx("remove", &p)?;
                        }
                    }
                }
            } else {
                let target = parent.join(name);
                if target.is_dir() && !target.is_symlink() {
                    remove_tree(&target)?;
                } else if target.symlink_metadata().is_ok() {
                    std::fs::remove_file(&target).ctx("remove", &target)?;
                }
            }
            continue;
        }
        if entry.header().entry_type().is_file() {
            content += entry.header().size().unwrap_or(0);
        }
        entry.unpack_in(dir).ctx("unpack", &path)?;
    }
    Ok(content)
}

/// Changes by walking both trees and comparing type, size and content.
fn naive_changes(layer: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    use crate::layer::ChangeKind;
    let mut out = Vec::new();
    walk(layer, Path::new("/"), &mut |rel, path| {
        let other = parent.map(|p| p.join(rel.strip_prefix("/").unwrap_or(rel)));
        let kind = match other
            .as_ref()
            .and_then(|o| std::fs::symlink_metadata(o).ok())
        {
            None => Some(ChangeKind::Add),
            Some(om) => {
                let m = std::fs::symlink_metadata(path).ctx("stat", path)?;
                let same = om.file_type() == m.file_type()
                    && (m.is_dir()
                        || (m.is_file()
                            && std::fs::read(path).ok()
                                == std::fs::read(other.as_ref().unwrap()).ok())
                        || (m.file_type().is_symlink()
                            && std::fs::read_link(path).ok()
                                == std::fs::read_link(other.as_ref().unwrap()).ok()));
                (!same).then_some(ChangeKind::Modify)
            }
        };
        if let Some(kind) = kind {
            out.push(Change {
                path: rel.to_path_buf(),
                kind,
            });
        }
        Ok(())
    })?;
    if let Some(p) = parent {
        walk(p, Path::new("/"), &mut |rel, _| {
            if std::fs::symlink_metadata(layer.join(rel.strip_prefix("/").unwrap_or(rel))).is_err()
            {
                out.push(Change {
                    path: rel.to_path_buf(),
                    kind: ChangeKind::Delete,
                });
            }
            Ok(())
        })?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path, &Path) -> Result<()>) -> Result<()> {
    let dir = root.join(rel.strip_prefix("/").unwrap_or(rel));
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .ctx("read directory", &dir)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let p = e.path();
        f(&r, &p)?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &r, f)?;
        }
    }
    Ok(())
}

fn write_changes(w: &mut dyn std::io::Write, layer: &Path, changes: &[Change]) -> Result<()> {
    use crate::layer::ChangeKind;
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    for c in changes {
        let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
        if c.kind == ChangeKind::Delete {
            let name = format!(
                ".wh.{}",
                rel.file_name().unwrap_or_default().to_string_lossy()
            );
            let path = rel.parent().unwrap_or(Path::new("")).join(name);
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o600);
            h.set_mtime(0);
            b.append_data(&mut h, &path, std::io::empty())
                .ctx("write", &path)?;
        } else {
            let src = layer.join(rel);
            b.append_path_with_name(&src, rel).ctx("write", &src)?;
        }
    }
    b.into_inner().ctx("write", "diff")?;
    Ok(())
}
