//! The snapshot metadata: containerd's keys, kinds, parents and labels, and which driver layer
//! each snapshot owns, in one redb file. Every change is one write transaction, made durable at
//! commit, so a kill -9 leaves either the old or the new state.
//!
//! Driver layers are created and removed outside a transaction, so every layer that may exist
//! in the driver without a snapshot owning it is first written to `pending` (before the driver
//! creates it, or in the same transaction that drops its snapshot) and struck off once the
//! driver step is done. Recovery removes every pending layer no snapshot owns.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use strata_core::LayerId;

use crate::error::{Result, SnapError, StoreResult};

/// Snapshot key → JSON [`Record`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Committed snapshot key → how many snapshots name it as parent.
const CHILDREN: TableDefinition<&str, u64> = TableDefinition::new("children");
/// Driver layers that may exist without an owner (see the module comment).
const PENDING: TableDefinition<&str, u8> = TableDefinition::new("pending");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    /// containerd's name, as filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub parent: Option<String>,
    /// The driver layer this snapshot owns. A view of a parent owns none: it mounts the
    /// parent's layer read-only, so it never copies.
    pub layer: Option<LayerId>,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

pub struct Meta {
    db: Database,
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|source| SnapError::Record {
        key: key.to_string(),
        source,
    })
}

fn encode(key: &str, r: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(r).map_err(|source| SnapError::Record {
        key: key.to_string(),
        source,
    })
}

impl Meta {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).store()?;
        let tx = db.begin_write().store()?;
        tx.open_table(SNAPSHOTS).store()?;
        tx.open_table(CHILDREN).store()?;
        tx.open_table(PENDING).store()?;
        tx.commit().store()?;
        Ok(Self { db })
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let tx = self.db.begin_read().store()?;
        let t = tx.open_table(SNAPSHOTS).store()?;
        let found = t.get(key).store()?;
        found.map(|v| decode(key, v.value())).transpose()
    }

    pub fn list(&self) -> Result<Vec<(String, Record)>> {
        let tx = self.db.begin_read().store()?;
        let t = tx.open_table(SNAPSHOTS).store()?;
        let mut out = Vec::new();
        for row in t.iter().store()? {
            let (k, v) = row.store()?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn pending(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read().store()?;
        let t = tx.open_table(PENDING).store()?;
        let mut out = Vec::new();
        for row in t.iter().store()? {
            out.push(row.store()?.0.value().to_string());
        }
        Ok(out)
    }

    /// Records that `layer` is about to be created in (or removed from) the driver.
    pub fn add_pending(&self, layer: &LayerId) -> Result<()> {
        self.write(|tx| {
            tx.open_table(PENDING)
                .store()?
                .insert(layer.as_str(), 0)
                .store()?;
            Ok(())
        })
    }

    pub fn drop_pending(&self, layer: &str) -> Result<()> {
        self.write(|tx| {
            tx.open_table(PENDING).store()?.remove(layer).store()?;
            Ok(())
        })
    }

    /// Checks that `key` is free and `parent` (if any) is committed; returns the parent's
    /// record.
    pub fn check_new(&self, key: &str, parent: Option<&str>) -> Result<Option<Record>> {
        if self.get(key)?.is_some() {
            return Err(SnapError::AlreadyExists(key.to_string()));
        }
        let Some(parent) = parent else {
            return Ok(None);
        };
        let record = self
            .get(parent)?
            .ok_or_else(|| SnapError::NotFound(parent.to_string()))?;
        if record.kind != Kind::Committed {
            return Err(SnapError::InvalidArgument(format!(
                "parent {parent:?} is not a committed snapshot"
            )));
        }
        Ok(Some(record))
    }

    /// Inserts a new active or view snapshot and strikes its layer off `pending`, atomically.
    pub fn insert(&self, key: &str, record: &Record) -> Result<()> {
        let bytes = encode(key, record)?;
        self.write(|tx| {
            let mut snaps = tx.open_table(SNAPSHOTS).store()?;
            if snaps.get(key).store()?.is_some() {
                return Err(SnapError::AlreadyExists(key.to_string()));
            }
            if let Some(parent) = &record.parent {
                let p = snaps
                    .get(parent.as_str())
                    .store()?
                    .map(|v| decode(parent, v.value()))
                    .transpose()?;
                if p.map(|p| p.kind) != Some(Kind::Committed) {
                    return Err(SnapError::NotFound(parent.clone()));
                }
                adjust_children(tx, parent, 1)?;
            }
            snaps.insert(key, bytes.as_slice()).store()?;
            if let Some(layer) = &record.layer {
                tx.open_table(PENDING)
                    .store()?
                    .remove(layer.as_str())
                    .store()?;
            }
            Ok(())
        })
    }

    /// Turns active `key` into committed `name`, keeping its layer (no data moves).
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        self.write(|tx| {
            let mut snaps = tx.open_table(SNAPSHOTS).store()?;
            let mut record = match snaps.get(key).store()? {
                Some(v) => decode(key, v.value())?,
                None => return Err(SnapError::NotFound(key.to_string())),
            };
            if record.kind != Kind::Active {
                return Err(SnapError::FailedPrecondition(format!(
                    "snapshot {key:?} is not active"
                )));
            }
            if snaps.get(name).store()?.is_some() {
                return Err(SnapError::AlreadyExists(name.to_string()));
            }
            snaps.remove(key).store()?;
            // A new snapshot as far as containerd is concerned: created and updated now, the
            // same instant (its testsuite's Update case checks Created == Updated).
            record.kind = Kind::Committed;
            record.labels = labels;
            record.created = SystemTime::now();
            record.updated = record.created;
            snaps
                .insert(name, encode(name, &record)?.as_slice())
                .store()?;
            Ok(())
        })
    }

    /// Drops `key` (refused while it has children) and, in the same transaction, puts its
    /// layer on `pending` for the driver removal that follows.
    pub fn remove(&self, key: &str) -> Result<Record> {
        self.write(|tx| {
            let mut snaps = tx.open_table(SNAPSHOTS).store()?;
            let record = match snaps.remove(key).store()? {
                Some(v) => decode(key, v.value())?,
                None => return Err(SnapError::NotFound(key.to_string())),
            };
            let children = tx
                .open_table(CHILDREN)
                .store()?
                .get(key)
                .store()?
                .map(|v| v.value());
            if children.unwrap_or(0) > 0 {
                return Err(SnapError::FailedPrecondition(format!(
                    "cannot remove snapshot {key:?}: it has children"
                )));
            }
            if let Some(parent) = &record.parent {
                adjust_children(tx, parent, -1)?;
            }
            if let Some(layer) = &record.layer {
                tx.open_table(PENDING)
                    .store()?
                    .insert(layer.as_str(), 0)
                    .store()?;
            }
            Ok(record)
        })
    }

    /// Applies `change` to `key`'s record and stores it; returns the new record.
    pub fn update(
        &self,
        key: &str,
        change: impl FnOnce(&mut Record) -> Result<()>,
    ) -> Result<Record> {
        self.write(|tx| {
            let mut snaps = tx.open_table(SNAPSHOTS).store()?;
            let mut record = match snaps.get(key).store()? {
                Some(v) => decode(key, v.value())?,
                None => return Err(SnapError::NotFound(key.to_string())),
            };
            change(&mut record)?;
            record.updated = SystemTime::now();
            snaps
                .insert(key, encode(key, &record)?.as_slice())
                .store()?;
            Ok(record)
        })
    }

    /// One write transaction: committed if `f` succeeds, else rolled back (dropped).
    fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write().store()?;
        let out = f(&tx)?;
        tx.commit().store()?;
        Ok(out)
    }
}

fn adjust_children(tx: &WriteTransaction, parent: &str, delta: i64) -> Result<()> {
    let mut t = tx.open_table(CHILDREN).store()?;
    let now = t.get(parent).store()?.map(|v| v.value()).unwrap_or(0);
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        t.remove(parent).store()?;
    } else {
        t.insert(parent, next).store()?;
    }
    Ok(())
}
