#!/usr/bin/env bash
# One active Kafka consumer behind crown, on the loopback broker of scripts/kafka-local.sh:
#
#   scripts/kafka-local.sh start
#   examples/kafka/demo.sh [--kills N]        # default 6: kill -9, SIGTERM, SIGSTOP, twice
#
# Three `crown run` participants (file backend, 2 s lease) each run examples/kafka/consumer.py
# while they lead; a producer writes one numbered record every 20 ms into a fresh topic; every
# few seconds the leader is taken down and the next one carries on from the offset in the fenced
# sink (examples/kafka/sink.py, SQLite). At the end: records produced, processed, processed twice
# (each at a failover, in another term) and the late writes the fence refused.
# Logs and the sink are in .demo/kafka-demo/. Needs python3 and kcat.
set -euo pipefail

kills=6
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) kills=${2:?--kills needs a number}; shift 2 ;;
        *) echo "demo: unknown argument $1 (usage: $0 [--kills N])" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
kdir=${KAFKA_DIR:-.demo/kafka}
[ -f "$kdir/bootstrap" ] || { echo "demo: no broker under $kdir: run scripts/kafka-local.sh start first" >&2; exit 1; }
command -v kcat >/dev/null || { echo "demo: kcat not found: apt-get install -y kcat" >&2; exit 1; }
crown=${CROWN:-}
if [ -z "$crown" ]; then
    for c in "$root/target/release/crown" "$root/target/debug/crown"; do
        if [ -x "$c" ]; then crown=$c; break; fi
    done
fi
if [ -z "$crown" ]; then
    (cd "$root" && cargo build --release -q)
    crown=$root/target/release/crown
fi

work=.demo/kafka-demo
rm -rf "$work"
mkdir -p "$work/lease"
KAFKA_BOOTSTRAP=$(cat "$kdir/bootstrap")
KAFKA_TOPIC=orders-$(date +%s)
SINK_DB=$work/sink.db
export KAFKA_BOOTSTRAP KAFKA_TOPIC SINK_DB
python3 "$root/examples/kafka/sink.py" init "$SINK_DB"

declare -A pids=()
n=0
spawn() {
    local id=p$n
    n=$((n + 1))
    "$crown" run --dir "$work/lease" --id "$id" \
        --lease-duration 2s --renew-deadline 1500ms --retry-period 400ms --grace 300ms \
        -- python3 "$root/examples/kafka/consumer.py" 2>"$work/$id.log" &
    pids[$id]=$!
}

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -CONT "$p" 2>/dev/null || true
        kill "$p" 2>/dev/null || true
    done
    if [ -n "${producer:-}" ]; then kill "$producer" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The producer: one numbered record every 20 ms, padded to 1 KiB: kcat -P reads its input in
# 1024-byte blocks, so short lines would leave in bursts.
(i=0; while :; do printf '%-1023s\n' "$i"; i=$((i + 1)); sleep 0.02; done) |
    kcat -P -b "$KAFKA_BOOTSTRAP" -t "$KAFKA_TOPIC" -p 0 2>"$work/producer.log" &
producer=$!
for _ in 1 2 3; do spawn; done

status() {
    python3 "$root/examples/kafka/sink.py" status "$SINK_DB"
}
leader() {
    "$crown" status --dir "$work/lease" -o json 2>/dev/null |
        python3 -c 'import json,sys; l=json.load(sys.stdin).get("leader") or {}; print(l.get("id",""), l.get("term",""))'
}

kinds=(KILL TERM STOP)
for k in $(seq 0 $((kills - 1))); do
    sleep 5
    read -r id term <<<"$(leader)"
    [ -n "$id" ] || { echo "demo: no leader"; continue; }
    kind=${kinds[$((k % 3))]}
    echo "demo: sink $(status)"
    echo "demo: $kind to the leader $id (term $term, pid ${pids[$id]})"
    kill -"$kind" "${pids[$id]}"
    case "$kind" in
        STOP)
            # crown is frozen, its consumer is not: it writes on in term $term until a new
            # term's consumer has written and the fence refuses it.
            sleep 5
            kill -CONT "${pids[$id]}"
            ;;
        *)
            wait "${pids[$id]}" 2>/dev/null || true
            unset "pids[$id]"
            spawn
            ;;
    esac
done
sleep 3
kill "$producer" 2>/dev/null || true
sleep 2
python3 - "$SINK_DB" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute("SELECT off, term FROM processed ORDER BY seq").fetchall()
offs = {o for o, _ in rows}
terms = []
for _, t in rows:
    if not terms or terms[-1] != t:
        terms.append(t)
missing = [o for o in range(max(offs) + 1) if o not in offs] if offs else []
refused = c.execute("SELECT term, count(*) FROM refused GROUP BY term").fetchall()
print(f"demo: {len(offs)} records processed (offsets 0..{max(offs) if offs else -1}, {len(missing)} missing), "
      f"{len(rows) - len(offs)} processed twice, terms in commit order {terms}, "
      f"late writes refused by the fence (term: count) {dict(refused)}")
EOF
