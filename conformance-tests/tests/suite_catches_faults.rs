//! The suite checks what it says: vfs with one deliberately injected fault must fail the case
//! that covers it (and a driver that cannot open fails, never skips).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use strata_conformance::{layer_cases, run_layer_case, DriverFactory, LayerFactory, Outcome};
use strata_core::registry::DriverConfig;
use strata_core::stream::{from_bytes, read_all};
use strata_core::{
    Capabilities, Change, ChangeKind, CreateOpts, Error, LayerDriver, LayerId, Result, StorageOpts,
    TarStream, Usage,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    RootMode0700,
    StripXattrsInChildren,
    RemoveIgnoresMounts,
    ApplySizeOffByOne,
    ClaimsQuota,
    ChangesAddBogusEntry,
    UnmountReleasesTwice,
    DiffDropsWhiteouts,
    UsageOneInodeTooMany,
}

/// Rewrites a layer tar without its `.wh.` entries (deletions lost).
fn without_whiteouts(tar: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(".wh.") {
            continue;
        }
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        out.append_data(&mut header, &path, data.as_slice())?;
    }
    out.into_inner()
}

struct Faulty {
    inner: Arc<dyn LayerDriver>,
    fault: Fault,
}

fn strip_user_xattrs(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_file() || meta.is_dir() {
            for name in xattr::list(&path)? {
                if name.to_string_lossy().starts_with("user.") {
                    xattr::remove(&path, &name)?;
                }
            }
        }
        if meta.is_dir() {
            strip_user_xattrs(&path)?;
        }
    }
    Ok(())
}

#[async_trait]
impl LayerDriver for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        if self.fault == Fault::ClaimsQuota {
            caps.quota = true;
        }
        caps
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        let mut opts = opts.clone();
        if self.fault == Fault::ClaimsQuota {
            opts.storage_opts = StorageOpts::default();
        }
        self.inner.create(id, parent, &opts).await?;
        if self.fault == Fault::StripXattrsInChildren && parent.is_some() {
            let path = self.inner.mount(id, "").await?;
            strip_user_xattrs(&path).map_err(|e| Error::io("strip", &path, e))?;
            self.inner.unmount(id).await?;
        }
        Ok(())
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        if self.fault == Fault::RemoveIgnoresMounts {
            for _ in 0..8 {
                let _ = self.inner.unmount(id).await;
            }
        }
        self.inner.remove(id).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        self.inner.exists(id).await
    }

    async fn mount(&self, id: &LayerId, label: &str) -> Result<PathBuf> {
        let path = self.inner.mount(id, label).await?;
        if self.fault == Fault::RootMode0700 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("chmod", &path, e))?;
        }
        Ok(path)
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        self.inner.unmount(id).await?;
        if self.fault == Fault::UnmountReleasesTwice {
            let _ = self.inner.unmount(id).await;
        }
        Ok(())
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let mut changes = self.inner.changes(id, parent).await?;
        if self.fault == Fault::ChangesAddBogusEntry {
            changes.push(Change {
                path: PathBuf::from("/bogus"),
                kind: ChangeKind::Add,
            });
        }
        Ok(changes)
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let stream = self.inner.diff(id, parent).await?;
        if self.fault != Fault::DiffDropsWhiteouts {
            return Ok(stream);
        }
        let tar = read_all(stream).await?;
        let kept = without_whiteouts(&tar).map_err(|e| Error::io("rewrite", "diff", e))?;
        Ok(from_bytes(kept))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        let n = self.inner.apply_diff(id, parent, tar).await?;
        Ok(if self.fault == Fault::ApplySizeOffByOne {
            n + 1
        } else {
            n
        })
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.inner.diff_size(id, parent).await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let mut usage = self.inner.usage(id).await?;
        if self.fault == Fault::UsageOneInodeTooMany {
            usage.inodes += usage.bytes / (512 << 10);
        }
        Ok(usage)
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        self.inner.status().await
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.inner.metadata(id).await
    }

    async fn cleanup(&self) -> Result<()> {
        self.inner.cleanup().await
    }
}

fn faulty_vfs(fault: Fault) -> Arc<dyn DriverFactory> {
    LayerFactory::new("vfs", move |root| async move {
        let inner = strata_vfs::init(DriverConfig {
            root,
            options: StorageOpts::default(),
        })
        .await?;
        let driver: Arc<dyn LayerDriver> = Arc::new(Faulty { inner, fault });
        Ok(driver)
    })
    .into_arc()
}

async fn outcome(factory: Arc<dyn DriverFactory>, case: &str) -> Outcome {
    let case = layer_cases()
        .into_iter()
        .find(|c| c.name == case)
        .unwrap_or_else(|| panic!("no case {case}"));
    run_layer_case(factory, &case).await
}

async fn assert_fails(fault: Fault, case: &str, mentions: &str) {
    match outcome(faulty_vfs(fault), case).await {
        Outcome::Failed(why) => assert!(
            why.contains(mentions),
            "{fault:?} failed {case}, but the message lacks {mentions:?}: {why}"
        ),
        other => panic!("vfs with {fault:?} got {other:?} on {case}; the suite missed the fault"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_are_caught_by_the_case_that_covers_them() {
    assert_fails(Fault::RootMode0700, "create_empty", "mode").await;
    assert_fails(
        Fault::StripXattrsInChildren,
        "create_snapshot",
        "xattrs expected",
    )
    .await;
    assert_fails(Fault::RemoveIgnoresMounts, "remove_busy", "expected Busy").await;
    assert_fails(
        Fault::ApplySizeOffByOne,
        "diff_apply_roundtrip",
        "apply_diff's returned size",
    )
    .await;
    assert_fails(Fault::ClaimsQuota, "quota", "size=10M").await;
    assert_fails(Fault::ChangesAddBogusEntry, "create_snapshot", "/bogus").await;
    assert_fails(
        Fault::UnmountReleasesTwice,
        "mount_refcount",
        "expected Busy",
    )
    .await;
    assert_fails(
        Fault::DiffDropsWhiteouts,
        "deleted_stays_deleted",
        "rebuilt from its diff",
    )
    .await;
    assert_fails(Fault::UsageOneInodeTooMany, "usage_accounting", "inodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unfaulted_wrapper_passes_and_quota_is_not_applicable_to_vfs() {
    let plain = strata_conformance::builtin::builtin("vfs").expect("vfs is built in");
    assert_eq!(
        outcome(plain.clone(), "create_snapshot").await,
        Outcome::Passed
    );
    match outcome(plain, "quota").await {
        Outcome::NotApplicable(why) => assert!(why.contains("quota"), "{why}"),
        other => panic!("quota on vfs: {other:?}"),
    }
}

#[tokio::test]
async fn a_driver_that_cannot_open_fails_every_case() {
    let broken = LayerFactory::new("vfs", |_root| async {
        Err(Error::unsupported("no such kernel feature"))
    })
    .into_arc();
    match outcome(broken, "create_empty").await {
        Outcome::Failed(why) => assert!(why.contains("no such kernel feature"), "{why}"),
        other => panic!("a driver that cannot open got {other:?}"),
    }
}

#[tokio::test]
async fn volume_cases_needing_local_options_are_not_applicable_without_them() {
    use strata_conformance::{run_volume_case, volume_cases, VolumeDriverFactory};
    use strata_core::volume::local::LocalVolumes;
    let plain = VolumeDriverFactory::new("local", |root| async move {
        let driver: Arc<dyn strata_core::VolumeDriver> = Arc::new(LocalVolumes::new(root).await?);
        Ok(driver)
    })
    .into_arc();
    let tmpfs = volume_cases()
        .into_iter()
        .find(|c| c.name == "tmpfs_volume")
        .expect("the tmpfs case");
    match run_volume_case(plain, &tmpfs).await {
        Outcome::NotApplicable(why) => assert!(why.contains("type/device/o"), "{why}"),
        other => panic!("tmpfs_volume without local options: {other:?}"),
    }
}
