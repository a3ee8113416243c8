//! The node table. A node is a name in the merged tree (kernel overlay without `index` also
//! treats names this way: copying up one name of a lower hard link breaks the link). Node ids
//! double as the inode numbers stat shows, so they must be stable while mounted: a node stays
//! in the table, keeping its id, until its name is removed, even after the kernel forgets it.
//! A node split off an older one (a new kernel inode for the same file, see `Table::split`)
//! keeps showing the older one's number. Hard links made through the mount share one
//! node (the kernel then keeps one page cache for both names).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use fuse3::Errno;

pub const ROOT: u64 = 1;

/// One layer's directory in a merged directory.
#[derive(Debug)]
pub struct LayerDir {
    pub layer: u8,
    pub fd: OwnedFd,
}

/// A merged directory's layer directories, uppermost first.
pub type DirStack = Arc<Vec<Arc<LayerDir>>>;

#[derive(Debug)]
pub struct Node {
    pub parent: u64,
    pub name: OsString,
    /// Further names of a hard-linked node (made through the mount, so all in the upper layer).
    pub aliases: Vec<(u64, OsString)>,
    pub nlookup: u64,
    /// The uppermost layer holding the entry (0 is the upper layer when there is one).
    pub layer: u8,
    pub is_dir: bool,
    /// For a directory the kernel holds: its merged stack. Dropped when the kernel forgets it.
    pub dirs: Option<DirStack>,
    /// Names of children seen so far.
    pub children: HashMap<OsString, u64>,
    /// The name was removed (the node lives on while the kernel holds it).
    pub unlinked: bool,
    /// The node's location must be resolved again before use.
    pub stale: bool,
    /// (layer, inode) of a hard-linked file: every name of it shares this node.
    pub link_key: Option<(u8, u64)>,
    /// The inode number stat shows: the node id, except for a node split off an older one
    /// (see [`Table::split`]), which keeps showing the older one's.
    pub shown_ino: u64,
    /// Set on a node that was split: its names now belong to this newer node, and every use
    /// of the old id (by files the kernel still has open) is served by the newer one.
    pub moved_to: Option<u64>,
}

impl Node {
    /// Ready to be used without resolving on disk again.
    pub fn is_fresh(&self) -> bool {
        !self.stale && !self.unlinked && (!self.is_dir || self.dirs.is_some())
    }
}

#[derive(Debug, Default)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    next: u64,
    /// Hard-linked files by (layer, inode on disk), so all their names share one node.
    links: HashMap<(u8, u64), u64>,
}

fn enoent() -> Errno {
    libc::ENOENT.into()
}

/// How to reach one entry on disk.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A directory: its own open fd (in its uppermost layer).
    Dir(RawFd),
    /// Anything else: its parent directory's fd (in the entry's layer) and its name.
    Child(RawFd, &'a OsStr),
}

impl Table {
    pub fn new(root_dirs: DirStack) -> Self {
        let mut nodes = HashMap::new();
        let layer = root_dirs.first().map(|d| d.layer).unwrap_or(0);
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                aliases: Vec::new(),
                nlookup: 1,
                layer,
                is_dir: true,
                dirs: Some(root_dirs),
                children: HashMap::new(),
                unlinked: false,
                stale: false,
                link_key: None,
                shown_ino: ROOT,
                moved_to: None,
            },
        );
        Self {
            nodes,
            next: ROOT + 1,
            links: HashMap::new(),
        }
    }

    /// The node `ino` names, following splits (see [`Table::split`]).
    pub fn get(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&self.current(ino)).ok_or_else(enoent)
    }

    pub fn get_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        let ino = self.current(ino);
        self.nodes.get_mut(&ino).ok_or_else(enoent)
    }

    /// The node id that serves `ino` now: itself, or the node it was split into.
    pub fn current(&self, mut ino: u64) -> u64 {
        for _ in 0..16 {
            match self.nodes.get(&ino).and_then(|n| n.moved_to) {
                Some(next) => ino = next,
                None => break,
            }
        }
        ino
    }

    /// The inode number stat shows for `ino`.
    pub fn shown_ino(&self, ino: u64) -> u64 {
        self.get(ino).map(|n| n.shown_ino).unwrap_or(ino)
    }

    /// Gives the names of non-directory node `ino` to a new node id and returns it; `ino`
    /// lives on, for the kernel's open files of it, as an alias of the new node. The kernel
    /// makes a new inode for the new id at its next lookup. This is how a file whose
    /// underlying file changed (a copy-up) while the kernel has it open through passthrough
    /// bound to the old one gets a kernel inode of its own (see passthrough.rs); it keeps
    /// showing the same inode number.
    pub fn split(&mut self, ino: u64) -> Result<u64, Errno> {
        let ino = self.current(ino);
        let next = self.next;
        let old = self.nodes.get_mut(&ino).ok_or_else(enoent)?;
        if old.is_dir {
            return Err(libc::EISDIR.into());
        }
        let new = Node {
            parent: old.parent,
            name: old.name.clone(),
            aliases: std::mem::take(&mut old.aliases),
            nlookup: 0,
            layer: old.layer,
            is_dir: false,
            dirs: None,
            children: HashMap::new(),
            unlinked: old.unlinked,
            stale: old.stale,
            link_key: old.link_key.take(),
            shown_ino: old.shown_ino,
            moved_to: None,
        };
        old.moved_to = Some(next);
        let remove_now = old.nlookup == 0;
        self.next += 1;
        let names: Vec<(u64, OsString)> = std::iter::once((new.parent, new.name.clone()))
            .chain(new.aliases.iter().cloned())
            .collect();
        if let Some(k) = new.link_key {
            self.links.insert(k, next);
        }
        self.nodes.insert(next, new);
        for (parent, name) in names {
            if let Some(slot) = self
                .nodes
                .get_mut(&parent)
                .and_then(|p| p.children.get_mut(&name))
            {
                if *slot == ino {
                    *slot = next;
                }
            }
        }
        if remove_now {
            self.nodes.remove(&ino);
        }
        Ok(next)
    }

    /// The merged stack of a fresh directory node.
    pub fn dirs(&self, ino: u64) -> Result<DirStack, Errno> {
        let node = self.get(ino)?;
        if !node.is_dir {
            return Err(libc::ENOTDIR.into());
        }
        if !node.is_fresh() {
            return Err(libc::ESTALE.into());
        }
        node.dirs.clone().ok_or_else(|| libc::ESTALE.into())
    }

    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    /// The directory fd of `layer` in the stack of `dir`.
    pub fn layer_dir(&self, dir: u64, layer: u8) -> Result<RawFd, Errno> {
        let dirs = self
            .get(dir)?
            .dirs
            .as_ref()
            .ok_or_else(|| Errno::from(libc::ESTALE))?;
        dirs.iter()
            .find(|d| d.layer == layer)
            .map(|d| d.fd.as_raw_fd())
            .ok_or_else(enoent)
    }

    /// Where a fresh node lives; ESTALE asks the caller to resolve it again.
    pub fn entry(&self, ino: u64) -> Result<Entry<'_>, Errno> {
        let node = self.get(ino)?;
        if node.unlinked && node.is_dir {
            return Err(enoent());
        }
        if node.stale {
            return Err(libc::ESTALE.into());
        }
        if node.is_dir {
            let dirs = node
                .dirs
                .as_ref()
                .ok_or_else(|| Errno::from(libc::ESTALE))?;
            let top = dirs.first().ok_or_else(enoent)?;
            return Ok(Entry::Dir(top.fd.as_raw_fd()));
        }
        if node.unlinked {
            return Err(enoent());
        }
        Ok(Entry::Child(
            self.layer_dir(node.parent, node.layer)?,
            node.name.as_os_str(),
        ))
    }

    /// The node id for `name` in `parent`, made (unresolved) if the name is new.
    pub fn ensure_child(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> u64 {
        if let Some(ino) = self.child(parent, name) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                aliases: Vec::new(),
                nlookup: 0,
                layer: 0,
                is_dir,
                dirs: None,
                children: HashMap::new(),
                unlinked: false,
                stale: true,
                link_key: None,
                shown_ino: ino,
                moved_to: None,
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_os_string(), ino);
        }
        ino
    }

    /// Records what a lookup found on disk for `name` in `parent`; returns the node id.
    /// `link` is the (layer, inode) of a file with several names: they all share one node.
    pub fn set_child(
        &mut self,
        parent: u64,
        name: &OsStr,
        layer: u8,
        is_dir: bool,
        dirs: Option<DirStack>,
        link: Option<(u8, u64)>,
    ) -> u64 {
        if let Some(key) = link {
            if let Some(&shared) = self.links.get(&key) {
                if self.nodes.get(&shared).is_some_and(|n| !n.unlinked) {
                    if self.child(parent, name) != Some(shared) {
                        self.unlink_child(parent, name);
                        self.add_alias(shared, parent, name);
                    }
                    return shared;
                }
            }
        }
        let mut ino = self.ensure_child(parent, name, is_dir);
        let mismatch = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.is_dir != is_dir || (n.link_key.is_some() && n.link_key != link));
        if mismatch {
            // The name is a different file now than the node we had for it.
            self.unlink_child(parent, name);
            ino = self.ensure_child(parent, name, is_dir);
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            if node.parent == parent && node.name == name {
                node.layer = layer;
                node.dirs = dirs;
                node.stale = false;
                node.link_key = link;
            }
        }
        if let Some(key) = link {
            self.links.insert(key, ino);
        }
        ino
    }

    /// A hard-linked node was copied up: it is now known by its upper inode.
    pub fn relink(&mut self, ino: u64, key: Option<(u8, u64)>) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if let Some(old) = n.link_key.take() {
            if self.links.get(&old) == Some(&ino) {
                self.links.remove(&old);
            }
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.link_key = key;
        }
        if let Some(k) = key {
            self.links.insert(k, ino);
        }
    }

    /// Links an existing node under a further name (a hard link made through the mount).
    pub fn add_alias(&mut self, ino: u64, parent: u64, name: &OsStr) {
        self.unlink_child(parent, name);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name.to_os_string(), ino);
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.aliases.push((parent, name.to_os_string()));
        }
    }

    pub fn add_lookup(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlookup += 1;
        }
    }

    /// Drops `count` kernel references. A directory the kernel no longer holds closes its
    /// layer fds; a removed name leaves the table.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.nlookup = node.nlookup.saturating_sub(count);
        if node.nlookup > 0 {
            return;
        }
        if node.unlinked || node.moved_to.is_some() {
            self.remove_node(ino);
        } else if node.is_dir {
            node.dirs = None;
        }
    }

    /// The name no longer exists in `parent`.
    pub fn unlink_child(&mut self, parent: u64, name: &OsStr) {
        let Some(ino) = self
            .nodes
            .get_mut(&parent)
            .and_then(|p| p.children.remove(name))
        else {
            return;
        };
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.parent == parent && n.name == name {
            if let Some((p, a)) = n.aliases.pop() {
                n.parent = p;
                n.name = a;
                return;
            }
            n.unlinked = true;
            if n.nlookup == 0 {
                let children: Vec<u64> = n.children.values().copied().collect();
                self.remove_node(ino);
                for c in children {
                    if let Some(cn) = self.nodes.get_mut(&c) {
                        cn.unlinked = true;
                        if cn.nlookup == 0 {
                            self.remove_node(c);
                        }
                    }
                }
            }
        } else {
            n.aliases.retain(|(p, a)| !(*p == parent && a == name));
        }
    }

    /// Moves the name `parent/name` to `new_parent/new_name` (after a rename on disk); whatever
    /// had the new name is unlinked.
    pub fn move_child(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        self.unlink_child(new_parent, new_name);
        let Some(ino) = self
            .nodes
            .get_mut(&parent)
            .and_then(|p| p.children.remove(name))
        else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(&ino) {
            if n.parent == parent && n.name == name {
                n.parent = new_parent;
                n.name = new_name.to_os_string();
            } else {
                for alias in n.aliases.iter_mut() {
                    if alias.0 == parent && alias.1 == name {
                        *alias = (new_parent, new_name.to_os_string());
                    }
                }
            }
            n.unlinked = false;
        }
        if let Some(p) = self.nodes.get_mut(&new_parent) {
            p.children.insert(new_name.to_os_string(), ino);
        }
    }

    fn remove_node(&mut self, ino: u64) {
        if let Some(n) = self.nodes.remove(&ino) {
            if let Some(k) = n.link_key {
                if self.links.get(&k) == Some(&ino) {
                    self.links.remove(&k);
                }
            }
        }
    }

    /// Marks every node below `dir` stale (the tree was copied to a new place).
    pub fn mark_subtree_stale(&mut self, dir: u64) {
        let mut stack: Vec<u64> = self
            .nodes
            .get(&dir)
            .map(|n| n.children.values().copied().collect())
            .unwrap_or_default();
        while let Some(ino) = stack.pop() {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.stale = true;
                n.dirs = None;
                stack.extend(n.children.values().copied());
            }
        }
    }

    /// Node ids from the root down to `ino`.
    pub fn ancestry(&self, ino: u64) -> Result<Vec<u64>, Errno> {
        let mut chain = vec![ino];
        let mut cur = ino;
        while cur != ROOT {
            let n = self.get(cur)?;
            if n.unlinked {
                return Err(enoent());
            }
            cur = n.parent;
            chain.push(cur);
            if chain.len() > 4096 {
                return Err(libc::ELOOP.into());
            }
        }
        chain.reverse();
        Ok(chain)
    }
}
