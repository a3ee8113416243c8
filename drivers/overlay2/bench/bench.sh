#!/bin/sh
# Runs the overlay2 benchmark (needs root). BENCH_DIR picks the filesystem to run on
# (default /var/tmp, the root ext4 here). Prints a markdown table of medians and ratios.
set -eu
cd "$(dirname "$0")/../../.."
exec cargo bench -p strata-overlay2 --bench overlay2 "$@"
