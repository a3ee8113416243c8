#!/usr/bin/env bash
# Installs everything Strata needs on a fresh Debian 12 machine (run as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential pkg-config clang libclang-dev
  btrfs-progs libbtrfsutil-dev xfsprogs e2fsprogs util-linux
  fuse3 libfuse3-dev fuse-overlayfs
  libseccomp-dev
  busybox-static iproute2 procps kmod tar gzip zstd curl jq openssl
  apache2-utils protobuf-compiler python3-venv
  golang-go golang-github-containerd-containerd-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Installs Debian packages that ship a system service, without ever starting it: policy-rc.d
# refuses every service start during the install (and the service is disabled after), because
# the tests start these servers themselves with their own config, data and socket.
install_without_services() {
  local had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for unit in "$@"; do systemctl disable --now "$unit.service" 2>/dev/null || true; done
  fi
}

# Docker's own daemon (Debian's docker.io) for the tests that compare with it or run our
# plugins under it, and for bench/engine.sh; containerd 1.6 with ctr for the snapshotter's
# tests; Debian's docker-registry (distribution 2.8) for runtime/tests/registry.rs. The tests
# start each of them themselves (inside `unshare --net`, or on 127.0.0.1).
command -v dockerd >/dev/null || install_without_services docker.io
{ command -v containerd && command -v ctr; } >/dev/null || install_without_services containerd
command -v docker-registry >/dev/null || install_without_services docker-registry
command -v docker >/dev/null || { echo "setup: no docker CLI" >&2; exit 1; }

# Docker's Python SDK, a second client in runtime/tests/python_sdk.rs, in a virtual
# environment of its own (never the system Python's packages).
sdk_venv=/var/cache/strata/sdk-venv
if ! "$sdk_venv/bin/python" -c 'import docker' 2>/dev/null; then
  python3 -m venv "$sdk_venv"
  "$sdk_venv/bin/pip" install -q 'docker==7.1.0'
fi

# Kernel features the drivers need; modules may be built in, so a failed modprobe is only
# fatal if the feature is then absent.
for m in overlay btrfs fuse loop xfs; do modprobe "$m" 2>/dev/null || true; done
grep -qw overlay /proc/filesystems || { echo "setup: kernel has no overlayfs" >&2; exit 1; }
grep -qw btrfs /proc/filesystems || { echo "setup: kernel has no btrfs" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "setup: /dev/fuse is missing" >&2; exit 1; }
# FUSE over io_uring (Linux 6.14+), which the fuse-overlay driver uses when the kernel offers
# it: off by default, a module parameter. Without it the driver serves through /dev/fuse.
uring=/sys/module/fuse/parameters/enable_uring
if [ -w "$uring" ]; then
  echo Y > "$uring"
else
  echo "setup: this kernel has no FUSE over io_uring; fuse-overlay will use /dev/fuse"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo build --workspace --all-targets
