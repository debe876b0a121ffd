#!/usr/bin/env python3
# Side by side: process start (taken just before execve, passed as SANDBOX_T0) -> first KVM_RUN,
# and the VMM's memory outside guest RAM (the report's MemoryUsage, the rule `bench boot` uses),
# for two sandbox binaries, alternating. Each run boots for 3 s only: this measures VMM work.
#   Bench/vmm-startup.py RUNS BEFORE-BINARY AFTER-BINARY [more `sandbox boot` arguments...]
import json, os, sys, time, statistics
runs, before, after, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
res = {"before": [], "after": []}
for i in range(runs):
    order = [("before", before), ("after", after)] if i % 2 == 0 else [("after", after), ("before", before)]
    for label, binary in order:
        report = f"/tmp/sandbox-vmm-startup-{os.getpid()}.json"
        argv = [binary, "boot", "--timeout", "3", "--console", "none", "--report", report] + extra
        pid = os.fork()
        if pid == 0:
            env = dict(os.environ)
            env["SANDBOX_T0"] = str(time.monotonic_ns())
            os.execve(binary, argv, env)
        os.waitpid(pid, 0)
        r = json.load(open(report)); os.unlink(report)
        m = r.get("memory") or {}
        res[label].append((r["milestones"].get("first-guest-instruction"), m.get("rssOverhead", 0) / 1048576, m.get("pssOverhead", 0) / 1048576))
for label in ("before", "after"):
    fi = [x[0] for x in res[label]]; rss = [x[1] for x in res[label]]; pss = [x[2] for x in res[label]]
    print(f"{label:6} first-guest-instruction ms: min {min(fi):.1f} median {statistics.median(fi):.1f} max {max(fi):.1f}   "
          f"RSS outside guest RAM MiB: median {statistics.median(rss):.1f}   PSS: median {statistics.median(pss):.1f}   runs {[round(x,1) for x in fi]}")
