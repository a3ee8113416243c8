#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, the whole test suite (the conformance suite on
# every driver included), and a check that no driver was left out.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# Every driver that must pass the conformance suite. A driver missing from the test list is a
# failure, never a silent skip.
required_drivers=(vfs overlay2 overlay2-naive btrfs fuse-overlay local plugin-vfs plugin-loopvol)
listed=$(cargo nextest list -p strata-conformance --message-format oneline 2>/dev/null || true)
for d in "${required_drivers[@]}"; do
  if ! grep -q " ${d}::" <<<"$listed"; then
    echo "test.sh: the conformance suite lists no case for driver '$d'" >&2
    exit 1
  fi
done

cargo nextest run --workspace --no-fail-fast "$@"

# The example plugins as processes of their own, under the conformance binary: the suite, the
# protocol client and the server proven together over real sockets. Every case's layers and
# mounts live in temporary homes the binary removes; the loopvol plugin's root is below
# $plugin_dir, which the trap unmounts and deletes whatever happens.
plugin_started=$SECONDS
cargo build -p strata-plugin-examples -p strata-conformance --bins
bin=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)/debug
plugin_dir=$(mktemp -d /tmp/strata-ci-plugins.XXXXXX)
plugin_pids=()
stop_plugins() {
  for pid in "${plugin_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${plugin_pids[@]}" 2>/dev/null || true
  awk -v d="$plugin_dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf "$plugin_dir"
}
trap stop_plugins EXIT
"$bin/strata-vfs-plugin" --socket "$plugin_dir/vfs-plugin.sock" 2>"$plugin_dir/vfs-plugin.log" &
plugin_pids+=($!)
"$bin/strata-loopvol-plugin" --socket "$plugin_dir/loopvol.sock" --root "$plugin_dir/loopvol" \
  2>"$plugin_dir/loopvol.log" &
plugin_pids+=($!)
for sock in vfs-plugin loopvol; do
  for _ in $(seq 100); do [ -S "$plugin_dir/$sock.sock" ] && break; sleep 0.1; done
done
plugins_ok=true
"$bin/strata-conformance" --graphdriver-plugin "$plugin_dir/vfs-plugin.sock" || plugins_ok=false
"$bin/strata-conformance" --volume-plugin "$plugin_dir/loopvol.sock" || plugins_ok=false
echo "test.sh: the conformance suite on the example plugins took $((SECONDS - plugin_started))s"
if [ "$plugins_ok" != true ]; then
  tail -n 20 "$plugin_dir"/*.log >&2
  echo "test.sh: the conformance suite failed on an example plugin" >&2
  exit 1
fi
