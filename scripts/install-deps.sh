#!/usr/bin/env bash
# Installs what a fresh machine lacks for building, demoing and testing crown. Idempotent:
# does nothing (and touches no package index) when everything is already there.
#   scripts/install-deps.sh          # what the demos need
#   scripts/install-deps.sh --tests  # and what the tests need (a kube-apiserver built from Go)
#   scripts/install-deps.sh --bench  # and what the benchmark plots need (python3-matplotlib)
# --tests and --bench may be given together.
# Needs: a Rust toolchain (rustup) already on the machine; Debian/Ubuntu apt for the rest.
set -euo pipefail

tests=0
bench=0
for arg in "$@"; do
  case "$arg" in
  --tests) tests=1 ;;
  --bench) bench=1 ;;
  *) echo "install-deps: unknown argument $arg (usage: install-deps.sh [--tests] [--bench])" >&2; exit 2 ;;
  esac
done

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
# scripts/plot-bench.py draws the benchmark PNGs with matplotlib: Debian's package, not pip. It
# goes to /usr/bin/python3's dist-packages; when `python3` is another one (pyenv), plot-bench.py
# runs itself again with /usr/bin/python3, so either having matplotlib is enough.
matplotlib_ok() {
  python3 -c 'import matplotlib' >/dev/null 2>&1 ||
    { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; }
}
if ((bench)) && ! matplotlib_ok; then need+=(python3-matplotlib); fi
# tests/conventions.rs renders `crown man` with `man -l`.
if ((tests)) && ! have man; then need+=(man-db); fi
# tests/kafka.rs: a real Kafka broker (jars fetched with Maven, run by Java) and kcat as the consumer.
if ((tests)); then
  have java || need+=(default-jre-headless)
  have mvn || need+=(maven)
  have kcat || need+=(kcat)
fi

if ((${#need[@]})); then
  echo "install-deps: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A real kube-apiserver for the Kubernetes tests, built once from Go modules into ~/.cache/crown.
if ((tests)); then
have go || { echo "install-deps: go not found: the kube-apiserver for the tests is built from Go modules" >&2; exit 1; }
"$(dirname "$0")/kube-test-env.sh" build
# kube-controller-manager too, for tests/walkthrough.rs (a Deployment becomes Pods, a Service endpoints).
"$(dirname "$0")/kube-test-env.sh" build-controller-manager >/dev/null
# The Kafka broker's jars from Maven Central into ~/.cache/crown/kafka-VERSION (once).
"$(dirname "$0")/kafka-local.sh" fetch
fi
echo "install-deps: ok (cargo $(cargo --version | cut -d' ' -f2), tmux $(tmux -V | cut -d' ' -f2))"
