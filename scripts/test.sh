#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, the whole test suite (the conformance suite on
# every driver included), and a check that no driver was left out.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Every driver that must pass the conformance suite. A driver missing from the test list is a
# failure, never a silent skip.
required_drivers=(vfs overlay2 overlay2-naive btrfs fuse-overlay local)
listed=$(cargo nextest list -p strata-conformance --message-format oneline 2>/dev/null || true)
for d in "${required_drivers[@]}"; do
  if ! grep -q " ${d}::" <<<"$listed"; then
    echo "test.sh: the conformance suite lists no case for driver '$d'" >&2
    exit 1
  fi
done

cargo nextest run --workspace --no-fail-fast "$@"
