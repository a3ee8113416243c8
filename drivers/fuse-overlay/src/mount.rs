//! Serving an overlay through /dev/fuse in this process. A session served in place (the
//! default) owns a thread; otherwise sessions run on one dedicated multi-threaded tokio
//! runtime. Either way their request handlers make blocking syscalls, which must not stall the
//! daemon's own executor, and the process-wide runtime is never dropped from inside async code.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use fuse3::raw::Session;
use fuse3::MountOptions;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::fs::{OverlayConfig, OverlayFs};

/// How long an unmount waits for the serving task to end before reporting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> io::Result<&'static Runtime> {
    static RT: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    // STRATA_FUSE_THREADS overrides the worker count (for benchmarking).
    let threads = std::env::var("STRATA_FUSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 16)
        })
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("strata-fuse")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

/// Raises the soft open-file limit to the hard one: every directory the kernel holds keeps
/// one fd per layer.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The serving thread or task ended without reporting how (it panicked).
fn session_vanished() -> io::Error {
    io::Error::other("the FUSE serving task ended without a result")
}

/// A live overlay mount served by this process.
#[derive(Debug)]
pub struct OverlayMount {
    path: PathBuf,
    /// Hears the session's end; None once awaited.
    done: Option<oneshot::Receiver<io::Result<()>>>,
}

impl OverlayMount {
    /// Mounts the overlay described by `cfg` on `mountpoint` (as root, through /dev/fuse)
    /// and returns once the kernel mount exists.
    pub async fn mount(cfg: OverlayConfig, mountpoint: &Path) -> io::Result<Self> {
        Self::mount_notify(cfg, mountpoint, || {}).await
    }

    /// As [`Self::mount`]; `on_mounted` runs on the serving thread as soon as mount(2) has
    /// succeeded, before the kernel's INIT is answered and before this returns. The standalone
    /// binary tells its waiting parent from there: the mount's first users then queue on INIT
    /// while it is answered instead of waiting for the whole start-up.
    pub async fn mount_notify(
        cfg: OverlayConfig,
        mountpoint: &Path,
        on_mounted: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self> {
        raise_nofile_limit();
        let read_only = cfg.read_only();
        let writeback = cfg.writeback && !read_only;
        let passthrough = cfg.passthrough && !writeback;
        let in_place = cfg.serve_in_place;
        let io_uring = cfg.io_uring;
        let poll = cfg.poll;
        let path = mountpoint.to_path_buf();
        let (ready_tx, ready_rx) = oneshot::channel::<io::Result<()>>();
        let mount_path = path.clone();
        let serve = async move {
            let fs = match OverlayFs::new(cfg) {
                Ok(fs) => fs,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(io::Error::other(msg));
                }
            };
            let mut opts = MountOptions::default();
            opts.fs_name("strata-fuse-overlay")
                .allow_other(true)
                .default_permissions(true)
                .handle_killpriv_v2(true)
                .read_only(read_only)
                .nonempty(true)
                .write_back(writeback)
                .passthrough(passthrough)
                .serve_in_place(in_place)
                .io_uring(io_uring)
                .io_uring_poll(poll);
            let handle = match Session::new(opts).mount(fs, &mount_path).await {
                Ok(h) => h,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(io::Error::other(msg));
                }
            };
            on_mounted();
            let _ = ready_tx.send(Ok(()));
            // Resolves when the kernel ends the connection (unmount).
            handle.await
        };
        // The session's result, sent when the kernel ends the connection.
        let (done_tx, done_rx) = oneshot::channel();
        if in_place {
            // The session owns a thread of its own (not one of the runtime's bounded blocking
            // pool, which a host with hundreds of mounts would exhaust): it blocks in read(2)
            // on /dev/fuse until the unmount. No shared runtime is needed, which keeps the
            // standalone binary's mount short.
            std::thread::Builder::new()
                .name("strata-fuse-serve".into())
                .spawn(move || {
                    let served = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .and_then(|session_rt| session_rt.block_on(serve));
                    let _ = done_tx.send(served);
                })?;
        } else {
            runtime()?.spawn(async move {
                let _ = done_tx.send(serve.await);
            });
        }
        match ready_rx.await {
            Ok(Ok(())) => {
                // One stat and one small sysfs write, both quick once INIT is answered; run in
                // place so that a mount needs no blocking pool either. The stat must wait for
                // INIT: answering it sets the readahead to at most what INIT asked for.
                widen_readahead(&path);
                Ok(Self {
                    path,
                    done: Some(done_rx),
                })
            }
            Ok(Err(e)) => {
                let _ = done_rx.await;
                Err(e)
            }
            Err(_) => Err(io::Error::other(
                "the FUSE serving task ended before mounting",
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and waits for the serving task to end. A busy mount is detached (it goes
    /// away when its last user does).
    pub async fn unmount(mut self) -> io::Result<()> {
        self.stop().await
    }

    /// [`Self::unmount`] in place, for an owner that keeps the value (an error leaves it
    /// mounted, to be tried again).
    pub async fn stop(&mut self) -> io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || unmount_path(&path))
            .await
            .map_err(io::Error::other)??;
        match self.wait().await {
            // The mount is gone; the kernel closed the session without a DESTROY request,
            // which fuse3 reports as an early EOF. That is a normal end after our umount2.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!(path = %self.path.display(), "FUSE session ended without DESTROY: {e}");
                Ok(())
            }
            other => other,
        }
    }

    /// Serves until the filesystem is unmounted (by anyone), however long that is.
    pub async fn serve(&mut self) -> io::Result<()> {
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        done.await.unwrap_or_else(|_| Err(session_vanished()))
    }

    /// Waits (bounded) until the kernel ends the session after an unmount.
    pub async fn wait(&mut self) -> io::Result<()> {
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_TIMEOUT, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(session_vanished()),
            Err(_) => {
                tracing::warn!(path = %self.path.display(), "FUSE session still serving open files after a detached unmount");
                Ok(())
            }
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.done.is_some() {
            let _ = unmount_path(&self.path);
        }
    }
}

/// Kernel readahead window, in KiB, for a FUSE mount: one request of the largest size the
/// kernel sends (max_pages_limit's default of 256 pages).
const READAHEAD_KB: u32 = 1024;

/// Widens the mount's readahead from the kernel's 128 KiB to one full-size READ: a sequential
/// read of a lower file then takes a round trip per MiB instead of per 128 KiB. INIT can only
/// shrink the window, so this goes through the mount's bdi in sysfs, which only root may
/// write; elsewhere the default stays.
fn widen_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Err(e) = std::fs::write(&bdi, READAHEAD_KB.to_string()) {
        tracing::debug!(%bdi, "FUSE readahead left at the default: {e}");
    }
}

/// umount2, falling back to a lazy detach while the mount is busy.
pub fn unmount_path(path: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}
