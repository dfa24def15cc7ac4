#!/usr/bin/env bash
# A tool of your own in TypeScript: keel dev with the support agent, the tool worker of queue
# "tickets" (worker.mjs), and a client (client.mjs) that runs the agent and approves the close.
# Exits 0 only when the run completed through both tools. KEEL_BUILD: which build's keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"
[ -f "$root/sdk/typescript/dist/index.js" ] || "$root/scripts/setup.sh" --no-build

. "$here/../keel-dev.sh"

start_dev "$here/keel.toml"

cd "$here"
KEEL_WORKER_CREDENTIALS="$KEEL_HOME/dev/credentials/worker.creds" node worker.mjs >"$KEEL_HOME/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q "tool worker ready" "$KEEL_HOME/worker.log" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$KEEL_HOME/worker.log" >&2; exit 1; }
  sleep 0.1
done
# What the worker declared, as keel holds it.
"$build/apps/keel" tools
"$build/apps/keel" tools | grep -q "tickets.close_ticket *always" || { echo "keel tools does not list close_ticket" >&2; exit 1; }
if ! node client.mjs; then
  echo "--- keel dev" >&2; tail -40 "$KEEL_HOME/dev.log" >&2
  echo "--- tool worker" >&2; cat "$KEEL_HOME/worker.log" >&2
  exit 1
fi
grep "closed T-42" "$KEEL_HOME/worker.log"
