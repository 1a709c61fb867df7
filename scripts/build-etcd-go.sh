#!/usr/bin/env bash
# Builds tests/interop/etcd-go (an elector driven by etcd's Go client, go.etcd.io/etcd/client/v3/concurrency,
# the reference for crown's etcd backend) into ~/.cache/crown/bin/etcd-go-elector and prints
# the binary's path. Cached: rebuilds only when its sources or the Go version change.
#   scripts/build-etcd-go.sh            # CROWN_CACHE_DIR overrides ~/.cache/crown
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/interop/etcd-go" && pwd)"
CACHE_DIR="${CROWN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crown}"
OUT="$CACHE_DIR/bin/etcd-go-elector"

command -v go >/dev/null 2>&1 || { echo "build-etcd-go: go not found" >&2; exit 1; }
stamp="$(cd "$SRC" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
if [ -x "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE_DIR/bin"
echo "build-etcd-go: building $OUT" >&2
# Niced, one package at a time: leaves the other core to whatever else is building.
(cd "$SRC" && nice -n 10 env CGO_ENABLED=0 go build -p 1 -trimpath -ldflags "-s -w" -o "$OUT.tmp" .) >&2
mv -f "$OUT.tmp" "$OUT"
echo "$stamp" >"$OUT.stamp"
echo "$OUT"
