#!/usr/bin/env bash
# Builds build/agent-initramfs.cpio: a plain (uncompressed) newc cpio whose /init is the
# statically linked sandbox-agent, plus the empty mount points it uses. Nothing else: the
# agent mounts what it needs and never runs a shell.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
scratch="$repo/.build-agent"
out="$repo/build/agent-initramfs.cpio"

die() { echo "agent-initramfs: $*" >&2; exit 1; }
command -v cpio >/dev/null || die "cpio not found (Debian: apt-get install cpio)"

start=$(date +%s)
# -static-executable links the Swift runtime, Foundation Essentials and glibc statically.
swift build -c release --product sandbox-agent --scratch-path "$scratch" \
	-Xswiftc -static-executable --package-path "$repo"
agent="$(swift build -c release --product sandbox-agent --scratch-path "$scratch" --package-path "$repo" --show-bin-path)/sandbox-agent"
[ -x "$agent" ] || die "$agent was not built"
if readelf -l "$agent" | grep -q 'Requesting program interpreter'; then
	die "$agent is dynamically linked"
fi

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{dev,proc,sys,run,tmp}
strip -o "$staging/init" "$agent"
chmod 0755 "$staging/init"
# The kernel opens /dev/console for init before any devtmpfs is mounted.
if [ "$(id -u)" = 0 ]; then mknod -m 0600 "$staging/dev/console" c 5 1; fi

mkdir -p "$(dirname "$out")"
find "$staging" -exec touch -h -d @0 {} +
(cd "$staging" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) > "$out.tmp"
# Keep the old file when nothing changed: its identity is part of the template cache key,
# so rewriting an identical cpio would cost a template rebuild (one guest boot).
if cmp -s "$out.tmp" "$out"; then rm -f "$out.tmp"; else mv "$out.tmp" "$out"; fi
echo "sandbox-agent: $(stat -c %s "$staging/init") bytes stripped ($(stat -c %s "$agent") unstripped), built in $(( $(date +%s) - start ))s"
echo "$out ($(stat -c %s "$out") bytes)"
