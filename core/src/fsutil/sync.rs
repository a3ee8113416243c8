//! Durability of several paths at once. Each fsync ends in a device flush (about 0.2 to 0.4 ms
//! on this kind of VM disk, far more on a busy one); issued one after another they add up,
//! issued together the block layer merges the flushes that wait for the same one and the
//! journal (ext4, xfs) commits them in one transaction. So the fsyncs of one durable step run
//! on a small pool of long-lived threads (no thread start per call).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// Threads of the pool: more fsyncs than this in one call simply queue.
const WORKERS: usize = 8;

type Job = (PathBuf, Sender<(PathBuf, std::io::Result<()>)>);

struct Pool {
    jobs: Sender<Job>,
}

fn fsync_path(path: &Path) -> std::io::Result<()> {
    // Read-only opens work for files and directories alike; fsync needs no write access.
    std::fs::File::open(path)?.sync_all()
}

fn worker(jobs: std::sync::Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok((path, reply)) = job else { return };
        let res = fsync_path(&path);
        let _ = reply.send((path, res));
    }
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fsync-{i}"))
                .spawn(move || worker(rx));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(Pool { jobs: tx })
    })
    .as_ref()
}

/// fsyncs every path (files or directories) concurrently and waits for all of them. Any
/// failure is returned (the first one reported), after every fsync has finished.
pub fn fsync_all(paths: &[&Path]) -> Result<()> {
    let Some((first, rest)) = paths.split_first() else {
        return Ok(());
    };
    let (reply_tx, reply_rx) = channel();
    let mut queued = 0;
    if let Some(pool) = pool() {
        for p in rest {
            if pool.jobs.send((p.to_path_buf(), reply_tx.clone())).is_err() {
                break; // every worker is gone
            }
            queued += 1;
        }
    }
    drop(reply_tx);
    // This thread takes the first one, and any the pool could not take.
    let mut first_error: Option<Error> = None;
    let mut note = |path: &Path, res: std::io::Result<()>| {
        if let Err(e) = res {
            first_error.get_or_insert_with(|| Error::io("fsync", path, e));
        }
    };
    note(first, fsync_path(first));
    for p in &rest[queued..] {
        note(p, fsync_path(p));
    }
    for _ in 0..queued {
        match reply_rx.recv() {
            Ok((path, res)) => note(&path, res),
            Err(_) => {
                first_error.get_or_insert_with(|| Error::Other("fsync worker stopped".into()));
                break;
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_files_and_directories_and_reports_failures() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        fsync_all(&[t.path(), &f, &d]).unwrap();
        fsync_all(&[]).unwrap();
        let missing = t.path().join("missing");
        let err = fsync_all(&[&f, &missing, &d]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let err = fsync_all(&[&missing]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
