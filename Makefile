# crown — the demo kit. `make setup demo` on a fresh machine; `make test` for the tests.
CARGO ?= cargo
BIN := target/release/crown
DIR ?= .demo/file

.PHONY: setup build run test lint bench bench-kube bench-kafka bench-smoke chaos clean-demo

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
	shellcheck -x scripts/*.sh scripts/lib/*.sh examples/*.sh examples/kafka/*.sh tests/sidecar/*.sh

bench: build ## every benchmark: failover per backend beside flock(1)/etcdctl/client-go (100 cycles), cost, scale; plots
	scripts/install-deps.sh --tests --bench
	mkdir -p target/bench
	python3 scripts/bench-failover.py --bin $(BIN) --json target/bench/file.json
	python3 scripts/bench-etcd.py --bin $(BIN) --json target/bench/etcd.json
	python3 scripts/bench-kube.py --bin $(BIN) --json target/bench/kube.json
	python3 scripts/plot-bench.py target/bench docs/img
	python3 scripts/bench-cost.py --bin $(BIN) --json target/bench-cost.json
	python3 scripts/bench-scale.py --bin $(BIN) --json target/bench-scale.json

bench-kube: build ## the Kubernetes backend beside client-go on one real kube-apiserver
	python3 scripts/bench-kube.py --runs 20 --crash-runs 8 --go-default-graceful-runs 5 --go-default-crash-runs 3 --cost-seconds 30

bench-kafka: build ## one active Kafka consumer: crown's failover gap beside a plain consumer group's rebalance (real broker)
	scripts/install-deps.sh --tests
	python3 scripts/bench-kafka.py --bin $(BIN) --runs 10 --group-runs 5 --default-group-runs 3 --json target/bench/kafka.json

# The short versions, run by CI: every bench script end to end with a few cycles (debug binary).
SMOKE := target/bench-smoke
bench-smoke: ## every benchmark script with a few cycles (CI)
	mkdir -p $(SMOKE)
	python3 scripts/bench-failover.py --bin target/debug/crown --runs 5 --json $(SMOKE)/file.json
	python3 scripts/bench-etcd.py --bin target/debug/crown --runs 5 --ctl-crash-runs 0 --raft-runs 2 --json $(SMOKE)/etcd.json
	python3 scripts/bench-kube.py --bin target/debug/crown --runs 3 --go-default-graceful-runs 2 --go-default-crash-runs 1 --cost-seconds 5 --json $(SMOKE)/kube.json
	python3 scripts/bench-cost.py --bin target/debug/crown --seconds 5
	python3 scripts/bench-scale.py --bin target/debug/crown --participants 20 --elections 2 --rounds 1 --steady-seconds 5

CHAOS_FAULTS ?= 1000
chaos: ## the full fault campaign: CHAOS_FAULTS (1000) random faults per backend, fenced log; tables in target/chaos/
	scripts/install-deps.sh --tests
	CROWN_CHAOS_FAULTS=$(CHAOS_FAULTS) $(CARGO) test --release --test chaos -- --nocapture --test-threads=3

clean-demo:
	rm -rf .demo
