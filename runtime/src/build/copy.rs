//! COPY and ADD into a mounted layer. The destination is resolved inside the layer's root
//! ([`ScopedDir::locate`]: a symlink in the image, `/out/h -> /` say, is followed as if the
//! rootfs were `/`), and everything is then written through directory descriptors inside it:
//! files created O_EXCL|O_NOFOLLOW and filled from a descriptor opened inside the context,
//! directories opened O_NOFOLLOW, owner/mode/times set on the new descriptors. An entry in the
//! way (a symlink where a directory goes) is replaced, as Docker's untar does, never followed.
//! ADD extracts local tar archives with the same applier as image layers.

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sys::stat::FileStat;
use strata_core::archive::{apply_layer, ApplyOptions, WhiteoutMode};
use strata_core::{Error, Result};

use super::context::{Context, Source};
use super::dirfd::{self, Kind, Owner};
use super::scope::{Located, ScopedDir};

pub struct CopyRequest<'a> {
    /// The mounted rootfs of the layer being written.
    pub root: &'a Path,
    pub context: &'a Context,
    /// Context-relative paths from [`Context::sources`].
    pub sources: &'a [String],
    /// As written; relative destinations are under `workdir`.
    pub dest: &'a str,
    pub workdir: &'a str,
    pub owner: Option<Owner>,
    /// ADD: local tar archives are extracted instead of copied.
    pub extract_archives: bool,
}

pub fn copy_into(req: &CopyRequest<'_>) -> Result<()> {
    let image = ScopedDir::open(req.root)?;
    let owner = req.owner.unwrap_or((0, 0));
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.to_string()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let target = image.locate(&dest_abs, owner)?;
    let target_is_dir = target.stat.as_ref().map(dirfd::kind) == Some(Kind::Dir);
    let many = req.sources.len() > 1;
    let into_dir = req.dest.ends_with('/') || req.dest == "." || many || target_is_dir;
    if many && !req.dest.ends_with('/') && !target_is_dir {
        return Err(Error::invalid(format!(
            "When using COPY with more than one source file, the destination must be a directory and end with a /: {}",
            req.dest
        )));
    }
    for src in req.sources {
        let fail = |e: std::io::Error| Error::io("copy", Path::new(src), e);
        match req.context.open_source(src)? {
            Source::Dir(from) => {
                let dir = image.ensure_dir(&target, owner)?;
                copy_tree(from.as_fd(), dir.as_fd(), owner, 0).map_err(fail)?;
            }
            Source::File(mut file, _) if req.extract_archives && is_archive(&file) => {
                let dir = image.ensure_dir(&target, owner)?;
                extract(&mut file, &dir)?;
            }
            Source::File(file, st) => {
                if into_dir {
                    let dir = image.ensure_dir(&target, owner)?;
                    let name = dirfd::cname(base_name(src).as_bytes()).map_err(fail)?;
                    write_file(dir.as_fd(), &name, file, &st, owner).map_err(fail)?;
                } else {
                    let (parent, name) = file_slot(&target)?;
                    write_file(parent, name, file, &st, owner).map_err(fail)?;
                }
            }
            Source::Special => {}
        }
    }
    Ok(())
}

/// The last component of a context path (the name a file keeps when copied into a directory).
fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Where a single file goes when the destination is not a directory.
fn file_slot(target: &Located) -> Result<(BorrowedFd<'_>, &CStr)> {
    match &target.name {
        Some(name) => Ok((target.parent.as_fd(), name)),
        None => Err(Error::invalid("COPY: cannot copy a file over /")),
    }
}

/// Plain tar, gzip or zstd, by magic bytes (what the layer applier reads). Rewinds `file`.
fn is_archive(mut file: &File) -> bool {
    let mut head = [0u8; 262];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let _ = file.rewind();
    (n >= 2 && head[..2] == [0x1f, 0x8b])
        || (n >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &head[257..262] == b"ustar")
}

/// Extracts an archive into `dir` with the layer applier and its path safety: no `..`, no
/// absolute name, no entry through a symlink can reach outside `dir`. The applier takes a
/// path; `/proc/self/fd/N` names exactly the directory already resolved inside the image.
fn extract(file: &mut File, dir: &OwnedFd) -> Result<()> {
    let at = format!("/proc/self/fd/{}", dir.as_raw_fd());
    apply_layer(
        Path::new(&at),
        file,
        &ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
        },
    )?;
    Ok(())
}

/// Makes room for `name` in `dir`: whatever is there (a symlink, a file, a whole tree) goes.
fn clear(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    dirfd::remove_at(dir, name)
}

/// Writes the regular file `name` in `dir` from `from`, replacing what was there.
fn write_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut from: File,
    st: &FileStat,
    owner: Owner,
) -> std::io::Result<()> {
    clear(dir, name)?;
    let mut to = dirfd::create_file_at(dir, name)?;
    std::io::copy(&mut from, &mut to)?;
    dirfd::set_meta(&to, owner, st.st_mode, st)
}

/// Copies the content of the directory `from` (in the context) into `to` (in the image).
fn copy_tree(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    owner: Owner,
    depth: usize,
) -> std::io::Result<()> {
    if depth >= dirfd::MAX_DEPTH {
        return Err(dirfd::too_deep());
    }
    for name in dirfd::list_dir(from)? {
        let Some(st) = dirfd::lstat_at(from, &name)? else {
            continue;
        };
        match dirfd::kind(&st) {
            Kind::Dir => {
                let dst = match dirfd::lstat_at(to, &name)?.as_ref().map(dirfd::kind) {
                    // A directory stays, with its content; O_NOFOLLOW in the open.
                    Some(Kind::Dir) => dirfd::open_dir_at(to, &name)?,
                    _ => {
                        clear(to, &name)?;
                        dirfd::mkdir_at(to, &name, 0o700)?;
                        dirfd::open_dir_at(to, &name)?
                    }
                };
                let src = dirfd::open_dir_at(from, &name)?;
                copy_tree(src.as_fd(), dst.as_fd(), owner, depth + 1)?;
                dirfd::set_meta(&dst, owner, st.st_mode, &st)?;
            }
            Kind::File => {
                let file = dirfd::open_file_at(from, &name)?;
                write_file(to, &name, file, &st, owner)?;
            }
            Kind::Symlink => {
                let target = dirfd::readlink_at(from, &name)?;
                clear(to, &name)?;
                dirfd::symlink_at(&target, to, &name)?;
                dirfd::lchown_at(to, &name, owner)?;
                dirfd::symlink_times_at(to, &name, &st)?;
            }
            // Devices, fifos and sockets in a build context are not copied, as Docker skips them.
            Kind::Special => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::context::tests::context_of;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn copy(root: &Path, ctx: &Context, sources: &[&str], dest: &str, add: bool) -> Result<()> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        copy_into(&CopyRequest {
            root,
            context: ctx,
            sources: &sources,
            dest,
            workdir: "/",
            owner: None,
            extract_archives: add,
        })
    }

    #[test]
    fn copies_files_and_dirs_with_owner() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.txt"), "A").unwrap();
        std::fs::create_dir_all(src.path().join("d/e")).unwrap();
        std::fs::write(src.path().join("d/e/f"), "F").unwrap();
        std::fs::set_permissions(src.path().join("d/e/f"), PermissionsExt::from_mode(0o751))
            .unwrap();
        symlink("/nowhere", src.path().join("d/l")).unwrap();
        let (ctx, _t) = context_of(src.path());
        let sources = ctx.sources("a.txt").unwrap();
        let mut all = sources.clone();
        all.extend(ctx.sources("d").unwrap());
        copy_into(&CopyRequest {
            root: root.path(),
            context: &ctx,
            sources: &all,
            dest: "/out/",
            workdir: "/",
            owner: Some((7, 8)),
            extract_archives: false,
        })
        .unwrap();
        let out = root.path().join("out");
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "A");
        assert_eq!(std::fs::read_to_string(out.join("e/f")).unwrap(), "F");
        let m = std::fs::metadata(out.join("e/f")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o751));
        assert_eq!(std::fs::metadata(&out).unwrap().uid(), 7);
        assert_eq!(
            std::fs::read_link(out.join("l")).unwrap(),
            Path::new("/nowhere")
        );
        // A single file to a path that is not a directory takes that name.
        copy(root.path(), &ctx, &["a.txt"], "/x/renamed", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("x/renamed")).unwrap(),
            "A"
        );
    }

    /// Guards the escape found on 3af0184: a symlink already in the image where a copied
    /// directory goes (`/out/h -> <host dir>`) was followed, writing the host directory and
    /// changing its mode. Now the link is replaced by the directory, as Docker's untar does.
    #[test]
    fn a_symlink_in_the_image_is_replaced_not_followed() {
        let host = tempfile::tempdir().unwrap();
        std::fs::set_permissions(host.path(), PermissionsExt::from_mode(0o700)).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("out")).unwrap();
        symlink(host.path(), root.path().join("out/h")).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("p/h")).unwrap();
        std::fs::write(src.path().join("p/h/x"), "x").unwrap();
        let (ctx, _t) = context_of(src.path());
        copy(root.path(), &ctx, &["p"], "/out/", false).unwrap();
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
        let mode = std::fs::metadata(host.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert!(std::fs::symlink_metadata(root.path().join("out/h"))
            .unwrap()
            .is_dir());
        assert_eq!(
            std::fs::read_to_string(root.path().join("out/h/x")).unwrap(),
            "x"
        );
    }

    #[test]
    fn destinations_through_symlinks_stay_in_the_root() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        symlink("/", root.path().join("top")).unwrap();
        symlink(host.path().join("f"), root.path().join("file-link")).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a"), "A").unwrap();
        let (ctx, _t) = context_of(src.path());
        copy(root.path(), &ctx, &["a"], "/top/sub/a", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("sub/a")).unwrap(),
            "A"
        );
        // A dangling link as the destination: its target, inside the root, is written.
        copy(root.path(), &ctx, &["a"], "/file-link", false).unwrap();
        assert!(!host.path().join("f").exists());
        let inside = root.path().join(host.path().strip_prefix("/").unwrap());
        assert_eq!(std::fs::read_to_string(inside.join("f")).unwrap(), "A");
        assert!(std::fs::symlink_metadata(root.path().join("file-link"))
            .unwrap()
            .is_symlink());
    }

    /// A tar entry with raw name bytes (the tar crate's own setters refuse `..` and `/x`).
    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"evil"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn add_extracts_archives_inside_the_root_only() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        symlink("/", root.path().join("top")).unwrap();
        let src = tempfile::tempdir().unwrap();
        let mut good = tar::Builder::new(Vec::new());
        raw_entry(&mut good, "a/b", tar::EntryType::Regular, "");
        std::fs::write(src.path().join("good.tar"), good.into_inner().unwrap()).unwrap();
        let host_dir = host.path().to_str().unwrap();
        let hostile: [(&str, tar::EntryType, String); 4] = [
            ("../../escape", tar::EntryType::Regular, String::new()),
            (
                &format!("{host_dir}/abs"),
                tar::EntryType::Regular,
                String::new(),
            ),
            ("l", tar::EntryType::Symlink, host_dir.to_string()),
            ("l/through", tar::EntryType::Regular, String::new()),
        ];
        for (i, (name, kind, link)) in hostile.iter().enumerate() {
            let mut b = tar::Builder::new(Vec::new());
            if i == 3 {
                raw_entry(&mut b, "l", tar::EntryType::Symlink, host_dir);
            }
            raw_entry(&mut b, name, *kind, link);
            std::fs::write(
                src.path().join(format!("bad{i}.tar")),
                b.into_inner().unwrap(),
            )
            .unwrap();
        }
        let (ctx, _t) = context_of(src.path());
        copy(root.path(), &ctx, &["good.tar"], "/top/x/", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("x/a/b")).unwrap(),
            "evil"
        );
        for i in [0, 1, 3] {
            let r = copy(
                root.path(),
                &ctx,
                &[&format!("bad{i}.tar")],
                "/top/y/",
                true,
            );
            assert!(r.is_err(), "bad{i}.tar was extracted");
        }
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);
        assert!(!root.path().parent().unwrap().join("escape").exists());
    }
}
