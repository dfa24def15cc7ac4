#!/usr/bin/env bash
# MCP and command tools: keel dev with the notes agent (keel.toml), whose filesystem MCP server
# runs in the sandbox, and main.py approving its write. Exits 0 only when the note was written
# by the server, read back, and its lines counted by the command tool. KEEL_BUILD: which build's
# keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"
[ -d "$root/tests/mcp/node_modules/@modelcontextprotocol/server-filesystem" ] || "$root/scripts/setup.sh" --no-build

export KEEL_HOME="$(mktemp -d /tmp/keel-example-XXXXXX)"
chmod 711 "$KEEL_HOME"  # the sandbox's account reaches the workspace beneath
dev=""
stop() {
  [ -z "$dev" ] || { kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; }
  rm -rf "$KEEL_HOME"
}
trap stop EXIT

sed "s|@SERVERS@|$root/tests/mcp/node_modules/@modelcontextprotocol|" "$here/keel.toml" >"$KEEL_HOME/keel.toml"
printf '\n[agents.notes.sandbox]\nworkspace = "%s/workspaces"\n' "$KEEL_HOME" >>"$KEEL_HOME/keel.toml"
cp "$here/notes.script.json" "$KEEL_HOME/"
"$build/apps/keel" dev --config "$KEEL_HOME/keel.toml" --data-dir "$KEEL_HOME/dev" --gateway 127.0.0.1:0 \
  >"$KEEL_HOME/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 300); do
  grep -q "Press Ctrl-C" "$KEEL_HOME/dev.log" 2>/dev/null && break
  kill -0 "$dev" 2>/dev/null || { cat "$KEEL_HOME/dev.log" >&2; exit 1; }
  sleep 0.1
done

KEEL_TOKEN=$("$build/apps/keel" token add mcp-example 2>/dev/null)
export KEEL_TOKEN
sleep 1.2
if ! python3 "$here/main.py" | tee "$KEEL_HOME/main.out"; then
  tail -40 "$KEEL_HOME/dev.log" >&2
  exit 1
fi
grep -q "files__read_text_file: '# Notes" "$KEEL_HOME/main.out"
grep -q "^3 notes.md" "$KEEL_HOME/main.out"
note="$(find "$KEEL_HOME/workspaces" -name notes.md | head -1)"
test "$(head -1 "$note")" = "# Notes"
