//! `--user` resolution against the image's /etc/passwd and /etc/group, as runc does it.

use std::io::Read;

use strata_core::{Error, Result};

use super::scoped_path::ScopedRoot;

/// The identity the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the /etc/group entries that list the user as a member.
    pub additional_gids: Vec<u32>,
    /// HOME from the passwd entry, `/` without one.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user` (`""`, `uid`, `name`, `uid:gid`, `name:group`, ...) inside the rootfs.
pub(crate) fn resolve(root: &ScopedRoot, user: &str) -> Result<ResolvedUser> {
    resolve_with_groups(root, user, &[])
}

/// As [`resolve`], with `--group-add` groups (names from the image's /etc/group, or numbers)
/// added to the supplementary groups.
pub(crate) fn resolve_with_groups(
    root: &ScopedRoot,
    user: &str,
    group_add: &[String],
) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_optional(root, "/etc/passwd")?);
    let groups = parse_group(&read_optional(root, "/etc/group")?);
    let mut resolved = resolve_in(&passwd, &groups, user)?;
    for g in group_add {
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| &e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
        if !resolved.additional_gids.contains(&gid) {
            resolved.additional_gids.push(gid);
        }
    }
    Ok(resolved)
}

fn resolve_in(passwd: &[PasswdEntry], groups: &[GroupEntry], user: &str) -> Result<ResolvedUser> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            Error::invalid(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ))
        })?),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part
            .parse::<u32>()
            .map_err(|_| Error::invalid("bad uid"))?,
    };
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut additional_gids: Vec<u32> = match entry {
        Some(e) => groups
            .iter()
            .filter(|g| g.members.contains(&e.name))
            .map(|g| g.gid)
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry
            .map(|e| e.home.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".to_string()),
    })
}

/// The most of /etc/passwd or /etc/group we read; a bigger one is cut there.
const MAX_ID_FILE: u64 = 16 << 20;

/// Reads /etc/passwd or /etc/group from the image. A missing file is empty (numeric users
/// work without one). The file is opened without blocking and without following a symlink
/// at its last component (the rest resolves inside the root), and must be a regular file: a
/// FIFO would hang the start (and the container's lock) until someone wrote to it, a device
/// could be anything. Docker's runc would hang on such an image; we refuse it clearly.
fn read_optional(root: &ScopedRoot, path: &str) -> Result<String> {
    let shown = || root.path().join(&path[1..]);
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW;
    let file = match root.open_file(path, flags) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(String::new()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::invalid(format!(
                "{path} in the image is a symbolic link; it must be a regular file"
            )))
        }
        Err(e) => return Err(e),
    };
    let kind = file
        .metadata()
        .map_err(|e| Error::io("stat", shown(), e))?
        .file_type();
    if !kind.is_file() {
        return Err(Error::invalid(format!(
            "{path} in the image is a {}, not a regular file",
            describe(kind)
        )));
    }
    let mut text = String::new();
    file.take(MAX_ID_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read", shown(), e))?;
    Ok(text)
}

/// A file type in words, for errors about image content.
fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// The uid of user `name` in the text of an /etc/passwd (the builder's `--chown` uses the same
/// parser as `--user`).
pub(crate) fn uid_by_name(passwd: &str, name: &str) -> Option<u32> {
    parse_passwd(passwd)
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.uid)
}

/// The gid of group `name` in the text of an /etc/group.
pub(crate) fn gid_by_name(group: &str, name: &str) -> Option<u32> {
    parse_group(group)
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.gid)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

    fn res(user: &str) -> Result<ResolvedUser> {
        resolve_in(&parse_passwd(PASSWD), &parse_group(GROUP), user)
    }

    #[test]
    fn names_and_numbers() {
        let root = res("").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let alice = res("alice").unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.additional_gids, vec![10, 29]);
        assert_eq!(alice.home, "/home/alice");
        let by_uid = res("1000:wheel").unwrap();
        assert_eq!((by_uid.uid, by_uid.gid), (1000, 10));
        assert_eq!(by_uid.additional_gids, vec![29]);
        let unknown = res("4242:4343").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 4343, "/")
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(res("mallory")
            .unwrap_err()
            .to_string()
            .contains("unable to find user"));
        assert!(res("alice:nogroup")
            .unwrap_err()
            .to_string()
            .contains("unable to find group"));
    }

    /// Guards: a FIFO or device at /etc/passwd or /etc/group made the start block forever in
    /// open(2) (failed before: this test hung on HEAD 3af0184).
    #[test]
    fn special_files_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        let root = ScopedRoot::open(tmp.path()).unwrap();
        let fifo = tmp.path().join("etc/passwd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = resolve(&root, "").unwrap_err().to_string();
        assert!(err.contains("/etc/passwd in the image is a FIFO"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        let dev = std::ffi::CString::new(tmp.path().join("etc/group").to_str().unwrap()).unwrap();
        let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
        assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
        let err = resolve(&root, "").unwrap_err().to_string();
        assert!(
            err.contains("/etc/group in the image is a character device"),
            "{err}"
        );
        std::fs::remove_file(tmp.path().join("etc/group")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", tmp.path().join("etc/passwd")).unwrap();
        let err = resolve(&root, "").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, PASSWD).unwrap();
        assert_eq!(resolve(&root, "alice").unwrap().uid, 1000);
    }
}
