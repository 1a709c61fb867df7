#!/usr/bin/env bash
# Three local participants on the file backend with interleaved, prefixed logs. Every few
# seconds the leader is killed (kill -9) or stopped (SIGTERM) and replaced, so you watch the
# failover. Ctrl-C stops everything.
#   scripts/demo.sh [N]            N participants (default 3)
#   DEMO_SECONDS=30 scripts/demo.sh   stop by itself after 30 s
#   DEMO_CHAOS=0 scripts/demo.sh      no automatic failovers
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
BIN=${CROWN_BIN:-target/release/crown}
DIR=${CROWN_DIR:-.demo/file}
CHAOS=${DEMO_CHAOS:-1}
SECONDS_LEFT=${DEMO_SECONDS:-0}
mkdir -p "$DIR"
pids=()

start() {
  local id=$1
  "$BIN" run --dir "$DIR" --id "$id" 2>&1 | sed -u "s/^/$(printf '%-4s' "$id")| /" &
  pids+=($!)
}

cleanup() {
  trap - INT TERM EXIT
  pkill -TERM -f "crown run --dir $DIR" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "demo: stopped"
}
trap cleanup INT TERM EXIT

for i in $(seq 1 "$N"); do start "p$i"; done
echo "demo: $N participants in $DIR; leader changes every ~8 s; Ctrl-C to stop"
next=$((N + 1))
start_time=$(date +%s)
round=0
while true; do
  sleep 8
  if [ "$SECONDS_LEFT" != 0 ] && [ $(( $(date +%s) - start_time )) -ge "$SECONDS_LEFT" ]; then break; fi
  [ "$CHAOS" = 1 ] || continue
  leader_pid=$("$BIN" status --dir "$DIR" -o json | python3 -c 'import json,sys; l=json.load(sys.stdin)["leader"]; print(l["pid"] if l else "")')
  [ -n "$leader_pid" ] || continue
  round=$((round + 1))
  if (( round % 2 )); then
    echo "demo: ---- kill -9 the leader (pid $leader_pid): a follower takes over at once ----"
    kill -9 "$leader_pid" 2>/dev/null || true
  else
    echo "demo: ---- SIGTERM the leader (pid $leader_pid): it releases, a follower takes over ----"
    kill -TERM "$leader_pid" 2>/dev/null || true
  fi
  start "p$next"; next=$((next + 1))
done
