//! The v1 devices controller: Docker's default device allowlist, so a container with
//! CAP_MKNOD can create device nodes but not open any but the harmless ones (it cannot read
//! the host's disks through a `mknod`). cgroup v2 has no devices file; it needs an eBPF
//! program, which we do not load (see the report).

use std::path::Path;

use strata_core::Result;

use super::files;

/// Docker's default rules (moby `oci/defaults.go` + `oci/devices_linux.go`).
pub const DEFAULT_ALLOW: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // tun
];

/// Denies everything, then allows Docker's defaults.
pub(crate) fn apply_v1(dir: &Path) -> Result<()> {
    files::write(dir, "devices.deny", "a")?;
    for rule in DEFAULT_ALLOW {
        files::write(dir, "devices.allow", rule)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_deny_all_then_the_allowlist() {
        let d = tempfile::tempdir().unwrap();
        apply_v1(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("devices.deny")).unwrap(),
            "a"
        );
        // A plain file keeps only the last write; the real file appends each rule.
        assert_eq!(
            std::fs::read_to_string(d.path().join("devices.allow")).unwrap(),
            "c 10:200 rwm"
        );
    }
}
