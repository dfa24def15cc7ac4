#!/usr/bin/env bash
# Builds keel with a sanitizer and runs tests on that build (every keel-node and keel the tests
# start is the sanitized one). Any report fails the test that caused it.
#   scripts/sanitize.sh address [ctest arguments]   AddressSanitizer + UndefinedBehaviorSanitizer
#                                                   (leaks too), every test: build-asan/
#   scripts/sanitize.sh thread [ctest arguments]    ThreadSanitizer, the actors and broker
#                                                   tests (-L e2e_tests: the end-to-end ones,
#                                                   every keel-node under it): build-tsan/
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
# ThreadSanitizer by default runs the actors and broker tests: only those are built.
if [ "$kind" = thread ] && [ $# -eq 0 ]; then
  ninja -C "$dir" tests/actors_tests tests/broker_tests
else
  ninja -C "$dir"
fi
# Freed memory is filled: a system library built without the sanitizer (nats.c, RocksDB) that
# reads memory keel freed then crashes instead of reading what was there.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0:max_free_fill_size=4096:free_fill_byte=190"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
# Three tests per two cores: sanitized, a test computes more of its time than the plain build's do.
jobs=$(( $(nproc) * 3 / 2 ))
[ "$jobs" -ge 1 ] || jobs=1
# The plain build's measured test times order this run too (longest first), when there are some.
if [ -f build/Testing/Temporary/CTestCostData.txt ] && [ ! -f "$dir/Testing/Temporary/CTestCostData.txt" ]; then
  mkdir -p "$dir/Testing/Temporary"
  cp build/Testing/Temporary/CTestCostData.txt "$dir/Testing/Temporary/"
fi
cd "$dir"
if [ "$kind" = thread ] && [ $# -eq 0 ]; then
  set -- -L "actors_tests|broker_tests"
fi
ctest --output-on-failure -j"$jobs" --timeout 600 "$@"
