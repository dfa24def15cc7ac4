#!/usr/bin/env bash
# A local keel cluster from configs/cluster: three nats-servers (routed, JetStream on each), two
# orchestrators, three workers and a gateway, each its own process with its own log. `up` writes
# the same context file as `keel dev`, so every `keel` command in another terminal reaches the
# cluster with no flags.
#
#   scripts/cluster.sh up       start everything (and build first if needed)
#   scripts/cluster.sh status   each process: running or not, pid, log
#   scripts/cluster.sh down     stop everything (SIGTERM, then SIGKILL after 15 s)
#
# State (stores, logs, pids) lives in $KEEL_HOME/cluster (default ~/.keel/cluster). Ports: nats
# clients on KEEL_CLUSTER_PORT..+2 (default 4301), routes on that + 2000, the gateway on
# KEEL_CLUSTER_GATEWAY (default 127.0.0.1:8090). KEEL_CLUSTER_SET: more `keel-node --set` lines
# (TOML, one per line) for every orchestrator and worker, e.g. another script for the agent.
# KEEL_BUILD: the build whose apps/keel and apps/keel-node run the cluster (default build/, made by
# scripts/setup.sh when missing; the tests name the sanitized build they run on).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
home="${KEEL_HOME:-$HOME/.keel}"
state="$home/cluster"
base="${KEEL_CLUSTER_PORT:-4301}"
gateway="${KEEL_CLUSTER_GATEWAY:-127.0.0.1:8090}"
build="${KEEL_BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
nats_bin=/usr/sbin/nats-server
[ -x "$nats_bin" ] || nats_bin=nats-server
nodes=(orchestrator-1 orchestrator-2 worker-1 worker-2 worker-3 gateway-1)
servers=(nats-1 nats-2 nats-3)

port_of() { echo $((base + $1 - 1)); }
route_of() { echo $((base + 2000 + $1 - 1)); }
urls() {
  local out=""
  for i in 1 2 3; do out+="${out:+, }\"nats://127.0.0.1:$(port_of "$i")\""; done
  echo "[$out]"
}
running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_process() {  # name, then the command
  local name=$1
  shift
  if running "$name"; then
    echo "  $name is running already (pid $(cat "$state/$name.pid"))"
    return
  fi
  setsid "$@" >>"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}

up() {
  if [ ! -x "$build/apps/keel-node" ]; then
    if [ -n "${KEEL_BUILD:-}" ]; then
      echo "cluster: KEEL_BUILD=$KEEL_BUILD has no apps/keel-node" >&2
      exit 1
    fi
    scripts/setup.sh
  fi
  mkdir -p "$state"
  for i in 1 2 3; do
    if ! running "nats-$i" && listening "$(port_of "$i")"; then
      echo "cluster: port $(port_of "$i") is taken; set KEEL_CLUSTER_PORT to move the cluster" >&2
      exit 1
    fi
  done
  # The broker's users (one per role, and you): nats-server refuses anyone else, and each role
  # may publish only what it is for (docs/OPERATIONS.md). Made once, kept in $state/credentials.
  person=$(id -un | tr -c 'A-Za-z0-9_\n-' '_' | cut -c1-64)
  "$build/apps/keel" credentials init "$state/credentials" --person "$person" >/dev/null
  # The gateway's token for you: made once (keel token), kept where only you can read it.
  local tokens="$state/gateway-1/gateway-tokens" token_file="$state/credentials/gateway-token"
  mkdir -p "$state/gateway-1"
  if [ ! -s "$token_file" ] || ! grep -q "^$person " "$tokens" 2>/dev/null; then
    (umask 077; "$build/apps/keel" token add "$person" --file "$tokens" 2>/dev/null >"$token_file")
  fi
  # curl reads the header from an owner-only file: a token on its command line would be in ps.
  (umask 077; echo "Authorization: Bearer $(cat "$token_file")" >"$state/credentials/gateway-header")
  local auth=(-H "@$state/credentials/gateway-header")
  # The password the servers' routes share, made once.
  local route_password_file="$state/credentials/route-password" route_password
  [ -s "$route_password_file" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$route_password_file")
  route_password=$(cat "$route_password_file")
  echo "Starting nats-servers..."
  for i in 1 2 3; do
    # configs/cluster/nats-N.conf with the routes' password (a server joins only with it; kept in
    # this owner-only file, never on a command line), and the users (included relative to it).
    local routes=""
    for j in 1 2 3; do [ "$j" = "$i" ] || routes+="${routes:+, }\"nats-route://route:$route_password@127.0.0.1:$(route_of "$j")\""; done
    # The password goes to awk in its environment (owner-only), not on its command line.
    (umask 077
     { ROUTE_PASSWORD="$route_password" ROUTES="$routes" LISTEN="127.0.0.1:$(route_of "$i")" awk '
         /^cluster \{/ { in_cluster = 1; print; print "  authorization { user: route, password: \"" ENVIRON["ROUTE_PASSWORD"] "\" }"; next }
         /^  listen:/ && in_cluster { print "  listen: " ENVIRON["LISTEN"]; next }
         /^  routes:/ { print "  routes: [" ENVIRON["ROUTES"] "]"; next }
         { print }' "configs/cluster/nats-$i.conf"
       echo 'include "credentials/nats-auth.conf"'; } >"$state/nats-$i.conf")
    start_process "nats-$i" "$nats_bin" -c "$state/nats-$i.conf" -a 127.0.0.1 -p "$(port_of "$i")" -sd "$state/nats-$i"
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do listening "$(port_of "$i")" && break; running "nats-$i" || break; sleep 0.1; done
    if ! listening "$(port_of "$i")"; then
      echo "cluster: nats-$i did not start; the end of $state/nats-$i.log:" >&2
      tail -5 "$state/nats-$i.log" >&2
      exit 1
    fi
  done
  echo "Starting nodes..."
  for n in "${nodes[@]}"; do
    local sets=(--set "nats.servers = $(urls)")
    case $n in
      orchestrator-*) sets+=(--set "node.data_dir = \"$state/$n\"" --set "nats.credentials_file = \"$state/credentials/orchestrator.creds\"") ;;
      worker-*) sets+=(--set "nats.credentials_file = \"$state/credentials/worker.creds\"") ;;
      gateway-*) sets+=(--set "gateway.listen = \"$gateway\"" --set "node.data_dir = \"$state/$n\""
                        --set "nats.credentials_file = \"$state/credentials/gateway.creds\"") ;;
    esac
    if [ -n "${KEEL_CLUSTER_SET:-}" ] && [[ $n != gateway-* ]]; then
      while IFS= read -r line; do [ -z "$line" ] || sets+=(--set "$line"); done <<<"$KEEL_CLUSTER_SET"
    fi
    start_process "$n" "$build/apps/keel-node" --config "configs/cluster/$n.toml" "${sets[@]}"
  done
  # Ready when the gateway answers for an orchestrator (a new JetStream cluster elects first).
  for _ in $(seq 1 600); do
    curl -sf "${auth[@]}" "http://$gateway/readyz" >/dev/null 2>&1 && break
    for n in "${nodes[@]}"; do
      running "$n" || { echo "cluster: $n stopped; its log:" >&2; tail -20 "$state/$n.log" >&2; exit 1; }
    done
    sleep 0.1
  done
  curl -sf "${auth[@]}" "http://$gateway/readyz" >/dev/null || { echo "cluster: the gateway is not ready; see $state/gateway-1.log" >&2; exit 1; }
  # Up when every node is: each has announced itself (a node announces once its roles are up).
  local missing=""
  for _ in $(seq 1 600); do
    local listed
    listed=$(curl -sf "${auth[@]}" "http://$gateway/api/v1/nodes" 2>/dev/null || true)
    missing=""
    for n in "${nodes[@]}"; do [[ $listed == *"\"$n\""* ]] || missing+=" $n"; done
    [ -z "$missing" ] && break
    sleep 0.1
  done
  [ -z "$missing" ] || { echo "cluster: not up after 60 s:$missing (see their logs in $state)" >&2; exit 1; }
  mkdir -p "$home"
  cat >"$home/context.toml" <<EOF
# Written by scripts/cluster.sh up; other keel commands read it.
nats_url = "nats://127.0.0.1:$(port_of 1)"
prefix = "keel"
namespace = "default"
dashboard_url = "http://$gateway"
credentials_file = "$state/credentials/$person.creds"
tokens_file = "$tokens"
pid = 0
EOF
  echo "The cluster is up."
  echo "  NATS:       $(urls)"
  echo "  Dashboard:  http://$gateway/#token=$(cat "$token_file")"
  echo "  State:      $state"
  echo "  Try:        ${build#"$root"/}/apps/keel nodes; ${build#"$root"/}/apps/keel run coder \"Create hello.js and run it.\""
  echo "  Stop:       scripts/cluster.sh down"
}

status() {
  printf '%-16s %-9s %-8s %s\n' PROCESS STATE PID LOG
  for n in "${servers[@]}" "${nodes[@]}"; do
    local pid=- st=stopped
    if running "$n"; then st=running; pid=$(cat "$state/$n.pid"); fi
    printf '%-16s %-9s %-8s %s\n' "$n" "$st" "$pid" "$state/$n.log"
  done
}

wait_gone() {  # the processes named, for up to 15 s
  for _ in $(seq 1 150); do
    local any=0
    for m in "$@"; do running "$m" && any=1; done
    [ $any = 0 ] && return
    sleep 0.1
  done
}

down() {
  local stopped=()
  for n in "${nodes[@]}" "${servers[@]}"; do
    if running "$n"; then
      kill -TERM "$(cat "$state/$n.pid")" 2>/dev/null || true
      stopped+=("$n")
    fi
    # Nodes first, so that they drain while the servers are still there.
    [ "$n" = gateway-1 ] && wait_gone "${nodes[@]}"
  done
  [ ${#stopped[@]} = 0 ] || wait_gone "${stopped[@]}"
  for n in "${stopped[@]}"; do running "$n" && kill -KILL "$(cat "$state/$n.pid")" 2>/dev/null || true; done
  for n in "${nodes[@]}" "${servers[@]}"; do rm -f "$state/$n.pid"; done
  if [ -f "$home/context.toml" ] && grep -q "scripts/cluster.sh" "$home/context.toml"; then rm -f "$home/context.toml"; fi
  echo "The cluster is down (${#stopped[@]} processes stopped)."
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: scripts/cluster.sh up|down|status" >&2; exit 2 ;;
esac
