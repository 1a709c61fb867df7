#!/bin/sh
# Five `crown run -- examples/dial.sh` on the file backend: only the leader dials. Each round
# the leader is stopped (kill -9 and SIGTERM alternately) and a new participant joins; the log
# shows one dialer at a time, with rising terms.
#
#   examples/double-dialer.sh [ROUNDS]     (needs a built crown: cargo build)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
crown=${CROWN_BIN:-$here/../target/debug/crown}
rounds=${1:-4}
dir=$(mktemp -d)
export DIAL_LOG="$dir/dial.log"
: > "$DIAL_LOG"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
start() {
    "$crown" run --dir "$dir" --id "dialer-$1" --lease-duration 2s --renew-deadline 1500ms \
        --retry-period 400ms --grace 300ms -- "$here/dial.sh" > /dev/null 2>&1 &
    pids="$pids $!"
}
for i in 1 2 3 4 5; do start "$i"; done
n=5
sleep 2
r=1
while [ "$r" -le "$rounds" ]; do
    pid=$("$crown" status --dir "$dir" -o json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -n 1)
    if [ -n "$pid" ]; then
        if [ $((r % 2)) -eq 1 ]; then sig=KILL; else sig=TERM; fi
        echo "round $r: kill -$sig leader (crown pid $pid)"
        kill -s "$sig" "$pid"
        n=$((n + 1))
        start "$n"
    fi
    sleep 2
    r=$((r + 1))
done
echo "--- $DIAL_LOG: every start follows the previous stop (kill -9 leaves no stop line: its dialer died with crown) ---"
cat "$DIAL_LOG"
echo "terms: $(awk '$2=="start"{printf "%s ", $3}' "$DIAL_LOG")"
