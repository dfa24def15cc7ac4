#!/usr/bin/env bash
# The guide's main.py in Python on keel (standard library only, over the HTTP API): keel dev with
# the coding agent, a token for this client, and main.py approving the write and the command.
# Exits 0 only when hello.js was written and ran. KEEL_BUILD: which build's keel runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${KEEL_BUILD:-$root/build}"
[ -x "$build/apps/keel" ] || "$root/scripts/setup.sh"

export KEEL_HOME="$(mktemp -d /tmp/keel-example-XXXXXX)"
chmod 711 "$KEEL_HOME"  # commands run as keel-sandbox reach the workspace beneath
dev=""
stop() {
  [ -z "$dev" ] || { kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; }
  rm -rf "$KEEL_HOME"
}
trap stop EXIT

# The coding agent of configs/coder.toml, its workspace in this example's home.
sed "s|^workspace = .*|workspace = \"$KEEL_HOME/workspace\"|" "$root/configs/coder.toml" >"$KEEL_HOME/coder.toml"
cp "$root/configs/coder.script.json" "$KEEL_HOME/"
"$build/apps/keel" dev --config "$KEEL_HOME/coder.toml" --data-dir "$KEEL_HOME/dev" --gateway 127.0.0.1:0 \
  >"$KEEL_HOME/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 300); do
  grep -q "Press Ctrl-C" "$KEEL_HOME/dev.log" 2>/dev/null && break
  kill -0 "$dev" 2>/dev/null || { cat "$KEEL_HOME/dev.log" >&2; exit 1; }
  sleep 0.1
done

# A token of its own for this client (the gateway reads the tokens file again within a second).
KEEL_TOKEN=$("$build/apps/keel" token add python-example 2>/dev/null)
export KEEL_TOKEN
sleep 1.2
python3 "$here/main.py" --answers yy
test "$(cat "$KEEL_HOME/workspace/hello.js" 2>/dev/null | head -c 11)" = "console.log"
