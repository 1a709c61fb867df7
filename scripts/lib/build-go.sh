# shellcheck shell=bash
# Sourced by scripts/build-clientgo.sh and scripts/build-etcd-go.sh.
# `build_go_elector NAME SRC_DIR`: builds the Go program in SRC_DIR into
# ~/.cache/crown/bin/NAME (CROWN_CACHE_DIR overrides ~/.cache/crown) and prints its path.
# Cached: rebuilds only when its sources or the Go version change.
build_go_elector() {
    local name=$1 src=$2 cache out stamp
    cache="${CROWN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crown}"
    out="$cache/bin/$name"
    command -v go >/dev/null 2>&1 || { echo "build $name: go not found (scripts/install-deps.sh --tests installs it)" >&2; return 1; }
    stamp="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
    if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "$out"
        return 0
    fi
    mkdir -p "$cache/bin"
    echo "build $name: building $out" >&2
    # Niced, one package at a time: leaves the other core to whatever else is building.
    (cd "$src" && nice -n 10 env CGO_ENABLED=0 go build -p 1 -trimpath -ldflags "-s -w" -o "$out.tmp" .) >&2
    mv -f "$out.tmp" "$out"
    echo "$stamp" >"$out.stamp"
    echo "$out"
}
