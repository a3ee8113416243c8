#!/usr/bin/env bash
# The btrfs driver benchmark (not a test): create on a 20,000-file / 300 MB parent versus the
# `btrfs subvolume snapshot` command, vfs and cp -a; usage with quotas versus du. Makes its own
# loop filesystems (btrfs and ext4) and removes them. Needs root, btrfs-progs, e2fsprogs.
# Figures and ratios are printed; see drivers/btrfs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec cargo bench -p strata-btrfs --features testing --bench layers "$@"
