#!/usr/bin/env bash
# Sub-agents: keel dev with the lead and writer agents (keel.toml), and main.py approving the
# writer's write from the approvals inbox. Exits 0 only when the lead completed with what the
# writer reported and the file was written by the writer's run. KEEL_BUILD: which build's keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"

. "$here/../keel-dev.sh"

cp "$here/keel.toml" "$here/lead.script.json" "$here/writer.script.json" "$KEEL_HOME/"
for agent in lead writer; do
  printf '\n[agents.%s.sandbox]\nworkspace = "%s/workspaces"\n' "$agent" "$KEEL_HOME" >>"$KEEL_HOME/keel.toml"
done
start_dev "$KEEL_HOME/keel.toml"
add_token sub-agent-example
if ! python3 "$here/main.py" | tee "$KEEL_HOME/main.out"; then
  tail -40 "$KEEL_HOME/dev.log" >&2
  exit 1
fi
grep -q "The writer reported: Agent writer answered: CHANGELOG.md is written." "$KEEL_HOME/main.out"
grep -q "approval in .* -> .*: write" "$KEEL_HOME/main.out"
test "$(cat "$KEEL_HOME"/workspaces/runs/*/CHANGELOG.md)" = "$(printf '# Changelog\n- sub-agents')"
