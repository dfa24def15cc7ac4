#!/usr/bin/env bash
# The fault harness (tests/chaos/chaos_test.cpp): a local cluster of three nats-servers, two
# orchestrators, two workers and a model service runs a stream of runs with approvals while
# processes are killed, paused and restarted, a nats-server goes down and the model service fails
# or hangs; then the invariants are checked (every run ended as it would have, nothing repeated
# that was recorded, every run's events gapless and the same from every server). It prints its
# seed; the same seed gives the same runs and faults in the same order.
#   scripts/chaos.sh [--minutes M] [--seed S] [--faults K]
#     (default: 2 minutes, a random seed; K: which processes are killed and paused, a list of
#     orchestrator, worker, nats; all by default)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=2
seed=""
faults=""
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "chaos: unknown argument $1 (--minutes M, --seed S, --faults K)" >&2; exit 2 ;;
  esac
done
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); if (s < 10) s = 10; print s }')
[ -d build ] || scripts/setup.sh --no-build
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build chaos_tests >/dev/null
KEEL_CHAOS_SECONDS=$seconds KEEL_CHAOS_SEED=$seed KEEL_CHAOS_FAULTS=$faults exec build/tests/chaos_tests --use-colour no "chaos: *"
