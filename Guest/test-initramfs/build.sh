#!/usr/bin/env bash
# Builds build/test-initramfs.cpio: a plain (uncompressed) newc cpio with
# Debian's static busybox and the test /init of this folder. A plain cpio
# boots faster than a compressed one on an emulating host: the kernel does
# not have to inflate it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
busybox=${BUSYBOX:-/bin/busybox}
out="$repo/build/test-initramfs.cpio"

# The applets /init runs, each as a /bin symlink; everything else is
# installed at boot only for the interactive shell (sandbox.test=shell).
applets=(sh mount dd uname grep head tr cat true md5sum reboot setsid cttyhack sed sleep)

die() { echo "test-initramfs: $*" >&2; exit 1; }

[ -x "$busybox" ] || die "$busybox not found (Debian: apt-get install busybox-static)"
if readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	die "$busybox is dynamically linked; the initramfs needs busybox-static"
fi
command -v cpio >/dev/null || die "cpio not found (Debian: apt-get install cpio)"

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

mkdir -p "$staging"/{bin,dev,etc,proc,sys,tmp,root}
install -m 0755 "$busybox" "$staging/bin/busybox"
for applet in "${applets[@]}"; do
	ln -s busybox "$staging/bin/$applet"
done
install -m 0755 "$here/init" "$staging/init"
printf '\001' > "$staging/etc/boot-timer-byte"
printf '\002' > "$staging/etc/template-byte"
printf '\003' > "$staging/etc/snapshot-byte"
cat > "$staging/etc/fstab" <<'FSTAB'
proc     /proc proc     defaults 0 0
sysfs    /sys  sysfs    defaults 0 0
devtmpfs /dev  devtmpfs defaults 0 0
FSTAB

mkdir -p "$(dirname "$out")"
find "$staging" -exec touch -h -d @0 {} +
(cd "$staging" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out ($(stat -c %s "$out") bytes)"
