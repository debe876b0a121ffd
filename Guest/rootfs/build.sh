#!/usr/bin/env bash
# Builds build/guest-rootfs.ext4: an ext4 image (populated with mke2fs -d, no
# mounting, no network) holding Debian's static busybox, sbx-vsock and the
# /init of this folder. Boot it with --disk build/guest-rootfs.ext4 and
# "root=/dev/vda rw init=/init".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
busybox=${BUSYBOX:-/bin/busybox}
out="$repo/build/guest-rootfs.ext4"
size=${SANDBOX_ROOTFS_SIZE:-64M}

die() { echo "guest-rootfs: $*" >&2; exit 1; }
[ -x "$busybox" ] || die "$busybox not found (Debian: apt-get install busybox-static)"
command -v mke2fs >/dev/null || die "mke2fs not found (Debian: apt-get install e2fsprogs)"
command -v gcc >/dev/null || die "gcc not found (Debian: apt-get install build-essential)"

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{bin,sbin,dev,etc,proc,sys,tmp,root,data,mnt}
install -m 0755 "$busybox" "$staging/bin/busybox"
for applet in $("$busybox" --list); do
	[ -e "$staging/bin/$applet" ] || ln -s busybox "$staging/bin/$applet"
done
gcc -static -O2 -Wall -o "$staging/bin/sbx-vsock" "$here/../tools/sbx-vsock.c"
strip "$staging/bin/sbx-vsock"
gcc -static -O2 -Wall -o "$staging/bin/sbx-io" "$here/../tools/sbx-io.c"
strip "$staging/bin/sbx-io"
install -m 0755 "$here/init" "$staging/init"
printf '\001' > "$staging/etc/boot-timer-byte"
echo "root:x:0:0:root:/root:/bin/sh" > "$staging/etc/passwd"
echo "root:x:0:" > "$staging/etc/group"

mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
E2FSPROGS_FAKE_TIME=1 mke2fs -q -F -t ext4 -L sandbox-root -d "$staging" \
	-E root_owner=0:0 -O ^has_journal "$out.tmp" "$size"
mv "$out.tmp" "$out"
echo "$out ($size)"
