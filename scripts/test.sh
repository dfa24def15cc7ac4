#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. The tests start what they need
# themselves (a nats-server on a free loopback port, RocksDB in temporary directories).
# Usage: scripts/test.sh [ctest arguments, e.g. -R wire]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)
cd build
ctest --output-on-failure -j"$jobs" --timeout 300 "$@"
