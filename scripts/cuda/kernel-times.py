# Sums an `ncu --csv --metrics gpu__time_duration.sum` listing per kernel name, in the order the kernels first ran:
# launches, total and mean microseconds (paper.js --only profile: the kernels of one RetNet decode step).
#   python3 scripts/cuda/kernel-times.py profile.csv
import csv
import sys

rows = [r for r in csv.DictReader(line for line in open(sys.argv[1]) if line.startswith('"'))]
rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
total = 0.0
by = {}
for r in rows:
    us = float(r["Metric Value"].replace(",", "")) * scale[r["Metric Unit"]]
    total += us
    name = r["Kernel Name"][:90]
    n, t = by.get(name, (0, 0.0))
    by[name] = (n + 1, t + us)
print(f"{len(rows)} kernels, {total / 1e3:.3f} ms of kernel time")
for name, (n, t) in sorted(by.items(), key=lambda x: -x[1][1]):
    print(f"{t / 1e3:9.3f} ms {n:6d} x {t / n:9.2f} us  {name}")
