#!/usr/bin/env bash
# Fails when the checked-in generated Swift differs from what Protos/generate.sh produces
# from the .proto files now (a .proto edited without `make protos`, or a hand edit).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$root/Protos/generate.sh" "$tmp"

status=0
for target in TTRPC ContainerdAPI AgentAPI; do
    if ! diff -ru "$root/Sources/$target/Generated" "$tmp/Sources/$target/Generated" >"$tmp/$target.diff"; then
        echo "Protos/check.sh: Sources/$target/Generated is out of date with Protos/:" >&2
        head -40 "$tmp/$target.diff" >&2
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "Protos/check.sh: run 'make protos' and commit the result." >&2
    exit 1
fi
echo "Protos/check.sh: generated Swift matches Protos/"
