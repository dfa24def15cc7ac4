#!/usr/bin/env bash
# The guide's main.py in Python on keel (standard library only, over the HTTP API): keel dev with
# the coding agent, a token for this client, and main.py approving the write and the command.
# Exits 0 only when hello.js was written and ran. KEEL_BUILD: which build's keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"

. "$here/../keel-dev.sh"

# The coding agent of configs/coder.toml, its workspace in this example's home.
sed "s|^workspace = .*|workspace = \"$KEEL_HOME/workspace\"|" "$root/configs/coder.toml" >"$KEEL_HOME/coder.toml"
cp "$root/configs/coder.script.json" "$KEEL_HOME/"
start_dev "$KEEL_HOME/coder.toml"

add_token python-example
python3 "$here/main.py" --answers yy
test "$(cat "$KEEL_HOME/workspace/hello.js" 2>/dev/null | head -c 11)" = "console.log"
