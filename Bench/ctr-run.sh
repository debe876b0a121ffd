#!/usr/bin/env bash
# `ctr run --rm IMAGE ID /bin/true` wall time, sandbox vs runc, alternating, in one run,
# against a private containerd (its own root, state and socket under a temporary
# directory) with a busybox image built offline; then the PSS of an idle sandbox shim
# (shim + VMM, guest RAM mapping excluded). Usage: Bench/ctr-run.sh [RUNS] (default 20).
# Needs root, containerd, ctr, runc, `make build` and `make assets`.
set -euo pipefail
runs=${1:-20}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shim_dir="$repo/.build/release"
[ -x "$shim_dir/containerd-shim-sandbox-v2" ] || { echo "run make build first" >&2; exit 1; }
dir=$(mktemp -d /tmp/sbx-bench-ctd.XXXXXX)
cleanup() {
	# Shims outlive containerd: end every one this run started (their VMs go with them).
	pkill -9 -f "containerd-shim-sandbox-v2 .*-address $dir/" 2>/dev/null || true
	[ -n "${ctd:-}" ] && kill "$ctd" 2>/dev/null && wait "$ctd" 2>/dev/null || true
	umount -R "$dir/root" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
TOML
PATH="$shim_dir:$PATH" SANDBOX_ASSETS="$repo/build" SANDBOX_RUN="$dir/run" SANDBOX_ROOTFS_CACHE="$dir/images" \
	containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
ctd=$!
for _ in $(seq 100); do [ -S "$dir/containerd.sock" ] && break; sleep 0.05; done
ctr() { command ctr --address "$dir/containerd.sock" --namespace bench "$@"; }

# A one-layer OCI image: Debian's static busybox.
rootfs="$dir/rootfs" layout="$dir/layout"
mkdir -p "$rootfs/bin" "$rootfs"/{etc,tmp,proc,sys,dev} "$layout/blobs/sha256"
cp /bin/busybox "$rootfs/bin/"
for a in sh true echo sleep cat; do ln -s busybox "$rootfs/bin/$a"; done
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$dir/layer.tar" .
blob() { local d; d=$(sha256sum "$1" | cut -c1-64); cp "$1" "$layout/blobs/sha256/$d"; echo "$d $(stat -c %s "$1")"; }
read -r ld ls < <(blob "$dir/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$ld" > "$dir/config.json"
read -r cd cs < <(blob "$dir/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$cd" "$cs" "$ld" "$ls" > "$dir/manifest.json"
read -r md ms < <(blob "$dir/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"docker.io/library/sbx-bench:1","org.opencontainers.image.ref.name":"1"}}]}' "$md" "$ms" > "$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
tar -C "$layout" -cf "$dir/image.tar" .
ctr images import "$dir/image.tar" > /dev/null
image=docker.io/library/sbx-bench:1

now() { date +%s%N; }
one() { # runtime id → milliseconds
	local t0 t1
	t0=$(now)
	ctr run --rm --runtime "$1" "$image" "$2" /bin/true
	t1=$(now)
	echo $(( (t1 - t0) / 1000000 ))
}
# Warm-up, not measured: converts the image, builds the template if needed (a boot).
one io.containerd.sandbox.v2 warm-sandbox > /dev/null
one io.containerd.runc.v2 warm-runc > /dev/null
sandbox=() runc=()
for i in $(seq "$runs"); do
	sandbox+=("$(one io.containerd.sandbox.v2 s$i)")
	runc+=("$(one io.containerd.runc.v2 r$i)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ms=$(median "${sandbox[@]}") mr=$(median "${runc[@]}")
echo "ctr run --rm /bin/true, median of $runs: sandbox ${ms} ms, runc ${mr} ms, ratio $(awk -v a="$ms" -v b="$mr" 'BEGIN {printf "%.2f", a / b}')"
echo "  sandbox runs (ms): ${sandbox[*]}"
echo "  runc runs (ms):    ${runc[*]}"

# Idle sandbox: PSS of the shim process (shim + VMM threads), without the guest RAM mapping.
ctr run -d --runtime io.containerd.sandbox.v2 "$image" idle sleep 100000 > /dev/null
pid=$(pgrep -f "containerd-shim-sandbox-v2 .* -id idle " | head -1)
sleep 2
awk '/^[0-9a-f]+-[0-9a-f]+ / {guest = ($6 ~ /\/memory$/ || $6 ~ /sandbox-guest-ram/)} /^Pss:/ {if (guest) g += $2; else p += $2}
     END {printf "idle sandbox shim PSS: %d KiB without guest RAM (guest RAM mapping PSS: %d KiB)\n", p, g}' "/proc/$pid/smaps"
ctr task kill -s SIGKILL idle > /dev/null 2>&1 || true
for _ in $(seq 300); do ctr task ls 2>/dev/null | grep -q '^idle .*RUNNING' || break; sleep 0.2; done
ctr task delete idle > /dev/null 2>&1 || true
ctr container delete idle > /dev/null 2>&1 || true
