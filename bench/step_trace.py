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

print(f"{'from':<30} {'to':<30} {'steps':>6} {'median us':>10}")
total = 0.0
for a, b in zip(ORDER, ORDER[1:] + ORDER[:1]):
    v = gaps.get((a, b), [])
    if len(v) < 20:
        continue
    total += median(v)
    print(f"{NAMES[a]:<30} {NAMES[b]:<30} {len(v):>6} {median(v):>10.1f}")
print(f"{'sum of the medians':<61} {'':>6} {total:>10.1f}")
