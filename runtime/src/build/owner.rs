//! `COPY --chown`: a user and group given by name or number, names looked up in the image.

use strata_core::store::Digest;
use strata_core::{Error, Result};

use super::scope::ScopedDir;
use crate::daemon::Daemon;

/// `--chown=user:group` with names looked up in the image's /etc/passwd and /etc/group.
pub(super) async fn resolve(d: &Daemon, image: Option<&Digest>, spec: &str) -> Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let numeric = |s: &str| s.parse::<u32>().ok();
    let needs_lookup = numeric(user).is_none() || (!group.is_empty() && numeric(group).is_none());
    let (passwd, groupf) = if needs_lookup {
        // Names come from the image being built: read them through a mount of its top layer.
        let Some(img) = image else {
            return Err(Error::invalid(format!(
                "--chown={spec}: names need an image with /etc/passwd"
            )));
        };
        match d.images.get(img)?.top_layer() {
            Some(top) => {
                let mounted = d.layers.mount_layer(&top).await?;
                // Resolved inside the image: its /etc/passwd may be a symlink to anywhere.
                let users = ScopedDir::open(mounted.path()).map(|image| {
                    (
                        id_lookup(&image, "/etc/passwd", user),
                        (!group.is_empty())
                            .then(|| id_lookup(&image, "/etc/group", group))
                            .flatten(),
                    )
                });
                mounted.release().await?;
                users?
            }
            None => (None, None),
        }
    } else {
        (None, None)
    };
    let uid = numeric(user)
        .or(passwd.map(|p| p.0))
        .ok_or_else(|| Error::invalid(format!("--chown={spec}: unknown user {user}")))?;
    let gid = if group.is_empty() {
        passwd.map(|p| p.1).unwrap_or(uid)
    } else {
        numeric(group)
            .or(groupf.map(|g| g.0))
            .ok_or_else(|| Error::invalid(format!("--chown={spec}: unknown group {group}")))?
    };
    Ok((uid, gid))
}

/// Fields 3 and 4 of the line for `name` in an /etc/passwd-style file of the image (a regular
/// file inside it; anything else counts as no such name).
fn id_lookup(image: &ScopedDir, file: &str, name: &str) -> Option<(u32, u32)> {
    let raw = image.read_regular(file, 16 << 20).ok()?;
    let text = String::from_utf8_lossy(&raw);
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| {
            (
                f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
            )
        })
    })
}
