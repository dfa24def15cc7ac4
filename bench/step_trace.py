"""Medians between consecutive hand-overs of a step, from a KEEL_STEP_TRACE_FILE."""
import collections
import sys

NAMES = {
    11: "result received", 12: "result decoded", 13: "result in the run's actor",
    14: "transition built", 15: "write batch building", 21: "write started", 22: "write done",
    16: "publishing events and task", 17: "task published", 1: "task received (worker)",
    3: "task decoded", 4: "task executed", 5: "result published",
}
ORDER = [11, 12, 13, 14, 15, 21, 22, 16, 17, 1, 3, 4, 5]

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
print(f"{'from':<30} {'to':<30} {'count':>6} {'median us':>10}")
for (a, b), v in sorted(gaps.items(), key=lambda kv: (ORDER.index(kv[0][0]) if kv[0][0] in ORDER else 99,
                                                      ORDER.index(kv[0][1]) if kv[0][1] in ORDER else 99)):
    if len(v) < steps * 0.1:
        continue
    print(f"{NAMES.get(a, a):<30} {NAMES.get(b, b):<30} {len(v):>6} {median(v):>10.1f}")
