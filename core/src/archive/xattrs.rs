//! Applying an entry's xattrs, with Docker's policy for the ones the target refuses.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use super::fsat;
use crate::error::{Error, Result};

const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

pub(crate) enum XattrTarget<'f> {
    Fd(BorrowedFd<'f>),
    At(BorrowedFd<'f>, &'f CStr),
}

/// Sets `xattrs` on `target` (`path` names it in messages). `trusted.overlay.*` from a tar is
/// never applied: only whiteout and opaque markers make those.
pub(crate) fn set_xattrs(
    xattrs: &[(Vec<u8>, Vec<u8>)],
    best_effort: bool,
    path: &dyn Fn() -> PathBuf,
    target: XattrTarget<'_>,
) -> Result<()> {
    for (name, value) in xattrs {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            tracing::debug!(path = %path().display(), "ignoring overlay xattr from layer tar");
            continue;
        }
        let res = match target {
            XattrTarget::Fd(fd) => fsat::fsetxattr(fd, name, value),
            XattrTarget::At(dir, n) => fsat::lsetxattr_at(dir, n, name, value),
        };
        match res {
            Ok(()) => {}
            // As Docker: EPERM (xattrs not allowed here, e.g. trusted.* in a user
            // namespace) is a warning. EOPNOTSUPP is an error (the filesystem cannot hold
            // what the image needs) unless the caller asked for best effort.
            Err(err)
                if err.raw_os_error() == Some(libc::EPERM)
                    || (best_effort && err.raw_os_error() == Some(libc::EOPNOTSUPP)) =>
            {
                tracing::warn!(
                    path = %path().display(),
                    xattr = %String::from_utf8_lossy(name),
                    error = %err,
                    "xattr not applied; skipped"
                );
            }
            Err(err) => {
                // The raw OS error is kept (callers test for EOPNOTSUPP); the xattr name
                // rides along with the path.
                let mut what = path().into_os_string();
                what.push(format!(" (xattr {})", String::from_utf8_lossy(name)));
                return Err(Error::io("set xattr", PathBuf::from(what), err));
            }
        }
    }
    Ok(())
}
