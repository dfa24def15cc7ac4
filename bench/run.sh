#!/usr/bin/env bash
# Runs keel's benchmark on this machine and writes docs/BENCHMARKS.md. Every figure comes from
# one run, so ratios compare like with like on a shared, noisy machine.
# Usage: bench/run.sh [keel_bench options, e.g. --suspended-runs 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
out=$(mktemp)
build/bench/keel_bench --node build/apps/keel-node "$@" | grep '^{' | tee "$out"
python3 - "$out" <<'PY'
import json, sys, datetime, platform, os
figures = {}
for line in open(sys.argv[1]):
    f = json.loads(line)
    figures[f["name"]] = f["value"]
def fig(name, digits=0):
    return f'{figures[name]:,.{digits}f}'
floor = figures["floor.step_us"]
step = figures["latency.step_us"]
rss = figures["memory.rss_added_mb"]
runs = figures["memory.suspended_runs"]
md = f"""# keel benchmarks

Written by `bench/run.sh` on {datetime.date.today()} ({platform.machine()}, {os.cpu_count()} cores),
all figures from one run. The machine is shared and noisy: compare the ratios, which are taken
within the run, rather than the absolute numbers.

What runs: a real nats-server and a real keel-node (orchestrator and worker roles, fsync on),
driven over NATS. An agent on the scripted model makes {figures.get('turns', 10):.0f} model turns,
each calling one trivial tool (`read` of a five-byte file), then answers: 21 durable steps per run
(each model call and each tool call is a step whose dispatch and result are written, synced, before
they are acted on).

## The floor

| what | median |
| --- | --- |
| one NATS request/reply round trip (512 bytes, two connections) | {fig('floor.nats_round_trip_us')} µs |
| one synced RocksDB write (a 1 KB run transition) | {fig('floor.synced_write_us')} µs |
| floor of one durable step (their sum) | {fig('floor.step_us')} µs |
| the two in turn, as a step has them (round trip, then synced write, repeated) | {fig('floor.loop_step_us')} µs |

A synced write that follows other work costs more here than one that follows another write, so
the second floor is higher than the sum. The target is judged against the sum (the stricter).

## Results

| figure | measured | target | |
| --- | --- | --- | --- |
| durable step at low load (one run at a time, median of runs) | {fig('latency.step_us')} µs = **{figures['latency.step_over_floor']:.2f}x the floor** | at most 1.5x | {'met' if figures['latency.step_over_floor'] <= 1.5 else 'not met'} |
| the same step against the floor measured in turn | **{figures['latency.step_over_loop_floor']:.2f}x** | | |
| steps per second, one node, many runs at once, fsync on | **{fig('throughput.steps_per_second')}** | at least 4,000 | {'met' if figures['throughput.steps_per_second'] >= 4000 else 'not met'} |
| agent runs per second (21 steps each) | {fig('throughput.runs_per_second', 1)} | | |
| resident memory added by {runs:,.0f} suspended runs | **{rss:.1f} MB** ({rss * 1024 * 1024 / runs:,.0f} bytes a run) | under 100 MB for 100,000 | {'met' if rss < 100 and runs >= 100000 else 'see note'} |
| run actors in memory while they wait | {fig('memory.runs_in_memory')} | 0 | |
| time to create and suspend them | {figures['memory.suspend_seconds']:.1f} s | | |

Resident memory of the node before the suspended runs: {figures['memory.rss_before_mb']:.1f} MB,
after: {figures['memory.rss_after_mb']:.1f} MB. What remains is mostly RocksDB's memtables
(`durability.memtable_bytes`, two at most) and block cache, both bounded by config.

## Where the time goes

Measured on 2026-11-27 with `bench/step_trace.sh`, which builds the node with timestamps at
each hand-over of a step (`-DKEEL_STEP_TRACE=ON`, runtime/step_trace.hpp) and prints the
medians between them. This is the step as it was before its result got a write of its own (see
below), over 2,000 steps at low load in a quiet phase of the machine (the floor's write about
230 µs, its round trip about 200 µs):

| part of one step | µs |
| --- | --- |
| result: NATS to the orchestrator (worker publish to delivery) | 90 |
| result decoded, routed to the run's actor (delivery thread) | 16 |
| hand-over to the run's actor (CAF) | 18 |
| run machine: the transition, the next task, events encoded | 67 |
| write batch built | 35 |
| RocksDB write with fsync | 280 to 300 |
| events and task published | 35 |
| task: NATS to the worker (publish to the thread that runs it) | 130 |
| task decoded | 30 |
| the step itself: scripted model turn / `read` of a small file | 48 / 53 |
| result encoded and published | 32 |

The two NATS legs together match the floor's round trip, but the synced write inside a step
costs 50 to 70 µs more than back to back, and about 300 µs of the step was CPU work on the
critical path: decoding and encoding on both sides, the run machine, the step itself. On this
2-core machine that work runs 2 to 3 times slower inside the node than in a hot loop (the same
calls measured alone: the run machine 22 to 29 µs, a model task's decode 25 µs), because each
step runs on cold caches after nats-server and the client had the cores.

What was done, in order: the worker runs a task on the thread that receives it (a
leader/followers intake, no hand-off to a pool); tool schemas are built once per agent (a
scripted model turn went from 127 to 48 µs); the conversation is stored message by message
instead of inside every snapshot; NATS messages are freed after their handler. Then the largest
change: a step's result is written alone first, as the worker sent it (the delivery thread reads
only its run and step), and the next task goes as soon as that write is on disk; the run machine,
the snapshot and the events are worked out while the fsync is in flight and written second. In
the same conditions the low-load step went from 850 to 950 µs to about 780 µs, and throughput
from about 5,700 to 6,300 to 7,100 steps a second (the actor no longer blocks on the write).

What is left on the step's path: the hand-over to the run's actor (about 30 µs) and from it to
the writer's thread (about 40 µs, the writer waking up), the fsync, the two NATS legs, and the
worker's decode, step and encode. `bench/step_trace.sh` now prints these as a timeline of
consecutive points, since the two writes and the actor's work overlap. Next in size: let the
delivery thread hand the result to the writer and the actor at once (about 30 µs), and decode
tasks and encode results without building JSON values (about 50 µs).

An experiment that says where the limit is: with jemalloc preloaded (`LD_PRELOAD`, not part of
keel's stack), the run machine and the codecs take about 30% less time in a hot loop, and a
node's throughput rose from about 5,700 to about 7,700 steps a second in the same run (before
the two writes), but the low-load step did not move beyond the noise (1.86x to 2.08x either
way). At low load a step is bound by its hand-overs between threads and processes and by the
fsync, each of which wakes a thread on a cold core; shaving CPU work gains little unless it
leaves the path.

Throughput comes from group commit: transitions of concurrent runs share one synced write.

Reproduce: `bench/run.sh` (options: `--turns`, `--concurrent-runs`, `--suspended-runs`,
`--latency-runs`).
"""
open("docs/BENCHMARKS.md", "w").write(md)
print("wrote docs/BENCHMARKS.md")
PY
rm -f "$out"
