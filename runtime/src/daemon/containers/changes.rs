//! `docker diff`: the driver's changes of a container's read-write layer against the image's
//! top layer, less what the engine itself put there to run the container. Docker keeps those
//! in an init layer between the image and the container and so never lists them; Strata has
//! no init layer and filters the same paths out instead.

use std::path::Path;

use strata_core::{Change, ChangeKind, Error, Result};

use super::Container;
use crate::daemon::Daemon;

/// What Docker's init layer holds: mount points and files the engine binds at start.
const INIT_PATHS: &[&str] = &[
    "/.dockerenv",
    "/dev",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
];

pub async fn changes(d: &Daemon, c: &Container) -> Result<Vec<Change>> {
    let id = c.record().id.clone();
    let rw = d
        .layers
        .get_rw(&id)
        .ok_or_else(|| Error::not_found(format!("No such container: {id}")))?;
    let parent = match &rw.parent {
        Some(chain) => Some(
            d.layers
                .get(chain)
                .ok_or_else(|| Error::Other(format!("the image layer {chain} is missing")))?
                .cache_id,
        ),
        None => None,
    };
    let list = d.driver.changes(&rw.mount_id, parent.as_ref()).await?;
    Ok(hide_init_paths(list))
}

/// Drops the init-layer paths, and a directory listed as modified only because one of them
/// was created in it (nothing else is listed below it).
fn hide_init_paths(list: Vec<Change>) -> Vec<Change> {
    let hidden = |p: &Path| INIT_PATHS.iter().any(|h| p == Path::new(h));
    let (gone, kept): (Vec<Change>, Vec<Change>) =
        list.into_iter().partition(|ch| hidden(&ch.path));
    let only_for_hidden = |ch: &Change| {
        ch.kind == ChangeKind::Modify
            && gone.iter().any(|g| g.path.starts_with(&ch.path))
            && !kept
                .iter()
                .any(|k| k.path != ch.path && k.path.starts_with(&ch.path))
    };
    kept.iter()
        .filter(|ch| !only_for_hidden(ch))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    /// Guards `docker diff`'s output: what the engine made to run the container is not the
    /// container's change, but the user's own changes next to it are.
    #[test]
    fn engine_made_paths_are_hidden() {
        let list = vec![
            ch("/etc", ChangeKind::Modify),
            ch("/etc/hosts", ChangeKind::Add),
            ch("/proc", ChangeKind::Add),
            ch("/tmp", ChangeKind::Modify),
            ch("/tmp/x", ChangeKind::Add),
        ];
        assert_eq!(
            hide_init_paths(list),
            vec![
                ch("/tmp", ChangeKind::Modify),
                ch("/tmp/x", ChangeKind::Add)
            ]
        );
        let list = vec![
            ch("/etc", ChangeKind::Modify),
            ch("/etc/hosts", ChangeKind::Add),
            ch("/etc/passwd", ChangeKind::Modify),
        ];
        assert_eq!(
            hide_init_paths(list),
            vec![
                ch("/etc", ChangeKind::Modify),
                ch("/etc/passwd", ChangeKind::Modify)
            ]
        );
    }
}
