//! `strata-snapshotter df`: per driver, the on-disk bytes of each committed image chain (a
//! committed snapshot no committed snapshot builds on, with all its ancestors) and of each
//! active snapshot, read through the Snapshots API of the running snapshotters, so the same
//! images on two drivers compare side by side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_snapshots::tonic::Status;

use crate::api::snapshots::v1 as api;
use crate::client::{connect, Client};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub driver: String,
    /// `chain` (committed, ancestors included) or `active`.
    pub kind: &'static str,
    pub snapshot: String,
    pub layers: usize,
    pub bytes: i64,
    pub inodes: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DfError {
    #[error("connecting to {0}: {1}")]
    Connect(PathBuf, containerd_snapshots::tonic::transport::Error),
    #[error("{0}: {1}")]
    Call(PathBuf, Box<Status>),
    #[error("reading {0}: {1}")]
    Dir(PathBuf, std::io::Error),
}

/// The snapshotter sockets in `dir` (`strata-DRIVER.sock`), by driver name.
pub fn sockets_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, DfError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DfError::Dir(dir.into(), e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DfError::Dir(dir.into(), e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(driver) = name
            .strip_prefix("strata-")
            .and_then(|n| n.strip_suffix(".sock"))
        {
            found.push((driver.to_string(), path.clone()));
        }
    }
    found.sort();
    Ok(found)
}

/// Rows for one snapshotter.
pub async fn rows(driver: &str, socket: &Path) -> Result<Vec<Row>, DfError> {
    let call = |e: Status| DfError::Call(socket.into(), Box::new(e));
    let mut client = connect(socket)
        .await
        .map_err(|e| DfError::Connect(socket.into(), e))?;
    let req = api::ListSnapshotsRequest {
        snapshotter: String::new(),
        filters: vec![],
    };
    let mut stream = client.list(req).await.map_err(call)?.into_inner();
    let mut infos = HashMap::new();
    while let Some(batch) = stream.message().await.map_err(call)? {
        infos.extend(batch.info.into_iter().map(|i| (i.name.clone(), i)));
    }
    let committed = api::Kind::Committed as i32;
    let has_committed_child = |name: &str| {
        infos
            .values()
            .any(|i| i.kind == committed && i.parent == name)
    };
    let mut out = Vec::new();
    for info in infos.values() {
        let (kind, chain) = if info.kind == committed && !has_committed_child(&info.name) {
            ("chain", ancestry(&infos, &info.name))
        } else if info.kind == api::Kind::Active as i32 {
            ("active", vec![info.name.clone()])
        } else {
            continue;
        };
        let (mut bytes, mut inodes) = (0, 0);
        for key in &chain {
            let u = usage(&mut client, key).await.map_err(call)?;
            bytes += u.size;
            inodes += u.inodes;
        }
        let (snapshot, layers) = (info.name.clone(), chain.len());
        out.push(Row {
            driver: driver.into(),
            kind,
            snapshot,
            layers,
            bytes,
            inodes,
        });
    }
    out.sort_by(|a, b| (a.kind, &a.snapshot).cmp(&(b.kind, &b.snapshot)));
    Ok(out)
}

fn ancestry(infos: &HashMap<String, api::Info>, top: &str) -> Vec<String> {
    let mut chain = vec![top.to_string()];
    while let Some(parent) = infos.get(chain.last().unwrap()).map(|i| i.parent.clone()) {
        if parent.is_empty() || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
    }
    chain
}

async fn usage(client: &mut Client, key: &str) -> Result<api::UsageResponse, Status> {
    let req = api::UsageRequest {
        snapshotter: String::new(),
        key: key.into(),
    };
    Ok(client.usage(req).await?.into_inner())
}

/// A table of `rows`, bytes exact so drivers compare.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<14} {:<7} {:>6} {:>14} {:>9}  {}\n",
        "DRIVER", "KIND", "LAYERS", "BYTES", "INODES", "SNAPSHOT"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<14} {:<7} {:>6} {:>14} {:>9}  {}\n",
            r.driver, r.kind, r.layers, r.bytes, r.inodes, r.snapshot
        ));
    }
    out
}
