#!/usr/bin/env bash
# The fault harness (tests/chaos/chaos_test.cpp): a local cluster of three nats-servers, two
# orchestrators, two workers and a model service runs a stream of runs with approvals while
# processes are killed, paused and restarted, a nats-server goes down and the model service fails
# or hangs; then the invariants are checked (every run ended as it would have, nothing repeated
# that was recorded, every run's events gapless and the same from every server). It prints its
# seed; the same seed gives the same runs and faults in the same order.
#   scripts/chaos.sh [--minutes M] [--seed S] [--faults K] [--build DIR]
#     (default: 2 minutes, a random seed; K: which processes are killed and paused, a list of
#     orchestrator, worker, nats; all by default; DIR: the build whose keel-node, keel and
#     harness run, build/ by default, e.g. build-asan/ once scripts/sanitize.sh address made it)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=2
seed=""
faults=""
dir=build
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    --build) dir=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "chaos: unknown argument $1 (--minutes M, --seed S, --faults K, --build DIR)" >&2; exit 2 ;;
  esac
done
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); if (s < 10) s = 10; print s }')
[ -d "$dir" ] || scripts/setup.sh --no-build
if [ "$dir" = build ]; then
  [ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
elif [ ! -f "$dir/build.ninja" ]; then
  echo "chaos: $dir is not a build of keel (scripts/sanitize.sh address makes build-asan/)" >&2
  exit 2
fi
ninja -C "$dir" chaos_tests keel-node keel >/dev/null
# On a sanitized build every process writes its reports to a file, and any report fails the run
# (a keel-node that AddressSanitizer stops would otherwise just look like one more fault).
reports=""
if grep -q '^KEEL_SANITIZE:STRING=address' "$dir/CMakeCache.txt" 2>/dev/null; then
  reports=$PWD/$dir/reports/chaos
  rm -rf "$reports"
  mkdir -p "$reports"
  export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0:max_free_fill_size=4096:free_fill_byte=190:log_path=$reports/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
fi
status=0
KEEL_CHAOS_SECONDS=$seconds KEEL_CHAOS_SEED=$seed KEEL_CHAOS_FAULTS=$faults "$dir/tests/chaos_tests" --use-colour no "chaos: *" || status=$?
[ -z "$reports" ] || scripts/sanitizer_reports.sh "$reports" chaos
exit $status
