#!/usr/bin/env bash
# Engine benchmark: the stock docker CLI against stratad and, where installed, against Docker's
# own daemon (dockerd from the docker.io package, started inside `unshare --net` on its own data
# root and socket, with --bridge=none --iptables=false; every run uses --pull never), on the
# same images, in one run. Prints times and ratios (Docker / Strata: above 1 means we are faster).
#
#   bash bench/engine.sh [DRIVER...]      (default: overlay2 vfs; run as root)
#
# Rows: run-to-exit of `run --rm IMAGE true`; create (+rm) on a 200 MB image; load of a
# ~300 MB image; commit of a 100 MB change; `system df -v` with 3 images, 100 containers and
# 50 volumes; daemon RSS when idle.
set -euo pipefail
cd "$(dirname "$0")/.."
drivers=("${@:-overlay2}")
[ $# -eq 0 ] && drivers=(overlay2 vfs)
fixtures=${STRATA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
cargo build --release --bin stratad >/dev/null
stratad=$PWD/target/release/stratad
work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 2
  grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}x' if b>0 else 'n/a')" "$1" "$2"; }

# A ~300 MB image of 20,000 files, and a 200 MB one, made once as rootfs tars.
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
make_rootfs "$work/big300" 20000 300000
tar -C "$work/big300" -cf "$work/big300.tar" .
make_rootfs "$work/big200" 2000 200000
tar -C "$work/big200" -cf "$work/big200.tar" .

# measure ENGINE SOCKET
measure() {
  local name=$1 sock=$2 pid=$3
  local d="docker -H unix://$sock"
  $d load -i "$fixtures/bb.tar" >/dev/null
  $d import "$work/big200.tar" big:latest >/dev/null
  $d import "$work/big300.tar" big300:latest >/dev/null
  $d save -o "$work/$name-big300.tar" big300:latest
  $d rmi big300:latest >/dev/null
  local t0 t1
  t0=$(now); $d load -i "$work/$name-big300.tar" >/dev/null; t1=$(now)
  echo "load $(secs "$t0" "$t1")"
  for _ in 1 2; do $d run --rm --pull never --network none bb true; done
  for _ in $(seq 1 10); do t0=$(now); $d run --rm --pull never --network none bb true; t1=$(now); secs "$t0" "$t1"; done | median | sed 's/^/run /'
  for _ in $(seq 1 5); do t0=$(now); c=$($d create --pull never --network none big true); t1=$(now); $d rm "$c" >/dev/null; secs "$t0" "$t1"; done | median | sed 's/^/create /'
  $d run --name commitme --pull never --network none bb dd if=/dev/urandom of=/blob bs=1M count=100 2>/dev/null
  t0=$(now); $d commit commitme committed:latest >/dev/null; t1=$(now)
  echo "commit $(secs "$t0" "$t1")"
  $d rm commitme >/dev/null
  for i in $(seq 1 50); do $d volume create "v$i" >/dev/null; done
  for i in $(seq 1 100); do $d create --pull never --network none -v "v$(( (i % 50) + 1 )):/data" bb true >/dev/null; done
  $d system df -v >/dev/null
  for _ in $(seq 1 5); do t0=$(now); $d system df -v >/dev/null; t1=$(now); secs "$t0" "$t1"; done | median | sed 's/^/df /'
  sleep 5
  echo "rss $(( $(ps -o rss= -p "$pid") / 1024 ))"
}

declare -A R
for drv in "${drivers[@]}"; do
  root=$work/strata-$drv; mkdir -p "$root"
  "$stratad" --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/pid" \
    -H "unix://$root/s.sock" --storage-driver "$drv" 2>"$root/log" &
  pids+=($!); spid=$!
  for _ in $(seq 1 100); do docker -H "unix://$root/s.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  while read -r k v; do R[strata,$drv,$k]=$v; done < <(measure "strata-$drv" "$root/s.sock" "$spid")
  kill -TERM "$spid"; wait "$spid" 2>/dev/null || true
  if command -v dockerd >/dev/null; then
    droot=$work/docker-$drv; mkdir -p "$droot"
    unshare --net dockerd --data-root "$droot/data" --exec-root "$droot/exec" -H "unix://$droot/d.sock" \
      --pidfile "$droot/pid" --storage-driver "$drv" --bridge=none --iptables=false \
      --containerd-namespace "bench$drv" >"$droot/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do docker -H "unix://$droot/d.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    dpid=$(cat "$droot/pid")
    while read -r k v; do R[docker,$drv,$k]=$v; done < <(measure "docker-$drv" "$droot/d.sock" "$dpid")
    kill -TERM "$dpid"; sleep 3
  fi
done

echo
printf '%-10s %-8s %12s %12s %10s\n' driver row strata docker "docker/strata"
for drv in "${drivers[@]}"; do
  for row in run create load commit df rss; do
    s=${R[strata,$drv,$row]:-}; d=${R[docker,$drv,$row]:-}
    unit=s; [ "$row" = rss ] && unit=MiB
    printf '%-10s %-8s %11s%s %11s%s %10s\n' "$drv" "$row" "$s" "$unit" "${d:-n/a}" "$unit" "$( [ -n "$d" ] && ratio "$d" "$s" || echo 'no dockerd')"
  done
done
