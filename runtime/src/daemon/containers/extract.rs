//! `docker cp` into a container: the client's tar is checked entry by entry and handed to the
//! core's layer applier (`strata_core::archive::apply_layer_with`), which creates every entry
//! with `*at` calls beneath the destination directory's fd and refuses anything that would
//! leave it (`..`, a parent reached through a symlink, absolute link targets...). The
//! destination itself was resolved inside the container's root (openat2 RESOLVE_IN_ROOT), and
//! the applier opens it through `/proc/self/fd`, that is the very directory resolved, not a
//! path walked again.
//!
//! Checked here, before the applier sees an entry: Docker's `noOverwriteDirNonDir`, names with
//! a `.wh.` component (the applier would take them for layer whiteouts and delete files, so
//! they are refused), and `copyUIDGID` (every entry owned by the container's user). The tar is
//! re-written for the applier through a pipe, streaming: PAX records beyond long names and
//! sizes (xattrs, sub-second times) do not travel.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use strata_core::archive::{ApplyConfig, WhiteoutMode};
use strata_core::{Error, Result};

use super::archive::ExtractOptions;
use crate::container::scoped_path::openat2_in_root;

/// Extracts `input` into the directory `dest` (`shown` names it in errors).
pub(crate) fn extract_into(
    dest: OwnedFd,
    shown: &Path,
    input: &mut dyn Read,
    opts: ExtractOptions,
) -> Result<()> {
    let (reader, writer) = io::pipe().map_err(|e| Error::io("pipe", shown, e))?;
    let dest_proc = PathBuf::from(format!("/proc/self/fd/{}", dest.as_raw_fd()));
    let applier = std::thread::spawn(move || {
        let mut reader = reader;
        let config = ApplyConfig {
            whiteouts: WhiteoutMode::Delete,
            best_effort_xattrs: true,
            diff_id: false,
        };
        strata_core::archive::apply_layer_with(&dest_proc, &mut reader, &config)
    });
    let checked = rewrite(&dest, &mut *input, writer, opts);
    // Read what the client still sends (the tar's trailing blocks, or the rest after a
    // refusal) so it gets our answer instead of a broken pipe.
    let _ = io::copy(input, &mut io::sink());
    let applied = applier
        .join()
        .map_err(|_| Error::Other("the tar applier panicked".into()))?;
    drop(dest);
    // The applier's refusal explains a broken pipe on our side better than the pipe does.
    match (checked, applied) {
        (Err(e), _) if !is_broken_pipe(&e) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(_)) => Ok(()),
    }
}

fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// Reads the client's tar, checks each entry and writes it again for the applier.
fn rewrite(
    dest: &OwnedFd,
    input: &mut dyn Read,
    out: io::PipeWriter,
    opts: ExtractOptions,
) -> Result<()> {
    let io_err = |e: io::Error| Error::io("copy into the container", "<tar>", e);
    let mut archive = tar::Archive::new(input);
    let mut b = tar::Builder::new(out);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path().map_err(io_err)?.into_owned();
        let rel = checked_name(&path)?;
        let mut h = entry.header().clone();
        let is_dir = h.entry_type().is_dir();
        if opts.no_overwrite_dir_non_dir {
            check_overwrite(dest, &rel, is_dir)?;
        }
        if let Some((uid, gid)) = opts.owner {
            h.set_uid(uid as u64);
            h.set_gid(gid as u64);
        }
        let ty = h.entry_type();
        if ty.is_symlink() || ty.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::invalid(format!("{}: link without a target", rel.display())))?
                .into_owned();
            if target.len() <= 100 {
                // Byte for byte: the path-based setter would rewrite a target such as `/`.
                h.set_link_name_literal(&target).map_err(io_err)?;
                b.append_data(&mut h, &rel, io::empty()).map_err(io_err)?;
            } else {
                let target = Path::new(std::ffi::OsStr::from_bytes(&target));
                b.append_link(&mut h, &rel, target).map_err(io_err)?;
            }
        } else {
            let size = h.size().map_err(io_err)?;
            b.append_data(&mut h, &rel, (&mut entry).take(size))
                .map_err(io_err)?;
        }
    }
    b.into_inner().map_err(io_err)?;
    Ok(())
}

/// The entry's name as a relative path; `.wh.` names are refused (see the module comment).
fn checked_name(path: &Path) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                if n.as_bytes().starts_with(b".wh.") {
                    return Err(Error::invalid(format!(
                        "{}: names starting with .wh. cannot be copied into a container",
                        path.display()
                    )));
                }
                rel.push(n);
            }
            Component::CurDir | Component::RootDir => {}
            // The applier refuses these as well; say it here with the name.
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "{}: '..' in a name is not allowed",
                    path.display()
                )));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Ok(rel)
}

/// Docker's `noOverwriteDirNonDir`: an existing directory is not replaced by a non-directory,
/// nor an existing non-directory by a directory.
fn check_overwrite(dest: &OwnedFd, rel: &Path, is_dir: bool) -> Result<()> {
    if rel == Path::new(".") {
        return Ok(());
    }
    let flags = (libc::O_PATH | libc::O_NOFOLLOW) as u64;
    let fd = match openat2_in_root(dest, rel, flags, 0) {
        Ok(fd) => fd,
        Err(_) => return Ok(()), // nothing there (or not reachable): nothing overwritten
    };
    let st = super::fsops::fstat(std::os::fd::AsFd::as_fd(&fd))
        .map_err(|e| Error::io("stat", rel, e))?;
    let existing_dir = super::fsops::is_dir(&st);
    let shown = Path::new("/").join(rel);
    if existing_dir && !is_dir {
        return Err(Error::invalid(format!(
            "cannot overwrite directory {:?} with non-directory",
            shown.display().to_string()
        )));
    }
    if !existing_dir && is_dir {
        return Err(Error::invalid(format!(
            "cannot overwrite non-directory {:?} with directory",
            shown.display().to_string()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn dir_fd(p: &Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    /// Guards the cp-in path: files land in the destination directory, and the options
    /// `noOverwriteDirNonDir` and `copyUIDGID` hold.
    #[test]
    fn extracts_with_docker_options() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let tar = tar_of(&[("a/b.txt", b"hello")]);
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: true,
            owner: Some((1234, 5678)),
        };
        extract_into(dir_fd(tmp.path()), tmp.path(), &mut &tar[..], opts).unwrap();
        let f = tmp.path().join("a/b.txt");
        assert_eq!(std::fs::read(&f).unwrap(), b"hello");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&f).unwrap().uid(), 1234);
        let over = tar_of(&[("sub", b"x")]);
        let err = extract_into(dir_fd(tmp.path()), tmp.path(), &mut &over[..], opts);
        assert!(err.unwrap_err().to_string().contains("cannot overwrite"));
        let wh = tar_of(&[(".wh.a", b"")]);
        assert!(extract_into(dir_fd(tmp.path()), tmp.path(), &mut &wh[..], opts).is_err());
        assert!(tmp.path().join("a").exists(), "a .wh. name deletes nothing");
    }

    /// Guards against the escape: a symlink in the destination pointing to the host's `/`
    /// is never written through.
    #[test]
    fn a_symlink_in_the_destination_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
        let tar = tar_of(&[("link/evil", b"x")]);
        let r = extract_into(
            dir_fd(tmp.path()),
            tmp.path(),
            &mut &tar[..],
            ExtractOptions::default(),
        );
        assert!(r.is_err());
        assert!(!outside.path().join("evil").exists());
    }
}
