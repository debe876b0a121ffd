# sandbox: a microVM sandbox runtime (containerd shim + KVM VMM in one Swift process).
#
#   make setup     install Debian packages, build kernel, firmware, initramfs and the
#                  binaries, then boot the default guest (the one command for a new machine)
#   make test      the whole test suite, including KVM boots of the real kernel
#   make boot      boot the default guest on this terminal
#   make bench     boot-time benchmark side by side with QEMU microvm + qboot
#   make fuzz      every libFuzzer target for FUZZ_TIME seconds (default 60) each
#   make bench-io  virtio-blk, virtio-net and vsock throughput side by side with QEMU microvm
#   make install   the shim and `sandbox` on PATH, kernel/firmware/agent initramfs where the
#                  shim finds them (PREFIX=/usr/local)

SWIFT ?= swift
BUILD := $(CURDIR)/build
# Release binaries are fully static (Swift runtime, Foundation and glibc linked in, no
# dynamic loader): a VMM process starts ~1.7 ms sooner and maps no shared libraries, see
# README "VMM start-up and memory". The VMM does no NSS lookups, so the linker's warnings
# about getpwnam_r and dlopen in static programs do not apply to it.
RELEASE_FLAGS := -c release -Xswiftc -static-executable
SANDBOX := .build/release/sandbox

DEBIAN_PACKAGES := build-essential bc flex bison libelf-dev libssl-dev cpio xz-utils kmod \
	linux-source-6.1 busybox-static qemu-system-x86 qemu-system-data \
	e2fsprogs erofs-utils iproute2 iputils-ping netcat-openbsd \
	containerd runc protobuf-compiler libseccomp-dev libcap-dev

.PHONY: setup deps assets kernel initramfs agent-initramfs guest-rootfs firmware build test boot bench install clean
.PHONY: bench-io

PREFIX ?= /usr/local

setup: deps assets build
	@echo "== booting the default guest (Ctrl-A x quits) =="
	$(SANDBOX) boot --timeline

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (apt-get)"; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEBIAN_PACKAGES)

assets: kernel initramfs agent-initramfs guest-rootfs firmware

kernel:
	Kernels/build.sh

initramfs:
	Guest/test-initramfs/build.sh

agent-initramfs:
	Guest/agent-initramfs/build.sh

guest-rootfs:
	Guest/rootfs/build.sh

firmware:
	$(MAKE) -C Firmware OUT=$(BUILD)

build:
	$(SWIFT) build $(RELEASE_FLAGS) --product sandbox
	$(SWIFT) build $(RELEASE_FLAGS) --product containerd-shim-sandbox-v2

test: assets
	$(SWIFT) build --build-tests
	$(MAKE) fuzz-smoke
	$(SWIFT) test --skip-build --no-parallel

boot: build
	$(SANDBOX) boot

bench: assets build
	$(SANDBOX) bench boot --runs 5 --compare qemu

bench-io: assets build
	$(SANDBOX) bench io --compare qemu

install: assets build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/sandbox
	install -m 0755 .build/release/sandbox .build/release/containerd-shim-sandbox-v2 $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(BUILD)/vmlinux $(BUILD)/agent-initramfs.cpio $(BUILD)/sandbox-firmware.bin $(DESTDIR)$(PREFIX)/share/sandbox/

clean:
	rm -rf .build $(BUILD)

# --- protobuf: regenerate the checked-in Swift from Protos/ (builds protoc-gen-swift once,
# cached outside the tree); Protos/check.sh fails when the checked-in files are stale.
.PHONY: protos syscall-table
protos:
	Protos/generate.sh

# --- the x86_64 syscall table the seccomp filters and the SIGSYS reporter use, from
# libseccomp (checked in; JailTests fail when it differs from the installed libseccomp).
syscall-table:
	Sources/CJail/generate-syscall-table.sh

# --- fuzzing (Fuzz/): one libFuzzer binary for every target, built with the address
# sanitizer and coverage instrumentation in its own scratch path (SANDBOX_FUZZ=1 declares it in Package.swift) and
# linked as fuzz-<target>. `make fuzz` runs each target FUZZ_TIME seconds; `fuzz-smoke`
# (part of `make test`) runs FUZZ_RUNS inputs of each and fails on any crash.
FUZZ_TARGETS := virtqueue block net vsock ttrpc kernel fwcfg
FUZZ_DIR := .build/fuzz
# SwiftPM links an executable's own main (--defsym main=<module>_main), so instead of
# -sanitize=fuzzer (whose runtime brings a second main) the code gets libFuzzer's coverage
# instrumentation and the binary the runtime without main; Fuzz/Driver calls its driver.
FUZZ_RUNTIME := $(firstword $(wildcard $(dir $(shell command -v swiftc))../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a))
FUZZ_FLAGS := -c release --scratch-path $(FUZZ_DIR) -Xswiftc -sanitize=address \
	-Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table -Xswiftc -use-ld=lld \
	-Xlinker $(FUZZ_RUNTIME) -Xlinker -lstdc++
FUZZ_TIME ?= 60
FUZZ_RUNS ?= 3000
.PHONY: fuzz fuzz-build fuzz-smoke

fuzz-build:
	@test -n "$(FUZZ_RUNTIME)" || { echo "libclang_rt.fuzzer_no_main not found next to swiftc"; exit 1; }
	SANDBOX_FUZZ=1 $(SWIFT) build $(FUZZ_FLAGS) --product sandbox-fuzz
	@for t in $(FUZZ_TARGETS); do ln -sf sandbox-fuzz $(FUZZ_DIR)/release/fuzz-$$t; done

fuzz-smoke: fuzz-build
	FUZZ_RUNS=$(FUZZ_RUNS) Fuzz/run.sh smoke $(FUZZ_TARGETS)

fuzz: fuzz-build
	FUZZ_TIME=$(FUZZ_TIME) Fuzz/run.sh $(FUZZ_TARGETS)
