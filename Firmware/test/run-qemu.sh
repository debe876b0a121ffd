#!/bin/sh
# Boots the firmware on QEMU's microvm machine, which offers the same fw_cfg
# interface as the sandbox VMM, with the test kernels from stub-kernel.S (a
# bzImage) and stub-pvh.S (an ELF with a PVH entry, which QEMU loads itself),
# and checks what the test kernels report. Also checks the failure path.
#
#   test/run-qemu.sh [OUT]        OUT holds sandbox-firmware.bin (default ../build)
#
# Environment: QEMU (default qemu-system-x86_64), QEMU_ACCEL (default kvm when
# /dev/kvm is usable, else tcg), QEMU_CPU (default host,-arch-capabilities for
# kvm: some software KVM hosts refuse that MSR; max for tcg).
#
# Prints one line per case and a closing "N passed, N failed" line; exits
# non-zero when a case failed.

set -u

here=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "${1:-$here/../build}" && pwd)
firmware="$out/sandbox-firmware.bin"
qemu=${QEMU:-qemu-system-x86_64}

if [ -z "${QEMU_ACCEL:-}" ]; then
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then QEMU_ACCEL=kvm; else QEMU_ACCEL=tcg; fi
fi
if [ -z "${QEMU_CPU:-}" ]; then
	if [ "$QEMU_ACCEL" = kvm ]; then QEMU_CPU=host,-arch-capabilities; else QEMU_CPU=max; fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0

# Test kernels: a small one, and one padded to 16 MiB like a large bzImage.
make -s -C "$here" OUT="$work/small" test-kernel >/dev/null || exit 1
make -s -C "$here" OUT="$work/large" test-kernel STUB_PAD=16777216 >/dev/null || exit 1
make -s -C "$here" OUT="$work/small" test-pvh >/dev/null || exit 1
small="$work/small/sandbox-firmware-test-kernel"
large="$work/large/sandbox-firmware-test-kernel"
pvh="$work/small/sandbox-firmware-test-pvh"
printf 'sandbox initrd test line\nsecond line\n' >"$work/initrd"

# run NAME SECONDS SMP QEMU-ARGS...: boots, leaves the console in $work/NAME.log
# and QEMU's exit status in $status. $accel, $cpu, $reboot (-no-reboot, or
# empty to let a reset restart the machine) and $debug_exit (the device the
# test kernel ends QEMU with, or empty) set up the machine.
accel=$QEMU_ACCEL cpu=$QEMU_CPU reboot=-no-reboot
debug_exit="-device isa-debug-exit,iobase=0xf4,iosize=4"
run() {
	name=$1 seconds=$2 smp=$3
	shift 3
	start=$(date +%s%N)
	timeout "$seconds" "$qemu" \
		-M microvm,x-option-roms=off,isa-serial=on,rtc=off \
		-accel "$accel" -cpu "$cpu" -m 256 -smp "$smp" \
		-nodefaults -no-user-config -nographic $reboot \
		-serial "file:$work/$name.log" -monitor none \
		$debug_exit \
		-msg timestamp=on -trace memory_region_ops_write \
		-bios "$firmware" "$@" </dev/null >"$work/$name.trace" 2>&1
	status=$?
	elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
	grep -v memory_region_ops_write "$work/$name.trace" >"$work/$name.qemu"
	firmware_time=$(firmware_time "$work/$name.trace")
}

# firmware_time TRACE: the time from the firmware's BOOT_TIMER_FIRMWARE (0x10)
# write to port 0x4f0 to its BOOT_TIMER_KERNEL (0x11) write, from QEMU's
# timestamped trace of I/O writes ("PID@SECONDS.MICROSECONDS:...").
firmware_time() {
	awk -F'[@:]' '
		/addr 0x4f0 value 0x10 / { start = $2 }
		/addr 0x4f0 value 0x11 / { end = $2 }
		END { if (start && end) printf "firmware %.1f ms", (end - start) * 1000; else printf "firmware did not reach the kernel" }
	' "$1"
}

# check NAME STATUS PORT-WRITES PATTERN...: QEMU ended with STATUS, the
# bytes written to port 0x4f0 were PORT-WRITES (space-separated, in order)
# and each extended regular expression PATTERN matches a whole line of the
# console.
check() {
	name=$1 want=$2 want_writes=$3
	shift 3
	ok=0
	if [ "$status" != "$want" ]; then
		echo "  QEMU exit status $status, expected $want"
		ok=1
	fi
	writes=$(sed -n 's/.*addr 0x4f0 value \(0x[0-9a-f]*\) .*/\1/p' "$work/$name.trace" | tr '\n' ' ')
	if [ "$writes" != "$want_writes " ]; then
		echo "  port 0x4f0 got: $writes expected: $want_writes"
		ok=1
	fi
	for pattern in "$@"; do
		if ! tr -d '\r' <"$work/$name.log" | grep -Eqx -- "$pattern"; then
			echo "  no console line matches: $pattern"
			ok=1
		fi
	done
	if [ "$ok" = 0 ]; then
		passed=$((passed + 1))
		echo "PASS $name ($accel: QEMU ran ${elapsed_ms} ms, $firmware_time)"
	else
		failed=$((failed + 1))
		echo "FAIL $name"
		sed 's/^/  console: /' "$work/$name.log"
		sed 's/^/  qemu: /' "$work/$name.qemu"
	fi
}

hex='0x[0-9a-f]{8}'

# 1. Two CPUs, an initrd and a command line. The test kernel ends QEMU
#    through isa-debug-exit: status (0x20 << 1) | 1 = 65.
run smp2 60 2 -kernel "$small" -initrd "$work/initrd" -append "console=ttyS0 sandbox.test=1"
check smp2 65 "0x10 0x11 0x20" \
	"stub: entry esi=0x00007000 eip=0x00100000" \
	"stub: protocol ok" \
	"stub: e820 entries=0x0[1-9] alt_mem_k=0x0003fc00" \
	'stub: cmdline "console=ttyS0 sandbox.test=1"' \
	"stub: initrd addr=$hex size=0x00000025 head \"sandbox initrd test line\"" \
	"stub: kernel tail ok" \
	"stub: mp found=0x0009fc00 table=0x0009fc10 cpus=0x02 bsp=0x00 ioapic=0x02 intsrc=0x17 lint=0x02 irq0pin=0x02" \
	"stub: mp checksums ok" \
	"stub: result PASS"

# 2. Four CPUs, a 16 MiB kernel, no initrd, an empty command line.
run large-smp4 60 4 -kernel "$large"
check large-smp4 65 "0x10 0x11 0x20" \
	"stub: protocol ok" \
	'stub: cmdline ""' \
	'stub: initrd addr=0x00000000 size=0x00000000 head ""' \
	"stub: kernel tail ok" \
	"stub: mp found=0x0009fc00 table=0x0009fc10 cpus=0x04 bsp=0x00 ioapic=0x04 intsrc=0x17 lint=0x02 irq0pin=0x02" \
	"stub: mp checksums ok" \
	"stub: result PASS"

# 3. Forty CPUs: the MP table no longer fits in the KiB above the floating
#    pointer (37 CPUs do) and goes right below it.
run smp40 60 40 -kernel "$small"
check smp40 65 "0x10 0x11 0x20" \
	"stub: protocol ok" \
	"stub: mp found=0x0009fc00 table=0x0009f7d0 cpus=0x28 bsp=0x00 ioapic=0x28 intsrc=0x17 lint=0x02 irq0pin=0x02" \
	"stub: mp checksums ok" \
	"stub: result PASS"

# 4. No kernel: the firmware says so on the UART and halts for good, so
#    QEMU is ended by the timeout (status 124).
run no-kernel 5 1
check no-kernel 124 "0x10 0xee" \
	"sandbox-firmware: no kernel \(FW_CFG_SETUP_SIZE or FW_CFG_KERNEL_SIZE is 0\)"

# 5. A kernel file without the "HdrS" header: refused the same way.
head -c 8192 /dev/zero >"$work/not-bzimage"
run not-bzimage 5 1 -kernel "$work/not-bzimage"
check not-bzimage 124 "0x10 0xee" \
	"sandbox-firmware: kernel setup is not a bzImage header of boot protocol 2.02 or later"

# 6. PVH: an ELF kernel with a PVH note, which QEMU loads itself, handing
#    the firmware FW_CFG_KERNEL_ENTRY but no command line address. Two
#    CPUs, an initrd (module 0) and a command line.
run pvh-smp2 60 2 -kernel "$pvh" -initrd "$work/initrd" -append "console=ttyS0 sandbox.pvh=1"
check pvh-smp2 65 "0x10 0x11 0x20" \
	"stub: pvh entry ebx=0x00007000 eip=0x00100000" \
	"stub: pvh state ok" \
	"stub: start_info magic=0x336ec578 version=0x00000001 flags=0x00000000 modules=0x00000001 memmap_entries=0x0000000[1-9] ok" \
	"stub: memmap 0x0000000000000000 0x0000000010000000 0x01" \
	'stub: cmdline "console=ttyS0 sandbox.pvh=1"' \
	"stub: initrd addr=$hex size=0x00000025 head \"sandbox initrd test line\"" \
	"stub: mp found=0x0009fc00 table=0x0009fc10 cpus=0x02 bsp=0x00 ioapic=0x02 intsrc=0x17 lint=0x02 irq0pin=0x02" \
	"stub: mp checksums ok" \
	"stub: result PASS"

# 7. PVH with one CPU and nothing else: no module, an empty command line.
run pvh-bare 60 1 -kernel "$pvh"
check pvh-bare 65 "0x10 0x11 0x20" \
	"stub: pvh state ok" \
	"stub: start_info magic=0x336ec578 version=0x00000001 flags=0x00000000 modules=0x00000000 memmap_entries=0x0000000[1-9] ok" \
	'stub: cmdline ""' \
	'stub: initrd addr=0x00000000 size=0x00000000 head ""' \
	"stub: mp found=0x0009fc00 table=0x0009fc10 cpus=0x01 bsp=0x00 ioapic=0x01 intsrc=0x17 lint=0x02 irq0pin=0x02" \
	"stub: result PASS"

# 8. Reset: without -no-reboot the test kernel's closing triple fault resets
#    the machine, and the firmware must boot again from RAM that the previous
#    boot left behind, again and again until the timeout. On TCG, which resets
#    on a triple fault (software KVM hosts may report an emulation failure).
#    Once with each test kernel.
reset_case() {
	name=$1
	shift
	saved_debug_exit=$debug_exit
	accel=tcg cpu=max reboot= debug_exit=
	run "$name" 5 2 "$@"
	accel=$QEMU_ACCEL cpu=$QEMU_CPU reboot=-no-reboot debug_exit=$saved_debug_exit
	boots=$(tr -d '\r' <"$work/$name.log" | grep -c '^stub: result PASS$')
	fails=$(tr -d '\r' <"$work/$name.log" | grep -c '^stub: result FAIL$')
	if [ "$boots" -ge 2 ] && [ "$fails" = 0 ]; then
		passed=$((passed + 1))
		echo "PASS $name (tcg: $boots boots in 5 s, all passed)"
	else
		failed=$((failed + 1))
		echo "FAIL $name ($boots passing and $fails failing boots)"
		tail -20 "$work/$name.log" | sed 's/^/  console: /'
	fi
}
reset_case reset -kernel "$small" -append "console=ttyS0"
reset_case pvh-reset -kernel "$pvh" -initrd "$work/initrd" -append "console=ttyS0"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
