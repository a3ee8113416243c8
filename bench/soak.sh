#!/usr/bin/env bash
# Soak (issue 19): 4 clients drive one stratad for MINUTES minutes per driver (default 10),
# each in a loop creating, starting, logging, committing and removing containers and volumes
# through the stock docker CLI. Afterwards every client's work is gone, and the daemon's RSS,
# open descriptors, the mounts under its data root, the container cgroups and the files
# under its data root must be back at their starting counts (RSS within TOLERANCE_KB, default
# 8192, for allocator caches), with no failed request. Not part of CI's run (it takes
# 4 x MINUTES); one command:
#
#   bash bench/soak.sh                     (as root; all four drivers)
#   MINUTES=2 DRIVERS="overlay2 vfs" bash bench/soak.sh
#   STRATAD=path/to/stratad skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
DRIVERS=${DRIVERS:-"overlay2 vfs btrfs fuse-overlay"}
TOLERANCE_KB=${TOLERANCE_KB:-8192}
CLIENTS=4
FIXTURES=${STRATA_FIXTURES:-$PWD/../shared/fixtures}
if [ -z "${STRATAD:-}" ]; then
  cargo build --release --bin stratad >/dev/null
  STRATAD=${CARGO_TARGET_DIR:-$PWD/target}/release/stratad
fi
work=$(mktemp -d /var/tmp/strata-soak.XXXXXX)
daemon_pid=
loopdev=
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2>/dev/null || true
  fi
  grep -F " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

dk() { DOCKER_CONFIG="$work/cli" docker -H "unix://$work/s.sock" "$@"; }

# The counts that must come back: rss_kb fds mounts cgroups files.
snapshot() {
  local root=$1
  local rss fds mounts cgroups files
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
  fds=$(ls "/proc/$daemon_pid/fd" | wc -l)
  mounts=$(grep -cF " $root" /proc/self/mountinfo || true)
  # Cgroups of this daemon's containers (ids the clients were given), in every hierarchy:
  # other daemons on the machine have cgroups under strata/ too.
  find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d -path '*/strata/*' 2>/dev/null | sort >"$work/cgroups.now"
  touch "$work/ids"
  cgroups=$(grep -Ff "$work/ids" "$work/cgroups.now" | wc -l)
  files=$(find "$root" -xdev 2>/dev/null | wc -l)
  echo "$rss $fds $mounts $cgroups $files"
}

# One client's loop: every operation counted; a failure is logged with its output.
client() {
  local n=$1 deadline=$2 ops=0 failed=0 i=0
  local log="$work/client-$n.log"
  run() {
    ops=$((ops + 1))
    if ! out=$(dk "$@" 2>&1); then
      failed=$((failed + 1))
      echo "FAILED: docker $* -> $out" >>"$log"
    elif [ "$1" = run ]; then
      echo "$out" >>"$work/ids"
    fi
  }
  while [ "$(date +%s)" -lt "$deadline" ]; do
    i=$((i + 1))
    local c="soak-$n-$i" v="soakvol-$n-$i" img="soakimg-$n-$i"
    run volume create "$v"
    run run -d --name "$c" -v "$v:/data" --pull never bb sh -c "echo $c > /data/f; echo $c; dd if=/dev/zero of=/big bs=64k count=16 2>/dev/null; sleep 0.2"
    run wait "$c"
    run logs "$c"
    run commit "$c" "$img"
    run rm -f "$c"
    run rmi "$img"
    run volume rm "$v"
  done
  echo "$ops $failed" >"$work/client-$n.result"
}

run_clients() {
  local deadline=$(($(date +%s) + $1)) pids=()
  for n in $(seq 1 $CLIENTS); do
    client "$n" "$deadline" &
    pids+=($!)
  done
  wait "${pids[@]}"
}

soak_driver() {
  local driver=$1 root
  case $driver in
    btrfs)
      truncate -s 4G "$work/btrfs.img"
      mkfs.btrfs -q "$work/btrfs.img"
      loopdev=$(losetup --find --show "$work/btrfs.img")
      mkdir -p "$work/btrfs"
      mount "$loopdev" "$work/btrfs"
      root=$work/btrfs/root
      ;;
    *) root=$work/root-$driver ;;
  esac
  "$STRATAD" --data-root "$root" --exec-root "$work/exec-$driver" --pidfile "$work/pid" \
    -H "unix://$work/s.sock" --storage-driver "$driver" 2>"$work/stratad-$driver.log" &
  daemon_pid=$!
  for _ in $(seq 1 200); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
  dk load -i "$FIXTURES/bb.tar" >/dev/null
  # A warm-up with the same clients (WARMUP seconds, default 30), so what stays by design
  # (allocator arenas, runtime worker threads, caches) is part of the baseline.
  run_clients $((${WARMUP:-30}))
  rm -f "$work"/client-* "$work/ids"
  sleep 2
  read -r rss0 fds0 mounts0 cgroups0 files0 < <(snapshot "$root")
  # RSS every 30 s, to tell a plateau from growth.
  (while kill -0 "$daemon_pid" 2>/dev/null; do
    awk '/^VmRSS/ {printf "%s ", $2}' "/proc/$daemon_pid/status" >>"$work/rss-series"
    sleep 30
  done) &
  local sampler=$!
  run_clients $((MINUTES * 60))
  kill "$sampler" 2>/dev/null || true
  sleep 2
  read -r rss1 fds1 mounts1 cgroups1 files1 < <(snapshot "$root")
  local ops=0 failed=0
  for n in $(seq 1 $CLIENTS); do
    read -r o f <"$work/client-$n.result"
    ops=$((ops + o)); failed=$((failed + f))
  done
  local verdict=ok
  [ "$failed" -eq 0 ] || verdict=FAILED
  [ "$fds1" -le "$fds0" ] || verdict=FAILED
  [ "$mounts1" -le "$mounts0" ] || verdict=FAILED
  [ "$cgroups1" -le "$cgroups0" ] || verdict=FAILED
  [ "$files1" -le "$files0" ] || verdict=FAILED
  [ $((rss1 - rss0)) -le "$TOLERANCE_KB" ] || verdict=FAILED
  printf '%-12s %3d min  requests %6d  failed %3d  rss_kb %6d -> %6d  fds %3d -> %3d  mounts %2d -> %2d  cgroups %2d -> %2d  files %5d -> %5d  %s\n' \
    "$driver" "$MINUTES" "$ops" "$failed" "$rss0" "$rss1" "$fds0" "$fds1" "$mounts0" "$mounts1" \
    "$cgroups0" "$cgroups1" "$files0" "$files1" "$verdict"
  cat "$work"/client-*.log 2>/dev/null | head -5 || true
  grep -Ff "$work/ids" "$work/cgroups.now" | head -5 | sed 's/^/  cgroup left: /' || true
  echo "  rss_kb every 30 s: $(cat "$work/rss-series" 2>/dev/null)"
  rm -f "$work/rss-series"
  rm -f "$work"/client-* "$work/ids"
  kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
  [ "$verdict" = ok ]
}

status=0
for driver in $DRIVERS; do
  soak_driver "$driver" || status=1
done
exit $status
