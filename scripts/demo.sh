#!/usr/bin/env bash
# keel's main job: the guide's coding agent on the built-in scripted model. It starts a
# development cluster (nats-server and one node), runs the task, and asks you to approve each
# write and each command in this terminal. Usage: scripts/demo.sh ["task"] [--yes]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

export KEEL_HOME="${KEEL_HOME:-$PWD/.keel}"
mkdir -p "$KEEL_HOME"
log="$KEEL_HOME/demo.log"
build/apps/keel dev --config configs/coder.toml --data-dir "$KEEL_HOME/demo" >"$log" 2>&1 &
dev=$!
stop() {
  kill -INT "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 200); do
  if grep -q "Press Ctrl-C" "$log" 2>/dev/null; then break; fi
  if ! kill -0 "$dev" 2>/dev/null; then
    echo "keel dev did not start; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
sed -n '/keel dev is running/,/Context:/p' "$log"
echo "  (node log: $log; files land in $PWD/workspace)"
echo

task="Create hello.js that prints 'Hello, world!' and run it."
args=()
for a in "$@"; do
  if [ "$a" = "--yes" ] || [ "$a" = "-y" ]; then args+=(--yes); else task="$a"; fi
done
build/apps/keel run coder "$task" "${args[@]}"
