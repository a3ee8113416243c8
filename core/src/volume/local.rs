//! The built-in `local` volume driver, Docker's shape: `<volumes>/NAME/_data` holds the data,
//! `<volumes>/NAME/opts.json` the options and creation time.
//!
//! Without options `_data` is a plain directory. With Docker's `type`/`device`/`o` options
//! (`type=tmpfs,device=tmpfs,o=size=100m,uid=1000`; `type=none,o=bind,device=/srv/x`; a block
//! device and its filesystem type) `_data` is mounted when the first caller mounts the volume
//! and unmounted after the last caller's unmount.
//!
//! A volume is made in a staging directory (`.tmp-NAME-*`, not a valid volume name) and
//! renamed into place, so a crash never leaves half a volume visible. At start-up staging
//! leftovers are deleted and mounts a crashed daemon left on `_data` directories are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, mounts};
use crate::ids::{CallerId, VolumeName};
use crate::layer::Usage;
use crate::volume::{VolumeCapabilities, VolumeDriver, VolumeInfo, VolumeScope};

pub const DRIVER_NAME: &str = "local";
const DATA_DIR: &str = "_data";
const OPTS_FILE: &str = "opts.json";
const STAGING_PREFIX: &str = ".tmp-";
const KNOWN_OPTS: &[&str] = &["type", "device", "o"];

/// What `opts.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VolumeRecord {
    options: BTreeMap<String, String>,
    created_at: String,
}

struct Volume {
    record: VolumeRecord,
    /// Callers holding the volume; the same caller twice is one reference.
    callers: HashSet<CallerId>,
    /// What the volume's directory occupies, kept while nobody holds the volume (measured
    /// when the last caller unmounts, or on first ask); dropped at the next mount.
    size: Option<Usage>,
    /// Bumped at every mount, so a measurement that a mount overtook is not kept.
    mounts: u64,
}

impl Volume {
    fn new(record: VolumeRecord) -> Self {
        Self {
            record,
            callers: HashSet::new(),
            size: None,
            mounts: 0,
        }
    }
}

pub struct LocalVolumes {
    root: PathBuf,
    /// One lock for every operation: mounts and creates are rare and must not interleave.
    volumes: Mutex<HashMap<VolumeName, Volume>>,
}

impl LocalVolumes {
    /// Opens the volumes directory (`<data-root>/volumes`), creating it if needed, reloading
    /// every volume and dropping what a crash left behind (staging copies, stale mounts).
    pub async fn new(volumes_root: PathBuf) -> Result<Self> {
        let root = volumes_root.clone();
        let volumes = tokio::task::spawn_blocking(move || recover(&root)).await??;
        tracing::info!(root = %volumes_root.display(), volumes = volumes.len(), "local volume driver ready");
        Ok(Self {
            root: volumes_root,
            volumes: Mutex::new(volumes),
        })
    }

    fn volume_dir(&self, name: &VolumeName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn data_dir(&self, name: &VolumeName) -> PathBuf {
        self.volume_dir(name).join(DATA_DIR)
    }

    fn info(&self, name: &VolumeName, v: &Volume) -> VolumeInfo {
        let mut status = BTreeMap::new();
        if !v.record.options.is_empty() {
            status.insert("mounted".to_string(), (!v.callers.is_empty()).into());
        }
        VolumeInfo {
            name: name.clone(),
            mountpoint: Some(self.data_dir(name)),
            created_at: Some(v.record.created_at.clone()),
            options: v.record.options.clone(),
            status,
        }
    }
}

fn not_found(name: &VolumeName) -> Error {
    Error::not_found(format!("volume {name}"))
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

#[async_trait]
impl VolumeDriver for LocalVolumes {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    fn capabilities(&self) -> VolumeCapabilities {
        VolumeCapabilities {
            scope: VolumeScope::Local,
        }
    }

    async fn create(&self, name: &VolumeName, opts: &BTreeMap<String, String>) -> Result<()> {
        validate_options(opts)?;
        let mut volumes = self.volumes.lock().await;
        if let Some(existing) = volumes.get(name) {
            // Docker's local driver: creating an existing volume again is not an error, but
            // asking for different options is.
            if &existing.record.options == opts {
                return Ok(());
            }
            return Err(Error::AlreadyExists(format!(
                "volume {name} (with other options; remove it first to change them)"
            )));
        }
        let record = VolumeRecord {
            options: opts.clone(),
            created_at: rfc3339_utc(std::time::SystemTime::now()),
        };
        let root = self.root.clone();
        let dir = self.volume_dir(name);
        let rec = record.clone();
        let label = name.to_string();
        blocking(move || create_on_disk(&root, &label, &dir, &rec)).await?;
        volumes.insert(name.clone(), Volume::new(record));
        Ok(())
    }

    async fn remove(&self, name: &VolumeName) -> Result<()> {
        let mut volumes = self.volumes.lock().await;
        let v = volumes.get(name).ok_or_else(|| not_found(name))?;
        if !v.callers.is_empty() {
            let mut users: Vec<&str> = v.callers.iter().map(CallerId::as_str).collect();
            users.sort_unstable();
            return Err(Error::busy(format!(
                "volume {name} is in use by {}; stop or remove them first",
                users.join(", ")
            )));
        }
        let root = self.root.clone();
        let dir = self.volume_dir(name);
        let label = name.to_string();
        blocking(move || remove_on_disk(&root, &label, &dir)).await?;
        volumes.remove(name);
        Ok(())
    }

    async fn mount(&self, name: &VolumeName, caller: &CallerId) -> Result<PathBuf> {
        let mut volumes = self.volumes.lock().await;
        let data = self.data_dir(name);
        let v = volumes.get_mut(name).ok_or_else(|| not_found(name))?;
        if v.callers.contains(caller) {
            return Ok(data);
        }
        if v.callers.is_empty() && !v.record.options.is_empty() {
            let options = v.record.options.clone();
            let target = data.clone();
            blocking(move || mount_data(&options, &target)).await?;
        }
        v.callers.insert(caller.clone());
        v.size = None;
        v.mounts += 1;
        Ok(data)
    }

    async fn unmount(&self, name: &VolumeName, caller: &CallerId) -> Result<()> {
        let mut volumes = self.volumes.lock().await;
        let data = self.data_dir(name);
        let v = volumes.get_mut(name).ok_or_else(|| not_found(name))?;
        if !v.callers.remove(caller) {
            tracing::debug!(volume = %name, caller = %caller, "unmount by a caller that holds no mount");
            return Ok(());
        }
        if v.callers.is_empty() && !v.record.options.is_empty() {
            let result = blocking(move || mounts::unmount(&data, false)).await;
            if let Err(e) = result {
                // Still mounted: keep the reference so the volume cannot be removed under it.
                v.callers.insert(caller.clone());
                return Err(e);
            }
        }
        if v.callers.is_empty() {
            // The last user is done: what it wrote is measured now, once, for `system df`.
            let dir = self.volume_dir(name);
            v.size = Some(blocking(move || fsutil::usage::tree_usage(&dir)).await?);
        }
        Ok(())
    }

    async fn path(&self, name: &VolumeName) -> Result<PathBuf> {
        let volumes = self.volumes.lock().await;
        volumes.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.data_dir(name))
    }

    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo> {
        let volumes = self.volumes.lock().await;
        let v = volumes.get(name).ok_or_else(|| not_found(name))?;
        Ok(self.info(name, v))
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let volumes = self.volumes.lock().await;
        let mut out: Vec<VolumeInfo> = volumes.iter().map(|(n, v)| self.info(n, v)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The volume's whole directory (its data and its options file). Kept from the last
    /// unmount while nobody holds the volume; measured now while somebody does.
    async fn usage(&self, name: &VolumeName) -> Result<Usage> {
        let (dir, mounts) = {
            let volumes = self.volumes.lock().await;
            let v = volumes.get(name).ok_or_else(|| not_found(name))?;
            if let (Some(size), true) = (v.size, v.callers.is_empty()) {
                return Ok(size);
            }
            (self.volume_dir(name), v.mounts)
        };
        let size = blocking(move || fsutil::usage::tree_usage(&dir)).await?;
        let mut volumes = self.volumes.lock().await;
        if let Some(v) = volumes.get_mut(name) {
            if v.callers.is_empty() && v.mounts == mounts {
                v.size = Some(size);
            }
        }
        Ok(size)
    }
}

/// Docker's rules: only `type`, `device`, `o`; `type` and `device` go together; `o` needs both.
fn validate_options(opts: &BTreeMap<String, String>) -> Result<()> {
    for key in opts.keys() {
        if !KNOWN_OPTS.contains(&key.as_str()) {
            return Err(Error::invalid(format!(
                "option {key:?} is not supported by the local volume driver (supported: type, device, o)"
            )));
        }
    }
    let required: [(&str, &[&str]); 3] = [
        ("type", &["device"]),
        ("device", &["type"]),
        ("o", &["type", "device"]),
    ];
    for (given, needs) in required {
        if opts.contains_key(given) {
            for need in needs {
                if !opts.contains_key(*need) {
                    return Err(Error::invalid(format!(
                        "volume option {given:?} also needs {need:?} \
                         (e.g. type=tmpfs,device=tmpfs,o=size=100m or type=none,o=bind,device=/path)"
                    )));
                }
            }
        }
    }
    if let Some(o) = opts.get("o") {
        parse_mount_options(o)?;
    }
    Ok(())
}

/// Splits `o` into mount flags and the filesystem's data string, as mount(8) does.
fn parse_mount_options(o: &str) -> Result<(nix::mount::MsFlags, String)> {
    use nix::mount::MsFlags as F;
    let mut flags = F::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        let (set, clear) = match opt {
            "ro" => (F::MS_RDONLY, F::empty()),
            "rw" => (F::empty(), F::MS_RDONLY),
            "bind" => (F::MS_BIND, F::empty()),
            "rbind" => (F::MS_BIND | F::MS_REC, F::empty()),
            "nosuid" => (F::MS_NOSUID, F::empty()),
            "suid" => (F::empty(), F::MS_NOSUID),
            "nodev" => (F::MS_NODEV, F::empty()),
            "dev" => (F::empty(), F::MS_NODEV),
            "noexec" => (F::MS_NOEXEC, F::empty()),
            "exec" => (F::empty(), F::MS_NOEXEC),
            "sync" => (F::MS_SYNCHRONOUS, F::empty()),
            "async" => (F::empty(), F::MS_SYNCHRONOUS),
            "noatime" => (F::MS_NOATIME, F::empty()),
            "nodiratime" => (F::MS_NODIRATIME, F::empty()),
            "relatime" => (F::MS_RELATIME, F::empty()),
            "strictatime" => (F::MS_STRICTATIME, F::empty()),
            "defaults" => (F::empty(), F::empty()),
            "remount" | "move" => {
                return Err(Error::invalid(format!(
                    "mount option {opt:?} makes no sense for a volume"
                )))
            }
            other => {
                data.push(other);
                (F::empty(), F::empty())
            }
        };
        flags = (flags | set) & !clear;
    }
    Ok((flags, data.join(",")))
}

/// Mounts the volume's filesystem on `_data`.
fn mount_data(options: &BTreeMap<String, String>, target: &Path) -> Result<()> {
    use nix::mount::MsFlags;
    let fstype = options.get("type").map(String::as_str).unwrap_or("none");
    let device = options.get("device").map(String::as_str).unwrap_or("none");
    let (flags, data) = parse_mount_options(options.get("o").map(String::as_str).unwrap_or(""))?;
    let bind = flags.contains(MsFlags::MS_BIND);
    let data_arg = (!data.is_empty()).then_some(data.as_str());
    let fstype_arg = (!bind && fstype != "none").then_some(fstype);
    nix::mount::mount(Some(device), target, fstype_arg, flags, data_arg).map_err(|e| {
        Error::io(
            "mount volume on",
            target,
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!(
                    "mount -t {fstype} -o {} {device}: {e}",
                    options.get("o").map(String::as_str).unwrap_or("")
                ),
            ),
        )
    })?;
    // A bind mount ignores most flags on the first call; they apply on a remount.
    let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if bind && !extra.is_empty() {
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
        {
            let _ = mounts::unmount(target, true);
            return Err(Error::io("remount volume", target, e.into()));
        }
    }
    Ok(())
}

fn create_on_disk(root: &Path, name: &str, dir: &Path, record: &VolumeRecord) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        return Err(Error::AlreadyExists(format!(
            "volume {name} (its directory {} exists but is not a volume)",
            dir.display()
        )));
    }
    let staging = root.join(format!("{STAGING_PREFIX}{name}-{}", random_suffix()?));
    let built = (|| {
        make_dir(&staging, 0o701)?;
        make_dir(&staging.join(DATA_DIR), 0o755)?;
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Other(format!("encode volume record: {e}")))?;
        fsutil::atomic_write(&staging.join(OPTS_FILE), &json)?;
        fsutil::fsync_dir(&staging)?;
        std::fs::rename(&staging, dir).ctx("rename", dir)?;
        fsutil::fsync_dir(root)
    })();
    if built.is_err() {
        let _ = fsutil::remove_tree(&staging);
    }
    built
}

fn remove_on_disk(root: &Path, name: &str, dir: &Path) -> Result<()> {
    // Never delete through a mount: that would delete the bind source or the device's files.
    unmount_all_below(dir)?;
    let doomed = root.join(format!(
        "{STAGING_PREFIX}{name}-removing-{}",
        random_suffix()?
    ));
    std::fs::rename(dir, &doomed).ctx("rename", dir)?;
    fsutil::fsync_dir(root)?;
    fsutil::remove_tree(&doomed)
}

/// Unmounts every mount strictly below `dir`, deepest first; fails if one stays.
fn unmount_all_below(dir: &Path) -> Result<()> {
    for m in mounts::mounts_under(dir)? {
        if m.mount_point != dir {
            mounts::unmount(&m.mount_point, true)?;
        }
    }
    if mounts::mounts_under(dir)?
        .iter()
        .any(|m| m.mount_point != dir)
    {
        return Err(Error::busy(format!(
            "{} still has mounts below it",
            dir.display()
        )));
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .ctx("mkdir", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx("chmod", path)
}

fn random_suffix() -> Result<String> {
    let mut b = [0u8; 6];
    crate::ids::fill_random(&mut b)?;
    Ok(hex::encode(b))
}

/// Reads every volume back; removes staging leftovers; drops stale mounts.
fn recover(root: &Path) -> Result<HashMap<VolumeName, Volume>> {
    std::fs::create_dir_all(root).ctx("mkdir", root)?;
    let mut volumes = HashMap::new();
    for entry in std::fs::read_dir(root).ctx("read directory", root)? {
        let entry = entry.ctx("read directory", root)?;
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(STAGING_PREFIX) {
            unmount_all_below(&path)?;
            fsutil::remove_tree(&path)?;
            continue;
        }
        let Ok(name) = VolumeName::new(&file_name) else {
            continue; // not ours (Docker keeps metadata.db here, for one)
        };
        if !path.is_dir() {
            continue;
        }
        let dropped = unmount_all_below(&path);
        if let Err(e) = dropped {
            tracing::warn!(volume = %name, error = %e, "could not drop a stale volume mount");
        }
        match load_record(&path)? {
            Some(record) => {
                volumes.insert(name, Volume::new(record));
            }
            None => tracing::warn!(volume = %name, "ignoring a volume directory without _data"),
        }
    }
    Ok(volumes)
}

/// A volume's record; a directory with `_data` but no record (made by another engine) is a
/// plain volume dated by its directory's mtime.
fn load_record(dir: &Path) -> Result<Option<VolumeRecord>> {
    let opts = dir.join(OPTS_FILE);
    match std::fs::read(&opts) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Other(format!(
                "volume record {} is corrupt ({e}); fix or delete it",
                opts.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let data = dir.join(DATA_DIR);
            let Ok(meta) = std::fs::metadata(&data) else {
                return Ok(None);
            };
            let created = meta.modified().ctx("stat", &data)?;
            Ok(Some(VolumeRecord {
                options: BTreeMap::new(),
                created_at: rfc3339_utc(created),
            }))
        }
        Err(e) => Err(Error::io("read", &opts, e)),
    }
}

/// `2024-05-01T12:34:56Z`.
fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
