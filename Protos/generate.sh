#!/usr/bin/env bash
# Regenerates the checked-in Swift for the project's .proto files (`make protos`).
#
#   Protos/generate.sh            rewrite Sources/{TTRPC,ContainerdAPI,AgentAPI}/Generated
#   Protos/generate.sh OUT_ROOT   write the same tree under OUT_ROOT instead (Protos/check.sh)
#
# protoc comes from Debian (protobuf-compiler). protoc-gen-swift is built once from the
# swift-protobuf release that Package.swift pins (exact version, so generated code and
# runtime always match) and cached outside the repository, keyed by that version:
#   ${SANDBOX_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/sandbox}/swift-protobuf-<version>/bin/protoc-gen-swift
# The well-known types (any, empty, timestamp) are read from the same swift-protobuf
# checkout, so nothing beyond protobuf-compiler is needed from Debian.
set -euo pipefail

protos=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$protos")
out_root=${1:-$root}
swift=${SWIFT:-swift}

version=$(sed -n 's|.*"https://github.com/apple/swift-protobuf", exact: "\([0-9.]*\)".*|\1|p' "$root/Package.swift")
if [ -z "$version" ]; then
    echo "generate.sh: no exact swift-protobuf version in Package.swift" >&2
    exit 1
fi
command -v protoc >/dev/null || { echo "generate.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

cache=${SANDBOX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox}/swift-protobuf-$version
plugin=$cache/bin/protoc-gen-swift
src=$cache/src

if [ ! -d "$src/.git" ]; then
    mkdir -p "$cache"
    rm -rf "$src.partial"
    git clone --quiet --depth 1 --branch "$version" https://github.com/apple/swift-protobuf "$src.partial" 2>/dev/null \
        || git clone --quiet --branch "$version" https://github.com/apple/swift-protobuf "$src.partial"
    mv "$src.partial" "$src"
fi

if [ ! -x "$plugin" ]; then
    echo "generate.sh: building protoc-gen-swift $version (once; cached in $cache)" >&2
    started=$(date +%s)
    "$swift" build -c release --product protoc-gen-swift --package-path "$src" --scratch-path "$cache/build" >&2
    bin=$("$swift" build -c release --package-path "$src" --scratch-path "$cache/build" --show-bin-path)
    mkdir -p "$cache/bin"
    cp "$bin/protoc-gen-swift" "$plugin.partial"
    mv "$plugin.partial" "$plugin"
    echo "generate.sh: protoc-gen-swift built in $(( $(date +%s) - started )) s" >&2
fi

wkt=$src/Protos/Sources/SwiftProtobuf   # google/protobuf/{any,empty,timestamp}.proto

# generate TARGET PROTO...: one Swift module's Generated/ directory, replaced as a whole so
# that a removed .proto leaves no stale file behind.
generate() {
    local target=$1; shift
    local dest=$out_root/Sources/$target/Generated
    local tmp
    tmp=$(mktemp -d)
    (cd "$protos" && protoc \
        --plugin=protoc-gen-swift="$plugin" \
        -I "$protos" -I "$wkt" \
        --swift_out="$tmp" \
        --swift_opt=Visibility=Public \
        --swift_opt=FileNaming=PathToUnderscores \
        "$@")
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    mv "$tmp" "$dest"
    chmod 755 "$dest"
}

generate TTRPC \
    ttrpc.proto \
    google/rpc/status.proto
generate ContainerdAPI \
    containerd/types/mount.proto \
    containerd/types/task.proto \
    containerd/runtime/task/v2/shim.proto \
    containerd/events/task.proto \
    containerd/services/events/ttrpc/v1/events.proto
generate AgentAPI \
    sandbox/agent/v1/agent.proto
