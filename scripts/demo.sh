#!/usr/bin/env bash
# The main job: the daemon up on the default storage driver, an image made from busybox-static,
# a container run, and `system df -v`. Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug
data_root=${STRATA_DATA_ROOT:-/var/lib/strata}
sock=${STRATA_SOCKET:-/run/strata.sock}
export STRATA_HOST="unix://$sock"
work=$(mktemp -d)

[ -x "$bin/stratad" ] && [ -x "$bin/strata" ] || cargo build --bin stratad --bin strata
if [ -S "$sock" ] && "$bin/strata" version >/dev/null 2>&1; then
  echo "demo: a daemon already answers on $sock; stop it first" >&2
  exit 1
fi

"$bin/stratad" --data-root "$data_root" -H "unix://$sock" >"$work/stratad.log" 2>&1 &
daemon=$!
cleanup() {
  kill -TERM "$daemon" 2>/dev/null && wait "$daemon" || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  "$bin/strata" version >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { cat "$work/stratad.log" >&2; exit 1; }
  sleep 0.1
done

echo "== strata info (storage driver)"
"$bin/strata" info | grep -A8 'Storage Driver'

echo "== an image from busybox-static"
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $("$work/rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$work/rootfs/bin/$applet"
done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$bin/strata" import -c 'CMD ["sh"]' "$work/rootfs.tar" demo/busybox:latest
"$bin/strata" images

echo "== a container run"
"$bin/strata" run --rm --name demo-run demo/busybox sh -c 'echo "hello from a Strata container: pid $$, hostname $(hostname)"'
"$bin/strata" volume create demo-data >/dev/null
"$bin/strata" run --name demo-writer -v demo-data:/data demo/busybox sh -c 'head -c 1000000 /dev/urandom > /data/blob; echo layer > /rwfile'

echo "== strata system df -v"
"$bin/strata" system df -v

"$bin/strata" rm demo-writer >/dev/null
"$bin/strata" volume rm demo-data >/dev/null
"$bin/strata" rmi demo/busybox >/dev/null
echo "== done"
