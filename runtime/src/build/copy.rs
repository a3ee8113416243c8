//! COPY and ADD into a mounted layer: destination paths resolved inside the layer's root (a
//! symlink in the image cannot lead a copy out of it), ownership from `--chown` or root, and
//! ADD's extraction of local tar archives.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use strata_core::archive::{apply_layer, ApplyOptions, WhiteoutMode};
use strata_core::{Error, Result};

/// Resolves `path` (absolute inside the container) under `root` as if `root` were `/`:
/// symlinks are followed within the root, `..` stops at the root.
pub fn scoped(root: &Path, path: &str) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(Error::invalid(format!("{path}: too many symlinks")));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| Error::io("readlink", &candidate, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved))
}

pub struct CopyRequest<'a> {
    pub root: &'a Path,
    pub sources: &'a [PathBuf],
    /// As written; relative destinations are under `workdir`.
    pub dest: &'a str,
    pub workdir: &'a str,
    pub owner: Option<(u32, u32)>,
    /// ADD: local tar archives are extracted instead of copied.
    pub extract_archives: bool,
}

pub fn copy_into(req: &CopyRequest<'_>) -> Result<()> {
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.to_string()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let target = scoped(req.root, &dest_abs)?;
    let into_dir =
        req.dest.ends_with('/') || req.dest == "." || req.sources.len() > 1 || target.is_dir();
    if req.sources.len() > 1 && !req.dest.ends_with('/') && !target.is_dir() {
        return Err(Error::invalid(format!(
            "When using COPY with more than one source file, the destination must be a directory and end with a /: {}",
            req.dest
        )));
    }
    for src in req.sources {
        let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io("stat", src, e))?;
        if meta.is_dir() {
            make_dirs(&target, req.owner)?;
            copy_dir_contents(src, &target, req.owner)?;
        } else if req.extract_archives && meta.is_file() && is_archive(src) {
            make_dirs(&target, req.owner)?;
            let mut f = std::fs::File::open(src).map_err(|e| Error::io("open", src, e))?;
            apply_layer(
                &target,
                &mut f,
                &ApplyOptions {
                    whiteouts: WhiteoutMode::Delete,
                },
            )?;
        } else {
            let dst = if into_dir {
                make_dirs(&target, req.owner)?;
                target.join(src.file_name().unwrap_or_default())
            } else {
                if let Some(parent) = target.parent() {
                    make_dirs(parent, req.owner)?;
                }
                target.clone()
            };
            copy_entry(src, &dst, &meta, req.owner)?;
        }
    }
    Ok(())
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b])
        || (n >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &head[257..262] == b"ustar")
}

fn make_dirs(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent, owner)?;
    }
    std::fs::create_dir(dir).map_err(|e| Error::io("mkdir", dir, e))?;
    let (uid, gid) = owner.unwrap_or((0, 0));
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| Error::io("chown", dir, e))
}

fn copy_dir_contents(src: &Path, dst: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| Error::io("read directory", src, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(|e| Error::io("stat", &from, e))?;
        if meta.is_dir() {
            if !to.is_dir() {
                let _ = std::fs::remove_file(&to);
                std::fs::create_dir(&to).map_err(|e| Error::io("mkdir", &to, e))?;
            }
            copy_dir_contents(&from, &to, owner)?;
            set_meta(&to, &meta, owner)?;
        } else {
            copy_entry(&from, &to, &meta, owner)?;
        }
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    meta: &std::fs::Metadata,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    if let Ok(existing) = std::fs::symlink_metadata(to) {
        if existing.is_dir() {
            std::fs::remove_dir_all(to).map_err(|e| Error::io("remove", to, e))?;
        } else {
            std::fs::remove_file(to).map_err(|e| Error::io("remove", to, e))?;
        }
    }
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(from).map_err(|e| Error::io("readlink", from, e))?;
        std::os::unix::fs::symlink(&t, to).map_err(|e| Error::io("symlink", to, e))?;
    } else if meta.is_file() {
        std::fs::copy(from, to).map_err(|e| Error::io("copy", to, e))?;
    } else {
        // Devices, fifos and sockets in a build context are not copied, as Docker skips them.
        return Ok(());
    }
    set_meta(to, meta, owner)
}

fn set_meta(path: &Path, meta: &std::fs::Metadata, owner: Option<(u32, u32)>) -> Result<()> {
    let (uid, gid) = owner.unwrap_or((0, 0));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown", path, e))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", path, e))?;
        let times = [
            nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
            nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        ];
        nix::sys::stat::utimensat(
            None,
            path,
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| Error::io("utimensat", path, e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("etc-link")).unwrap();
        std::os::unix::fs::symlink("../../../../tmp", root.path().join("up")).unwrap();
        assert_eq!(
            scoped(root.path(), "/etc-link/x").unwrap(),
            root.path().join("etc/x")
        );
        assert_eq!(
            scoped(root.path(), "/up/y").unwrap(),
            root.path().join("tmp/y")
        );
        assert_eq!(
            scoped(root.path(), "/../../z").unwrap(),
            root.path().join("z")
        );
    }

    #[test]
    fn copies_files_and_dirs_with_owner() {
        let ctx = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a.txt"), "A").unwrap();
        std::fs::create_dir_all(ctx.path().join("d/e")).unwrap();
        std::fs::write(ctx.path().join("d/e/f"), "F").unwrap();
        let req = CopyRequest {
            root: root.path(),
            sources: &[ctx.path().join("a.txt"), ctx.path().join("d")],
            dest: "/out/",
            workdir: "/",
            owner: Some((7, 8)),
            extract_archives: false,
        };
        copy_into(&req).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("out/a.txt")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("out/e/f")).unwrap(),
            "F"
        );
        let m = std::fs::metadata(root.path().join("out/e/f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (7, 8));
    }
}
