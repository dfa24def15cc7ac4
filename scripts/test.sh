#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. The tests start what they need
# themselves (a nats-server on a free loopback port, RocksDB in temporary directories).
# Usage: scripts/test.sh [ctest arguments, e.g. -R wire]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Two tests per core: most of a test's time is waiting (for a lease to lapse, a process to start,
# a timeout), not computing.
jobs=$(( $(nproc) * 2 ))
cd build
ctest --output-on-failure -j"$jobs" --timeout 300 "$@"
