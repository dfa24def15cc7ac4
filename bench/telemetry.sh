#!/usr/bin/env bash
# Whether traces cost steps anything, above all with the collector down: keel_bench's durable step
# and throughput with no traces, with a collector that takes every span (a local OTLP/HTTP
# receiver), with none listening (connection refused), and with one that accepts connections and
# never answers (each export waits out its timeout). Alternated in rounds in one sitting; writes
# bench/telemetry-results.md. Usage: bench/telemetry.sh [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
ninja -C build keel_bench keel-node >/dev/null
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
taking=$(free_port); refused=$(free_port); silent=$(free_port)
python3 tests/support/otlp_receiver.py "$taking" "$work/otlp" &
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024); held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$silent" &
sleep 1
bench() {  # name, endpoint (empty: no traces)
  local out
  out=$(env ${2:+OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=$2} OTEL_EXPORTER_OTLP_TIMEOUT=10000 \
        build/bench/keel_bench --node build/apps/keel-node --suspended-runs 1000 --latency-runs 40 --rounds 2 --concurrent-runs 200 |
        grep '^{')
  echo "$out" | python3 -c '
import json, sys
f = {}
for l in sys.stdin:
    j = json.loads(l); f[j["name"]] = j["value"]
print(sys.argv[1], f["latency.step_us"], f["latency.step_over_floor"], f["throughput.steps_per_second"])' "$1"
}
results="$work/results"
for r in $(seq "$rounds"); do
  bench none "" >>"$results"
  bench collector "http://127.0.0.1:$taking/v1/traces" >>"$results"
  bench refused "http://127.0.0.1:$refused/v1/traces" >>"$results"
  bench silent "http://127.0.0.1:$silent/v1/traces" >>"$results"
done
spans=$(cat "$work"/otlp/*.json 2>/dev/null | python3 -c '
import json, sys
n = 0
for line in sys.stdin.read().replace("}{", "}\n{").splitlines():
    try:
        for rs in json.loads(line)["body"]["resourceSpans"]:
            for ss in rs["scopeSpans"]: n += len(ss["spans"])
    except Exception: pass
print(n)')
python3 - "$results" "$rounds" "$spans" <<'PY'
import sys, statistics, datetime, os
rows = {}
for line in open(sys.argv[1]):
    name, step, ratio, tput = line.split()
    rows.setdefault(name, []).append((float(step), float(ratio), float(tput)))
base = rows["none"]
def med(name, i): return statistics.median(r[i] for r in rows[name])
lines = [f"Measured by `bench/telemetry.sh {sys.argv[2]}` on {datetime.date.today()} ({os.cpu_count()} cores): keel_bench "
         f"(40 latency runs in 2 rounds, 200 concurrent runs for throughput) per setting, the settings alternated "
         f"in {sys.argv[2]} rounds, medians. The collector received {sys.argv[3]} spans.", "",
         "| traces | durable step | x the floor | steps/s | steps/s vs no traces |", "| --- | --- | --- | --- | --- |"]
labels = {"none": "off", "collector": "to a collector that takes them", "refused": "collector down (connection refused)",
          "silent": "collector hung (accepts, never answers)"}
for name in ["none", "collector", "refused", "silent"]:
    lines.append(f"| {labels[name]} | {med(name,0):,.0f} µs | {med(name,1):.2f}x | {med(name,2):,.0f} | {med(name,2)/med('none',2):.2f} |")
open("bench/telemetry-results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
