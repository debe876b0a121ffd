# sandbox: a microVM sandbox runtime (containerd shim + KVM VMM in one Swift process).
#
#   make setup     install Debian packages, build kernel, firmware, initramfs and the
#                  binaries, then boot the default guest (the one command for a new machine)
#   make test      the whole test suite, including KVM boots of the real kernel
#   make boot      boot the default guest on this terminal
#   make bench     boot-time benchmark side by side with QEMU microvm + qboot
#   make bench-io  virtio-blk, virtio-net and vsock throughput side by side with QEMU microvm
#   make install   the shim and `sandbox` on PATH, kernel/firmware/agent initramfs where the
#                  shim finds them (PREFIX=/usr/local)

SWIFT ?= swift
BUILD := $(CURDIR)/build
RELEASE_FLAGS := -c release --static-swift-stdlib
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
.PHONY: protos
protos:
	Protos/generate.sh
