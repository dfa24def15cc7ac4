#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. The tests start what they need
# themselves (a nats-server on a free loopback port, RocksDB in temporary directories).
# Usage: scripts/test.sh [--sanitize address|thread] [ctest arguments, e.g. -R wire]
#   --sanitize address: the same tests, every one, on a build with AddressSanitizer and
#   UndefinedBehaviorSanitizer (build-asan/, scripts/sanitize.sh); CI runs them so, one build
#   serving both. --sanitize thread: scripts/sanitize.sh thread.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  [ $# -ge 2 ] || { echo "test: --sanitize address or --sanitize thread" >&2; exit 2; }
  kind=$2
  shift 2
  exec scripts/sanitize.sh "$kind" "$@"
fi
scripts/setup.sh
# Two tests per core: most of a test's time is waiting (for a lease to lapse, a process to start,
# a timeout), not computing.
jobs=$(( $(nproc) * 2 ))
cd build
ctest --output-on-failure -j"$jobs" --timeout 300 "$@"
