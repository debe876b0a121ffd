#!/bin/sh
# Counts the instructions the firmware executes from the reset vector to the
# kernel entry, on QEMU's TCG in single-step mode: every executed instruction
# is one translation block, logged once per run (each iteration of a rep
# string instruction counts as one).
#
#   test/count-instructions.sh [OUT] [SMP] [KERNEL]
#
# OUT holds sandbox-firmware.bin (default ../build); KERNEL is bzimage (the
# default: the test bzImage, the 32-bit boot protocol) or pvh (the PVH test
# kernel, an ELF that QEMU loads itself). Both test kernels start at 0x100000.

set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "${1:-$here/../build}" && pwd)
smp=${2:-2}
kernel=${3:-bzimage}
qemu=${QEMU:-qemu-system-x86_64}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case $kernel in
bzimage) make -s -C "$here" OUT="$work" test-kernel >/dev/null; image=sandbox-firmware-test-kernel ;;
pvh) make -s -C "$here" OUT="$work" test-pvh >/dev/null; image=sandbox-firmware-test-pvh ;;
*) echo "KERNEL is bzimage or pvh, not $kernel" >&2; exit 2 ;;
esac
printf 'sandbox initrd test line\n' >"$work/initrd"

timeout 120 "$qemu" \
	-M microvm,x-option-roms=off,isa-serial=on,rtc=off \
	-accel tcg -singlestep -cpu max -m 256 -smp "$smp" \
	-nodefaults -no-user-config -nographic -no-reboot \
	-serial "file:$work/console.log" -monitor none \
	-device isa-debug-exit,iobase=0xf4,iosize=4 \
	-bios "$out/sandbox-firmware.bin" \
	-kernel "$work/$image" -initrd "$work/initrd" \
	-append "console=ttyS0" \
	-d exec,nochain -D "$work/exec.log" </dev/null >/dev/null 2>&1 || true

# Trace lines read "Trace N: HOST [CS_BASE/PC/FLAGS/...]"; stop at the kernel entry.
awk -F'[][/]' '
	$3 == "0000000000100000" { entered = 1; exit }
	{ total++; if ($3 ~ /^00000000ffff/) rom++; pcs[$3]++ }
	END {
		if (!entered) { print "the kernel entry was not reached"; exit 1 }
		top = ""; topn = 0
		for (pc in pcs) if (pcs[pc] > topn) { topn = pcs[pc]; top = pc }
		printf "%d instructions from reset to kernel entry (%d in the ROM)\n", total, rom
		printf "busiest instruction: %d executions at 0x%s\n", topn, substr(top, 9)
	}
' "$work/exec.log"
