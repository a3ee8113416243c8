//! COPY/ADD from the build context: the sources become a layer tar (files owned by root,
//! modes and times kept, parent directories carried with the modes they have in the image),
//! registered on the current image's top layer. No container is needed, and writing goes
//! through the archive's safe unpacking, so a symlink in the image cannot lead outside it.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_core::{Error, IoContext, Result};

/// What a COPY adds: the layer tar in a file and Docker's description of the sources.
pub struct CopyLayer {
    pub tar: PathBuf,
    /// `file:<hex>`, `dir:<hex>` or `multi:<hex>`, as Docker's history shows.
    pub source_digest: String,
}

/// Expands `srcs` (relative to the context; `*` and `?` in the last component) to paths.
fn sources(context: &Path, srcs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for src in srcs {
        let rel = clean_relative(src).ok_or_else(|| {
            Error::invalid(format!("COPY source {src:?} is outside the build context"))
        })?;
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(pattern) = name.filter(|n| n.contains('*') || n.contains('?')) {
            let dir = context.join(rel.parent().unwrap_or(Path::new("")));
            let mut matched: Vec<PathBuf> = std::fs::read_dir(&dir)
                .ctx("read directory", &dir)?
                .filter_map(|e| e.ok())
                .filter(|e| glob_match(&pattern, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            if matched.is_empty() {
                return Err(Error::invalid(format!(
                    "COPY failed: no source files were specified by {src:?}"
                )));
            }
            matched.sort();
            out.extend(matched);
        } else {
            let p = context.join(&rel);
            std::fs::symlink_metadata(&p).map_err(|_| {
                Error::invalid(format!(
                    "COPY failed: file not found in build context: {src}"
                ))
            })?;
            out.push(p);
        }
    }
    Ok(out)
}

fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// `a/./b/` → `a/b`; `None` if it climbs out.
fn clean_relative(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Builds the COPY layer tar in `spool`. `image_tree` is the current image's full tree (for
/// the metadata of existing parent directories), `workdir` resolves a relative destination.
pub fn copy_layer(
    context: &Path,
    srcs: &[String],
    dest: &str,
    workdir: &str,
    image_tree: Option<&Path>,
    spool: &Path,
) -> Result<CopyLayer> {
    let sources = sources(context, srcs)?;
    let dest_abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!(
            "{}/{dest}",
            if workdir.is_empty() {
                ""
            } else {
                workdir.trim_end_matches('/')
            }
        )
    };
    let dest_rel = clean_relative(&dest_abs).unwrap_or_default();
    let single_dir =
        sources.len() == 1 && std::fs::symlink_metadata(&sources[0]).is_ok_and(|m| m.is_dir());
    let into_dir = dest.ends_with('/') || sources.len() > 1 || single_dir;
    if sources.len() > 1 && !dest.ends_with('/') {
        return Err(Error::invalid(
            "When using COPY with more than one source file, the destination must be a directory and end with a /",
        ));
    }
    let tar_path = spool.join("copy-layer.tar");
    let file = std::fs::File::create(&tar_path).ctx("create", &tar_path)?;
    let mut w = Writer {
        tar: tar::Builder::new(std::io::BufWriter::new(file)),
        hash: Sha256::new(),
    };
    // Parent directories (and the destination directory) with the image's metadata.
    let dirs_to_carry = if into_dir {
        dest_rel.clone()
    } else {
        dest_rel.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut prefix = PathBuf::new();
    for c in dirs_to_carry.components() {
        prefix.push(c);
        let existing = match image_tree {
            Some(tree) => {
                let m = std::fs::symlink_metadata(tree.join(&prefix)).ok();
                if m.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
                    return Err(Error::unsupported(format!(
                        "COPY destination /{} is a symlink in the image; copy to the path it points to",
                        prefix.display()
                    )));
                }
                m
            }
            None => None,
        };
        w.dir(&prefix, existing.as_ref())?;
    }
    for src in &sources {
        let m = std::fs::symlink_metadata(src).ctx("stat", src)?;
        if m.is_dir() {
            w.tree(src, &dest_rel)?;
        } else {
            let target = if into_dir {
                dest_rel.join(src.file_name().unwrap_or_default())
            } else {
                dest_rel.clone()
            };
            w.entry(src, &target, &m)?;
        }
    }
    let hex = hex::encode(w.hash.finalize_reset());
    let kind = if sources.len() > 1 {
        "multi"
    } else if single_dir {
        "dir"
    } else {
        "file"
    };
    w.tar
        .into_inner()
        .and_then(|mut b| b.flush())
        .ctx("write", &tar_path)?;
    Ok(CopyLayer {
        tar: tar_path,
        source_digest: format!("{kind}:{hex}"),
    })
}

struct Writer {
    tar: tar::Builder<std::io::BufWriter<std::fs::File>>,
    hash: Sha256,
}

impl Writer {
    fn header(kind: tar::EntryType, m: &Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.permissions().mode() & 0o7777);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    fn dir(&mut self, rel: &Path, existing: Option<&Metadata>) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        match existing {
            Some(m) => {
                h.set_mode(m.permissions().mode() & 0o7777);
                h.set_mtime(m.mtime().max(0) as u64);
                h.set_uid(m.uid() as u64);
                h.set_gid(m.gid() as u64);
            }
            None => {
                h.set_mode(0o755);
                h.set_mtime(0);
            }
        }
        h.set_size(0);
        let name = format!("{}/", rel.display());
        self.tar
            .append_data(&mut h, &name, std::io::empty())
            .ctx("write", rel)
    }

    fn entry(&mut self, src: &Path, rel: &Path, m: &Metadata) -> Result<()> {
        self.hash.update(rel.as_os_str().as_encoded_bytes());
        self.hash.update(m.permissions().mode().to_le_bytes());
        if m.is_dir() {
            // Directories from the context are owned by root, like their files.
            let mut h = Self::header(tar::EntryType::Directory, m);
            let name = format!("{}/", rel.display());
            return self
                .tar
                .append_data(&mut h, &name, std::io::empty())
                .ctx("write", rel);
        }
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(src).ctx("read link", src)?;
            self.hash.update(target.as_os_str().as_encoded_bytes());
            let mut h = Self::header(tar::EntryType::Symlink, m);
            return self.tar.append_link(&mut h, rel, &target).ctx("write", rel);
        }
        if !m.is_file() {
            return Err(Error::unsupported(format!(
                "COPY of {} (not a file, directory or symlink)",
                src.display()
            )));
        }
        let data = std::fs::read(src).ctx("read", src)?;
        self.hash.update(&data);
        let mut h = Self::header(tar::EntryType::Regular, m);
        h.set_size(data.len() as u64);
        self.tar
            .append_data(&mut h, rel, &data[..])
            .ctx("write", rel)
    }

    fn tree(&mut self, src: &Path, rel: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .ctx("read directory", src)?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let r = rel.join(e.file_name());
            let m = std::fs::symlink_metadata(&p).ctx("stat", &p)?;
            if m.is_dir() {
                self.entry(&p, &r, &m)?;
                self.tree(&p, &r)?;
            } else {
                self.entry(&p, &r, &m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_paths() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt2"));
        assert!(glob_match("a?c", "abc"));
        assert!(clean_relative("../x").is_none());
        assert_eq!(clean_relative("./a/b/../c").unwrap(), PathBuf::from("a/c"));
    }
}
