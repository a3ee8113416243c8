#!/usr/bin/env bash
# Benchmark (not a test): strata-snapshotter on overlay2 against containerd's built-in
# overlayfs snapshotter, same containerd, same run. Needs root, containerd 1.6 + ctr.
#   bench/snapshotter.sh [target/release/strata-snapshotter] [IMAGE.tar]
# Measures `ctr images import` (unpack) of IMAGE (default: the three.tar fixture) and
# `ctr snapshots prepare` + `mounts` + `rm` on a 1-deep and a 100-deep chain.
set -euo pipefail
bin=${1:-target/release/strata-snapshotter}
image=${2:-/work/shared/fixtures/three.tar}
dir=$(mktemp -d /tmp/strata-snapbench.XXXX)
cleanup() {
  [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null || true
  [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
  grep -o " $dir[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
"$bin" --driver overlay2 --root "$dir/snap" --socket "$dir/snap.sock" 2>"$dir/snap.log" & spid=$!
cat > "$dir/containerd.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[proxy_plugins]
  [proxy_plugins.strata-overlay2]
    type = "snapshot"
    address = "$dir/snap.sock"
TOML
unshare --net containerd --config "$dir/containerd.toml" 2>"$dir/containerd.log" & cpid=$!
ctr() { command ctr -a "$dir/containerd.sock" -n bench "$@"; }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

import() {  # snapshotter -> seconds
  local t0 t1; t0=$(now); ctr images import --snapshotter "$1" "$image" >/dev/null; t1=$(now)
  ctr images rm --sync $(ctr images ls -q) >/dev/null; secs "$t0" "$t1"
}
chain() {  # snapshotter depth -> key of the top
  local parent=""
  for i in $(seq "$2"); do
    ctr snapshots --snapshotter "$1" prepare "c$2-$i-a" $parent >/dev/null
    ctr snapshots --snapshotter "$1" commit "c$2-$i" "c$2-$i-a"
    parent="c$2-$i"
  done
  echo "$parent"
}
cycle() {  # snapshotter parent runs -> seconds per prepare+mounts+rm
  local t0 t1; t0=$(now)
  for i in $(seq "$3"); do
    ctr snapshots --snapshotter "$1" prepare "p$i" "$2" >/dev/null
    ctr snapshots --snapshotter "$1" mounts /mnt "p$i" >/dev/null
    ctr snapshots --snapshotter "$1" rm "p$i"
  done
  t1=$(now); echo "($t1 - $t0) / $3" | bc -l | cut -c1-6
}
printf '%-34s %12s %12s %8s\n' "measure" "overlayfs" "strata" "ratio"
report() { printf '%-34s %12s %12s %8s\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l | cut -c1-5)"; }
report "import $(basename "$image") (s)" "$(import overlayfs)" "$(import strata-overlay2)"
for depth in 1 100; do
  o=$(cycle overlayfs "$(chain overlayfs "$depth")" 20)
  s=$(cycle strata-overlay2 "$(chain strata-overlay2 "$depth")" 20)
  report "prepare+mounts+rm, $depth-deep (s)" "$o" "$s"
done
