#!/usr/bin/env bash
# Registry benchmark: push and pull of a 200 MB image (2,000 files, one layer) between stratad
# and Debian's docker-registry, both on 127.0.0.1, driven by the stock docker CLI. References
# measured in the same run: `docker load` of the same image's `docker save` tar into the same
# stratad (the apply path a pull shares), a plain `curl` download of the layer blob, and, when
# dockerd is installed, Docker's own daemon doing the same push and pull (overlay2, its own
# roots under the work directory). The script re-executes itself in a private network
# namespace (`unshare --net`, loopback up), so the registry and both daemons see only each
# other. Prints medians.
#
#   bash bench/registry.sh            (as root; needs docker-registry, curl, python3)
#   STRATAD=path/to/stratad skips the release build; REPS=N (default 3); QUICK=10 shrinks the
#   image tenfold for a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${REGBENCH_NETNS:-}" ]; then
  exec unshare --net env REGBENCH_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
REPS=${REPS:-3}
q=${QUICK:-1}
DOCKER=${DOCKER_CLI:-/usr/local/bin/docker}
command -v "$DOCKER" >/dev/null || DOCKER=docker
if [ -z "${STRATAD:-}" ]; then
  cargo build --release --bin stratad >/dev/null
  STRATAD=${CARGO_TARGET_DIR:-$PWD/target}/release/stratad
fi
work=$(mktemp -d /var/tmp/strata-regbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  grep -F " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)
"$STRATAD" --data-root "$work/root" --exec-root "$work/exec" --pidfile "$work/pid" \
  --storage-driver overlay2 -H "unix://$work/s.sock" 2>"$work/stratad.log" & pids+=($!)
D() { "$DOCKER" -H "unix://$work/s.sock" "$@"; }
for _ in $(seq 1 100); do D version >/dev/null 2>&1 && break; sleep 0.2; done
DOCKERD=$(command -v dockerd || true)
K() { "$DOCKER" -H "unix://$work/docker/d.sock" "$@"; }
if [ -n "$DOCKERD" ]; then
  mkdir -p "$work/docker"
  "$DOCKERD" --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
    -H "unix://$work/docker/d.sock" --pidfile "$work/docker/pid" --storage-driver overlay2 \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --containerd-namespace strata-regbench --containerd-plugins-namespace strata-regbench-p \
    >"$work/docker/log" 2>&1 & pids+=($!)
  for _ in $(seq 1 150); do K version >/dev/null 2>&1 && break; sleep 0.2; done
fi

echo "making a $((200 / q)) MB image of $((2000 / q)) files" >&2
mkdir -p "$work/rootfs"
python3 - "$work/rootfs" $((2000 / q)) $((200000 / q)) <<'PY'
import os, sys
root, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
per = max(1, kb * 1024 // n)
for i in range(n):
    d = os.path.join(root, "data", f"d{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(per))
PY
tar -C "$work/rootfs" -cf "$work/rootfs.tar" . && rm -rf "$work/rootfs"
name=127.0.0.1:$port/bench/big:1
D import "$work/rootfs.tar" "$name" >/dev/null
D save -o "$work/big-save.tar" "$name"

now() { date +%s.%N; }
declare -A samples
timed() { # row command...
  local row=$1; shift
  local t0 t1
  t0=$(now); "$@" >/dev/null; t1=$(now)
  samples[$row]+="$(echo "$t1 - $t0" | bc) "
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

reg=127.0.0.1:$port
D tag "$name" "$reg/bench/up:1"
timed push D push "$reg/bench/up:1"             # compresses and uploads the layer
D tag "$name" "$reg/bench/other:1"
timed push-mount D push "$reg/bench/other:1"    # the layer is mounted from bench/up
D rmi "$name" "$reg/bench/up:1" "$reg/bench/other:1" >/dev/null
layer=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://$reg/v2/bench/up/manifests/1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
if [ -n "$DOCKERD" ]; then
  K load -i "$work/big-save.tar" >/dev/null
  K tag "$name" "$reg/bench/docker:1"
  timed docker-push K push "$reg/bench/docker:1"
  K tag "$name" "$reg/bench/docker2:1"
  timed docker-push-mount K push "$reg/bench/docker2:1"
  K rmi "$name" "$reg/bench/docker:1" "$reg/bench/docker2:1" >/dev/null
fi
for _ in $(seq 1 "$REPS"); do
  sync
  if [ -n "$DOCKERD" ]; then
    timed docker-pull K pull "$reg/bench/up:1"
    K rmi "$reg/bench/up:1" >/dev/null; sync
  fi
  timed pull D pull "$reg/bench/up:1"
  D rmi "$reg/bench/up:1" >/dev/null; sync
  timed load D load -i "$work/big-save.tar"
  D rmi "$name" >/dev/null; sync
  timed download curl -sf -o /dev/null "http://$reg/v2/bench/up/blobs/$layer"
done

printf '%-18s %10s\n' row "median s"
for row in push docker-push push-mount docker-push-mount pull docker-pull load download; do
  [ -n "${samples[$row]:-}" ] || continue
  printf '%-18s %10s\n' "$row" "$(echo "${samples[$row]}" | median)"
done
