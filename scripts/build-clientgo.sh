#!/usr/bin/env bash
# Builds tests/interop/client-go (an elector driven by client-go's own leaderelection/LeaseLock,
# the reference for crown's Lease backend) into ~/.cache/crown/bin/clientgo-elector and prints
# the binary's path. Cached: rebuilds only when its sources or the Go version change.
#   scripts/build-clientgo.sh            # CROWN_CACHE_DIR overrides ~/.cache/crown
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/build-go.sh
. "$here/lib/build-go.sh"
build_go_elector clientgo-elector "$here/../tests/interop/client-go"
