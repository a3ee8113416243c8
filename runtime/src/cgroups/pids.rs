//! The pids controller: `--pids-limit`.

use std::path::Path;

use strata_core::Result;

use super::files;

/// Writes `pids.max` (same file name on v1 and v2). Docker treats 0 and negative as unlimited.
pub(crate) fn apply(dir: &Path, limit: Option<i64>) -> Result<()> {
    match limit {
        Some(n) if n > 0 => files::write(dir, "pids.max", &n.to_string()),
        Some(_) => files::write(dir, "pids.max", "max"),
        None => Ok(()),
    }
}

/// How many tasks the cgroup holds now.
pub(crate) fn current(dir: &Path) -> Result<u64> {
    files::read_u64(dir, "pids.current")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_unlimited() {
        let d = tempfile::tempdir().unwrap();
        apply(d.path(), Some(20)).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("pids.max")).unwrap(),
            "20"
        );
        apply(d.path(), Some(-1)).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("pids.max")).unwrap(),
            "max"
        );
    }
}
