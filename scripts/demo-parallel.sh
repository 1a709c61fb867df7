#!/usr/bin/env bash
# A tmux session "crown-demo": one pane per participant, plus a pane that prints
# `crown status` every second. Kill a pane's process (Ctrl-C in it) to watch the failover.
#   scripts/demo-parallel.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
BIN=$(pwd)/${CROWN_BIN:-target/release/crown}
DIR=$(pwd)/${CROWN_DIR:-.demo/file}
SESSION=crown-demo
command -v tmux >/dev/null || { echo "demo-parallel: tmux not found: run 'make setup' (apt-get install -y tmux)" >&2; exit 1; }
mkdir -p "$DIR"
tmux kill-session -t "$SESSION" 2>/dev/null || true
tmux new-session -d -s "$SESSION" -x 200 -y 50 "$BIN run --dir $DIR --id p1"
for i in $(seq 2 "$N"); do
  tmux split-window -t "$SESSION" "$BIN run --dir $DIR --id p$i"
  tmux select-layout -t "$SESSION" tiled >/dev/null
done
tmux split-window -t "$SESSION" "watch -n 1 -t $BIN status --dir $DIR"
tmux select-layout -t "$SESSION" tiled >/dev/null
if [ -t 1 ] && [ -z "${TMUX:-}" ]; then
  exec tmux attach -t "$SESSION"
else
  echo "demo-parallel: tmux session '$SESSION' started; attach with: tmux attach -t $SESSION"
fi
