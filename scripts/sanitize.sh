#!/usr/bin/env bash
# Builds keel with a sanitizer and runs tests on that build (every keel-node and keel the tests
# start is the sanitized one). Any report from any process fails the run.
#   scripts/sanitize.sh address [ctest arguments]   AddressSanitizer + UndefinedBehaviorSanitizer
#                                                   (leaks too), every test: build-asan/
#   scripts/sanitize.sh thread [ctest arguments]    ThreadSanitizer: the actors and broker
#                                                   tests, then the end-to-end tests tagged
#                                                   [threads] against a keel-node built with it
#                                                   (-L e2e_tests: every end-to-end test, all of
#                                                   it built with it): build-tsan/. The tests that
#                                                   drive that keel-node are those of build/, or of
#                                                   the build KEEL_E2E_BUILD names (CI: build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
shift || true
case $kind in
  address) dir=build-asan ;;
  thread) dir=build-tsan ;;
  *) echo "sanitize: address or thread (scripts/sanitize.sh address|thread [ctest arguments])" >&2; exit 2 ;;
esac
scripts/setup.sh --no-build
# -O1: the sanitizers' own advice (fast enough, exact reports); line tables for the reports; no
# benchmarks.
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" -DKEEL_SANITIZE="$kind" \
  -DKEEL_BENCH=OFF -DKEEL_WERROR=OFF >/dev/null
# ThreadSanitizer by default runs the actors and broker tests, and the end-to-end tests of the plain
# build (build/) against the sanitized keel-node: only those are built with it.
thread_default=false
if [ "$kind" = thread ] && [ $# -eq 0 ]; then
  thread_default=true
  ninja -C "$dir" tests/actors_tests tests/broker_tests tests/replication_tests apps/keel-node
  driver=${KEEL_E2E_BUILD:-build}
  if [ "$driver" = build ]; then
    [ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  elif [ ! -f "$driver/build.ninja" ]; then
    echo "sanitize: KEEL_E2E_BUILD=$driver is not a build of keel" >&2
    exit 2
  fi
  ninja -C "$driver" tests/e2e_tests
else
  ninja -C "$dir"
fi
# Every report of every process a test starts (keel-node, keel, the test itself) goes to a file
# under $reports: any report fails the run, whether or not the test that caused it noticed (a
# keel-node that reports on its way out of a test passes unseen otherwise).
root=$PWD
reports=$root/$dir/reports
rm -rf "$reports"
mkdir -p "$reports"
# Freed memory is filled: a system library built without the sanitizer (nats.c, RocksDB) that
# reads memory keel freed then crashes instead of reading what was there.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0:max_free_fill_size=4096:free_fill_byte=190:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp:log_path=$reports/tsan"
export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
# The simulations' seeds: a sanitized build runs each several times slower; the plain build's run
# (scripts/test.sh) covers 1,000 seeds of each.
export KEEL_SIM_SEEDS=${KEEL_SIM_SEEDS:-200}
# Three tests per two cores: sanitized, a test computes more of its time than the plain build's do.
jobs=$(( $(nproc) * 3 / 2 ))
[ "$jobs" -ge 1 ] || jobs=1
# The plain build's measured test times order this run too (longest first), when there are some.
if [ -f build/Testing/Temporary/CTestCostData.txt ] && [ ! -f "$dir/Testing/Temporary/CTestCostData.txt" ]; then
  mkdir -p "$dir/Testing/Temporary"
  cp build/Testing/Temporary/CTestCostData.txt "$dir/Testing/Temporary/"
fi
status=0
if ! $thread_default; then
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600 "$@") || status=$?
else
  # The store's 100,000-run retention test is one thread: ThreadSanitizer would only make it slow.
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600 -L "actors_tests|broker_tests|replication_tests" \
    -E "retention: the store's disk use") || status=$?
  # The end-to-end tests tagged [threads]: the ones that drive a keel-node's threads hardest
  # (several nodes, failover, bursts of tasks, many streams at once) and short enough for CI, as
  # the plain build runs them but each keel-node they start is the sanitized one. Each node goes
  # on after a report, so that one run finds every report.
  # (Catch exits with the number of tests it lists.)
  names=$({ "$driver/tests/e2e_tests" --list-test-names-only "[threads]" || true; } | grep -v '^$')
  count=$(printf '%s\n' "$names" | wc -l)
  # A ctest name is a regular expression there: each name whole, its special characters escaped.
  regex=$(printf '%s\n' "$names" | sed -e 's/[][\\.*+?()^$|]/\\&/g' -e 's/^/^/' -e 's/$/$/' | paste -sd'|')
  matched=$(cd "$driver" && ctest -N -R "$regex" | sed -n 's/^Total Tests: //p')
  if [ "$matched" != "$count" ]; then
    echo "sanitize: $count tests are tagged [threads] but ctest found $matched of them" >&2
    exit 1
  fi
  echo "sanitize: $count end-to-end tests against $dir/apps/keel-node"
  (cd "$driver" && KEEL_TEST_NODE_BINARY="$root/$dir/apps/keel-node" TSAN_OPTIONS="${TSAN_OPTIONS/halt_on_error=1/halt_on_error=0}" \
    ctest --output-on-failure -j"$jobs" --timeout 600 --no-tests=error -R "$regex") || status=$?
fi
scripts/sanitizer_reports.sh "$reports" sanitize
exit $status
