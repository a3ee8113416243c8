//! Worked examples for driver authors (docs/writing-a-driver.md): a layer-driver plugin that
//! serves the built-in vfs driver, and a volume plugin whose volumes are loop-mounted ext4
//! images with a size limit, which Docker's local driver cannot do.

pub mod loopvol;

/// Reads `--socket PATH` (and other `--key value` flags) from the command line.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}
