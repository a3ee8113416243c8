//! `COPY --chown`: a user and group given by name or number, names looked up in the image.

use strata_core::store::Digest;
use strata_core::{Error, Result};

use super::scope::ScopedDir;
use crate::container::user;
use crate::daemon::Daemon;

/// `--chown=user:group` with names looked up in the image's /etc/passwd and /etc/group.
pub(super) async fn resolve(d: &Daemon, image: Option<&Digest>, spec: &str) -> Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let numeric = |s: &str| s.parse::<u32>().is_ok();
    let needs_lookup = !numeric(user) || (!group.is_empty() && !numeric(group));
    if !needs_lookup {
        return chown_ids(spec, "", "");
    }
    // Names come from the image being built: read them through a mount of its top layer.
    let Some(img) = image else {
        return Err(Error::invalid(format!(
            "--chown={spec}: names need an image with /etc/passwd"
        )));
    };
    let Some(top) = d.images.get(img)?.top_layer() else {
        return chown_ids(spec, "", "");
    };
    let mounted = d.layers.mount_layer(&top).await?;
    // Resolved inside the image: its /etc/passwd may be a symlink to anywhere.
    let files = ScopedDir::open(mounted.path()).map(|image| {
        let text = |file: &str| {
            image
                .read_regular(file, 16 << 20)
                .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                .unwrap_or_default()
        };
        (text("/etc/passwd"), text("/etc/group"))
    });
    mounted.release().await?;
    let (passwd, groups) = files?;
    chown_ids(spec, &passwd, &groups)
}

/// The ids of `user[:group]` (names or numbers) given the image's passwd and group texts. As
/// Docker: without a group, the gid is the uid's number.
fn chown_ids(spec: &str, passwd: &str, groups: &str) -> Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    let uid = user
        .parse()
        .ok()
        .or_else(|| user::uid_by_name(passwd, user))
        .ok_or_else(|| Error::invalid(format!("--chown={spec}: unknown user {user}")))?;
    let gid = if group.is_empty() {
        uid
    } else {
        group
            .parse()
            .ok()
            .or_else(|| user::gid_by_name(groups, group))
            .ok_or_else(|| Error::invalid(format!("--chown={spec}: unknown group {group}")))?
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::chown_ids;

    /// Guards Docker's rule for a user without a group (the gid is the uid's number; the
    /// builder used the user's passwd gid) and the one passwd parser (`#` lines skipped).
    #[test]
    fn ids_follow_dockers_chown_rules() {
        let passwd = "# comment\nroot:x:0:0::/root:/bin/sh\napp:x:1000:50::/home/app:/bin/sh\n";
        let groups = "staff:x:50:\nwheel:x:10:app\n";
        assert_eq!(chown_ids("app", passwd, groups).unwrap(), (1000, 1000));
        assert_eq!(chown_ids("app:wheel", passwd, groups).unwrap(), (1000, 10));
        assert_eq!(chown_ids("7:8", "", "").unwrap(), (7, 8));
        assert_eq!(chown_ids("7", "", "").unwrap(), (7, 7));
        assert!(chown_ids("nobody", passwd, groups).is_err());
        assert!(chown_ids("app:nogroup", passwd, groups).is_err());
    }
}
