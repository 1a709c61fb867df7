#!/usr/bin/env bash
# Installs what a fresh machine lacks for building, demoing and testing crown. Idempotent:
# does nothing (and touches no package index) when everything is already there.
#   scripts/install-deps.sh          # what the demos need
#   scripts/install-deps.sh --tests  # and what the tests need (a kube-apiserver built from Go)
# Needs: a Rust toolchain (rustup) already on the machine; Debian/Ubuntu apt for the rest.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have cargo || { echo "install-deps: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
have tmux || need+=(tmux)
have flock || need+=(util-linux)
have protoc || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's build imports: only a
# "Recommends" of protobuf-compiler, so not there after --no-install-recommends.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
have etcd || need+=(etcd-server)
have etcdctl || need+=(etcd-client)
have openssl || need+=(openssl)
have shellcheck || need+=(shellcheck)
have python3 || need+=(python3)

if ((${#need[@]})); then
  echo "install-deps: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A real kube-apiserver for the Kubernetes tests, built once from Go modules into ~/.cache/crown.
if [ "${1:-}" = --tests ]; then
have go || { echo "install-deps: go not found: the kube-apiserver for the tests is built from Go modules" >&2; exit 1; }
"$(dirname "$0")/kube-test-env.sh" build
fi
echo "install-deps: ok (cargo $(cargo --version | cut -d' ' -f2), tmux $(tmux -V | cut -d' ' -f2))"
