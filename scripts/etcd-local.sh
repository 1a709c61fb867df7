#!/usr/bin/env bash
# A loopback etcd for demos and manual tests: one member or a three-member cluster on free ports.
#
#   scripts/etcd-local.sh start [--members 1|3] [--dir D]   # prints the client endpoints
#   scripts/etcd-local.sh stop  [--dir D]
#
# Data, logs and pids live under D (default .demo/etcd); the endpoints are written to
# D/endpoints (comma-separated, ready for --endpoints or ETCD_ENDPOINTS).
set -euo pipefail

cmd=${1:-}
[ -n "$cmd" ] && shift
members=1
dir=.demo/etcd
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members=${2:?--members needs 1 or 3}; shift 2 ;;
        --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
        *) echo "etcd-local: unknown argument $1" >&2; exit 2 ;;
    esac
done

usage() {
    echo "usage: $0 start [--members 1|3] [--dir D] | stop [--dir D]" >&2
    exit 2
}

# shellcheck source-path=SCRIPTDIR source=lib/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

stop() {
    local f pid
    for f in "$dir"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}

start() {
    command -v etcd >/dev/null || { echo "etcd-local: install etcd: apt-get install -y etcd-server etcd-client" >&2; exit 1; }
    case "$members" in 1|3) ;; *) echo "etcd-local: --members must be 1 or 3" >&2; exit 2 ;; esac
    stop
    mkdir -p "$dir"
    local ports cluster="" endpoints="" i
    read -r -a ports <<<"$(free_ports $(( 2 * members )))"
    for i in $(seq 0 $(( members - 1 ))); do
        cluster+="${cluster:+,}m$i=http://127.0.0.1:${ports[$(( 2 * i + 1 ))]}"
        endpoints+="${endpoints:+,}127.0.0.1:${ports[$(( 2 * i ))]}"
    done
    for i in $(seq 0 $(( members - 1 ))); do
        local client=${ports[$(( 2 * i ))]} peer=${ports[$(( 2 * i + 1 ))]}
        rm -rf "$dir/m$i.data"
        etcd --name "m$i" --data-dir "$dir/m$i.data" \
            --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "crown-$$" \
            --logger zap --log-outputs "$dir/m$i.log" >/dev/null 2>&1 &
        echo $! >"$dir/m$i.pid"
    done
    echo "$endpoints" >"$dir/endpoints"
    for _ in $(seq 100); do
        if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
            echo "$endpoints"
            return 0
        fi
        sleep 0.1
    done
    echo "etcd-local: etcd did not become healthy; logs in $dir/*.log" >&2
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
