#!/usr/bin/env bash
# Engine benchmark: the stock docker CLI against stratad and, where installed, against Docker's
# own daemon (dockerd from the docker.io package, started inside `unshare --net` on its own data
# root, exec root and socket, with --bridge=none --iptables=false; every run uses --pull never),
# on the same images, in one run. Prints medians and ratios (Docker / Strata: above 1 means
# Strata is faster, or for memory smaller).
#
#   bash bench/engine.sh [DRIVER...]      (default: overlay2 vfs; run as root)
#   STRATAD=path/to/stratad skips the release build; REPS_RUN, REPS_LOAD, REPS_CREATE,
#   REPS_COMMIT, REPS_DF change the repetition counts; SCALE=0 skips the stratad-only df row;
#   ROWS="load run ..." measures only those rows (load run create commit df rss);
#   LOAD_SETTLE=SECONDS is the pause between the rmi and the timed loads (see below);
#   BENCH_FS=root runs everything in /var/tmp itself instead of on a dedicated ext4 image.
#
# Everything (both data roots, the images, the save tar) lives on a dedicated, journaled ext4
# image, loop-mounted on the work directory: the root ext4 of this VM has no journal, and
# without one ext4's inode allocator skips every inode freed in the last 60 s (360 s while
# their inode table block is dirty, which the load itself makes it) one by one, each with a
# buffer-cache lookup. Any big delete on the machine in the last minutes (an rmi, another
# bench, a build's temp files) then makes a 20,000-file load several times slower (perf: 70%
# of stratad's load in recently_deleted), by an amount that depends on where each engine's
# directories land. A journaled ext4 (mkfs.ext4's default, what nearly every host runs) has no
# such check.
#
# Both daemons run at the same time and every repetition alternates between them, so that on a
# busy machine both see the same noise; the table shows medians.
#
# Rows: run-to-exit of `run --rm bb true`; create on a 200 MB image (the rm is not timed); load
# of a ~300 MB, 20,000-file image (a `docker save` tar, after rmi); commit of a container with a
# 100 MB file; `system df -v` with 3 images, 100 containers and 50 volumes; daemon RSS when idle
# (fresh, and after the workload; for Docker dockerd + the containerd it manages, for both the
# whole process tree); and, for stratad only, `system df -v` with 200 images, 500 containers
# and 200 volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
drivers=("$@")
[ $# -eq 0 ] && drivers=(overlay2 vfs)
fixtures=${STRATA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
REPS_RUN=${REPS_RUN:-10} REPS_LOAD=${REPS_LOAD:-3} REPS_CREATE=${REPS_CREATE:-5}
REPS_COMMIT=${REPS_COMMIT:-3} REPS_DF=${REPS_DF:-5} SCALE=${SCALE:-1}
BENCH_FS=${BENCH_FS:-image}
ROWS=" ${ROWS:-load run create commit df rss} "
if [ "$BENCH_FS" = root ]; then LOAD_SETTLE=${LOAD_SETTLE:-361}; else LOAD_SETTLE=${LOAD_SETTLE:-0}; fi
want() { [[ $ROWS == *" $1 "* ]]; }
# The stock CLI (28) must be the one we drive, not the docker.io package's older /usr/bin/docker.
DOCKER=${DOCKER_CLI:-/usr/local/bin/docker}
if [ -z "${STRATAD:-}" ]; then
  cargo build --release --bin stratad >/dev/null
  STRATAD=$PWD/target/release/stratad
fi
DOCKERD=$(command -v dockerd || true)

work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
log=$work/bench.log
pids=()
# Stop a daemon and everything under it; dockerd stops its containerd itself, anything left
# over (containerd, shims) is killed by pid.
stop_daemon() { # pid
  local p=$1 kids
  kids=$(descendants "$p")
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  for k in $kids; do kill -TERM "$k" 2>/dev/null || true; done
  sleep 0.5
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${pids[@]}"; do stop_daemon "$p"; done
  grep -F " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then
    echo "kept $work$( [ -f "$work.img" ] && echo " (its data is in $work.img: mount -o loop $work.img $work)")" >&2
  else
    rm -rf "$work"; rm -f "$work.img"
  fi
}
trap cleanup EXIT
if [ "$BENCH_FS" != root ]; then
  truncate -s 16G "$work.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work.img"
  mount -o loop "$work.img" "$work"
fi

descendants() { # pid: all descendant pids
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
tree_rss_mib() { # pid: RSS of the process and its descendants, MiB
  local p total=0 r
  for p in "$1" $(descendants "$1"); do
    r=$(ps -o rss= -p "$p" 2>/dev/null || true); total=$(( total + ${r:-0} ))
  done
  awk -v k="$total" 'BEGIN{printf "%.1f\n", k/1024}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b <= 0) print "n/a"; else printf "%.2fx\n", a/b }'; }

# ENGINE ARGS...: the stock CLI against one engine; output goes to the log.
D() { local e=$1; shift; "$DOCKER" -H "unix://${SOCK[$e]}" "$@"; }
# timed ROW ENGINE ARGS...: one timed CLI call, appended to the row's sample file.
timed() {
  local row=$1 e=$2 s t; shift 2
  s=$EPOCHREALTIME
  D "$e" "$@" >>"$log" 2>&1
  t=$EPOCHREALTIME
  awk -v s="$s" -v t="$t" 'BEGIN{printf "%.4f\n", t-s}' >>"$work/samples/$drv.$row.$e"
}
result() { # ROW ENGINE: median of the samples, seconds
  [ -s "$work/samples/$drv.$1.$2" ] && median <"$work/samples/$drv.$1.$2" || true
}

# A ~300 MB image of 20,000 files and a 200 MB one of 2,000 files, made once as rootfs tars.
make_rootfs() { # dir files size_kb
  mkdir -p "$1/bin"
  cp /bin/busybox "$1/bin/busybox"
  for a in sh true cat dd sleep; do ln -sf busybox "$1/bin/$a"; done
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys
root, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = max(1, kb * 1024 // n)
for i in range(n):
    d = os.path.join(root, "data", f"d{i % 200:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(per))
PY
}
echo "making the test images in $work" >&2
q=${QUICK:-1}  # QUICK=10 shrinks both images tenfold, for a smoke test of the script
if want load; then
  make_rootfs "$work/big300" $(( 20000 / q )) $(( 300000 / q ))
  tar -C "$work/big300" -cf "$work/big300.tar" .
fi
if want create; then
  make_rootfs "$work/big200" $(( 2000 / q )) $(( 200000 / q ))
  tar -C "$work/big200" -cf "$work/big200.tar" .
fi
# The images' own files must not be freed right before the timed loads (see load_reps).
sync
rm -rf "$work/big300" "$work/big200"
mkdir -p "$work/samples"

declare -A SOCK PID R
start_stratad() {
  local root=$work/strata-$drv
  mkdir -p "$root"
  "$STRATAD" --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/pid" \
    --plugin-socket-dir "$root/plugins" --plugin-spec-dir "$root/plugin-specs" \
    -H "unix://$root/s.sock" --storage-driver "$drv" 2>"$root/log" &
  PID[strata]=$!; pids+=($!); SOCK[strata]=$root/s.sock
  wait_ping strata
}
start_dockerd() {
  local root=$work/docker-$drv
  mkdir -p "$root"
  # No --containerd: dockerd supervises its own containerd with root <data-root>/containerd and
  # state <exec-root>/containerd, so all of it stays under $work. `unshare --net` execs
  # dockerd (no fork), so $! is dockerd and it has no route to any registry.
  unshare --net "$DOCKERD" --data-root "$root/data" --exec-root "$root/exec" -H "unix://$root/d.sock" \
    --pidfile "$root/pid" --storage-driver "$drv" --bridge=none --iptables=false \
    --ip6tables=false --ip-masq=false --containerd-namespace "strata-bench" \
    --containerd-plugins-namespace "strata-bench-plugins" >"$root/log" 2>&1 &
  PID[docker]=$!; pids+=($!); SOCK[docker]=$root/d.sock
  wait_ping docker
}
wait_ping() {
  for _ in $(seq 1 300); do
    D "$1" version >/dev/null 2>&1 && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 ($drv) did not start; its log:" >&2
  tail -20 "$work/$1-$drv/log" >&2
  exit 1
}
# each STEP_FUNCTION: runs STEP_FUNCTION ENGINE for every engine.
each() { local e; for e in "${engines[@]}"; do "$1" "$e"; done; }

setup() {
  D "$1" load -i "$fixtures/bb.tar" >>"$log"
  if want create; then D "$1" import "$work/big200.tar" big:latest >>"$log"; fi
}
# Both engines rmi, sync and wait LOAD_SETTLE seconds before their timed loads. On the journaled
# image no wait is needed; with BENCH_FS=root (no journal) the default waits out the 360 s
# during which ext4 skips the freed inodes (see the header).
load_rmi() { D "$1" rmi -f big300:latest >>"$log" 2>&1 || true; }
load_rep() { timed load "$1" load -i "$work/big300-save.tar"; }
load_reps() {
  local i
  for i in $(seq 1 "$REPS_LOAD"); do each load_rmi; sync; sleep "$LOAD_SETTLE"; each load_rep; done
}
run_rep() { timed run "$1" run --rm --pull never --network none bb true; }
create_rep() {
  timed create "$1" create --pull never --network none --name createme big true
  D "$1" rm createme >>"$log"
}
commit_prep() { D "$1" run --name commitme --pull never --network none bb dd if=/dev/urandom of=/blob bs=1M count=100 >>"$log" 2>&1; }
commit_rep() { D "$1" rmi -f committed:latest >>"$log" 2>&1 || true; sync; timed commit "$1" commit commitme committed:latest; }
df_prep() {
  local i
  for i in $(seq 1 50); do D "$1" volume create "v$i" >>"$log"; done
  for i in $(seq 1 100); do
    D "$1" create --pull never --network none -v "v$(( (i % 50) + 1 )):/data" bb true >>"$log"
  done
}
df_rep() { timed df "$1" system df -v; }
rss_fresh() { R[$drv,rss0,$1]=$(tree_rss_mib "${PID[$1]}"); }
rss_idle() { R[$drv,rss,$1]=$(tree_rss_mib "${PID[$1]}"); }
repeat() { local n=$1 f=$2 i; for i in $(seq 1 "$n"); do each "$f"; done; }

# stratad only: `system df -v` with 200 images, 500 containers and 200 volumes, built over the
# API with curl (2,000 CLI calls would take longer than the rest of the bench).
scale_df() {
  local s=${SOCK[strata]} api=http://localhost/v1.41 i
  python3 - "$work/scale-tars" <<'PY'
import io, os, sys, tarfile
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
for i in range(200):
    with tarfile.open(os.path.join(out, f"{i}.tar"), "w") as t:
        data = f"image {i}\n".encode()
        ti = tarfile.TarInfo(f"etc/scale-{i}"); ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
PY
  for i in $(seq 0 199); do
    curl -sf --unix-socket "$s" -X POST -H 'Content-Type: application/x-tar' \
      --data-binary "@$work/scale-tars/$i.tar" "$api/images/create?fromSrc=-&repo=scale$i&tag=latest" >>"$log"
    curl -sf --unix-socket "$s" -X POST -H 'Content-Type: application/json' \
      -d "{\"Name\":\"sv$i\"}" "$api/volumes/create" >>"$log"
  done
  for i in $(seq 0 499); do
    curl -sf --unix-socket "$s" -X POST -H 'Content-Type: application/json' \
      -d "{\"Image\":\"bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"NetworkMode\":\"none\",\"Binds\":[\"sv$(( i % 200 )):/data\"]}}" \
      "$api/containers/create" >>"$log"
  done
  echo >>"$log"
  D strata system df -v >>"$log"
  for _ in $(seq 1 "$REPS_DF"); do timed dfscale strata system df -v; done
  echo "stratad $drv df -v at scale: $(D strata system df | tr -s ' ' | tr '\n' ';')" >>"$work/conditions"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
for drv in "${drivers[@]}"; do
  engines=(strata)
  echo "== $drv: load $(loadavg)" | tee -a "$work/conditions" >&2
  start_stratad
  if [ -n "$DOCKERD" ]; then engines+=(docker); start_dockerd; fi
  if want rss; then sleep 5; each rss_fresh; fi
  each setup
  if want load; then
    # One save tar for both engines: stratad's, so the bench also checks Docker reads it.
    D strata import "$work/big300.tar" big300:latest >>"$log"
    D strata save -o "$work/big300-save.tar" big300:latest
    echo "  load x$REPS_LOAD ($(loadavg))" >&2; load_reps
  fi
  if want run; then
    echo "  run x$REPS_RUN ($(loadavg))" >&2; repeat 2 run_rep; rm -f "$work/samples/$drv.run."*
    repeat "$REPS_RUN" run_rep
  fi
  if want create; then echo "  create x$REPS_CREATE ($(loadavg))" >&2; repeat "$REPS_CREATE" create_rep; fi
  if want commit; then
    echo "  commit x$REPS_COMMIT ($(loadavg))" >&2; each commit_prep; repeat "$REPS_COMMIT" commit_rep
  fi
  if want df; then
    echo "  df ($(loadavg))" >&2; each df_prep; each df_rep; rm -f "$work/samples/$drv.df."*
    repeat "$REPS_DF" df_rep
  fi
  if want rss; then sleep 10; each rss_idle; fi
  echo "   after: load $(loadavg)" | tee -a "$work/conditions" >&2
  if [ -n "$DOCKERD" ]; then
    ps -o args= -p "$(descendants "${PID[docker]}" | head -1)" | sed 's/^/  dockerd child: /' >>"$work/conditions" || true
    stop_daemon "${PID[docker]}"
  fi
  if [ "$SCALE" = 1 ]; then echo "  df at scale ($(loadavg))" >&2; scale_df; fi
  stop_daemon "${PID[strata]}"
  rm -f "$work/big300-save.tar"
  if grep -qF " $work/" /proc/self/mountinfo; then
    echo "mounts left under $work after stopping the daemons:" >&2
    grep -F " $work/" /proc/self/mountinfo >&2
  fi
done

echo
echo "stratad: $STRATAD; dockerd: ${DOCKERD:-not installed} $( [ -n "$DOCKERD" ] && "$DOCKERD" --version); CLI: $("$DOCKER" version -f '{{.Client.Version}}' 2>/dev/null)"
echo "$(nproc) CPUs; conditions:"; cat "$work/conditions"
echo
# row label, unit, goal on docker/strata
rows=(load run create commit df rss0 rss dfscale)
declare -A LABEL=([load]="load 300 MB (20k files)" [run]="run --rm bb true" [create]="create, 200 MB image"
  [commit]="commit 100 MB change" [df]="system df -v (100 ctr/50 vol)" [rss0]="RSS fresh idle"
  [rss]="RSS idle after workload" [dfscale]="system df -v (200 img/500 ctr/200 vol)")
declare -A GOAL=([load]=">=3x" [run]=">=2x" [commit]=">=2x" [rss]="<30 MiB" [rss0]="<30 MiB" [dfscale]="<200 ms")
printf '%-9s %-40s %12s %12s %14s %8s\n' driver row strata docker docker/strata goal
for drv in "${drivers[@]}"; do
  for row in "${rows[@]}"; do
    case $row in
      rss|rss0) s=${R[$drv,$row,strata]:-}; d=${R[$drv,$row,docker]:-}; unit=MiB ;;
      *) s=$(result "$row" strata); d=$(result "$row" docker); unit=s ;;
    esac
    [ -z "$s" ] && [ -z "$d" ] && continue
    printf '%-9s %-40s %11s%s %11s%s %14s %8s\n' "$drv" "${LABEL[$row]}" "${s:-n/a}" "${unit:0:1}" \
      "${d:--}" "$( [ -n "$d" ] && echo "${unit:0:1}" || echo ' ')" "$(ratio "$d" "$s")" "${GOAL[$row]:-}"
  done
done
echo "(times: median seconds; s/M = seconds/MiB; rss for Docker = dockerd + its containerd)"
echo "raw samples (s, in order):"
for f in "$work"/samples/*; do [ -s "$f" ] && echo "  $(basename "$f"): $(tr '\n' ' ' <"$f")"; done
