#!/usr/bin/env bash
# `GET /system/df` against stratad and Docker's dockerd on the same data: 100 exited
# containers that each wrote 1 MB, and 50 volumes of 1 MB (issue 22 item 2: at most 0.1x of
# Docker's time). Both daemons run on one dedicated, journaled ext4 image (loop-mounted; see
# bench/engine.sh for why not the VM's root ext4), on overlay2; dockerd runs inside
# `unshare --net` with its own data root, exec root and socket, and every `docker run` uses
# `--pull never`. The request is timed at the API (curl over the unix socket, total time),
# alternating between the daemons, after one warm-up each; the median of REPS (20) is shown.
#
#   bash bench/df.sh            (as root; builds a release stratad unless STRATAD is set)
#   STRATAD=path/to/stratad REPS=20 CONTAINERS=100 VOLUMES=50 bash bench/df.sh
#
# Everything (daemons, their containerd, mounts, the image and its loop device) is stopped
# and removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${STRATA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
REPS=${REPS:-20} CONTAINERS=${CONTAINERS:-100} VOLUMES=${VOLUMES:-50}
DOCKER=${DOCKER_CLI:-/usr/local/bin/docker}
DOCKERD=$(command -v dockerd) || { echo "dockerd is not installed" >&2; exit 1; }
if [ -z "${STRATAD:-}" ]; then
  cargo build --release -p strata-runtime --bin stratad >/dev/null
  STRATAD=${CARGO_TARGET_DIR:-$PWD/target}/release/stratad
fi

work=$(mktemp -d /var/tmp/strata-dfbench.XXXXXX)
pids=()
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
stop_daemon() { # pid: TERM, then KILL, then whatever it left (containerd, shims)
  local p=$1 kids
  kids=$(descendants "$p")
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  wait "$p" 2>/dev/null || true
}
cleanup() {
  set +e
  for p in "${pids[@]}"; do stop_daemon "$p"; done
  grep -F " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"; rm -f "$work.img"
}
trap cleanup EXIT INT TERM
truncate -s 4G "$work.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work.img"
mount -o loop "$work.img" "$work"

declare -A SOCK PID
D() { local e=$1; shift; "$DOCKER" -H "unix://${SOCK[$e]}" "$@"; }
wait_ping() {
  for _ in $(seq 1 300); do
    D "$1" version >/dev/null 2>&1 && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start; its log:" >&2; tail -20 "$work/$1/log" >&2; exit 1
}
mkdir -p "$work/strata" "$work/docker"
"$STRATAD" --data-root "$work/strata/data" --exec-root "$work/strata/exec" \
  --pidfile "$work/strata/pid" -H "unix://$work/strata/s.sock" --storage-driver overlay2 \
  2>"$work/strata/log" &
PID[strata]=$!; pids+=($!); SOCK[strata]=$work/strata/s.sock
wait_ping strata
unshare --net "$DOCKERD" --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
  -H "unix://$work/docker/d.sock" --pidfile "$work/docker/pid" --storage-driver overlay2 \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --containerd-namespace strata-dfbench --containerd-plugins-namespace strata-dfbench-plugins \
  >"$work/docker/log" 2>&1 &
PID[docker]=$!; pids+=($!); SOCK[docker]=$work/docker/d.sock
wait_ping docker

for e in strata docker; do
  echo "setting up $e: $CONTAINERS containers, $VOLUMES volumes" >&2
  D "$e" load -i "$fixtures/bb.tar" >/dev/null
  for i in $(seq 1 "$VOLUMES"); do
    D "$e" run --rm --pull never --network none -v "v$i:/data" bb \
      sh -c 'head -c 1048576 /dev/urandom > /data/f' >/dev/null
  done
  for i in $(seq 1 "$CONTAINERS"); do
    D "$e" run --pull never --network none bb sh -c 'head -c 1048576 /dev/urandom > /f' >/dev/null
  done
done
sync

df_time() { # engine: seconds of one GET /system/df
  curl -s -o /dev/null -w '%{time_total}\n' --unix-socket "${SOCK[$1]}" http://d/system/df
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
for e in strata docker; do df_time "$e" >/dev/null; done
for _ in $(seq 1 "$REPS"); do
  for e in strata docker; do df_time "$e" >>"$work/$e.samples"; done
done
s=$(median <"$work/strata.samples") d=$(median <"$work/docker.samples")
for e in strata docker; do
  echo "$e: $(D "$e" system df | tr -s ' ' | tr '\n' ';')"
done
awk -v s="$s" -v d="$d" 'BEGIN {
  printf "GET /system/df, median of %d: stratad %.1f ms, dockerd %.1f ms, ratio %.2fx (stratad/dockerd)\n",
    '"$REPS"', s * 1000, d * 1000, s / d }'
