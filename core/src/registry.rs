//! The driver registry: names to constructors, and the priority order used when no driver is
//! named. Built-in drivers register in the runtime (core depends on no driver); plugins are
//! looked up when no built-in has the name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::layer::LayerDriver;
use crate::options::StorageOpts;

/// What a driver is constructed with.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The driver's own directory: `<data-root>/<driver-name>`.
    pub root: PathBuf,
    /// Daemon-wide `--storage-opt`s.
    pub options: StorageOpts,
}

pub type DriverInit =
    Arc<dyn Fn(DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> + Send + Sync>;

/// Layer drivers by name, in priority order for automatic selection.
#[derive(Default, Clone)]
pub struct DriverRegistry {
    inits: BTreeMap<String, DriverInit>,
    priority: Vec<String>,
}

impl DriverRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a driver; drivers registered earlier are preferred by [`Self::priority`].
    pub fn register(&mut self, name: &str, init: DriverInit) {
        if self.inits.insert(name.to_string(), init).is_none() {
            self.priority.push(name.to_string());
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.priority.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.inits.contains_key(name)
    }

    /// Builds the named driver. An unknown name is refused with the list of known ones.
    pub async fn open(&self, name: &str, config: DriverConfig) -> Result<Arc<dyn LayerDriver>> {
        let init = self.inits.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown storage driver {name:?} (built-in drivers: {})",
                self.priority.join(", ")
            ))
        })?;
        init(config).await
    }
}
