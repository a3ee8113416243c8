//! Mounting overlayfs. Two ways, chosen once at start-up:
//! - the new mount API (fsopen/fsconfig/fsmount/move_mount, Linux 6.8+ for `lowerdir+`): one
//!   `lowerdir+` per layer, so no page-size limit; the kernel's own limit is 500 lowers;
//! - mount(2) with Docker's method: `l/<short>` links relative to the driver root, so the
//!   options of a deep chain still fit in one page. The relative paths are resolved on a
//!   dedicated thread that unshared its fs context (CLONE_FS) and changed directory into the
//!   root once; the process's own working directory never changes.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};

use strata_core::{Error, Result};

/// The kernel's limit on overlay lower layers (OVL_MAX_STACK).
pub const KERNEL_MAX_LOWERS: usize = 500;
/// The length of one `l/<short>` entry.
const LINK_ENTRY_LEN: usize = 2 + crate::layout::SHORT_ID_LEN;
/// fsconfig string values are copied with a 256-byte limit (strndup_user in fs/fsopen.c).
const FSCONFIG_MAX_VALUE: usize = 255;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// How this host mounts overlays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// fsopen & co. with one `lowerdir+` per layer.
    NewApi,
    /// mount(2) with relative `l/` paths inside one page of options.
    Legacy,
}

/// One overlay to mount. Paths are relative to the driver root (`l/<short>`, `<id>/diff`).
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// Lower layers, uppermost first.
    pub lowers: Vec<String>,
    /// `(upperdir, workdir)` for a writable mount.
    pub upper: Option<(String, String)>,
    /// Absolute mount point.
    pub target: PathBuf,
}

/// Mounts overlays under one driver root with a fixed set of extra options.
pub struct Mounter {
    root: PathBuf,
    api: MountApi,
    /// Options every mount gets (`index=off`, `redirect_dir=off`, `metacopy=off`, ...).
    options: Vec<(String, String)>,
    /// Started on the first mount that needs paths relative to the root.
    root_thread: OnceLock<RootThread>,
}

impl Mounter {
    pub fn new(root: PathBuf, api: MountApi, options: Vec<(String, String)>) -> Self {
        Self {
            root,
            api,
            options,
            root_thread: OnceLock::new(),
        }
    }

    /// Runs `f` with the working directory at the root, on the mount thread.
    fn in_root<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.root_thread.get().is_none() {
            let thread = RootThread::start(&self.root)?;
            let _ = self.root_thread.set(thread);
        }
        match self.root_thread.get() {
            Some(t) => t.run(f),
            None => Err(Error::Other("overlay mount thread did not start".into())),
        }
    }

    pub fn api(&self) -> MountApi {
        self.api
    }

    /// The most lowers one mount can have; `upper_id_len` is the length of the layer id
    /// whose `diff`/`work` are the upper (None for a read-only mount).
    pub fn max_lowers(&self, upper_id_len: Option<usize>) -> usize {
        match self.api {
            MountApi::NewApi => KERNEL_MAX_LOWERS,
            MountApi::Legacy => {
                let fixed = self.legacy_data(&[], upper_id_len).len();
                // Each lower adds its entry and a separator; the first needs no separator
                // but `lowerdir=` with nothing after it is already counted in `fixed`.
                let room = page_size().saturating_sub(1).saturating_sub(fixed) + 1;
                (room / (LINK_ENTRY_LEN + 1)).min(KERNEL_MAX_LOWERS)
            }
        }
    }

    /// Mounts `spec`. A single mount(2) is the cheapest, so it is used whenever the options
    /// fit in one page: with absolute paths, else with paths relative to the root; deeper
    /// chains go through the new API. Errors name the depth and the limit.
    pub fn mount(&self, spec: &OverlaySpec) -> Result<()> {
        let max = self.max_lowers(upper_id_len(spec));
        if spec.lowers.len() > max {
            return Err(too_deep(spec.lowers.len(), max, self.api));
        }
        let limit = page_size() - 1;
        let absolute = self.mount_data(spec, Some(&self.root));
        if absolute.len() <= limit {
            return mount2(spec, absolute);
        }
        let relative = self.mount_data(spec, None);
        if relative.len() <= limit {
            let spec = spec.clone();
            return self.in_root(move || mount2(&spec, relative));
        }
        match self.api {
            MountApi::NewApi => self.mount_new_api(spec),
            MountApi::Legacy => Err(too_deep(spec.lowers.len(), max, self.api)),
        }
    }

    fn mount_new_api(&self, spec: &OverlaySpec) -> Result<()> {
        let abs: Vec<PathBuf> = spec.lowers.iter().map(|l| self.root.join(l)).collect();
        let too_long = abs
            .iter()
            .chain(std::iter::once(&spec.target))
            .any(|p| p.as_os_str().len() > FSCONFIG_MAX_VALUE)
            || spec.upper.as_ref().is_some_and(|(u, w)| {
                self.root.join(u).as_os_str().len() > FSCONFIG_MAX_VALUE
                    || self.root.join(w).as_os_str().len() > FSCONFIG_MAX_VALUE
            });
        if too_long {
            // Long absolute paths would pass fsconfig's 256-byte value limit: resolve the
            // relative ones from inside the root instead.
            let (spec, options) = (spec.clone(), self.options.clone());
            return self.in_root(move || new_api_mount(&spec, &options, None));
        }
        new_api_mount(spec, &self.options, Some(&self.root))
    }

    /// The options of a mount(2) that a client such as containerd performs itself: absolute
    /// paths, the `l/<short>` links for lowers. `None` when they would not fit: containerd
    /// rewrites the lowers relative to their common directory (`<root>/l/`) once the options
    /// pass a page less 512 bytes, so each lower then costs its short id and a separator, and
    /// the whole string must still fit in one page.
    pub fn client_options(
        &self,
        lowers: &[String],
        upper: Option<(&str, &str)>,
    ) -> Option<Vec<String>> {
        if lowers.len() > KERNEL_MAX_LOWERS {
            return None;
        }
        let abs = |p: &str| self.root.join(p).to_string_lossy().into_owned();
        let mut options: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let lowerdir: Vec<String> = lowers.iter().map(|l| abs(l)).collect();
        options.push(format!("lowerdir={}", lowerdir.join(":")));
        if let Some((u, w)) = upper {
            options.push(format!("upperdir={}", abs(u)));
            options.push(format!("workdir={}", abs(w)));
        }
        let size = options.iter().map(|o| o.len() + 1).sum::<usize>();
        let page = page_size();
        if size < page - 512 {
            return Some(options);
        }
        let common_dir_len = self.root.join("l").as_os_str().len() + 1;
        let compacted = size - lowers.len() * common_dir_len;
        (compacted < page).then_some(options)
    }

    /// The mount(2) option string for `spec`, paths joined to `root` when given.
    fn mount_data(&self, spec: &OverlaySpec, root: Option<&Path>) -> String {
        let path = |p: &str| match root {
            Some(r) => r.join(p).to_string_lossy().into_owned(),
            None => p.to_string(),
        };
        let mut data = String::new();
        for (k, v) in &self.options {
            data.push_str(&format!("{k}={v},"));
        }
        data.push_str("lowerdir=");
        let lowers: Vec<String> = spec.lowers.iter().map(|l| path(l)).collect();
        data.push_str(&lowers.join(":"));
        if let Some((upper, work)) = &spec.upper {
            data.push_str(&format!(",upperdir={},workdir={}", path(upper), path(work)));
        }
        data
    }

    /// The mount(2) option string without upper/work; with `id_len`, sized as if upper and
    /// work of an id of that length were appended (for the depth limit).
    fn legacy_data(&self, lowers: &[String], id_len: Option<usize>) -> String {
        let mut data = String::new();
        for (k, v) in &self.options {
            data.push_str(&format!("{k}={v},"));
        }
        data.push_str("lowerdir=");
        data.push_str(&lowers.join(":"));
        if let Some(n) = id_len {
            let id = "x".repeat(n);
            data.push_str(&format!(",upperdir={id}/diff,workdir={id}/work"));
        }
        data
    }
}

/// One mount(2) call; relative paths in `data` resolve against the calling thread's cwd.
fn mount2(spec: &OverlaySpec, data: String) -> Result<()> {
    let data = CString::new(data).map_err(|_| Error::invalid("NUL in overlay options"))?;
    let target = cstring(&spec.target)?;
    let flags = if spec.upper.is_none() {
        libc::MS_RDONLY
    } else {
        0
    };
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            "mount overlay on",
            &spec.target,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn upper_id_len(spec: &OverlaySpec) -> Option<usize> {
    spec.upper
        .as_ref()
        .map(|(u, _)| u.len().saturating_sub("/diff".len()))
}

fn too_deep(depth: usize, max: usize, api: MountApi) -> Error {
    let why = match api {
        MountApi::NewApi => "overlayfs stacks at most 500 lower layers".to_string(),
        MountApi::Legacy => format!(
            "this kernel lacks the `lowerdir+` mount option (Linux 6.8+), so all lowers must fit \
             in one page ({} bytes) of mount options, which holds at most {max} here",
            page_size()
        ),
    };
    Error::unsupported(format!(
        "the layer chain is too deep: mounting it needs {depth} lower layers and the limit is \
         {max} ({why})"
    ))
}

/// Mounts with the new API. With `root`, relative paths are made absolute; without it they
/// resolve against the current (thread's) working directory.
fn new_api_mount(
    spec: &OverlaySpec,
    options: &[(String, String)],
    root: Option<&Path>,
) -> Result<()> {
    let resolve = |p: &str| -> PathBuf {
        match root {
            Some(r) => r.join(p),
            None => PathBuf::from(p),
        }
    };
    let fs = FsContext::open()?;
    for (k, v) in options {
        fs.set_string(k, v.as_bytes())?;
    }
    for lower in &spec.lowers {
        fs.set_string("lowerdir+", resolve(lower).as_os_str().as_bytes())?;
    }
    if let Some((upper, work)) = &spec.upper {
        fs.set_string("upperdir", resolve(upper).as_os_str().as_bytes())?;
        fs.set_string("workdir", resolve(work).as_os_str().as_bytes())?;
    }
    fs.create()?;
    let attrs = if spec.upper.is_none() {
        MOUNT_ATTR_RDONLY
    } else {
        0
    };
    let mnt = fs.mount(attrs)?;
    let target = cstring(&spec.target)?;
    // SAFETY: mnt is a valid mount fd; the paths are NUL-terminated strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            "move_mount overlay to",
            &spec.target,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// An fsopen("overlay") context; kernel error messages are read back into our errors.
pub struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    pub fn open() -> Result<Self> {
        // SAFETY: the name is NUL-terminated; the returned fd is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "fsopen",
                "overlay",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Sets `key=value`; a refusal carries the kernel's own message.
    pub fn set_string(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = CString::new(key).map_err(|_| Error::invalid("NUL in option name"))?;
        let v = CString::new(value).map_err(|_| Error::invalid("NUL in option value"))?;
        // SAFETY: fd is valid; key and value are NUL-terminated strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            return Err(self.error(&format!(
                "fsconfig overlay {key}={}",
                String::from_utf8_lossy(value)
            )));
        }
        Ok(())
    }

    pub fn create(&self) -> Result<()> {
        // SAFETY: fd is valid; CMD_CREATE takes no key or value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if rc != 0 {
            return Err(self.error("create overlay"));
        }
        Ok(())
    }

    pub fn mount(&self, attrs: libc::c_uint) -> Result<OwnedFd> {
        // SAFETY: fd is a created fs context.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        if fd < 0 {
            return Err(self.error("fsmount overlay"));
        }
        // SAFETY: fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The last OS error plus whatever the kernel logged on the context.
    fn error(&self, op: &str) -> Error {
        let os = std::io::Error::last_os_error();
        let mut log = String::new();
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let msg = String::from_utf8_lossy(&buf[..n as usize]);
            log.push_str(if log.is_empty() { " (" } else { "; " });
            log.push_str(msg.trim_end());
        }
        if !log.is_empty() {
            log.push(')');
        }
        Error::Other(format!("{op}: {os}{log}"))
    }
}

/// Does this kernel take `lowerdir+` (Linux 6.8+)? `probe_dir` is any existing directory.
pub fn detect_api(probe_dir: &Path) -> MountApi {
    let Ok(fs) = FsContext::open() else {
        return MountApi::Legacy;
    };
    match fs.set_string("lowerdir+", probe_dir.as_os_str().as_bytes()) {
        Ok(()) => MountApi::NewApi,
        Err(e) => {
            tracing::info!("overlay lowerdir+ not available ({e}); using mount(2) with l/ links");
            MountApi::Legacy
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread whose working directory is the driver root, without touching the process's
/// (it unshares its fs context first). It runs jobs until the Mounter is dropped.
struct RootThread {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl RootThread {
    fn start(root: &Path) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<()>>();
        let dir = root.to_path_buf();
        std::thread::Builder::new()
            .name("overlay2-mount".into())
            .spawn(move || {
                let setup = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| Error::io("unshare CLONE_FS for", &dir, e.into()))
                    .and_then(|()| {
                        nix::unistd::chdir(&dir).map_err(|e| Error::io("chdir", &dir, e.into()))
                    });
                let ok = setup.is_ok();
                let _ = ready_tx.send(setup);
                if ok {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                }
            })
            .map_err(|e| Error::io("start the overlay mount thread for", root, e))?;
        ready
            .recv()
            .map_err(|_| Error::Other("overlay mount thread died".into()))??;
        Ok(Self {
            jobs: Mutex::new(jobs),
        })
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = reply.send(f());
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        sent.map_err(|_| Error::Other("overlay mount thread is gone".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Other("overlay mount thread dropped a job".into()))?
    }
}

/// Detaches the overlay at `target` (lazily, so a copy in another namespace cannot keep it
/// busy) and removes the mount point.
pub fn unmount(target: &Path) -> Result<()> {
    strata_core::fsutil::mounts::unmount(target, true)?;
    match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove mount point", target, e)),
    }
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("NUL in path {}", p.display())))
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
