#!/usr/bin/env bash
# Builds tests/interop/etcd-go (an elector driven by etcd's Go client, go.etcd.io/etcd/client/v3/concurrency,
# the reference for crown's etcd backend) into ~/.cache/crown/bin/etcd-go-elector and prints
# the binary's path. Cached: rebuilds only when its sources or the Go version change.
#   scripts/build-etcd-go.sh            # CROWN_CACHE_DIR overrides ~/.cache/crown
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/build-go.sh
. "$here/lib/build-go.sh"
build_go_elector etcd-go-elector "$here/../tests/interop/etcd-go"
