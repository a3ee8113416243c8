//! Start-up probes: can overlay run on this backing filesystem, which mount API and options
//! the kernel takes, and whether reading a layer's `diff` directory gives the true change list
//! (moby's doesSupportNativeDiff, extended with metacopy).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_core::fsutil;
use strata_core::{Error, IoContext, Result};

use crate::layout::PROBE_PREFIX;
use crate::mount::{self, FsContext, MountApi, Mounter, OverlaySpec};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const REDIRECT_XATTR: &str = "trusted.overlay.redirect";
const METACOPY_XATTR: &str = "trusted.overlay.metacopy";

/// Options we turn off explicitly on every mount when the kernel knows them: `index` as
/// Docker does, `redirect_dir` and `metacopy` because either makes the upper directory an
/// incomplete record of the layer's changes.
const FORCED_OFF: [&str; 3] = ["index", "redirect_dir", "metacopy"];

/// What the probes found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub backing_fs: String,
    pub supports_d_type: bool,
    pub api: MountApi,
    pub options: Vec<(String, String)>,
    /// None: native diff is right; Some(why) otherwise.
    pub naive_reason: Option<String>,
    pub using_metacopy: bool,
}

/// Runs every probe in a scratch directory under `root` (removed afterwards).
pub fn run(root: &Path, forced_api: Option<MountApi>) -> Result<ProbeReport> {
    let backing_fs = fsutil::filesystem_name(root)?;
    if backing_fs == "overlayfs" {
        return Err(Error::unsupported(format!(
            "overlay2 cannot use {} because it is itself on overlayfs; put the data root on \
             ext4, xfs or btrfs",
            root.display()
        )));
    }
    let scratch = root.join(format!("{PROBE_PREFIX}{}", std::process::id()));
    fsutil::remove_tree(&scratch)?;
    let outcome = std::fs::create_dir(&scratch)
        .ctx("create", &scratch)
        .and_then(|()| probe_in(root, &scratch, backing_fs.clone(), forced_api));
    let merged = scratch.join("merged");
    let _ = mount::unmount(&merged);
    fsutil::remove_tree(&scratch)?;
    match outcome {
        Err(e) if out_of_space(&e) => Ok(without_probes(root, backing_fs, forced_api, &e)),
        other => other,
    }
}

/// Whether a probe failed only because the backing filesystem is full (or over quota).
fn out_of_space(e: &Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.to_string().contains("No space left on device")
}

/// The report when the probes cannot write: the daemon must still start on a full disk so a
/// user can free space. Everything kept is what works everywhere: the mount API can be asked
/// without writing, and diffs compare trees (always right, only slower), until a start with
/// space probes again. d_type is assumed, as a data root that filled up was in use.
fn without_probes(
    root: &Path,
    backing_fs: String,
    forced_api: Option<MountApi>,
    why: &Error,
) -> ProbeReport {
    tracing::warn!(error = %why, "overlay2: start-up probes could not write; assuming safe settings");
    let api = forced_api.unwrap_or_else(|| mount::detect_api(root));
    ProbeReport {
        backing_fs,
        supports_d_type: true,
        api,
        options: accepted_options(api),
        naive_reason: Some("the start-up probes could not run on a full disk".into()),
        using_metacopy: false,
    }
}

fn probe_in(
    root: &Path,
    scratch: &Path,
    backing_fs: String,
    forced_api: Option<MountApi>,
) -> Result<ProbeReport> {
    let supports_d_type = supports_d_type(scratch)?;
    if !supports_d_type {
        return Err(Error::unsupported(format!(
            "the backing filesystem {backing_fs} of {} does not report file types in \
             directory entries (d_type), which overlay needs; for xfs, reformat with \
             `mkfs.xfs -n ftype=1`",
            root.display()
        )));
    }
    let api = forced_api.unwrap_or_else(|| mount::detect_api(scratch));
    let options = accepted_options(api);

    for d in ["l1/d", "l1/d1", "l2/d", "upper", "work", "merged"] {
        std::fs::create_dir_all(scratch.join(d)).ctx("create", scratch.join(d))?;
    }
    std::fs::write(scratch.join("l1/d/old"), b"x").ctx("write", scratch.join("l1/d/old"))?;
    std::fs::write(scratch.join("l1/file"), b"data").ctx("write", scratch.join("l1/file"))?;
    xattr::set(scratch.join("l2/d"), OPAQUE_XATTR, b"y").ctx("set opaque on", scratch)?;

    let rel = |p: &str| -> String {
        let name = scratch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("{}/{p}", name.unwrap_or_default())
    };
    let mounter = Mounter::new(root.to_path_buf(), api, options.clone());
    let merged = scratch.join("merged");
    mounter
        .mount(&OverlaySpec {
            lowers: vec![rel("l2"), rel("l1")],
            upper: Some((rel("upper"), rel("work"))),
            target: merged.clone(),
        })
        .map_err(|e| {
            Error::unsupported(format!(
                "a test overlay mount on the backing filesystem {backing_fs} failed: {e}"
            ))
        })?;
    let findings = inspect_copy_up(scratch, &merged);
    mount::unmount(&merged)?;
    let (mut naive_reason, using_metacopy) = findings?;
    if naive_reason.is_none() {
        naive_reason = module_defaults_on(&options);
    }
    Ok(ProbeReport {
        backing_fs,
        supports_d_type,
        api,
        options,
        naive_reason,
        using_metacopy,
    })
}

/// Writes through the test mount and looks at what landed in the upper directory.
fn inspect_copy_up(scratch: &Path, merged: &Path) -> Result<(Option<String>, bool)> {
    let upper = scratch.join("upper");
    let mut reasons = Vec::new();

    // The opaque flag of a lower dir must not be copied up with it (kernels before 4.8).
    std::fs::write(merged.join("d/new"), b"x").ctx("write", merged.join("d/new"))?;
    if xattr::get(upper.join("d"), OPAQUE_XATTR)
        .ok()
        .flatten()
        .is_some()
    {
        reasons.push("the opaque flag is copied up (kernel before 4.8)");
    }

    // With redirect_dir on, renaming a lower dir leaves a redirect instead of a full copy.
    match std::fs::rename(merged.join("d1"), merged.join("d2")) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(Error::io("rename in test overlay", merged, e)),
        Ok(()) => {
            if xattr::get(upper.join("d2"), REDIRECT_XATTR)
                .ok()
                .flatten()
                .is_some()
            {
                reasons.push("redirect_dir is on");
            }
        }
    }

    // With metacopy on, a chmod copies up metadata only; the data stays below.
    let file = merged.join("file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).ctx("chmod", &file)?;
    let using_metacopy = xattr::get(upper.join("file"), METACOPY_XATTR)
        .ok()
        .flatten()
        .is_some();
    if using_metacopy {
        reasons.push("metacopy is on");
    }
    let reason = (!reasons.is_empty()).then(|| reasons.join(", "));
    Ok((reason, using_metacopy))
}

/// A `redirect_dir` or `metacopy` module default that is on while the kernel did not take our
/// explicit `=off` (the behavioural probe may not exercise every path such a default opens).
fn module_defaults_on(options: &[(String, String)]) -> Option<String> {
    let on: Vec<&str> = ["redirect_dir", "metacopy"]
        .into_iter()
        .filter(|name| !options.iter().any(|(k, _)| k == name))
        .filter(|name| {
            let param = Path::new("/sys/module/overlay/parameters").join(name);
            std::fs::read_to_string(param).is_ok_and(|v| matches!(v.trim(), "Y" | "y" | "1" | "on"))
        })
        .collect();
    (!on.is_empty()).then(|| format!("the overlay module defaults {} on", on.join(" and ")))
}

/// The `FORCED_OFF` options this kernel accepts. With the new API each is tried on a scratch
/// context; for mount(2) a module parameter of the same name tells the kernel knows it.
fn accepted_options(api: MountApi) -> Vec<(String, String)> {
    FORCED_OFF
        .iter()
        .filter(|name| match api {
            MountApi::NewApi => FsContext::open()
                .and_then(|fs| fs.set_string(name, b"off"))
                .is_ok(),
            MountApi::Legacy => Path::new("/sys/module/overlay/parameters")
                .join(name)
                .exists(),
        })
        .map(|name| (name.to_string(), "off".to_string()))
        .collect()
}

/// Does readdir on this filesystem report entry types (d_type)?
fn supports_d_type(dir: &Path) -> Result<bool> {
    let probe = dir.join("dtype");
    std::fs::write(&probe, b"").ctx("write", &probe)?;
    let mut d = nix::dir::Dir::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open", dir)?;
    let mut known = false;
    for entry in d.iter() {
        let entry = entry.ctx("read directory", dir)?;
        if entry.file_name().to_bytes() == b"dtype" {
            known = entry.file_type().is_some();
        }
    }
    std::fs::remove_file(&probe).ctx("remove", &probe)?;
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_this_host() {
        let t = tempfile::tempdir().unwrap();
        let r = run(t.path(), None).unwrap();
        assert!(r.supports_d_type);
        assert_eq!(r.api, MountApi::NewApi, "this machine runs a 6.8+ kernel");
        assert!(
            r.options.iter().any(|(k, _)| k == "redirect_dir"),
            "{:?}",
            r.options
        );
        assert_eq!(r.naive_reason, None);
        assert!(!r.using_metacopy);
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "scratch left"
        );
    }

    #[test]
    fn legacy_api_probes_too() {
        let t = tempfile::tempdir().unwrap();
        let r = run(t.path(), Some(MountApi::Legacy)).unwrap();
        assert_eq!(r.api, MountApi::Legacy);
        assert_eq!(r.naive_reason, None);
    }
}
