//! A registered layer back as its tar: the recorded tar-split with file content read from
//! the mounted layer, verified against the diffID while it streams. The bytes are the ones
//! that were registered, so saved images keep their ids on every driver.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::layers::LayerStore;
use super::tarsplit;
use crate::error::{Error, IoContext, Result};
use crate::layer::TarStream;
use crate::stream::blocking_writer_stream;

/// A layer tar being produced.
pub struct LayerTar {
    pub stream: TarStream,
    /// Exact length of the stream (known before it starts, for archive headers).
    pub size: u64,
    pub diff_id: Digest,
}

impl LayerStore {
    /// Streams the layer's tar, byte for byte the one registered. The layer is mounted and
    /// referenced until the stream ends or is dropped.
    pub async fn layer_tar(&self, chain: &Digest) -> Result<LayerTar> {
        let mounted = self.mount_layer(chain).await?;
        let info = self
            .get(chain)
            .ok_or_else(|| Error::not_found(format!("layer {chain}")))?;
        let split = self.tar_split_path(chain);
        let expected = info.diff_id.clone();
        let stream = blocking_writer_stream(move |out| {
            let produced = write_verified(&split, mounted.path(), out, &expected);
            let released = mounted.release_blocking();
            produced?;
            released
        });
        Ok(LayerTar {
            stream,
            size: info.tar_size,
            diff_id: info.diff_id,
        })
    }
}

fn write_verified(split: &Path, root: &Path, out: &mut dyn Write, expected: &Digest) -> Result<()> {
    let file = std::fs::File::open(split).ctx("open", split)?;
    let mut hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
    };
    let root_fd: OwnedFd = std::fs::File::open(root).ctx("open", root)?.into();
    tarsplit::assemble(file, &mut hashing, &mut |name| {
        open_beneath(&root_fd, root, name)
    })?;
    let got = Digest::from_hasher(hashing.hasher);
    if got != *expected {
        return Err(Error::Other(format!(
            "layer {expected} no longer reproduces its content (got {got}); its files were \
             changed on disk"
        )));
    }
    Ok(())
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Opens `name` (a tar entry path) inside `root` without following any symlink, so a layer
/// can never make us read a file outside itself. The last component is opened without
/// blocking and must be a regular file: a FIFO or device put where a file was would otherwise
/// stall the save until someone wrote to it.
fn open_beneath(root_fd: &OwnedFd, root: &Path, name: &[u8]) -> Result<Box<dyn Read>> {
    use std::os::unix::ffi::OsStrExt;
    let shown: PathBuf = root.join(std::ffi::OsStr::from_bytes(name));
    let parts: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.is_empty() || parts.contains(&&b".."[..]) {
        return Err(Error::invalid(format!(
            "layer entry {:?} is not a path inside the layer",
            String::from_utf8_lossy(name)
        )));
    }
    let mut dir: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let flags = OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | if last {
                OFlag::O_RDONLY | OFlag::O_NONBLOCK
            } else {
                OFlag::O_DIRECTORY | OFlag::O_RDONLY
            };
        let at = dir.as_ref().unwrap_or(root_fd);
        let fd = openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&at.as_fd())),
            std::ffi::OsStr::from_bytes(part),
            flags,
            Mode::empty(),
        )
        .ctx("open", &shown)?;
        // SAFETY: openat returned a fresh descriptor that nothing else owns.
        dir = Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
    }
    let file = std::fs::File::from(dir.ok_or_else(|| Error::invalid("empty layer entry name"))?);
    if !file.metadata().ctx("stat", &shown)?.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a regular file; the layer recorded one there",
            shown.display()
        )));
    }
    Ok(Box::new(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards: a FIFO where the layer recorded a file made `save` block in open(2) (on HEAD
    /// 3af0184 this test hung); it is now a prompt error.
    #[test]
    fn a_fifo_in_place_of_a_file_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let root: OwnedFd = std::fs::File::open(tmp.path()).unwrap().into();
        let err = open_beneath(&root, tmp.path(), b"pipe").err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let mut text = String::new();
        open_beneath(&root, tmp.path(), b"./file")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "x");
    }
}
