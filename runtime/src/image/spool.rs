//! A spool file read while it is written: a pull downloads several layers at once into spool
//! files, and applies each (base first) by reading its file as the download grows it. The
//! reader ends only when the writer finished, which happens only after the blob's digest was
//! verified; if the download fails, the reader fails, so an apply never completes on bytes
//! that were not verified.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_core::TarStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::io::StreamReader;

/// How far the writer got.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    NotStarted,
    Partial(u64),
    Done(u64),
    Failed(String),
}

/// The writing end. Dropped unfinished, it tells the reader the download stopped.
pub struct SpoolWriter {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    state: watch::Sender<Written>,
}

/// The reading end: [`SpoolFollower::stream`] once the layer's parent is applied.
pub struct SpoolFollower {
    path: PathBuf,
    state: watch::Receiver<Written>,
}

/// A writer and a follower of the file `path` (created by the writer's first write).
pub fn spool_file(path: &Path) -> (SpoolWriter, SpoolFollower) {
    let (tx, rx) = watch::channel(Written::NotStarted);
    (
        SpoolWriter {
            path: path.to_path_buf(),
            file: None,
            written: 0,
            state: tx,
        },
        SpoolFollower {
            path: path.to_path_buf(),
            state: rx,
        },
    )
}

impl SpoolWriter {
    /// Opens (creating) the file keeping its first `keep` bytes (a resumed download; 0
    /// starts afresh); the follower waits for this, then reads those bytes first.
    pub async fn open_keeping(&mut self, keep: u64) -> std::io::Result<()> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(keep == 0)
            .open(&self.path)
            .await?;
        file.set_len(keep).await?;
        let mut file = file;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(keep)).await?;
        self.file = Some(file);
        self.written = keep;
        self.state.send_replace(Written::Partial(keep));
        Ok(())
    }

    /// Appends a chunk; it is in the file (not in a buffer) before the follower hears of it.
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other(
                "spool file written before it was opened",
            ));
        };
        file.write_all(chunk).await?;
        file.flush().await?;
        self.written += chunk.len() as u64;
        self.state.send_replace(Written::Partial(self.written));
        Ok(())
    }

    /// The content is complete and verified.
    pub fn finish(mut self) {
        self.file = None;
        self.state.send_replace(Written::Done(self.written));
    }

    /// The download failed; the follower fails with `why`.
    pub fn fail(self, why: &str) {
        self.state.send_replace(Written::Failed(why.to_string()));
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.state.send_if_modified(|s| match s {
            Written::Done(_) | Written::Failed(_) => false,
            _ => {
                *s = Written::Failed("the layer download stopped".into());
                true
            }
        });
    }
}

struct Follow {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    pos: u64,
    state: watch::Receiver<Written>,
}

impl SpoolFollower {
    /// The file's bytes as they are written; ends when the writer finished.
    pub fn stream(self) -> TarStream {
        let follow = Follow {
            path: self.path,
            file: None,
            pos: 0,
            state: self.state,
        };
        // After an error the stream ends (`None` state).
        let chunks = futures::stream::unfold(Some(follow), |f| async move {
            let mut f = f?;
            match f.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(f))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Box::pin(StreamReader::new(chunks))
    }
}

impl Follow {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if let Some(file) = self.file.as_mut() {
                let n = file.read(&mut buf).await?;
                if n > 0 {
                    self.pos += n as u64;
                    buf.truncate(n);
                    return Ok(Some(Bytes::from(buf)));
                }
            }
            let state = self.state.borrow_and_update().clone();
            match state {
                Written::Failed(why) => return Err(std::io::Error::other(why)),
                Written::Done(total) if self.file.is_some() && self.pos >= total => {
                    return Ok(None)
                }
                Written::Done(total) | Written::Partial(total) => {
                    if self.file.is_none() {
                        self.file = Some(tokio::fs::File::open(&self.path).await?);
                        continue;
                    }
                    if total > self.pos {
                        continue; // written since the read above
                    }
                }
                Written::NotStarted => {}
            }
            if self.state.changed().await.is_err() {
                return Err(std::io::Error::other("the layer download stopped"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_a_growing_file_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, r) = spool_file(&dir.path().join("f"));
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            r.stream().read_to_end(&mut out).await.map(|_| out)
        });
        w.open_keeping(0).await.unwrap();
        for i in 0..50u8 {
            w.write(&[i; 1000]).await.unwrap();
            if i % 10 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        w.finish();
        let out = reader.await.unwrap().unwrap();
        assert_eq!(out.len(), 50_000);
        assert!(out
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    }

    #[tokio::test]
    async fn a_failed_or_abandoned_download_fails_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, r) = spool_file(&dir.path().join("a"));
        w.open_keeping(0).await.unwrap();
        w.write(b"partial").await.unwrap();
        w.fail("blob sha256:x failed verification");
        let mut out = Vec::new();
        let e = r.stream().read_to_end(&mut out).await.unwrap_err();
        assert!(e.to_string().contains("failed verification"), "{e}");

        let (w, r) = spool_file(&dir.path().join("b"));
        drop(w); // never opened: the task was cancelled
        let e = r.stream().read_to_end(&mut out).await.unwrap_err();
        assert!(e.to_string().contains("stopped"), "{e}");
    }
}
