#!/usr/bin/env bash
# Where a step's time goes: builds keel with -DKEEL_STEP_TRACE=ON in build-trace/, runs the
# latency part of the benchmark on it (one run at a time), and prints the median time between
# consecutive hand-overs of a step (runtime/step_trace.hpp names them).
# Usage: bench/step_trace.sh [--latency-runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null  # the packages; the traced build is separate
cmake -S . -B build-trace -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_STEP_TRACE=ON -DKEEL_TESTS=OFF >/dev/null
ninja -C build-trace apps/keel-node bench/keel_bench >/dev/null
trace=$(mktemp)
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--latency-runs 100)
KEEL_STEP_TRACE_FILE="$trace" build-trace/bench/keel_bench --node build-trace/apps/keel-node \
  --concurrent-runs 1 --suspended-runs 1 "${args[@]}" | grep -E '"(floor|latency)\.' || true
python3 bench/step_trace.py "$trace"
rm -f "$trace"
