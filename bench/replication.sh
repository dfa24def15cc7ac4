#!/usr/bin/env bash
# What the replicated run log costs: keel_bench (one node, every step durable) with the run log
# off and on, interleaved, on three routed nats-servers started here (the log and the task
# stream with 3 replicas, as configs/cluster runs), and on one server (1 replica). Writes a table.
# Usage: bench/replication.sh [--rounds N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
out=bench/replication-results.md
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/replication.sh [--rounds N] [--out FILE]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh >/dev/null
ninja -C build keel_bench keel_load_bench keel_sse_bench keel_cluster_bench >/dev/null
work=$(mktemp -d /tmp/keel-replication-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
nats_bin=/usr/sbin/nats-server
[ -x "$nats_bin" ] || nats_bin=nats-server
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ports=() routes=()
for i in 1 2 3; do ports+=("$(free_port)"); routes+=("$(free_port)"); done
for i in 0 1 2; do
  peers=""
  for j in 0 1 2; do [ "$j" = "$i" ] || peers+="${peers:+,}nats://127.0.0.1:${routes[$j]}"; done
  "$nats_bin" -a 127.0.0.1 -p "${ports[$i]}" -js -sd "$work/nats-$i" -n "bench-$i" --cluster_name bench \
    --cluster "nats://127.0.0.1:${routes[$i]}" --routes "$peers" >"$work/nats-$i.log" 2>&1 &
  pids+=($!)
  disown
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
sleep 2  # the cluster forms and elects its JetStream leader

bench() {  # name, then keel_bench options
  local name=$1
  shift
  build/bench/keel_bench --node build/apps/keel-node --suspended-runs 100 --latency-runs 80 --rounds 2 "$@" 2>/dev/null |
    grep '^{' | python3 -c '
import json, sys
f = {}
for line in sys.stdin:
    r = json.loads(line); f[r["name"]] = r["value"]
print(sys.argv[1], round(f["latency.step_us"]), round(f["floor.nats_round_trip_us"]), round(f["throughput.steps_per_second"]))' "$name"
}
results=$(
  for r in $(seq 1 "$rounds"); do
    bench "3-off" --nats "nats://127.0.0.1:${ports[0]}" --task-replicas 3 --log-replicas 0
    bench "3-on" --nats "nats://127.0.0.1:${ports[0]}" --task-replicas 3 --log-replicas 3
    bench "1-off" --log-replicas 0
    bench "1-on" --log-replicas 1
  done
)
python3 - "$out" "$rounds" <<EOF
import statistics, sys
rows = {}
for line in """$results""".strip().splitlines():
    name, step, rtt, tput = line.split()
    rows.setdefault(name, []).append((float(step), float(rtt), float(tput)))
def med(name, i): return statistics.median(r[i] for r in rows[name])
out = open(sys.argv[1], "w")
out.write("# The cost of the replicated run log (%d interleaved rounds)\n\n" % int(sys.argv[2]))
out.write("bench/replication.sh: keel_bench, one node with every role, the run log off and on. Step: one\n")
out.write("durable step at low load (one run at a time); throughput: 400 runs at once. Medians.\n\n")
out.write("| nats-servers (replicas) | run log | step | NATS round trip | step added | steps/s | throughput kept |\n")
out.write("| --- | --- | --- | --- | --- | --- | --- |\n")
for servers in ("3", "1"):
    off, on = servers + "-off", servers + "-on"
    added = med(on, 0) - med(off, 0)
    out.write("| %s | off | %.0f µs | %.0f µs | | %.0f | |\n" % (servers, med(off, 0), med(off, 1), med(off, 2)))
    out.write("| %s | on | %.0f µs | %.0f µs | %.0f µs (%.1f round trips) | %.0f | %.0f%% |\n" % (
        servers, med(on, 0), med(on, 1), added, added / med(on, 1), med(on, 2), 100 * med(on, 2) / med(off, 2)))
print(open(sys.argv[1]).read())
EOF
