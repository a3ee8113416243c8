//! The memory controller: `--memory`, `--memory-swap`, and whether the OOM killer fired.

use std::path::Path;

use strata_core::{Error, Result};

use super::files;
use super::CgroupVersion;

/// Docker refuses limits under 6 MiB: a container that small cannot even start its runtime.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// `--memory` and `--memory-swap` as Docker reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes of RAM; `None` for no limit.
    pub memory: Option<i64>,
    /// Bytes of RAM plus swap; `None` or `0` means "as much swap as memory" (twice `memory`
    /// in total), `-1` unlimited swap. Needs `memory`.
    pub memory_swap: Option<i64>,
}

impl MemoryLimits {
    pub fn validate(&self) -> Result<()> {
        match (self.memory, self.memory_swap) {
            (Some(m), _) if m < MIN_MEMORY => Err(Error::invalid(
                "minimum memory limit allowed is 6MB; raise --memory",
            )),
            (None, Some(s)) if s > 0 => Err(Error::invalid(
                "you should always set the memory limit when using the memoryswap limit",
            )),
            (Some(m), Some(s)) if s > 0 && s < m => Err(Error::invalid(
                "minimum memoryswap limit should be larger than memory limit, see usage",
            )),
            _ => Ok(()),
        }
    }

    /// The memory+swap total (v1 `memsw`): `None` when unlimited.
    fn memory_and_swap(&self) -> Option<i64> {
        let memory = self.memory?;
        match self.memory_swap {
            Some(-1) => None,
            Some(s) if s > 0 => Some(s),
            _ => Some(memory.saturating_mul(2)),
        }
    }
}

pub(crate) fn apply(version: CgroupVersion, dir: &Path, limits: &MemoryLimits) -> Result<()> {
    let Some(memory) = limits.memory else {
        return Ok(());
    };
    let total = limits.memory_and_swap();
    match version {
        CgroupVersion::V1 => {
            // memsw may never be below memory, so the RAM limit goes first.
            files::write(dir, "memory.limit_in_bytes", &memory.to_string())?;
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                files::write(
                    dir,
                    "memory.memsw.limit_in_bytes",
                    &total.unwrap_or(-1).to_string(),
                )?;
            } else {
                tracing::warn!("swap accounting is off on this host; --memory-swap not applied");
            }
        }
        CgroupVersion::V2 => {
            files::write(dir, "memory.max", &memory.to_string())?;
            let swap = total.map(|t| (t - memory).to_string());
            files::write(dir, "memory.swap.max", swap.as_deref().unwrap_or("max"))?;
        }
    }
    Ok(())
}

/// How many times the OOM killer killed a process of this cgroup.
pub(crate) fn oom_kills(version: CgroupVersion, dir: &Path) -> Result<u64> {
    match version {
        CgroupVersion::V1 => {
            let text = files::read(dir, "memory.oom_control")?;
            if let Some(n) = files::keyed_value(&text, "oom_kill") {
                return Ok(n);
            }
            // Kernels before 4.13 have no oom_kill counter: a hit limit is the best sign.
            Ok(u64::from(files::read_u64(dir, "memory.failcnt")? > 0))
        }
        CgroupVersion::V2 => {
            let text = files::read(dir, "memory.events")?;
            Ok(files::keyed_value(&text, "oom_kill").unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory: Option<i64>, memory_swap: Option<i64>) -> MemoryLimits {
        MemoryLimits {
            memory,
            memory_swap,
        }
    }

    #[test]
    fn validation_follows_docker() {
        assert!(limits(Some(1 << 20), None).validate().is_err());
        assert!(limits(None, Some(64 << 20)).validate().is_err());
        assert!(limits(Some(64 << 20), Some(32 << 20)).validate().is_err());
        assert!(limits(Some(64 << 20), Some(-1)).validate().is_ok());
        assert!(limits(Some(64 << 20), Some(64 << 20)).validate().is_ok());
    }

    #[test]
    fn v1_writes_memory_then_twice_as_much_memsw_by_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.memsw.limit_in_bytes"), "").unwrap();
        apply(CgroupVersion::V1, dir.path(), &limits(Some(32 << 20), None)).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), (32 << 20).to_string());
        assert_eq!(read("memory.memsw.limit_in_bytes"), (64 << 20).to_string());
    }

    #[test]
    fn v2_writes_swap_as_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        let l = limits(Some(32 << 20), Some(48 << 20));
        apply(CgroupVersion::V2, dir.path(), &l).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (32 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (16 << 20).to_string());
        apply(
            CgroupVersion::V2,
            dir.path(),
            &limits(Some(32 << 20), Some(-1)),
        )
        .unwrap();
        assert_eq!(read("memory.swap.max"), "max");
    }

    #[test]
    fn oom_kills_are_read_from_each_version_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(CgroupVersion::V1, dir.path()).unwrap(), 1);
        assert_eq!(oom_kills(CgroupVersion::V2, dir.path()).unwrap(), 2);
    }
}
