#!/usr/bin/env python3
# Side by side: the median of every `sandbox boot --timeline` phase (ms since process start,
# SANDBOX_T0 taken just before the spawn) for one or more sandbox binaries, alternating.
# Each run boots for 1 s only: this measures VMM work.
#   Bench/start-phases.py RUNS BINARY [BINARY...]
import os, sys, time, statistics, subprocess, re
runs, bins = int(sys.argv[1]), sys.argv[2:]
res = {b: {} for b in bins}
for i in range(runs):
    for b in (bins if i % 2 == 0 else bins[::-1]):
        env = dict(os.environ); env["SANDBOX_T0"] = str(time.monotonic_ns())
        p = subprocess.run([b, "boot", "--timeout", "1", "--console", "none", "--timeline"], env=env, capture_output=True, text=True)
        for m in re.finditer(r"(-?[\d.]+) ms  (\S+)", p.stderr):
            res[b].setdefault(m.group(2), []).append(float(m.group(1)))
print(f"{'phase (median ms)':28}", "  ".join(f"{os.path.basename(os.path.dirname(os.path.dirname(b))) or b:>10}" for b in bins))
keys = sorted(res[bins[0]], key=lambda k: statistics.median(res[bins[0]][k]))
for k in keys:
    if statistics.median(res[bins[0]][k]) > 100: continue
    print(f"{k:28}", "  ".join(f"{statistics.median(res[b].get(k,[0])):7.2f}" for b in bins))
