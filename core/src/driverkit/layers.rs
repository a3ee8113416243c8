//! The layer index every built-in driver keeps: each layer's parent and driver record, the
//! children of each layer, and whether it is being created, ready, or being removed. Like
//! containerd's snapshot metastore, minus the persistence: each driver keeps its own on-disk
//! records (its layout is Docker's, or its filesystem's), loads them at open and feeds them
//! here; the index is then the one place create, remove and mount consult.
//!
//! Mount reference counts live in the same entries (see `mounts.rs`), so "remove refuses while
//! mounted or while a child exists" is checked under one lock with the mount count.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::ids::LayerId;

use super::mounts::Slot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Creating,
    Ready,
    Removing,
}

pub(super) struct Entry<R, H> {
    pub(super) parent: Option<LayerId>,
    /// The driver's record; None while the layer is being created.
    pub(super) record: Option<R>,
    state: State,
    children: BTreeSet<LayerId>,
    /// Mount references held or being taken: `remove` refuses while non-zero.
    pub(super) refs: usize,
    pub(super) slot: Arc<Slot<H>>,
}

impl<R, H> Entry<R, H> {
    pub(super) fn is_ready(&self) -> bool {
        self.state == State::Ready
    }
}

pub(super) struct Index<R, H> {
    pub(super) entries: HashMap<LayerId, Entry<R, H>>,
}

/// The layers of one driver. Cheap to clone (shared); `R` is the driver's per-layer record
/// (overlay2's `lower` chain, fuse-overlay's kind, `()`), `H` what a live mount keeps.
pub struct Layers<R, H = ()> {
    pub(super) index: Arc<Mutex<Index<R, H>>>,
    /// How errors name a layer: "vfs layer", "layer".
    pub(super) what: &'static str,
}

impl<R, H> Clone for Layers<R, H> {
    fn clone(&self) -> Self {
        Self {
            index: Arc::clone(&self.index),
            what: self.what,
        }
    }
}

impl<R: Clone, H> Layers<R, H> {
    /// An index of the layers a driver found on disk: `(id, parent, record)`. A parent that is
    /// not in the list is kept as the layer's parent (the driver decides whether such a layer
    /// is usable before handing it over).
    pub fn load(
        what: &'static str,
        layers: impl IntoIterator<Item = (LayerId, Option<LayerId>, R)>,
    ) -> Self {
        let mut entries: HashMap<LayerId, Entry<R, H>> = layers
            .into_iter()
            .map(|(id, parent, record)| {
                let entry = Entry {
                    parent,
                    record: Some(record),
                    state: State::Ready,
                    children: BTreeSet::new(),
                    refs: 0,
                    slot: Arc::new(Slot::default()),
                };
                (id, entry)
            })
            .collect();
        let links: Vec<(LayerId, LayerId)> = entries
            .iter()
            .filter_map(|(id, e)| e.parent.clone().map(|p| (p, id.clone())))
            .collect();
        for (parent, child) in links {
            if let Some(p) = entries.get_mut(&parent) {
                p.children.insert(child);
            }
        }
        Self {
            index: Arc::new(Mutex::new(Index { entries })),
            what,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Index<R, H>> {
        // Every update below is a few map operations that cannot panic half-way.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn not_found(&self, id: &LayerId) -> Error {
        Error::not_found(format!("{} {id}", self.what))
    }

    /// Whether `id` exists and is not being created or removed.
    pub fn exists(&self, id: &LayerId) -> bool {
        self.lock().ready(id).is_some()
    }

    /// The number of layers, those being created or removed included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every ready layer.
    pub fn ids(&self) -> Vec<LayerId> {
        let index = self.lock();
        let mut ids: Vec<LayerId> = index
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Ready)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The parent recorded at create time.
    pub fn parent(&self, id: &LayerId) -> Result<Option<LayerId>> {
        let index = self.lock();
        let e = index.ready(id).ok_or_else(|| self.not_found(id))?;
        Ok(e.parent.clone())
    }

    /// The ancestors of `id`, nearest first.
    pub fn chain(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let index = self.lock();
        let mut next = index
            .ready(id)
            .ok_or_else(|| self.not_found(id))?
            .parent
            .clone();
        let mut chain = Vec::new();
        while let Some(p) = next {
            // A parent missing from the index ends the chain (a record a crash orphaned).
            next = index.entries.get(&p).and_then(|e| e.parent.clone());
            chain.push(p);
            if chain.len() > index.entries.len() {
                return Err(Error::Other(format!(
                    "{} {id}: its parent chain loops",
                    self.what
                )));
            }
        }
        Ok(chain)
    }

    /// The layers created on `id` (being created included: they hold their parent).
    pub fn children(&self, id: &LayerId) -> Vec<LayerId> {
        let index = self.lock();
        index
            .entries
            .get(id)
            .map(|e| e.children.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The driver's record of a ready layer.
    pub fn record(&self, id: &LayerId) -> Result<R> {
        let index = self.lock();
        let e = index.ready(id).ok_or_else(|| self.not_found(id))?;
        e.record.clone().ok_or_else(|| self.not_found(id))
    }

    /// Reserves `id` for a create on `parent`: refuses an id in use and a parent that is not
    /// ready; the parent cannot be removed until the create commits or is dropped. The layer is
    /// invisible (`exists` is false) until [`Creating::commit`].
    pub fn begin_create(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Creating<R, H>> {
        let mut index = self.lock();
        if index.entries.contains_key(id) {
            return Err(Error::AlreadyExists(format!("{} {id}", self.what)));
        }
        let parent_record = match parent {
            Some(p) => {
                let pe = index
                    .ready_mut(p)
                    .ok_or_else(|| Error::not_found(format!("parent layer {p}")))?;
                pe.children.insert(id.clone());
                pe.record.clone()
            }
            None => None,
        };
        index.entries.insert(
            id.clone(),
            Entry {
                parent: parent.cloned(),
                record: None,
                state: State::Creating,
                children: BTreeSet::new(),
                refs: 0,
                slot: Arc::new(Slot::default()),
            },
        );
        Ok(Creating {
            layers: self.clone(),
            id: id.clone(),
            parent_record,
            done: false,
        })
    }

    /// Starts removing `id`: refuses (`Busy`) while it is mounted or has a child, then hides it
    /// from every other call until [`Removing::done`] (or the guard drops: the removal failed
    /// and the layer is back).
    pub fn begin_remove(&self, id: &LayerId) -> Result<Removing<R, H>> {
        let mut index = self.lock();
        let what = self.what;
        let e = index.ready_mut(id).ok_or_else(|| self.not_found(id))?;
        if e.refs > 0 {
            return Err(Error::busy(format!(
                "{what} {id} is mounted ({} reference(s)); unmount it first",
                e.refs
            )));
        }
        if !e.children.is_empty() {
            let names: Vec<&str> = e.children.iter().map(LayerId::as_str).collect();
            return Err(Error::busy(format!(
                "{what} {id} has child layers ({}); remove them first",
                names.join(", ")
            )));
        }
        e.state = State::Removing;
        Ok(Removing {
            layers: self.clone(),
            id: id.clone(),
            record: e.record.clone(),
            done: false,
        })
    }

    fn forget(&self, id: &LayerId) {
        let mut index = self.lock();
        if let Some(e) = index.entries.remove(id) {
            if let Some(pe) = e.parent.and_then(|p| index.entries.get_mut(&p)) {
                pe.children.remove(id);
            }
        }
    }
}

impl<R, H> Index<R, H> {
    pub(super) fn ready(&self, id: &LayerId) -> Option<&Entry<R, H>> {
        self.entries.get(id).filter(|e| e.is_ready())
    }

    fn ready_mut(&mut self, id: &LayerId) -> Option<&mut Entry<R, H>> {
        self.entries.get_mut(id).filter(|e| e.is_ready())
    }
}

/// A create in progress. Dropped without [`Creating::commit`], the id is free again.
pub struct Creating<R: Clone, H> {
    layers: Layers<R, H>,
    id: LayerId,
    parent_record: Option<R>,
    done: bool,
}

impl<R: Clone, H> Creating<R, H> {
    /// The parent's record, read when the create began.
    pub fn parent_record(&self) -> Option<&R> {
        self.parent_record.as_ref()
    }

    /// The layer is complete (durable on disk): it becomes visible with `record`.
    pub fn commit(mut self, record: R) {
        let mut index = self.layers.lock();
        if let Some(e) = index.entries.get_mut(&self.id) {
            e.record = Some(record);
            e.state = State::Ready;
        }
        self.done = true;
    }
}

impl<R: Clone, H> Drop for Creating<R, H> {
    fn drop(&mut self) {
        if !self.done {
            self.layers.forget(&self.id);
        }
    }
}

/// A removal in progress. Dropped without [`Removing::done`], the layer is ready again.
pub struct Removing<R: Clone, H> {
    layers: Layers<R, H>,
    id: LayerId,
    record: Option<R>,
    done: bool,
}

impl<R: Clone, H> Removing<R, H> {
    pub fn record(&self) -> Option<&R> {
        self.record.as_ref()
    }

    /// The layer is gone from disk (at least renamed out of its place): forget it.
    pub fn done(mut self) {
        self.layers.forget(&self.id);
        self.done = true;
    }
}

impl<R: Clone, H> Drop for Removing<R, H> {
    fn drop(&mut self) {
        if !self.done {
            let mut index = self.layers.lock();
            if let Some(e) = index.entries.get_mut(&self.id) {
                e.state = State::Ready;
            }
        }
    }
}
