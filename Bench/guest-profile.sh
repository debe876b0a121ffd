#!/usr/bin/env bash
# Where an emulated guest kernel spends its boot, on a kvm_pvm host: counts every guest
# instruction the host's KVM emulates (the kvm:kvm_emulate_insn tracepoint, aggregated
# per RIP in the host kernel by bpftrace) from the VMM's start until the test initramfs's
# console marker, then prints the top functions by instructions, with their call counts
# (hits on a function's first instruction), using build/System.map.
#   Bench/guest-profile.sh [TOP] [-- more `sandbox boot` arguments...]
# Needs root, bpftrace (Debian: apt-get install bpftrace) and `make build`. Only the
# vCPU thread of the VMM it starts is counted. Tracing roughly doubles the boot's wall
# time, so timer-tick work (a fixed cost per 10 ms of wall time) shows at about twice its
# share of an untraced boot.
set -euo pipefail
top=${1:-40}
[ $# -gt 0 ] && shift
[ "${1:-}" = -- ] && shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sandbox="$repo/.build/release/sandbox"
map="$repo/build/System.map"
[ -x "$sandbox" ] || { echo "run make build first" >&2; exit 1; }
[ -f "$map" ] || { echo "$map missing: run make kernel" >&2; exit 1; }
command -v bpftrace >/dev/null || { echo "bpftrace not found (apt-get install bpftrace)" >&2; exit 1; }

dir=$(mktemp -d /tmp/sbx-guest-profile.XXXXXX)
bp= vm=
cleanup() {
	[ -n "$vm" ] && kill "$vm" 2>/dev/null && wait "$vm" 2>/dev/null || true
	[ -n "$bp" ] && kill "$bp" 2>/dev/null && wait "$bp" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

BPFTRACE_MAP_KEYS_MAX=500000 bpftrace -e \
	'tracepoint:kvm:kvm_emulate_insn /comm == "sbx-vcpu0"/ { @[args->rip] = count(); }' \
	> "$dir/rips" 2> "$dir/bpftrace.err" &
bp=$!
# bpftrace prints "Attaching 1 probe..." once the probe is live.
for _ in $(seq 100); do grep -q Attaching "$dir/rips" 2>/dev/null && break; sleep 0.1; done
grep -q Attaching "$dir/rips" || { cat "$dir/bpftrace.err" >&2; exit 1; }

start=$(date +%s.%N)
"$sandbox" boot "$@" > "$dir/console" 2>&1 &
vm=$!
until grep -q "SANDBOX-TEST-INIT: userspace up" "$dir/console"; do
	kill -0 "$vm" 2>/dev/null || { echo "the VMM ended before the marker:" >&2; tail -5 "$dir/console" >&2; exit 1; }
	sleep 0.1
done
end=$(date +%s.%N)
kill -INT "$bp"; wait "$bp" || true; bp=
echo "marker after $(echo "$end - $start" | bc) s (traced)"

python3 - "$map" "$dir/rips" "$top" <<'EOF'
import bisect, collections, re, sys
syms = []
for line in open(sys.argv[1]):
    a, t, n = line.split()[:3]
    if t in "tTwW":
        syms.append((int(a, 16), n))
syms.sort()
addrs = [a for a, _ in syms]
starts = dict(syms)
per, calls, total = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[2]):
    m = re.match(r"@\[(-?\d+)\]: (\d+)", line)
    if not m:
        continue
    rip, n = int(m.group(1)) % 2**64, int(m.group(2))
    total += n
    i = bisect.bisect_right(addrs, rip) - 1
    name = syms[i][1] if i >= 0 and rip >= 0xffffffff80000000 else ("(user)" if rip < 2**47 else "(other)")
    per[name] += n
    if rip in starts:
        calls[starts[rip]] = n
print(f"{total / 1e6:.2f} M emulated instructions")
print(f"{'instructions':>12} {'share':>6} {'calls':>7}  function")
for name, n in per.most_common(int(sys.argv[3])):
    print(f"{n:12d} {100 * n / total:5.2f}% {calls.get(name, 0):7d}  {name}")
EOF
