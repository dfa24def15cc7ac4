#!/usr/bin/env bash
# What adding orchestrators and workers buys: keel_cluster_bench over a grid of orchestrator and
# worker processes, with a model that answers at once and with one that takes 1,000 ms, then a
# table. Everything is in the arguments; nothing is tied to this machine.
# Usage: bench/cluster.sh [--orchestrators "1 2 4"] [--workers "1 2 4"] [--runs N] [--slow-runs N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
orchestrators="1 2 4"
workers="1 2 4"
runs=400          # runs at once with the model that answers at once
slow_runs=512     # runs at once with the 1,000 ms model (many in flight)
out=bench/cluster-results.md
while [ $# -gt 0 ]; do
  case $1 in
    --orchestrators) orchestrators=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --slow-runs) slow_runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bench/cluster.sh [--orchestrators \"1 2 4\"] [--workers \"1 2 4\"] [--runs N] [--slow-runs N] [--out FILE]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh >/dev/null
ninja -C build keel_bench keel_load_bench keel_sse_bench keel_cluster_bench >/dev/null
{
  echo "# keel cluster scaling ($(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  echo "bench/cluster.sh: one nats-server, K orchestrator and M worker processes on this machine, 5 model"
  echo "turns a run, each with a trivial tool call (11 steps). Overhead: a run's time beyond its model"
  echo "calls, per step, including the wait for a free slot (64 per worker). With the 1,000 ms model the"
  echo "runs at once outnumber the slots: throughput follows the workers' slots. With the model that"
  echo "answers at once the machine's cores are the limit; on this machine every process shares them."
  echo
  echo "CPU: each kind of process's CPU over the run, in cores (orchestrators / workers / nats-server);"
  echo "the busiest thread's share of keel's CPU says whether one thread would stop the growth with"
  echo "more cores (keel_cluster_bench prints its name on stderr)."
  echo
  echo "| orchestrators | workers | model call | runs at once | steps/s | overhead p50 | overhead p99 | CPU, cores (o / w / nats) | busiest thread |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$out"
for model_ms in 0 1000; do
  n=$runs
  [ "$model_ms" = 0 ] || n=$slow_runs
  for o in $orchestrators; do
    for w in $workers; do
      line=$(build/bench/keel_cluster_bench --node build/apps/keel-node --orchestrators "$o" --workers "$w" --runs "$n" \
        --model-ms "$model_ms" | python3 -c '
import json, sys
f = {}
for line in sys.stdin:
    if line.startswith("{"):
        d = json.loads(line); f[d["name"]] = d["value"]
g = lambda k: f["cluster." + k]
print("| %.0f | %.0f | %.0f ms | %.0f | %s | %.1f ms | %.1f ms | %.2f / %.2f / %.2f | %.0f%% |" % (g("orchestrators"), g("workers"),
      g("model_ms"), g("runs"), format(round(g("steps_per_second")), ","), g("overhead_p50_ms"), g("overhead_p99_ms"),
      g("orchestrators_cpu_cores"), g("workers_cpu_cores"), g("nats_cpu_cores"), 100 * g("busiest_thread_share")))')
      echo "$line" | tee -a "$out"
    done
  done
done
echo "wrote $out"
