//! Reading and writing cgroup control files, with the path in every error.

use std::path::Path;

use strata_core::{Error, IoContext, Result};

/// Writes one value to a control file. Control files take one write per value, so this is a
/// plain `write` (no temp file + rename, which a cgroup filesystem would refuse anyway).
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).ctx("write cgroup file", &path)
}

/// Reads a control file as text.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).ctx("read cgroup file", &path)
}

/// Reads a control file holding one unsigned number.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let text = read(dir, file)?;
    text.trim().parse().map_err(|_| {
        Error::Other(format!(
            "{}: expected a number, found {:?}",
            dir.join(file).display(),
            text.trim()
        ))
    })
}

/// Finds `key N` in a flat keyed file (memory.events, memory.oom_control, cpu.stat).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

/// The pids listed in a cgroup.procs file.
pub(crate) fn read_pids(dir: &Path) -> Result<Vec<i32>> {
    Ok(read(dir, "cgroup.procs")?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_found_by_exact_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value(text, "under_oom"), Some(0));
        assert_eq!(keyed_value(text, "oom"), None);
    }
}
