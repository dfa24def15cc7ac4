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

. "$here/../keel-dev.sh"

sed "s|@SERVERS@|$root/tests/mcp/node_modules/@modelcontextprotocol|" "$here/keel.toml" >"$KEEL_HOME/keel.toml"
printf '\n[agents.notes.sandbox]\nworkspace = "%s/workspaces"\n' "$KEEL_HOME" >>"$KEEL_HOME/keel.toml"
cp "$here/notes.script.json" "$KEEL_HOME/"
start_dev "$KEEL_HOME/keel.toml"
add_token mcp-example
if ! python3 "$here/main.py" | tee "$KEEL_HOME/main.out"; then
  tail -40 "$KEEL_HOME/dev.log" >&2
  exit 1
fi
grep -q "files__read_text_file: '# Notes" "$KEEL_HOME/main.out"
grep -q "^3 notes.md" "$KEEL_HOME/main.out"
note="$(find "$KEEL_HOME/workspaces" -name notes.md | head -1)"
test "$(head -1 "$note")" = "# Notes"
