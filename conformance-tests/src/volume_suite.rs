//! The volume suite: what every volume driver must do (Docker's VolumeDriver contract plus
//! usage), run like the layer suite with a fresh environment and driver per case.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use strata_core::fsutil::mounts;
use strata_core::{CallerId, Usage, VolumeDriver, VolumeName};

use crate::case::{Outcome, CASE_TIMEOUT};
use crate::cases::{expect_error, is_busy, is_not_found};
use crate::env::{Environment, VolumeFactory};
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::ops;
use crate::{ensure, ensure_eq};

/// What a volume case needs beyond the base contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeRequirement {
    Nothing,
    /// The `local` driver's `type`/`device`/`o` options, declared by the factory.
    LocalOptions,
    /// A second driver on the same root that is a real restart ([`VolumeFactory::cannot_restart`]).
    Restart,
}

impl VolumeRequirement {
    /// Why `factory`'s driver cannot run a case needing this, or `None` when it can.
    pub fn unmet(self, factory: &dyn VolumeFactory) -> Option<String> {
        match self {
            VolumeRequirement::Nothing => None,
            VolumeRequirement::LocalOptions if !factory.local_options() => Some(
                "the driver does not take the local driver's type/device/o options (VolumeFactory::local_options)".into(),
            ),
            VolumeRequirement::LocalOptions => None,
            VolumeRequirement::Restart => factory.cannot_restart(),
        }
    }
}

#[derive(Clone, Copy)]
pub struct VolumeCase {
    pub name: &'static str,
    pub needs: VolumeRequirement,
    pub run: fn(VolumeCtx) -> BoxFuture<'static, CaseResult>,
}

/// A volume case's handle on its driver; tracks mounts so the runner can release them.
#[derive(Clone)]
pub struct VolumeCtx {
    inner: Arc<Inner>,
}

struct Inner {
    factory: Arc<dyn VolumeFactory>,
    env: Arc<dyn Environment>,
    driver: Mutex<Arc<dyn VolumeDriver>>,
    mounts: Mutex<BTreeSet<(VolumeName, CallerId)>>,
    /// Volumes made through [`VolumeCtx::create`]; the runner removes them after the case (a
    /// plugin on an external socket keeps its volumes from one case to the next).
    created: Mutex<BTreeSet<VolumeName>>,
    /// Every path `mount` returned: checked after the case even when it lies outside the root
    /// (a plugin on an external socket keeps its volumes elsewhere).
    mount_paths: Mutex<BTreeSet<PathBuf>>,
}

impl VolumeCtx {
    pub fn driver(&self) -> Arc<dyn VolumeDriver> {
        self.inner
            .driver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn root(&self) -> &Path {
        self.inner.env.root()
    }

    pub fn name(s: &str) -> VolumeName {
        VolumeName::new(s).expect("suite volume names are valid")
    }

    pub fn caller(s: &str) -> CallerId {
        CallerId::new(s).expect("suite caller ids are valid")
    }

    pub async fn create(&self, name: &VolumeName, opts: &[(&str, &str)]) -> CaseResult {
        let opts: BTreeMap<String, String> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.driver()
            .create(name, &opts)
            .await
            .step(&format!("create volume {name} with {opts:?}"))?;
        self.inner
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone());
        Ok(())
    }

    pub async fn mount(&self, name: &VolumeName, caller: &CallerId) -> CaseResult<PathBuf> {
        let path = self
            .driver()
            .mount(name, caller)
            .await
            .step(&format!("mount {name} for {caller}"))?;
        self.lock().insert((name.clone(), caller.clone()));
        self.inner
            .mount_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone());
        Ok(path)
    }

    pub async fn unmount(&self, name: &VolumeName, caller: &CallerId) -> CaseResult {
        self.driver()
            .unmount(name, caller)
            .await
            .step(&format!("unmount {name} for {caller}"))?;
        self.lock().remove(&(name.clone(), caller.clone()));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(VolumeName, CallerId)>> {
        self.inner.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the driver and opens a new one on the same root.
    pub async fn reopen(&self) -> CaseResult<Arc<dyn VolumeDriver>> {
        let new = self
            .inner
            .factory
            .open(self.root())
            .await
            .step("opening a second driver on the same root")?;
        *self.inner.driver.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        self.lock().clear();
        Ok(new)
    }
}

/// Runs one volume case on a fresh environment and driver.
pub async fn run_volume_case(factory: Arc<dyn VolumeFactory>, case: &VolumeCase) -> Outcome {
    if let Some(why) = case.needs.unmet(factory.as_ref()) {
        return Outcome::NotApplicable(why);
    }
    let env: Arc<dyn Environment> = match factory.prepare().await {
        Ok(env) => Arc::from(env),
        Err(e) => {
            return Outcome::Failed(format!("preparing the {} environment: {e}", factory.name()))
        }
    };
    let root = env.root().to_path_buf();
    let driver = match factory.open(&root).await {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed(format!(
                "opening the {} volume driver on {} failed (a driver that cannot open fails every case): {e}",
                factory.name(),
                root.display()
            ))
        }
    };
    if driver.name() != factory.name() {
        return Outcome::Failed(format!(
            "the volume driver calls itself {:?} but is registered as {:?}",
            driver.name(),
            factory.name()
        ));
    }
    let ctx = VolumeCtx {
        inner: Arc::new(Inner {
            factory,
            env,
            driver: Mutex::new(driver),
            mounts: Mutex::new(BTreeSet::new()),
            created: Mutex::new(BTreeSet::new()),
            mount_paths: Mutex::new(BTreeSet::new()),
        }),
    };
    let task = tokio::spawn((case.run)(ctx.clone()));
    let abort = task.abort_handle();
    let result = match tokio::time::timeout(CASE_TIMEOUT, task).await {
        Ok(Ok(r)) => r.map_err(|f| f.message),
        Ok(Err(join)) => Err(format!("the case panicked or was cancelled: {join}")),
        Err(_) => {
            abort.abort();
            Err(format!(
                "the case did not finish within {}s",
                CASE_TIMEOUT.as_secs()
            ))
        }
    };
    let left: Vec<(VolumeName, CallerId)> = std::mem::take(&mut *ctx.lock()).into_iter().collect();
    let mut problems = Vec::new();
    for (name, caller) in left {
        if let Err(e) = ctx.driver().unmount(&name, &caller).await {
            problems.push(format!("unmount {name} for {caller} after the case: {e}"));
        }
    }
    problems.extend(still_mounted(&ctx, &root));
    problems.extend(remove_created(&ctx).await);
    drop(ctx);
    match result {
        Ok(()) if problems.is_empty() => Outcome::Passed,
        Ok(()) => Outcome::Failed(problems.join("; ")),
        Err(msg) if problems.is_empty() => Outcome::Failed(msg),
        Err(msg) => Outcome::Failed(format!("{msg}\n  (and then: {})", problems.join("; "))),
    }
}

/// Mounts left after every caller unmounted: below the root, or at a path `mount` returned.
fn still_mounted(ctx: &VolumeCtx, root: &Path) -> Option<String> {
    let mut left: BTreeSet<PathBuf> = match mounts::mounts_under(root) {
        Ok(table) => table
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p != root)
            .collect(),
        Err(e) => return Some(format!("reading the mount table: {e}")),
    };
    let paths = ctx
        .inner
        .mount_paths
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for path in paths.iter() {
        match mounts::is_mounted(path) {
            Ok(true) => {
                left.insert(path.clone());
            }
            Ok(false) => {}
            Err(e) => return Some(format!("reading the mount table: {e}")),
        }
    }
    let left: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
    (!left.is_empty()).then(|| {
        format!(
            "after every caller unmounted, still mounted: {}",
            left.join(", ")
        )
    })
}

/// Removes the volumes the case created that still exist.
async fn remove_created(ctx: &VolumeCtx) -> Vec<String> {
    let created = std::mem::take(&mut *ctx.inner.created.lock().unwrap_or_else(|p| p.into_inner()));
    let driver = ctx.driver();
    let mut problems = Vec::new();
    for name in created {
        let outcome = match driver.get(&name).await {
            Ok(_) => driver.remove(&name).await,
            Err(strata_core::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            problems.push(format!("removing volume {name} after the case: {e}"));
        }
    }
    problems
}

macro_rules! volume_case {
    ($name:ident) => {
        volume_case!($name, VolumeRequirement::Nothing)
    };
    ($name:ident, $needs:expr) => {
        VolumeCase {
            name: stringify!($name),
            needs: $needs,
            run: |ctx| Box::pin($name(ctx)),
        }
    };
}

/// Every volume case.
pub fn volume_cases() -> Vec<VolumeCase> {
    vec![
        volume_case!(lifecycle),
        volume_case!(mount_refcount_per_caller),
        volume_case!(remove_in_use_refused),
        volume_case!(usage),
        volume_case!(bad_names),
        volume_case!(restart_keeps_volumes, VolumeRequirement::Restart),
        volume_case!(tmpfs_volume, VolumeRequirement::LocalOptions),
    ]
}

/// create, get, list, remove; a second create of a name never loses data.
async fn lifecycle(ctx: VolumeCtx) -> CaseResult {
    let driver = ctx.driver();
    let (a, b) = (VolumeCtx::name("vol-a"), VolumeCtx::name("vol-b"));
    ensure!(
        driver.list().await?.is_empty(),
        "a new driver lists volumes"
    );
    ctx.create(&a, &[]).await?;
    ctx.create(&b, &[]).await?;
    let info = driver.get(&a).await.step("get(vol-a)")?;
    ensure_eq!(info.name, a, "get(vol-a).name");
    let names: BTreeSet<VolumeName> = driver.list().await?.into_iter().map(|i| i.name).collect();
    ensure_eq!(
        names,
        [a.clone(), b.clone()].into_iter().collect::<BTreeSet<_>>(),
        "list() after two creates"
    );
    let caller = VolumeCtx::caller("c1");
    let path = ctx.mount(&a, &caller).await?;
    ops::write(&path.join("data"), b"keep me\n", 0o644)?;
    ctx.unmount(&a, &caller).await?;
    match driver.create(&a, &BTreeMap::new()).await {
        Ok(()) | Err(strata_core::Error::AlreadyExists(_)) => {}
        Err(e) => {
            return Err(Failure::new(format!(
                "a second create of vol-a failed oddly: {e}"
            )))
        }
    }
    let path = ctx.mount(&a, &caller).await?;
    let kept = std::fs::read(path.join("data")).step("read the data after a second create")?;
    ensure_eq!(
        kept,
        b"keep me\n".to_vec(),
        "vol-a's data after a second create of the name"
    );
    ctx.unmount(&a, &caller).await?;
    driver.remove(&a).await.step("remove(vol-a)")?;
    expect_error(
        driver.get(&a).await,
        is_not_found,
        "NotFound",
        "get(vol-a) after remove",
    )?;
    ensure!(
        !path.exists(),
        "vol-a's data directory {} still exists after remove",
        path.display()
    );
    let names: Vec<VolumeName> = driver.list().await?.into_iter().map(|i| i.name).collect();
    ensure_eq!(names, vec![b.clone()], "list() after removing vol-a");
    Ok(())
}

/// Mounts are counted per caller: the same caller twice is one reference; the volume is in
/// use until every caller released it.
async fn mount_refcount_per_caller(ctx: VolumeCtx) -> CaseResult {
    let driver = ctx.driver();
    let v = VolumeCtx::name("counted");
    let (c1, c2) = (VolumeCtx::caller("caller-1"), VolumeCtx::caller("caller-2"));
    ctx.create(&v, &[]).await?;
    let p1 = ctx.mount(&v, &c1).await?;
    ensure_eq!(
        driver.path(&v).await.step("path()")?,
        p1,
        "path() of a mounted volume against mount()'s path"
    );
    let again = ctx.mount(&v, &c1).await?;
    ensure_eq!(again, p1, "the path of a second mount by the same caller");
    let p2 = ctx.mount(&v, &c2).await?;
    ensure_eq!(p2, p1, "the path of a mount by another caller");
    ctx.unmount(&v, &c1).await?;
    expect_error(
        driver.remove(&v).await,
        is_busy,
        "Busy",
        "remove while caller-2 still has it mounted",
    )?;
    ctx.unmount(&v, &c2).await?;
    driver
        .remove(&v)
        .await
        .step("remove once every caller unmounted (caller-1's two mounts were one reference)")
}

/// A mounted volume cannot be removed and keeps its data; after the unmount it can.
async fn remove_in_use_refused(ctx: VolumeCtx) -> CaseResult {
    let driver = ctx.driver();
    let v = VolumeCtx::name("in-use");
    let c = VolumeCtx::caller("holder");
    ctx.create(&v, &[]).await?;
    let path = ctx.mount(&v, &c).await?;
    ops::write(&path.join("file"), b"precious\n", 0o600)?;
    expect_error(
        driver.remove(&v).await,
        is_busy,
        "Busy",
        "remove of a mounted volume",
    )?;
    ensure_eq!(
        std::fs::read(path.join("file")).step("read after the refused remove")?,
        b"precious\n".to_vec(),
        "the data after a refused remove"
    );
    driver.get(&v).await.step("get after the refused remove")?;
    ctx.unmount(&v, &c).await?;
    driver.remove(&v).await.step("remove after the unmount")?;
    ensure!(
        !path.exists(),
        "{} still exists after remove",
        path.display()
    );
    Ok(())
}

fn synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// usage grows by the allocated bytes and inodes written (hard links once).
async fn usage(ctx: VolumeCtx) -> CaseResult {
    const SLACK: u64 = 64 * 1024;
    let driver = ctx.driver();
    let v = VolumeCtx::name("measured");
    let c = VolumeCtx::caller("writer");
    ctx.create(&v, &[]).await?;
    let before = driver.usage(&v).await.step("usage before")?;
    let path = ctx.mount(&v, &c).await?;
    let (bytes, inodes) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64)> {
        synced(&path.join("one"), &ops::pseudo_random(1 << 20, 1))?;
        synced(&path.join("two"), &ops::pseudo_random(100 << 10, 2))?;
        ops::hardlink(&path.join("one"), &path.join("one-again"))?;
        let (a, b) = (
            std::fs::metadata(path.join("one"))?,
            std::fs::metadata(path.join("two"))?,
        );
        Ok((a.blocks() * 512 + b.blocks() * 512, 2))
    })
    .await?
    .step("writing into the volume")?;
    ctx.unmount(&v, &c).await?;
    let after: Usage = driver.usage(&v).await.step("usage after")?;
    ensure_eq!(
        after.inodes - before.inodes,
        inodes,
        "inodes added by two files and a hard link"
    );
    let grew = after.bytes as i128 - before.bytes as i128;
    ensure!(
        (grew - bytes as i128).unsigned_abs() <= SLACK as u128,
        "usage bytes grew by {grew}, expected {bytes} (st_blocks of the files, hard link once) within {SLACK}"
    );
    Ok(())
}

/// Unsafe names are refused before any driver sees them; missing volumes give NotFound and
/// nothing is created on disk.
async fn bad_names(ctx: VolumeCtx) -> CaseResult {
    let long = "v".repeat(256);
    for bad in [
        "..",
        ".",
        "/x",
        "a/b",
        "",
        "x",
        "a\0b",
        "../x",
        ".hidden",
        long.as_str(),
    ] {
        ensure!(
            VolumeName::new(bad).is_err(),
            "VolumeName::new accepted {bad:?}"
        );
    }
    for bad in ["..", "/x", "a/b", "", "a\0b"] {
        ensure!(
            CallerId::new(bad).is_err(),
            "CallerId::new accepted {bad:?}"
        );
    }
    let driver = ctx.driver();
    let before = crate::tree::snapshot(ctx.root()).step("reading the driver root")?;
    let missing = VolumeCtx::name("missing");
    let c = VolumeCtx::caller("c");
    expect_error(
        driver.get(&missing).await,
        is_not_found,
        "NotFound",
        "get(missing)",
    )?;
    expect_error(
        driver.remove(&missing).await,
        is_not_found,
        "NotFound",
        "remove(missing)",
    )?;
    expect_error(
        driver.mount(&missing, &c).await,
        is_not_found,
        "NotFound",
        "mount(missing)",
    )?;
    expect_error(
        driver.usage(&missing).await,
        is_not_found,
        "NotFound",
        "usage(missing)",
    )?;
    let after = crate::tree::snapshot(ctx.root()).step("reading the driver root")?;
    let (b, a): (BTreeSet<_>, BTreeSet<_>) = (
        before.entries.keys().collect(),
        after.entries.keys().collect(),
    );
    ensure!(
        a == b,
        "operations on a missing volume changed the driver root's paths"
    );
    Ok(())
}

/// Volumes, their options and data survive a new driver on the same root.
async fn restart_keeps_volumes(ctx: VolumeCtx) -> CaseResult {
    let v = VolumeCtx::name("durable");
    let c = VolumeCtx::caller("c");
    ctx.create(&v, &[]).await?;
    let path = ctx.mount(&v, &c).await?;
    ops::write(&path.join("kept"), b"across restarts\n", 0o644)?;
    ctx.unmount(&v, &c).await?;
    let before = ctx.driver().get(&v).await.step("get before the restart")?;
    let driver = ctx.reopen().await?;
    let after = driver.get(&v).await.step("get after the restart")?;
    ensure_eq!(
        after.options,
        before.options,
        "the volume's options after a restart"
    );
    ensure_eq!(
        after.created_at,
        before.created_at,
        "the volume's creation time after a restart"
    );
    let path = ctx.mount(&v, &c).await?;
    ensure_eq!(
        std::fs::read(path.join("kept")).step("read after the restart")?,
        b"across restarts\n".to_vec(),
        "the data after a restart"
    );
    ctx.unmount(&v, &c).await
}

fn mount_count(path: &Path) -> CaseResult<(usize, Option<String>)> {
    let table = mounts::mount_table().step("reading the mount table")?;
    let at: Vec<_> = table.iter().filter(|m| m.mount_point == path).collect();
    Ok((at.len(), at.last().map(|m| m.fs_type.clone())))
}

/// A tmpfs volume (type=tmpfs,device=tmpfs,o=size=1m) is mounted for its first caller, is
/// limited to 1 MiB, and is unmounted after its last caller (each caller counted once).
async fn tmpfs_volume(ctx: VolumeCtx) -> CaseResult {
    let driver = ctx.driver();
    let v = VolumeCtx::name("small-tmpfs");
    let (c1, c2) = (VolumeCtx::caller("one"), VolumeCtx::caller("two"));
    ctx.create(
        &v,
        &[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")],
    )
    .await?;
    let info = driver.get(&v).await.step("get")?;
    ensure_eq!(
        info.options.get("type").map(String::as_str),
        Some("tmpfs"),
        "the volume's type option"
    );
    let path = ctx.mount(&v, &c1).await?;
    let (n, fs) = mount_count(&path)?;
    ensure!(
        n == 1 && fs.as_deref() == Some("tmpfs"),
        "{} after the first mount: {n} mounts, type {fs:?}; expected one tmpfs",
        path.display()
    );
    ctx.mount(&v, &c1).await?;
    ctx.mount(&v, &c2).await?;
    ensure_eq!(
        mount_count(&path)?.0,
        1,
        "mounts at {} with two callers (no stacking)",
        path.display()
    );
    let written = tokio::task::spawn_blocking({
        let path = path.clone();
        move || synced(&path.join("too-big"), &ops::pseudo_random(2 << 20, 4))
    })
    .await?;
    match written {
        Ok(()) => return Err(Failure::new("wrote 2 MiB into a tmpfs volume with size=1m")),
        Err(e) => ensure!(
            e.raw_os_error() == Some(libc::ENOSPC),
            "writing 2 MiB into size=1m failed with {e}, expected ENOSPC"
        ),
    }
    ctx.unmount(&v, &c1).await?;
    ensure_eq!(
        mount_count(&path)?.0,
        1,
        "mounts after caller one (who mounted twice) unmounted once, with caller two still in"
    );
    ctx.unmount(&v, &c2).await?;
    ensure_eq!(
        mount_count(&path)?.0,
        0,
        "mounts at {} after the last caller unmounted",
        path.display()
    );
    driver.remove(&v).await.step("remove the tmpfs volume")
}
