//! The second half of creating a regular file during an apply, on its own thread: write the
//! content (holes for zero blocks), then ownership, mode, xattrs and times, then close. The
//! applying thread opens the file (so name clashes, whiteouts and hard links are decided in
//! tar order, as before) and reads the next entries meanwhile: file creation and file writing
//! run on two cores instead of one, where GNU tar does everything on one.
//!
//! Why deferring is safe: the job owns the open file, so whatever later entries do to the
//! *name* (replace it, white it out, purge it with an opaque marker, hard-link to it) cannot
//! redirect the write; a replaced or deleted file is simply an unlinked inode when the job
//! runs. The metadata order per file is unchanged. The caller drains the writer
//! ([`FileWriter::finish`]) before directory times are set and before returning, and a failed
//! job fails the apply at the next submit or at the finish.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::fsat::{self, Time};
use super::xattrs::{set_xattrs, XattrTarget};
use crate::error::{Error, Result};

/// Jobs waiting for the writer; with [`MAX_DEFERRED`] this bounds the memory held (32 MB).
const QUEUE: usize = 32;
/// Files up to this size are handed to the writer; bigger ones are written in place.
pub(crate) const MAX_DEFERRED: u64 = 1024 * 1024;
/// Zero runs of this size (aligned in the file) become holes.
pub(crate) const HOLE: usize = 4096;
static ZEROS: [u8; HOLE] = [0u8; HOLE];

/// One file to finish: its content and metadata.
pub(crate) struct FileJob {
    pub file: std::fs::File,
    pub data: Vec<u8>,
    /// `None`: the ids creation gave are already the right ones.
    pub chown: Option<(u32, u32)>,
    /// `None`: the mode creation gave is already the right one.
    pub chmod: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub best_effort_xattrs: bool,
    pub times: (Time, Time),
    /// For error messages.
    pub path: PathBuf,
}

/// Writes `job`'s content and metadata (also used in place when no writer thread exists).
pub(crate) fn finish_file(job: &FileJob) -> Result<()> {
    let p = || job.path.clone();
    let mut data_end = 0u64;
    write_sparse_chunk(&job.file, &job.data, 0, &mut data_end)
        .map_err(|err| Error::io("write", p(), err))?;
    let size = job.data.len() as u64;
    if data_end < size {
        job.file
            .set_len(size)
            .map_err(|err| Error::io("write", p(), err))?;
    }
    finish_metadata(job)
}

/// Ownership, mode, xattrs, times: in that order (chown clears setuid/setgid and file
/// capabilities, so the mode and security.capability come after it).
pub(crate) fn finish_metadata(job: &FileJob) -> Result<()> {
    let fd = job.file.as_fd();
    let p = || job.path.clone();
    if let Some((uid, gid)) = job.chown {
        fsat::fchown(fd, uid, gid).map_err(|err| Error::io("chown", p(), err))?;
    }
    if let Some(mode) = job.chmod {
        fsat::fchmod(fd, mode).map_err(|err| Error::io("chmod", p(), err))?;
    }
    set_xattrs(&job.xattrs, job.best_effort_xattrs, &p, XattrTarget::Fd(fd))?;
    let (atime, mtime) = job.times;
    fsat::futimens(fd, atime, mtime).map_err(|err| Error::io("set times", p(), err))
}

/// Writes `chunk` at `off`, skipping aligned all-zero [`HOLE`]-sized blocks (they stay holes;
/// the caller sets the final length). `data_end` is moved past the last byte written.
pub(crate) fn write_sparse_chunk(
    file: &std::fs::File,
    chunk: &[u8],
    off: u64,
    data_end: &mut u64,
) -> io::Result<()> {
    let want = chunk.len();
    let mut i = 0;
    while i < want {
        let end = (i + HOLE).min(want);
        if is_zero(&chunk[i..end]) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < want {
            let next = (j + HOLE).min(want);
            if is_zero(&chunk[j..next]) {
                break;
            }
            j = next;
        }
        file.write_all_at(&chunk[i..j], off + i as u64)?;
        *data_end = off + j as u64;
        i = j;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    block == &ZEROS[..block.len()]
}

/// The writer thread and its queue. Dropping it (an apply that failed half-way) waits for the
/// thread, so nothing is written into the target after the apply returned.
pub(crate) struct FileWriter {
    jobs: Option<SyncSender<FileJob>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<Mutex<Option<Error>>>,
    /// Set on the first failure (or when the apply is abandoned): queued jobs are dropped.
    abort: Arc<AtomicBool>,
    spare: Receiver<Vec<u8>>,
}

impl FileWriter {
    /// `None` if no thread can be started (the caller then finishes files in place).
    pub fn start() -> Option<Self> {
        let (jobs, queue) = sync_channel::<FileJob>(QUEUE);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let abort = Arc::new(AtomicBool::new(false));
        let report = Arc::clone(&failed);
        let stop = Arc::clone(&abort);
        let thread = std::thread::Builder::new()
            .name("layer-writer".into())
            .spawn(move || {
                for mut job in queue {
                    if !stop.load(Ordering::Relaxed) {
                        if let Err(e) = finish_file(&job) {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = report.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                    // Handed back with its length (not cleared): the next user truncates or
                    // grows it, so only new bytes are zero-filled.
                    let _ = give_back.try_send(std::mem::take(&mut job.data));
                }
            })
            .ok()?;
        Some(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            failed,
            abort,
            spare,
        })
    }

    /// A buffer to read the next file's content into (recycled from finished jobs, with
    /// stale content: resize it to the file's size and overwrite all of it).
    pub fn buffer(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_default()
    }

    /// Queues a job (waits while the queue is full). A failure of an earlier job is returned
    /// here.
    pub fn submit(&mut self, job: FileJob) -> Result<()> {
        self.check()?;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Other("layer writer already finished".into()))?;
        if jobs.send(job).is_err() {
            self.stop();
            return Err(self
                .take_failure()
                .unwrap_or_else(|| Error::Other("layer writer thread stopped".into())));
        }
        Ok(())
    }

    /// Waits until every queued job is done; the first failure, if any.
    pub fn finish(&mut self) -> Result<()> {
        self.stop();
        self.check()
    }

    fn check(&self) -> Result<()> {
        match self.take_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take_failure(&self) -> Option<Error> {
        match self.failed.lock() {
            Ok(mut f) => f.take(),
            Err(_) => Some(Error::Other("layer writer thread panicked".into())),
        }
    }

    fn stop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                if let Ok(mut f) = self.failed.lock() {
                    f.get_or_insert(Error::Other("layer writer thread panicked".into()));
                }
            }
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        self.stop();
    }
}
