//! The rules that keep a layer inside its directory.
//!
//! - An entry name is split into components; a leading `./` is dropped (an absolute tar name
//!   is refused by `apply.rs` first; change paths are absolute and lose their `/` here), empty
//!   and `.` components are dropped, and any `..`
//!   component refuses the entry. Nothing is "cleaned": `a/../b` is refused, not rewritten.
//! - Parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)` (or, where the kernel lacks openat2, component by component with
//!   `O_NOFOLLOW | O_DIRECTORY`), so a symlink anywhere in the parent chain, including one the
//!   same tar made a moment ago, refuses the entry instead of being followed.
//! - The last component is always handled with `*at` calls relative to that parent fd and
//!   never followed.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::fsat::{self, cname};

/// Splits a tar entry name (or hard link target) into safe components. `Err` carries the
/// reason; the caller names the entry.
pub(crate) fn components(name: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err("it contains a `..` component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Joins components with `/` (the key used for bookkeeping: no leading or trailing slash).
pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// Why a directory beneath the root could not be opened.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// A component is missing.
    Missing,
    /// A component is a symlink or not a directory, or would leave the root.
    Unsafe,
    Io(io::Error),
}

impl From<io::Error> for ResolveError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) => ResolveError::Missing,
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV) => ResolveError::Unsafe,
            _ => ResolveError::Io(e),
        }
    }
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Longest path handed to one openat2 call; deeper paths are resolved in hops, each beneath
/// the directory the previous hop opened.
const HOP_BYTES: usize = 3072;

/// Opens the directory `comps` beneath `root`, following no symlink.
pub(crate) fn open_dir_beneath(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
) -> Result<OwnedFd, ResolveError> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return open_dir_componentwise(root, comps);
    }
    let mut current: Option<OwnedFd> = None;
    let mut start = 0;
    while start < comps.len() || current.is_none() {
        let mut end = start;
        let mut len = 0;
        while end < comps.len() && (end == start || len + comps[end].len() < HOP_BYTES) {
            len += comps[end].len() + 1;
            end += 1;
        }
        let rel = if end == start {
            b".".to_vec()
        } else {
            join(&comps[start..end])
        };
        let base = current
            .as_ref()
            .map(|f| f.as_raw_fd())
            .unwrap_or(root.as_raw_fd());
        match openat2_beneath(base, &rel) {
            Ok(fd) => current = Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                return open_dir_componentwise(root, comps);
            }
            Err(e) => return Err(e.into()),
        }
        start = end;
    }
    current.ok_or(ResolveError::Missing)
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2_beneath(dir: libc::c_int, rel: &[u8]) -> io::Result<OwnedFd> {
    let c = cname(rel)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: valid fd, C string and open_how struct of the size passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            // SAFETY: fresh fd returned by the kernel.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the lookup; retrying is what the man page advises.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// The fallback for kernels without openat2: one `openat(O_NOFOLLOW | O_DIRECTORY)` per
/// component. `..` never reaches here, so each step stays beneath the previous one.
pub(crate) fn open_dir_componentwise(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
) -> Result<OwnedFd, ResolveError> {
    let mut current = fsat::dup(root)?;
    for comp in comps {
        let c = cname(comp)?;
        current = fsat::open_dir_at(fsat::AsFdBorrowed::as_fd_borrowed(&current), &c)?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fsat::AsFdBorrowed;

    #[test]
    fn components_strip_leading_slash_and_dot_and_refuse_dotdot() {
        assert_eq!(components(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"").unwrap().is_empty());
        assert!(components(b"../x").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"a/..").is_err());
        assert_eq!(components(b"a/..b").unwrap(), vec![&b"a"[..], b"..b"]);
    }

    fn check_resolution(open: fn(BorrowedFd<'_>, &[&[u8]]) -> Result<OwnedFd, ResolveError>) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/rel")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let fd = fsat::open_root(&root).unwrap();
        let r = fd.as_fd_borrowed();
        assert!(open(r, &[b"a", b"b"]).is_ok());
        assert!(open(r, &[]).is_ok());
        assert!(matches!(open(r, &[b"a", b"up"]), Err(ResolveError::Unsafe)));
        assert!(matches!(
            open(r, &[b"a", b"up", b"etc"]),
            Err(ResolveError::Unsafe)
        ));
        assert!(matches!(
            open(r, &[b"a", b"rel"]),
            Err(ResolveError::Unsafe)
        ));
        assert!(matches!(open(r, &[b"file"]), Err(ResolveError::Unsafe)));
        assert!(matches!(
            open(r, &[b"nope", b"x"]),
            Err(ResolveError::Missing)
        ));
    }

    #[test]
    fn openat2_resolution_refuses_symlinks() {
        check_resolution(open_dir_beneath);
    }

    #[test]
    fn componentwise_resolution_refuses_symlinks() {
        check_resolution(open_dir_componentwise);
    }

    #[test]
    fn resolves_paths_longer_than_path_max() {
        let t = tempfile::tempdir().unwrap();
        let fd = fsat::open_root(t.path()).unwrap();
        let comp = vec![b'd'; 200];
        let mut cur = fsat::dup(fd.as_fd_borrowed()).unwrap();
        for _ in 0..30 {
            let c = cname(&comp).unwrap();
            fsat::mkdir_at(cur.as_fd_borrowed(), &c, 0o755).unwrap();
            cur = fsat::open_dir_at(cur.as_fd_borrowed(), &c).unwrap();
        }
        let comps: Vec<&[u8]> = (0..30).map(|_| &comp[..]).collect();
        let got = open_dir_beneath(fd.as_fd_borrowed(), &comps).unwrap();
        let a = fsat::fstat(got.as_fd_borrowed()).unwrap();
        let b = fsat::fstat(cur.as_fd_borrowed()).unwrap();
        assert_eq!(a.st_ino, b.st_ino);
        // Clean up the deep tree with fd-relative removal (remove_dir_all would hit PATH_MAX).
        fsat::remove_at(fd.as_fd_borrowed(), &cname(&comp).unwrap()).unwrap();
    }
}
