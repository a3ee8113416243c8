//! Links libbtrfsutil (Debian: libbtrfsutil-dev) and records the header version we build
//! against, shown by `status()` as the Build Version.

use std::path::Path;

fn main() {
    println!("cargo:rustc-link-lib=btrfsutil");
    let header = Path::new("/usr/include/btrfsutil.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(header).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; install the libbtrfsutil headers (apt-get install libbtrfsutil-dev)",
            header.display()
        )
    });
    let part = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".to_string())
    };
    println!(
        "cargo:rustc-env=STRATA_BTRFSUTIL_HEADER_VERSION={}.{}.{}",
        part("BTRFS_UTIL_VERSION_MAJOR"),
        part("BTRFS_UTIL_VERSION_MINOR"),
        part("BTRFS_UTIL_VERSION_PATCH")
    );
}
