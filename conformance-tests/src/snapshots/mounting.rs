//! Mounting what a Snapshots service returns, as containerd 1.6 does: binds with MS_BIND (and
//! a read-only remount), overlays with mount(2) data, and once the data reaches a page less 512
//! bytes, lowerdirs relative to their common directory, mounted from inside it.

use std::path::Path;
use std::process::Command;

use nix::mount::{mount, MsFlags};
use strata_core::{Error, Result};
use strata_snapshotter::api::types::Mount;

pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let [m] = mounts else {
        return Err(Error::Other(format!("expected one mount, got {mounts:?}")));
    };
    let fail = |e: nix::Error| Error::Other(format!("mount {m:?} on {}: {e}", target.display()));
    match m.r#type.as_str() {
        "bind" => {
            mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail)?;
            if m.options.iter().any(|o| o == "ro") {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(fail)?;
            }
            Ok(())
        }
        "overlay" => {
            let data = m.options.join(",");
            if data.len() < 4096 - 512 {
                return mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
                .map_err(fail);
            }
            let (dir, compacted) = compact_lowerdir(&m.options)?;
            let out = Command::new("mount")
                .current_dir(dir)
                .args(["-t", "overlay", "overlay", "-o", &compacted.join(",")])
                .arg(target)
                .output()
                .map_err(|e| Error::Other(format!("running mount(8): {e}")))?;
            if !out.status.success() {
                return Err(Error::Other(format!(
                    "mount of a deep overlay on {}: {}",
                    target.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        }
        other => Err(Error::unsupported(format!("mount type {other:?}"))),
    }
}

/// containerd's `compactLowerdirOption`: the lowerdirs' common directory (Go's `path.Dir` of
/// their common prefix) and the options with lowerdirs relative to it.
fn compact_lowerdir(options: &[String]) -> Result<(String, Vec<String>)> {
    let lower = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .ok_or_else(|| Error::invalid("an overlay mount without lowerdir"))?;
    let dirs: Vec<&str> = lower.split(':').collect();
    let mut prefix = dirs[0].to_string();
    for d in &dirs[1..] {
        while !d.starts_with(prefix.as_str()) {
            prefix.pop();
        }
    }
    let cut = prefix.rfind('/').unwrap_or(0);
    let common = format!("{}/", &prefix[..cut]);
    let relative: Vec<&str> = dirs.iter().map(|d| &d[common.len()..]).collect();
    let opts = options
        .iter()
        .map(|o| match o.starts_with("lowerdir=") {
            true => format!("lowerdir={}", relative.join(":")),
            false => o.clone(),
        })
        .collect();
    Ok((common, opts))
}
