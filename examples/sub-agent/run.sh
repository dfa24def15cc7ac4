#!/usr/bin/env bash
# Sub-agents: keel dev with the lead and writer agents (keel.toml), and main.py approving the
# writer's write from the approvals inbox. Exits 0 only when the lead completed with what the
# writer reported and the file was written by the writer's run. KEEL_BUILD: which build's keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"

export KEEL_HOME="$(mktemp -d /tmp/keel-example-XXXXXX)"
chmod 711 "$KEEL_HOME"  # the sandbox's account reaches the workspaces beneath
dev=""
stop() {
  [ -z "$dev" ] || { kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; }
  rm -rf "$KEEL_HOME"
}
trap stop EXIT

cp "$here/keel.toml" "$here/lead.script.json" "$here/writer.script.json" "$KEEL_HOME/"
for agent in lead writer; do
  printf '\n[agents.%s.sandbox]\nworkspace = "%s/workspaces"\n' "$agent" "$KEEL_HOME" >>"$KEEL_HOME/keel.toml"
done
"$build/apps/keel" dev --config "$KEEL_HOME/keel.toml" --data-dir "$KEEL_HOME/dev" --gateway 127.0.0.1:0 \
  >"$KEEL_HOME/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 300); do
  grep -q "Press Ctrl-C" "$KEEL_HOME/dev.log" 2>/dev/null && break
  kill -0 "$dev" 2>/dev/null || { cat "$KEEL_HOME/dev.log" >&2; exit 1; }
  sleep 0.1
done

KEEL_TOKEN=$("$build/apps/keel" token add sub-agent-example 2>/dev/null)
export KEEL_TOKEN
sleep 1.2
if ! python3 "$here/main.py" | tee "$KEEL_HOME/main.out"; then
  tail -40 "$KEEL_HOME/dev.log" >&2
  exit 1
fi
grep -q "The writer reported: Agent writer answered: CHANGELOG.md is written." "$KEEL_HOME/main.out"
grep -q "approval in .* -> .*: write" "$KEEL_HOME/main.out"
test "$(cat "$KEEL_HOME"/workspaces/runs/*/CHANGELOG.md)" = "$(printf '# Changelog\n- sub-agents')"
