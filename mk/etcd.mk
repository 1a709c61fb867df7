# etcd targets (included by the Makefile). `make demo-etcd`: a loopback etcd cluster, then the
# usual three-participant demo on the etcd backend; `make bench-etcd`: crown beside etcdctl elect.
ETCD_DIR ?= .demo/etcd
ETCD_MEMBERS ?= 3

.PHONY: etcd-up etcd-down demo-etcd bench-etcd

etcd-up: ## start a loopback etcd (ETCD_MEMBERS=1|3) under $(ETCD_DIR); endpoints in $(ETCD_DIR)/endpoints
	scripts/etcd-local.sh start --members $(ETCD_MEMBERS) --dir $(ETCD_DIR)

etcd-down: ## stop it
	scripts/etcd-local.sh stop --dir $(ETCD_DIR)

demo-etcd: build etcd-up ## the demo and dashboard on etcd's election service (kill -9 takeovers wait for the session TTL)
	$(BIN) demo -p $(DEMO_N) --backend etcd --endpoints $$(cat $(ETCD_DIR)/endpoints) --dir .demo/etcd-run $(DEMO_TIMINGS) $(DEMO_FLAGS); \
		rc=$$?; scripts/etcd-local.sh stop --dir $(ETCD_DIR); exit $$rc

bench-etcd: build ## crown's etcd handoff/failover beside etcdctl elect, p50/p99 over 50 cycles
	python3 scripts/bench-etcd.py --runs 50 --bin $(BIN)
