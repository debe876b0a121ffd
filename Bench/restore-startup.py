#!/usr/bin/env python3
# Side by side: a restore's VMM phases for two sandbox binaries, alternating. Each run is
# `sandbox boot --restore DIR --console none --timeline --timeout 0.3`, with SANDBOX_T0 taken
# just before execve, and reports restore request (the `restore-start` phase) -> first guest
# instruction and process start -> first guest instruction.
#   Bench/restore-startup.py RUNS BEFORE-BINARY AFTER-BINARY SNAPSHOT-DIR
# A template made by the pool or `bench scale` (/var/cache/sandbox/templates/KEY) will do.
import os, re, statistics, sys, time
runs, before, after, snapshot = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
res = {"before": [], "after": []}
for i in range(runs):
    order = [("before", before), ("after", after)] if i % 2 == 0 else [("after", after), ("before", before)]
    for label, binary in order:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r); os.dup2(w, 1); os.dup2(w, 2)
            env = dict(os.environ)
            env["SANDBOX_T0"] = str(time.monotonic_ns())
            os.execve(binary, [binary, "boot", "--restore", snapshot, "--console", "none", "--timeline", "--timeout", "0.3"], env)
        os.close(w)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        os.waitpid(pid, 0)
        phases = {m.group(2): float(m.group(1)) for m in re.finditer(r"(-?[0-9.]+) ms\s+(\S+)", out.decode())}
        if "first-guest-instruction" not in phases or "restore-start" not in phases:
            sys.exit(f"{binary}: no restore timeline in its output:\n{out.decode()}")
        first = phases["first-guest-instruction"]
        res[label].append((first - phases["restore-start"], first))
for label in ("before", "after"):
    restore = [x[0] for x in res[label]]; start = [x[1] for x in res[label]]
    print(f"{label:6} restore request -> first guest instruction ms: median {statistics.median(restore):.1f} "
          f"(min {min(restore):.1f}, max {max(restore):.1f})   process start -> first guest instruction ms: "
          f"median {statistics.median(start):.1f}")
