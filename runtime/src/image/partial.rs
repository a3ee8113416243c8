//! Layer blobs partly downloaded by a pull that did not finish (a dropped connection, a
//! client that went away, a daemon restart), kept so the next pull of the same blob resumes
//! with a `Range` request instead of starting over: `<spool dir>/blobs/<hex>.partial`, one
//! per blob digest. Nothing in such a file is trusted: the bytes kept are hashed again and
//! the whole blob's digest is checked when the rest has streamed in; a blob that fails its
//! digest is deleted. A pull claims the file of each blob it fetches, so two pulls in this
//! daemon never write one file (the second spools privately instead).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use strata_core::store::Digest;

/// Blobs whose partial file a pull of this daemon is using.
static CLAIMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A claim on one blob's partial file, released on drop.
#[derive(Debug)]
pub struct PartialBlob {
    path: PathBuf,
    key: String,
}

/// What a partial file holds: its length and the hash of those bytes.
pub struct Resume {
    pub have: u64,
    pub prefix: Sha256,
}

/// The directory of partial files below the spool directory.
pub fn blobs_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("blobs")
}

impl PartialBlob {
    /// Claims `digest`'s partial file; None while another pull of this daemon fetches it.
    pub fn claim(spool_dir: &Path, digest: &Digest) -> Option<PartialBlob> {
        let key = digest.hex().to_string();
        let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
        if !claimed.insert(key.clone()) {
            return None;
        }
        Some(PartialBlob {
            path: blobs_dir(spool_dir).join(format!("{key}.partial")),
            key,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes kept from an earlier attempt, hashed; nothing when there is no file or it
    /// is longer than the blob can be. The file is a regular file of ours (never followed).
    pub async fn resume(&self, size: u64) -> std::io::Result<Resume> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let nothing = Resume {
                have: 0,
                prefix: Sha256::new(),
            };
            let file = match open_regular(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(nothing),
                Err(e) => return Err(e),
            };
            let have = file.metadata()?.len();
            if have == 0 || have > size {
                return Ok(nothing);
            }
            let mut prefix = Sha256::new();
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let mut buf = vec![0u8; 1 << 20];
            let mut hashed = 0u64;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                prefix.update(&buf[..n]);
                hashed += n as u64;
            }
            Ok(Resume {
                have: hashed,
                prefix,
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Deletes the file: the blob was applied, or its bytes proved wrong.
    pub fn discard(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a partial blob");
            }
        }
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_claimed_once_and_its_prefix_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of_bytes(b"some blob");
        let first = PartialBlob::claim(dir.path(), &d).unwrap();
        assert!(PartialBlob::claim(dir.path(), &d).is_none());
        assert_eq!(first.resume(9).await.unwrap().have, 0);
        std::fs::write(first.path(), b"some ").unwrap();
        let r = first.resume(9).await.unwrap();
        assert_eq!(r.have, 5);
        let mut whole = r.prefix;
        whole.update(b"blob");
        assert_eq!(Digest::from_hasher(whole), d);
        // Longer than the blob can be: not resumed.
        assert_eq!(first.resume(3).await.unwrap().have, 0);
        drop(first);
        assert!(PartialBlob::claim(dir.path(), &d).is_some());
    }
}
