# crown — the demo kit. `make setup demo` on a fresh machine; `make test` for the tests.
CARGO ?= cargo
BIN := target/release/crown
DIR ?= .demo/file

.PHONY: setup build run test lint bench bench-kube chaos clean-demo

# demo, demo-parallel, kill-demo: the dashboard targets.
include mk/tui.mk
include mk/etcd.mk

setup: ## install what a fresh machine lacks (idempotent)
	scripts/install-deps.sh

build: ## release build
	$(CARGO) build --release

run: build ## one participant on the file backend
	$(BIN) run --dir $(DIR)

test: ## every test (unit, real binary, real servers, real terminal); installs what is missing
	scripts/install-deps.sh --tests
	$(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	shellcheck scripts/*.sh examples/*.sh tests/sidecar/*.sh

bench: build ## failover latency of the file backend beside flock(1), p50/p90/p99/max over 50 cycles (see docs/BENCHMARKS.md)
	python3 scripts/bench-failover.py --runs 50 --bin $(BIN)

bench-kube: build ## the Kubernetes backend beside client-go on one real kube-apiserver
	python3 scripts/bench-kube.py --runs 20 --crash-runs 8 --cost-seconds 30

CHAOS_FAULTS ?= 1000
chaos: ## the full fault campaign: CHAOS_FAULTS (1000) random faults per backend, fenced log; tables in target/chaos/
	scripts/install-deps.sh --tests
	CROWN_CHAOS_FAULTS=$(CHAOS_FAULTS) $(CARGO) test --release --test chaos -- --nocapture --test-threads=3

clean-demo:
	rm -rf .demo
