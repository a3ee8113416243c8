#!/usr/bin/env bash
# Benchmark: strata-fuse-overlayfs against fuse-overlayfs (C) and kernel overlayfs, on the same
# two-layer tree, interleaved in one run. Not a test: it prints a table of medians and ratios.
#
#   sudo drivers/fuse-overlay/bench/bench.sh [BENCH_DIR]     (default /var/tmp/strata-fo-bench)
#
# Needs root (mounts, drop_caches), fuse-overlayfs, python3, GNU tar. Builds our binary in
# release mode, statically linked (or takes STRATA_FUSE_OVERLAYFS=path). Environment: RUNS (repetitions per row,
# default 3), KINDS (which of "kernel fuse-overlayfs strata strata-devfuse" to run; the last is
# ours with requests on /dev/fuse instead of io_uring). The fuse module's enable_uring is
# switched on for the run (fuse-overlayfs's libfuse does not ask for it) and restored after. The
# data set (about 1.4 GB, plus 100 one-file layers for the deep-stack mount row) stays in
# BENCH_DIR.img (a loop-mounted ext4 image) for the next run; delete it by hand.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
B=${1:-/var/tmp/strata-fo-bench}
RUNS=${RUNS:-3}
FOVL=${FUSE_OVERLAYFS:-/usr/bin/fuse-overlayfs}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v "$FOVL" >/dev/null || { echo "fuse-overlayfs not found" >&2; exit 1; }

OURS=${STRATA_FUSE_OVERLAYFS:-}
if [ -z "$OURS" ]; then
    # Linked statically, as fuse-overlayfs is often shipped for rootless use, in a target
    # directory of its own: no shared libraries to load and relocate, about a sixth of a
    # mount's time to first stat (--help: 0.8 ms static, 1.15 ms dynamic; /bin/true 0.7 ms).
    # Still a PIE, for ASLR. (With fat LTO on top, static glibc made the binary jump to a null
    # function pointer on the first write: not used.)
    (cd "$REPO" && CARGO_TARGET_DIR="$REPO/target/bench-static" cargo rustc --release -q \
        -p strata-fuse-overlay --bin strata-fuse-overlayfs -- -C target-feature=+crt-static)
    OURS="$REPO/target/bench-static/release/strata-fuse-overlayfs"
fi

# Everything lives on a dedicated, journaled ext4 image mounted at $B (as the reference figures
# in the issue were taken): the root ext4 here has no journal, and without one ext4's inode
# allocator skips every inode freed in the last minute one by one, so a create-heavy row
# measured right after another row's rm -rf would pay for that rm.
mkdir -p "$B"
if ! mountpoint -q "$B"; then
    [ -f "$B.img" ] || { truncate -s 8G "$B.img" && mkfs.ext4 -q -F "$B.img"; }
    mount -o loop "$B.img" "$B"
fi
L1=$B/l1 L2=$B/l2 TARBALL=$B/layer.tar M=$B/mnt

URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=$(cat "$URING_PARAM" 2>/dev/null || true)
[ -n "$URING_BEFORE" ] && echo Y > "$URING_PARAM"

cleanup() {
    mountpoint -q "$M" && umount "$M" || true
    mountpoint -q "$B" && umount "$B" || true
    [ -n "$URING_BEFORE" ] && echo "$URING_BEFORE" > "$URING_PARAM" || true
}
trap cleanup EXIT

# --- data set: L1 = 200 dirs x 100 files (1-29 KiB) + a 1 GiB file; L2 changes 2,000 files,
# whites out 1,000 and adds 1,000 (overlay format).
if [ ! -f "$B/.ready" ]; then
    rm -rf "$L1" "$L2" && mkdir -p "$L1" "$L2"
    python3 - "$L1" "$L2" <<'EOF'
import os, random, sys
l1, l2 = sys.argv[1], sys.argv[2]
rnd = random.Random(42)
blob = os.urandom(1 << 20)
for d in range(200):
    os.makedirs(f"{l1}/d{d:03}")
    for f in range(100):
        n = rnd.randint(1024, 29 * 1024)
        o = rnd.randint(0, len(blob) - n)
        with open(f"{l1}/d{d:03}/f{f:03}", "wb") as fh:
            fh.write(blob[o:o + n])
for d in range(0, 200, 10):
    os.makedirs(f"{l2}/d{d:03}", exist_ok=True)
    for f in range(0, 100, 1):
        p = f"{l2}/d{d:03}/f{f:03}"
        if f % 2 == 0:
            with open(p, "wb") as fh:
                fh.write(blob[:rnd.randint(100, 5000)])
        else:
            os.mknod(p, 0o600 | 0o020000, 0)
for d in range(10):
    os.makedirs(f"{l2}/new{d}")
    for f in range(100):
        with open(f"{l2}/new{d}/n{f:03}", "wb") as fh:
            fh.write(blob[:2048])
EOF
    dd if=/dev/urandom of="$L1/big.bin" bs=1M count=1024 status=none
    tar -C "$L1" -cf "$TARBALL" --exclude=./big.bin .
    touch "$B/.ready"
fi
# 100 small lower layers, for the mount time of a deep stack (one directory and file each)
DEEP=$B/deep
if [ ! -f "$DEEP/.ready" ]; then
    rm -rf "$DEEP"
    for i in $(seq -w 0 99); do mkdir -p "$DEEP/l$i/dir$i"; echo "$i" > "$DEEP/l$i/dir$i/f"; done
    touch "$DEEP/.ready"
fi
DEEP_LOWERS=$(for i in $(seq -w 99 -1 0); do printf '%s:' "$DEEP/l$i"; done)
DEEP_LOWERS=${DEEP_LOWERS%:}

# stamp VAR: microseconds now, into VAR. A builtin: no process is spawned inside a timed span
# (a `date` or a `$(...)` subshell costs about a millisecond here, the size of the mount row).
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }
# ms START END: milliseconds, one decimal
ms() { local d=$(( ($2 - $1) / 100 )); echo "$((d / 10)).$((d % 10))"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

fresh_upper() {
    rm -rf "$B/u" "$B/w" && mkdir -p "$B/u" "$B/w" "$M"
}

# mount_kind KIND [LOWERS [OURS_OPTS]]: LOWERS defaults to the two-layer data set; OURS_OPTS
# (",key=value...") go to our binary only
mount_kind() {
    local lowers=${2:-$L2:$L1} ours=${3:-}
    case $1 in
        kernel) mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$B/u,workdir=$B/w" "$M" ;;
        fuse-overlayfs) "$FOVL" -o "lowerdir=$lowers,upperdir=$B/u,workdir=$B/w" "$M" ;;
        strata) "$OURS" -o "lowerdir=$lowers,upperdir=$B/u,workdir=$B/w$ours" "$M" ;;
        strata-devfuse) "$OURS" -o "lowerdir=$lowers,upperdir=$B/u,workdir=$B/w,io_uring=0$ours" "$M" ;;
    esac
}

unmount_all() {
    umount "$M"
    # fuse daemons exit on unmount; give them a moment so they do not overlap the next run
    sleep 0.2
}

read -r -a KINDS <<< "${KINDS:-kernel fuse-overlayfs strata}"
declare -A RESULT

# record ROW KIND MILLISECONDS
record() { RESULT["$1|$2"]="${RESULT["$1|$2"]:-} $3"; }

median() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for run in $(seq 1 "$RUNS"); do
    for k in "${KINDS[@]}"; do
        echo "run $run: $k" >&2
        # mount time: spawn to the first successful stat inside (the shell's own test -e, so
        # that no stat process is timed). One untimed mount first: the previous rows dropped
        # the page cache, and reading the binaries back from disk is not the mount's cost.
        fresh_upper; mount_kind "$k"; [ -e "$M/d001/f001" ]; unmount_all
        fresh_upper
        stamp s; mount_kind "$k"; [ -e "$M/d001/f001" ]; stamp e
        record "mount (to first stat)" "$k" "$(ms "$s" "$e")"
        unmount_all
        fresh_upper
        stamp s; mount_kind "$k" "$DEEP_LOWERS"; [ -e "$M/dir00/f" ]; stamp e
        record "mount, 100 lowers (to first stat)" "$k" "$(ms "$s" "$e")"
        unmount_all

        # cold and warm sequential read of the 1 GiB lower file
        drop_caches; fresh_upper; mount_kind "$k"
        stamp s; dd if="$M/big.bin" of=/dev/null bs=1M status=none; stamp e
        record "seq read 1 GiB, cold" "$k" "$(ms "$s" "$e")"
        stamp s; dd if="$M/big.bin" of=/dev/null bs=1M status=none; stamp e
        record "seq read 1 GiB, warm" "$k" "$(ms "$s" "$e")"

        # stat walk of ~20,000 files, cold then warm
        unmount_all; drop_caches; mount_kind "$k"
        stamp s; find "$M" -type f -printf '%s\n' >/dev/null; stamp e
        record "stat walk 20k files, cold" "$k" "$(ms "$s" "$e")"
        stamp s; find "$M" -type f -printf '%s\n' >/dev/null; stamp e
        record "stat walk 20k files, warm" "$k" "$(ms "$s" "$e")"

        # read every small file (tar to /dev/zero reads the data; /dev/null would not): cold
        # (page cache dropped, fresh mount), then warm (the same again, data now cached)
        unmount_all; drop_caches; mount_kind "$k"
        stamp s; tar -C "$M" --exclude=./big.bin -cf /dev/zero .; stamp e
        record "read all small files, cold" "$k" "$(ms "$s" "$e")"
        stamp s; tar -C "$M" --exclude=./big.bin -cf /dev/zero .; stamp e
        record "read all small files, warm" "$k" "$(ms "$s" "$e")"
        unmount_all

        # untar 20,000 files into the mount (tarball warm in the page cache)
        cat "$TARBALL" >/dev/null
        fresh_upper; mount_kind "$k"; mkdir "$M/untar"
        stamp s; tar -C "$M/untar" -xf "$TARBALL"; stamp e
        record "untar 20k files" "$k" "$(ms "$s" "$e")"
        unmount_all

        # copy-up of the 1 GiB lower file by appending one byte, then syncfs (durable)
        drop_caches; fresh_upper; mount_kind "$k"
        stamp s; printf x >> "$M/big.bin"; stamp e
        record "copy-up 1 GiB, cold" "$k" "$(ms "$s" "$e")"
        # syncfs of the upper's filesystem: a FUSE mount has no syncfs of its own, so
        # `sync -f $M` would not make a FUSE copy-up durable
        sync -f "$B/u"; stamp e2
        record "copy-up 1 GiB, cold, + syncfs" "$k" "$(ms "$s" "$e2")"
        unmount_all
        # the same without durability: fuse-overlayfs's copy-up is not durable anyway, ours
        # is with durable_copy_up=0; the kernel's always is
        case $k in
            fuse-overlayfs) record "copy-up 1 GiB, cold, not durable" "$k" "$(ms "$s" "$e")" ;;
            strata*)
                drop_caches; fresh_upper; mount_kind "$k" "" ",durable_copy_up=0"
                stamp s; printf x >> "$M/big.bin"; stamp e
                record "copy-up 1 GiB, cold, not durable" "$k" "$(ms "$s" "$e")"
                unmount_all ;;
        esac

        # create then delete 10,000 empty files
        fresh_upper; mount_kind "$k"; mkdir "$M/many"
        read -r c u < <(python3 - "$M/many" <<'EOF'
import os, sys, time
d = sys.argv[1]
t0 = time.perf_counter_ns()
for i in range(10000):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
t1 = time.perf_counter_ns()
for i in range(10000):
    os.unlink(f"{d}/f{i}")
t2 = time.perf_counter_ns()
print((t1 - t0) // 1000000, (t2 - t1) // 1000000)
EOF
)
        record "create 10k files" "$k" "$c"
        record "unlink 10k files" "$k" "$u"
        # delete lower files: whiteouts for 4,000 files in 40 directories
        stamp s; for d in {100..139}; do rm -f "$M"/d$d/f*; done; stamp e
        record "delete 4k lower files (whiteouts)" "$k" "$(ms "$s" "$e")"
        unmount_all
    done
done

ROWS=("mount (to first stat)" "mount, 100 lowers (to first stat)" "seq read 1 GiB, cold" "seq read 1 GiB, warm" "stat walk 20k files, cold"
      "stat walk 20k files, warm" "read all small files, cold" "read all small files, warm"
      "untar 20k files" "copy-up 1 GiB, cold" "copy-up 1 GiB, cold, + syncfs"
      "copy-up 1 GiB, cold, not durable" "create 10k files"
      "unlink 10k files" "delete 4k lower files (whiteouts)")

printf '| %-34s | %8s | %14s | %8s | %16s | %12s | %14s | %22s |\n' "test (median of $RUNS, ms)" kernel fuse-overlayfs strata "fuse-ovl / strata" "strata / kernel" "strata-devfuse" "fuse-ovl / strata-devfuse"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "----------" "----------------" "----------" "------------------" "--------------" "----------------" "------------------------"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") printf "%.2fx", a / b; else print "-" }'; }
for r in "${ROWS[@]}"; do
    k=$(echo "${RESULT["$r|kernel"]:-}" | median)
    f=$(echo "${RESULT["$r|fuse-overlayfs"]:-}" | median)
    o=$(echo "${RESULT["$r|strata"]:-}" | median)
    dv=$(echo "${RESULT["$r|strata-devfuse"]:-}" | median)
    printf '| %-34s | %8s | %14s | %8s | %16s | %12s | %14s | %22s |\n' "$r" "$k" "$f" "$o" \
        "$(ratio "$f" "$o")" "$(ratio "$o" "$k")" "${dv:--}" "$(ratio "$f" "$dv")"
done
