//! Images the store cannot load at start (a config that cannot be read, does not hash to its
//! id or does not parse, or names layers that are gone) are moved aside to
//! `imagedb/quarantine/<hex>/` (`config`, `metadata/`) with a log line, never deleted: what a
//! damaged disk or a bug left stays for the user to look at, and the store opens without it.

use std::path::Path;

use tracing::warn;

/// Moves image `hex`'s config and metadata under `root` (`<data-root>/image/<driver>`) aside.
/// Best effort: a failure is logged, and the image is left out of the store either way.
pub(super) fn quarantine_image(root: &Path, hex: &str, why: &str) {
    let imagedb = root.join("imagedb");
    let aside = imagedb.join("quarantine").join(hex);
    let moved = std::fs::create_dir_all(&aside).and_then(|()| {
        for (from, to) in [
            (
                imagedb.join("content/sha256").join(hex),
                aside.join("config"),
            ),
            (
                imagedb.join("metadata/sha256").join(hex),
                aside.join("metadata"),
            ),
        ] {
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        crate::fsutil::fsync_dir(&imagedb.join("content/sha256"))
            .and_then(|()| crate::fsutil::fsync_dir(&aside))
            .map_err(std::io::Error::other)
    });
    match moved {
        Ok(()) => warn!(image = %hex, aside = %aside.display(), "{why}; image moved aside"),
        Err(e) => warn!(image = %hex, error = %e, "{why}; could not move it aside"),
    }
}
