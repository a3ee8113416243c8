//! Open directories of an apply, by key (components joined by `/`), so that entries reusing a
//! parent skip the resolve-beneath walk. Tars from `tar -c` or Docker list a directory's files
//! together, but generated ones may cycle through many directories; a few hundred entries
//! cover that. Entries are dropped when the directory (or a parent) is removed or replaced,
//! and when its own metadata changes (its setgid bit and group are cached with it).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use super::fsat;

/// Most directories kept open at once; when full, the cache starts over.
const CAPACITY: usize = 256;

/// The group a file created in a directory gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewFileGroup {
    /// The creator's (a directory without the setgid bit).
    Creator,
    /// The directory's own (setgid).
    Dir(u32),
    /// Could not be determined: never assume.
    Unknown,
}

#[derive(Clone)]
pub(crate) struct CachedDir {
    pub fd: Rc<OwnedFd>,
    pub new_file_group: NewFileGroup,
}

impl CachedDir {
    pub fn new(fd: OwnedFd) -> Self {
        let new_file_group = match fsat::fstat(fd.as_fd()) {
            Ok(st) if st.st_mode & libc::S_ISGID != 0 => NewFileGroup::Dir(st.st_gid),
            Ok(_) => NewFileGroup::Creator,
            Err(_) => NewFileGroup::Unknown,
        };
        Self {
            fd: Rc::new(fd),
            new_file_group,
        }
    }
}

#[derive(Default)]
pub(crate) struct DirCache {
    dirs: HashMap<Vec<u8>, CachedDir>,
}

impl DirCache {
    pub fn get(&self, key: &[u8]) -> Option<CachedDir> {
        self.dirs.get(key).cloned()
    }

    pub fn insert(&mut self, key: Vec<u8>, dir: CachedDir) {
        if self.dirs.len() >= CAPACITY {
            self.dirs.clear();
        }
        self.dirs.insert(key, dir);
    }

    /// The directory `key` had its owner or mode changed.
    pub fn invalidate(&mut self, key: &[u8]) {
        self.dirs.remove(key);
    }

    /// `key` and everything below it is gone.
    pub fn forget_tree(&mut self, key: &[u8]) {
        let below = |k: &[u8]| k == key || (k.starts_with(key) && k.get(key.len()) == Some(&b'/'));
        self.dirs.retain(|k, _| !below(k));
    }
}
