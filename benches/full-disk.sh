#!/usr/bin/env bash
# The long run of the full-disk fault tests (tests/full_disk.rs and the
# ENOSPC round of tests/store_crash.rs): many more rounds of fill / free /
# restart / write / kill -9 than CI runs, on loop-mounted ext4 images.
# Needs root. Bounded by RUN_TIMEOUT (default 1800 s); the tests unmount
# their filesystems and kill their agents themselves, also on failure.
#
# Knobs: ROUNDS=50 (node-level rounds), STORE_ROUNDS=50 (store-level
# ENOSPC rounds), RUN_TIMEOUT=1800.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-50}
STORE_ROUNDS=${STORE_ROUNDS:-50}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
export DROVER_REQUIRE_FAULTS=1

echo "== node: $ROUNDS rounds of fill / free / restart / 50 writes / kill -9"
DROVER_FULL_DISK_ROUNDS=$ROUNDS timeout "$RUN_TIMEOUT" \
  cargo test --locked --release --test full_disk -- --nocapture --test-threads 1
echo "== store: $STORE_ROUNDS rounds of real ENOSPC then kill -9"
DROVER_STORE_CRASH_ROUNDS=$STORE_ROUNDS timeout "$RUN_TIMEOUT" \
  cargo test --locked --release --test store_crash a_full_disk -- --nocapture
