//! Volumes as ext4 filesystem images, loop-mounted while in use: `size=` (default 1G) is a
//! hard limit, enforced by the filesystem itself. Layout under the plugin's root:
//! `NAME/disk.img` (sparse), `NAME/meta.json`, `NAME/mnt` (the mount point).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use strata_core::fsutil::{atomic_write, mounts, usage::tree_usage};
use strata_core::options::parse_bytes;
use strata_core::{
    CallerId, Error, Result, Usage, VolumeCapabilities, VolumeDriver, VolumeInfo, VolumeName,
};

const DEFAULT_SIZE: u64 = 1 << 30;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    size: u64,
    created_at: String,
}

pub struct LoopVolumes {
    root: PathBuf,
    /// Callers holding each mounted volume.
    callers: Mutex<BTreeMap<VolumeName, BTreeSet<CallerId>>>,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::io("run", format!("{cmd:?}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl LoopVolumes {
    /// Opens the plugin's root; mounts left by a crashed plugin are dropped.
    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        mounts::unmount_all_under(&root)?;
        Ok(Self {
            root,
            callers: Mutex::new(BTreeMap::new()),
        })
    }

    fn dir(&self, name: &VolumeName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn meta(&self, name: &VolumeName) -> Result<Meta> {
        let path = self.dir(name).join("meta.json");
        let bytes = std::fs::read(&path).map_err(|_| Error::not_found(format!("volume {name}")))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    fn callers(&self) -> std::sync::MutexGuard<'_, BTreeMap<VolumeName, BTreeSet<CallerId>>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl VolumeDriver for LoopVolumes {
    fn name(&self) -> &str {
        "loopvol"
    }

    fn capabilities(&self) -> VolumeCapabilities {
        VolumeCapabilities::default()
    }

    async fn create(&self, name: &VolumeName, opts: &BTreeMap<String, String>) -> Result<()> {
        for key in opts.keys() {
            if key != "size" {
                return Err(Error::invalid(format!(
                    "unknown option {key:?} (loopvol takes size=)"
                )));
            }
        }
        let size = opts
            .get("size")
            .map(|s| parse_bytes(s))
            .transpose()?
            .unwrap_or(DEFAULT_SIZE);
        if size < 16 << 20 {
            return Err(Error::invalid("size must be at least 16M"));
        }
        let dir = self.dir(name);
        if dir.exists() {
            return Err(Error::AlreadyExists(format!("volume {name}")));
        }
        // Staged under a temporary name so a crash leaves no half volume.
        let staging = self.root.join(format!(".{name}.creating"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("mnt"))
            .map_err(|e| Error::io("create", &staging, e))?;
        let img = staging.join("disk.img");
        let made = (|| {
            let f = std::fs::File::create(&img).map_err(|e| Error::io("create", &img, e))?;
            f.set_len(size)
                .map_err(|e| Error::io("truncate", &img, e))?;
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&img))?;
            let meta = Meta {
                size,
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let bytes = serde_json::to_vec(&meta).map_err(|e| Error::Other(e.to_string()))?;
            atomic_write(&staging.join("meta.json"), &bytes)?;
            std::fs::rename(&staging, &dir).map_err(|e| Error::io("rename", &dir, e))
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        made
    }

    async fn remove(&self, name: &VolumeName) -> Result<()> {
        self.meta(name)?;
        if self.callers().get(name).is_some_and(|c| !c.is_empty()) {
            return Err(Error::busy(format!("volume {name} is in use")));
        }
        std::fs::remove_dir_all(self.dir(name)).map_err(|e| Error::io("remove", self.dir(name), e))
    }

    async fn mount(&self, name: &VolumeName, caller: &CallerId) -> Result<PathBuf> {
        self.meta(name)?;
        let mnt = self.dir(name).join("mnt");
        let first = self.callers().get(name).is_none_or(|c| c.is_empty());
        if first && !mounts::is_mounted(&mnt)? {
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(self.dir(name).join("disk.img"))
                .arg(&mnt))?;
        }
        self.callers()
            .entry(name.clone())
            .or_default()
            .insert(caller.clone());
        Ok(mnt)
    }

    async fn unmount(&self, name: &VolumeName, caller: &CallerId) -> Result<()> {
        let last = {
            let mut callers = self.callers();
            let set = callers.entry(name.clone()).or_default();
            set.remove(caller);
            set.is_empty()
        };
        if last {
            // A loop mount made with `mount -o loop` frees its loop device on unmount.
            mounts::unmount(&self.dir(name).join("mnt"), false)?;
        }
        Ok(())
    }

    async fn path(&self, name: &VolumeName) -> Result<PathBuf> {
        self.meta(name)?;
        Ok(self.dir(name).join("mnt"))
    }

    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo> {
        let meta = self.meta(name)?;
        let mut status = BTreeMap::new();
        status.insert("size".to_string(), serde_json::json!(meta.size));
        Ok(VolumeInfo {
            name: name.clone(),
            mountpoint: Some(self.dir(name).join("mnt")),
            created_at: Some(meta.created_at),
            options: BTreeMap::new(),
            status,
        })
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
        for e in entries.flatten() {
            if let Ok(name) = VolumeName::new(e.file_name().to_string_lossy().into_owned()) {
                if let Ok(info) = self.get(&name).await {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What the volume's files occupy inside its filesystem (the contract counts the data, not
    /// the image, whose allocation also grows with ext4's journal and metadata). An unmounted
    /// volume is mounted read-only for the measurement.
    async fn usage(&self, name: &VolumeName) -> Result<Usage> {
        self.meta(name)?;
        let mnt = self.dir(name).join("mnt");
        // Held throughout, so no mount or unmount of the volume happens meanwhile.
        let callers = self.callers();
        if callers.get(name).is_some_and(|c| !c.is_empty()) || mounts::is_mounted(&mnt)? {
            return tree_usage(&mnt);
        }
        run(Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(self.dir(name).join("disk.img"))
            .arg(&mnt))?;
        let usage = tree_usage(&mnt);
        let unmounted = mounts::unmount(&mnt, false);
        drop(callers);
        unmounted?;
        usage
    }
}

/// Is `path` the mount point of an ext4 filesystem? (for tests)
pub fn is_ext4_mount(path: &Path) -> bool {
    mounts::mount_table()
        .map(|t| {
            t.iter()
                .any(|m| m.mount_point == path && m.fs_type == "ext4")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn size_is_a_hard_limit() {
        let t = tempfile::tempdir().unwrap();
        let v = LoopVolumes::new(t.path().join("vols")).unwrap();
        let name = VolumeName::new("small").unwrap();
        let caller = CallerId::new("c1").unwrap();
        let mut opts = BTreeMap::new();
        opts.insert("size".to_string(), "20M".to_string());
        v.create(&name, &opts).await.unwrap();
        let mnt = v.mount(&name, &caller).await.unwrap();
        assert!(is_ext4_mount(&mnt));
        let err = std::fs::write(mnt.join("big"), vec![1u8; 40 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_enospc()));
        assert!(matches!(v.remove(&name).await, Err(Error::Busy(_))));
        v.unmount(&name, &caller).await.unwrap();
        assert!(!mounts::is_mounted(&mnt).unwrap());
        v.remove(&name).await.unwrap();
        assert!(v.list().await.unwrap().is_empty());
    }

    fn libc_enospc() -> i32 {
        28
    }
}
