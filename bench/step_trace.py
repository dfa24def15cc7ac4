"""Medians between consecutive hand-overs of a step, from a KEEL_STEP_TRACE_FILE."""
import collections
import sys

NAMES = {
    11: "result received", 12: "result decoded", 13: "result in the run's actor",
    14: "transition built", 15: "write batch building", 23: "result write started",
    24: "result write done", 21: "write started", 22: "write done",
    16: "publishing events and task", 17: "task published", 1: "task received (worker)",
    3: "task decoded", 4: "task executed", 5: "result published",
}
ORDER = [11, 12, 13, 14, 15, 23, 24, 21, 22, 16, 17, 1, 3, 4, 5]

marks = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
gaps = collections.defaultdict(list)
for (a, ta), (b, tb) in zip(marks, marks[1:]):
    gaps[(a, b)].append((tb - ta) / 1000)

def median(values):
    values = sorted(values)
    return values[len(values) // 2]

# Every pair of consecutive points seen often enough, in the order of a step. Since a step's
# result is written on its own while the run's actor works out what follows, the two writes'
# points interleave with the actor's: read the pairs as a timeline, not as a sum.
steps = max(1, sum(1 for p, _ in marks if p == 11))
print(f"{'from':<30} {'to':<30} {'count':>6} {'median us':>10} {'mean us':>8}")
for (a, b), v in sorted(gaps.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
                                                      ORDER.index(kv[0][1]) if kv[0][1] in ORDER else 99)):
    if len(v) < steps * 0.1:
        continue
    print(f"{NAMES.get(a, a):<30} {NAMES.get(b, b):<30} {len(v):>6} {median(v):>10.1f} {sum(v) / len(v):>8.1f}")

# The step as a whole: from one result's arrival to the next one's (runs one at a time, so
# gaps above 5 ms are between runs, not steps).
received = [t for p, t in marks if p == 11]
cycle = [(b - a) / 1000 for a, b in zip(received, received[1:]) if (b - a) < 5_000_000]
if cycle:
    print(f"\none step (result to next result): median {median(cycle):.1f} us, mean {sum(cycle) / len(cycle):.1f} us, "
          f"{len(cycle)} steps")

# The same as a timeline: for the steps in the middle half by length, the median time at which
# each point is first reached after the result arrives. Steps at run boundaries (a new run's first
# transition, built without a result) are left out.
cycles, current = [], []
for p, t in marks:
    if p == 11 and current:
        cycles.append(current)
        current = []
    current.append((p, t))
whole = []
for c, nxt in zip(cycles, cycles[1:]):
    if sum(1 for p, _ in c if p == 14) > sum(1 for p, _ in c if p == 13):
        continue
    whole.append(((nxt[0][1] - c[0][1]) / 1000, c))
if whole:
    lengths = sorted(d for d, _ in whole)
    low, high = lengths[len(lengths) // 4], lengths[3 * len(lengths) // 4]
    reached = collections.defaultdict(list)
    for d, c in whole:
        if not low <= d <= high:
            continue
        first = {}
        for p, t in c:
            first.setdefault(p, (t - c[0][1]) / 1000)
        for p, v in first.items():
            reached[p].append(v)
    print(f"\nsteps within a run: {len(whole)}, median {median(lengths):.1f} us; timeline of the middle half:")
    for p in sorted(reached, key=lambda p: median(reached[p])):
        print(f"  {median(reached[p]):>7.1f} us  {NAMES.get(p, p)}")
