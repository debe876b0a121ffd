#!/usr/bin/env bash
# Regenerates the .bin fixtures from the .txtpb files with protoc --encode, so that the
# Swift encoders are checked against protoc's own output for the same .proto files.
# Needs protoc and the swift-protobuf checkout that Protos/generate.sh caches (for the
# well-known types); run Protos/generate.sh once first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
version=$(sed -n 's|.*"https://github.com/apple/swift-protobuf", exact: "\([0-9.]*\)".*|\1|p' "$root/Package.swift")
wkt=${SANDBOX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox}/swift-protobuf-$version/src/Protos/Sources/SwiftProtobuf

encode() { # FIXTURE MESSAGE PROTO
    protoc -I "$root/Protos" -I "$wkt" --encode="$2" "$3" <"$here/$1.txtpb" >"$here/$1.bin"
}
encode create-task-request    containerd.task.v2.CreateTaskRequest      containerd/runtime/task/v2/shim.proto
encode state-response         containerd.task.v2.StateResponse          containerd/runtime/task/v2/shim.proto
encode pids-response          containerd.task.v2.PidsResponse           containerd/runtime/task/v2/shim.proto
encode task-exit              containerd.events.TaskExit                containerd/events/task.proto
encode forward-request        containerd.services.events.ttrpc.v1.ForwardRequest containerd/services/events/ttrpc/v1/events.proto
encode ttrpc-request          ttrpc.Request                             ttrpc.proto
encode ttrpc-response-error   ttrpc.Response                            ttrpc.proto
encode agent-create-container sandbox.agent.v1.CreateContainerRequest   sandbox/agent/v1/agent.proto
