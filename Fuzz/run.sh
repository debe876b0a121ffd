#!/usr/bin/env bash
# Runs the libFuzzer targets built by `make fuzz-build` (.build/fuzz/release/fuzz-<target>).
#
#   Fuzz/run.sh smoke [TARGET...]   a bounded run per target: FUZZ_RUNS inputs (default 3000),
#                                   seed corpus in, nothing written back; fails on a crash
#   Fuzz/run.sh [TARGET...]         FUZZ_TIME seconds per target (default 60); new inputs are
#                                   kept in .build/fuzz/corpus/<target>, crashes in
#                                   .build/fuzz/crashes/ (turn each into a fixture under
#                                   Tests/FuzzTargetsTests/Fixtures/<target>/)
#
# Prints one line per target: inputs run, inputs per second, coverage, and the outcome.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.build/fuzz/release
ALL="virtqueue block net vsock ttrpc kernel fwcfg"
mode=long
if [ "${1:-}" = smoke ]; then mode=smoke; shift; fi
targets="${*:-$ALL}"
work=$(mktemp -d /tmp/sandbox-fuzz-run-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p .build/fuzz/crashes
status=0
printf '%-10s %10s %10s %8s  %s\n' target inputs 'inputs/s' cov outcome
for t in $targets; do
    if [ "$mode" = smoke ]; then
        mkdir -p "$work/$t"
        limit=(-runs="${FUZZ_RUNS:-3000}")
        corpus=("$work/$t" "Fuzz/corpus/$t")
    else
        mkdir -p ".build/fuzz/corpus/$t"
        limit=(-max_total_time="${FUZZ_TIME:-60}")
        corpus=(".build/fuzz/corpus/$t" "Fuzz/corpus/$t")
    fi
    log="$work/$t.log"
    # -detect_leaks=0: LeakSanitizer cannot follow the pointer to a Swift object's weak-reference
    # side table (it sits shifted inside the refcount word), so every `[weak self]` on a
    # long-lived object reads as a leak. AddressSanitizer's memory errors are all still caught.
    SANDBOX_FUZZ_SCRATCH="$work" ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" "$BIN/fuzz-$t" "${limit[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=4096 -detect_leaks=0 -print_final_stats=1 \
        -artifact_prefix=".build/fuzz/crashes/$t-" "${corpus[@]}" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ $rc -eq 0 ]; then
        outcome="no crash"
    else
        status=1
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        outcome="CRASH (exit $rc) ${artifact:-see log}"
        grep -m5 -E 'ERROR|Fatal error|fuzz property|SUMMARY' "$log" | sed 's/^/    /'
        cp "$log" ".build/fuzz/crashes/$t.log"
    fi
    printf '%-10s %10s %10s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$outcome"
done
exit $status
