#!/usr/bin/env bash
# Builds the sandbox guest kernel from Debian's linux-source-6.1 with the
# config fragment and patches of this folder, caches the result under a key
# of its inputs and links it into <repo>/build/. A rerun with the same inputs
# only relinks. See Kernels/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tarball=${SANDBOX_KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
cache=${SANDBOX_CACHE:-/var/cache/sandbox}/kernel
fragment="$here/microvm.config"
jobs=${SANDBOX_KERNEL_JOBS:-$(nproc)}

log() { echo "kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$tarball" ] || die "$tarball not found (Debian: apt-get install linux-source-6.1)"
for tool in make gcc bc flex bison patch tar xz; do
	command -v "$tool" >/dev/null || die "$tool not found (see Kernels/README.md for the packages)"
done

shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob

# The key covers everything that changes the output: the fragment, the
# patches in the order they are applied, this script and the source tarball.
key=$(
	{
		sha256sum < "$fragment"
		for p in "${patches[@]}"; do sha256sum < "$p"; done
		sha256sum < "${BASH_SOURCE[0]}"
		echo "$(basename "$tarball") $(stat -c %s "$tarball")"
	} | sha256sum | cut -d ' ' -f 1
)
keydir="$cache/$key"

mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ] ||
	die "cannot write $cache (run as root or set SANDBOX_CACHE)"

# Config check: every line of the fragment must hold in .config. "=n" means
# not built; anything else must appear verbatim.
check_config() {
	local config=$1 bad=0 line name value
	while IFS= read -r line; do
		case $line in '' | '#'*) continue ;; esac
		name=${line%%=*}
		value=${line#*=}
		if [ "$value" = n ]; then
			if grep -q "^$name=" "$config"; then
				log "config: wanted $name off, got $(grep "^$name=" "$config")"
				bad=1
			fi
		elif ! grep -qxF "$line" "$config"; then
			log "config: wanted $line, got $(grep "^$name=\|^# $name is not set" "$config" || echo 'nothing (dependency missing?)')"
			bad=1
		fi
	done < "$fragment"
	return $bad
}

build() {
	local work="$keydir/work" src
	src="$work/$(basename "$tarball" .tar.xz)"

	# A work tree left by an interrupted build is reused once its patches
	# are in (the stamp); make then continues where it stopped.
	if [ ! -f "$work/.patched" ]; then
		rm -rf "$work"
		mkdir -p "$work"
		log "extracting $tarball"
		tar -xf "$tarball" -C "$work"
		[ -d "$src" ] || die "$tarball did not unpack to $(basename "$src")"
		for p in "${patches[@]}"; do
			log "applying $(basename "$p")"
			patch -d "$src" -p1 --batch --forward --quiet < "$p"
		done
		touch "$work/.patched"
	fi

	local kmake=(make -C "$src" -j"$jobs"
		KBUILD_BUILD_USER=sandbox KBUILD_BUILD_HOST=sandbox
		KBUILD_BUILD_TIMESTAMP="$(date -u -d @0)")

	log "configuring: allnoconfig + $(basename "$fragment")"
	"${kmake[@]}" -s allnoconfig KCONFIG_ALLCONFIG="$fragment"
	check_config "$src/.config" || die "config fragment not satisfied (see above)"

	log "building vmlinux and bzImage with $jobs jobs"
	"${kmake[@]}" vmlinux bzImage

	local out="$keydir/out.tmp"
	rm -rf "$out"
	mkdir -p "$out"
	strip --strip-debug -o "$out/vmlinux" "$src/vmlinux"
	cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
	cp "$src/System.map" "$out/System.map"
	cp "$src/.config" "$out/config"
	mv "$out"/* "$keydir/"
	rmdir "$out"

	# The work tree (~1.5 GiB) is only useful for this exact key; drop it.
	rm -rf "$work"
}

(
	# One build per cache at a time; a second caller waits, then reuses.
	flock 9
	if [ -f "$keydir/vmlinux" ] && [ -f "$keydir/bzImage" ]; then
		log "cached: $keydir"
	else
		mkdir -p "$keydir"
		build
	fi
) 9> "$cache/.lock"

mkdir -p "$repo/build"
for f in vmlinux bzImage System.map; do
	ln -sfn "$keydir/$f" "$repo/build/$f"
done
echo "$keydir"
