# crown's dashboard targets, included by the Makefile (`include mk/tui.mk`).
#   make demo             three participants and the live dashboard (`crown demo`)
#   make demo-parallel    tmux: a dashboard pane (`crown tui`) and one pane per participant
#   make kill-demo        stop the tmux session and every crown process of the demo directory
# Knobs: DEMO_N (3), DEMO_DIR (.demo/tui), DEMO_SESSION (crown-demo), DEMO_TIMINGS (for every
# process, e.g. --lease-duration 2s --renew-deadline 1500ms --retry-period 500ms), DEMO_FLAGS
# (`crown demo` only, e.g. --chaos or --duration 20s), DEMO_PROFILE (demo: the quick-to-build
# Cargo profile, see Cargo.toml; `release` for the optimised binary), DEMO_FEATURES (cli,file,tui:
# only the file backend and the dashboard, about half the crates of the full build; `default`
# for everything, e.g. to try `--backend etcd` with this binary. `make demo-etcd` and the kube
# targets build the full binary themselves).
CARGO ?= cargo
DEMO_N ?= 3
DEMO_DIR ?= .demo/tui
DEMO_TIMINGS ?=
DEMO_FLAGS ?=
DEMO_SESSION ?= crown-demo
DEMO_PROFILE ?= demo
DEMO_FEATURES ?= cli,file,tui
DEMO_CARGO_FLAGS = --profile $(DEMO_PROFILE) --no-default-features --features $(DEMO_FEATURES)
CROWN_DEMO_BIN = $(abspath target/$(DEMO_PROFILE)/crown)
DEMO_ABS_DIR = $(abspath $(DEMO_DIR))

.PHONY: demo demo-parallel kill-demo

demo: ## N participants and the live dashboard; headless (log lines) without a terminal
	$(CARGO) run $(DEMO_CARGO_FLAGS) -- demo -p $(DEMO_N) --dir $(DEMO_DIR) $(DEMO_TIMINGS) $(DEMO_FLAGS)

demo-parallel: ## tmux session: dashboard pane on top, one `crown run` pane per participant
	@command -v tmux >/dev/null || { echo "install tmux: apt-get install -y tmux" >&2; exit 1; }
	$(CARGO) build $(DEMO_CARGO_FLAGS)
	mkdir -p $(DEMO_DIR)
	-tmux kill-session -t $(DEMO_SESSION) 2>/dev/null
	tmux new-session -d -s $(DEMO_SESSION) -x 200 -y 50 \
	  "$(CROWN_DEMO_BIN) tui --dir $(DEMO_ABS_DIR) --log-file $(DEMO_ABS_DIR)/crown-tui.log $(DEMO_TIMINGS)"
	for i in $$(seq 1 $(DEMO_N)); do \
	  tmux split-window -t $(DEMO_SESSION) \
	    "$(CROWN_DEMO_BIN) run --dir $(DEMO_ABS_DIR) --id p$$i $(DEMO_TIMINGS); echo '[p'$$i' exited: press Enter]'; read _" || exit 1; \
	  tmux select-layout -t $(DEMO_SESSION) main-horizontal >/dev/null; \
	done
	tmux set-option -t $(DEMO_SESSION) -w main-pane-height 32 >/dev/null
	tmux select-layout -t $(DEMO_SESSION) main-horizontal >/dev/null
	tmux select-pane -t $(DEMO_SESSION):0.0
	@if [ -t 1 ] && [ -z "$$TMUX" ]; then tmux attach -t $(DEMO_SESSION); \
	else echo "demo-parallel: tmux session '$(DEMO_SESSION)' started; attach with: tmux attach -t $(DEMO_SESSION)"; fi

kill-demo: ## stop the tmux session and every crown run/tui/demo of $(DEMO_DIR)
	-tmux kill-session -t $(DEMO_SESSION) 2>/dev/null
	-pkill -TERM -f -- "crown (run|tui|demo) .*--dir $(DEMO_ABS_DIR)( |$$)"
	-pkill -TERM -f -- "crown (tui|demo) .*--dir $(DEMO_DIR)( |$$)"
