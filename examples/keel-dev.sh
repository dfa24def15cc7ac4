# Sourced by the examples' run.sh: a temporary KEEL_HOME (removed at exit), `keel dev` on a
# config with a gateway on a free port, and whatever else the example starts (add its pid to
# `pids`), all stopped at exit. Needs `build` (a build of keel). Usage: start_dev CONFIG
export KEEL_HOME="$(mktemp -d /tmp/keel-example-XXXXXX)"
chmod 711 "$KEEL_HOME"  # the sandbox's account reaches the workspaces beneath
dev=""
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "$dev" ] || { kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; }
  rm -rf "$KEEL_HOME"
}
trap stop EXIT

start_dev() {
  "$build/apps/keel" dev --config "$1" --data-dir "$KEEL_HOME/dev" --gateway 127.0.0.1:0 >"$KEEL_HOME/dev.log" 2>&1 &
  dev=$!
  for _ in $(seq 1 300); do
    grep -q "Press Ctrl-C" "$KEEL_HOME/dev.log" 2>/dev/null && return 0
    kill -0 "$dev" 2>/dev/null || { cat "$KEEL_HOME/dev.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "keel dev did not start in 30 s" >&2
  cat "$KEEL_HOME/dev.log" >&2
  exit 1
}

# A token for the example's HTTP client (the gateway reads the tokens file again within a second).
add_token() {
  KEEL_TOKEN=$("$build/apps/keel" token add "$1" 2>/dev/null)
  export KEEL_TOKEN
  sleep 1.2
}
