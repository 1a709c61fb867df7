#!/usr/bin/env bash
# A real, throw-away Kubernetes API server for crown's tests (like controller-runtime's envtest):
# an etcd plus a kube-apiserver on 127.0.0.1, on free ports, with RBAC and two token identities.
# No kubelet, no controllers, no containers: just the API that Leases, Events and RBAC live in.
# With no kube-controller-manager: a deleted namespace stays Terminating for ever, namespaces get
# no `default` ServiceAccount (create one with kubectl; `kubectl create token` works), nothing
# garbage-collects by ownerReferences. Admission plugin ServiceAccount is off (pods need no SA).
#
#   scripts/kube-test-env.sh build                    # build/cache kube-apiserver (and etcd, kubectl if needed)
#   scripts/kube-test-env.sh start [--dir DIR] [--owner-pid PID]   # fresh etcd + apiserver; writes DIR/env,
#                                                     # DIR/kubeconfig*; with --owner-pid, stops when PID exits
#   scripts/kube-test-env.sh stop  [--dir DIR]        # stop both (idempotent)
#   scripts/kube-test-env.sh env   [--dir DIR]        # print DIR/env (eval it, or `source DIR/env`)
#   scripts/kube-test-env.sh status [--dir DIR]       # what is running; exit 0 only when the apiserver is ready
#   scripts/kube-test-env.sh check  [--dir DIR]       # smoke test: namespace, Lease create/replace/watch, RBAC
#   scripts/kube-test-env.sh stop-apiserver  [--dir DIR] [--kill]   # stop only the apiserver (SIGTERM, or SIGKILL)
#   scripts/kube-test-env.sh start-apiserver [--dir DIR]            # start it again, on the same port, same etcd
#   scripts/kube-test-env.sh build-controller-manager               # build/cache kube-controller-manager
#   scripts/kube-test-env.sh start-controller-manager [--dir DIR]   # run it (built if needed) against the
#                                                     # apiserver: deployment, replicaset, endpointslice,
#                                                     # disruption, namespace, garbage collector, service
#                                                     # accounts;
#                                                     # `stop` stops it too. Still no scheduler, no kubelet.
#
# DIR defaults to $CROWN_KUBE_DIR, else .demo/kube under the repository. What `start` leaves there:
#   env                     shell lines: export KUBECONFIG=..., CROWN_KUBE_APISERVER_PID=..., ports, ...
#   kubeconfig              identity `admin` (group system:masters)
#   kubeconfig-participant  identity `crown-participant` (only system:authenticated; grant it RBAC yourself)
#   certs/ tokens.csv etcd-data/ etcd.log apiserver.log etcd.pid apiserver.pid state
#
# Binaries are built from the Go module proxy (no downloads of prebuilt binaries) into
# $CROWN_CACHE_DIR/bin (default ~/.cache/crown/bin), keyed by version; a cached binary is reused.
# On 2 cores: kube-apiserver from cold ~7.5 min (modules included), etcd ~1.5 min more, kubectl
# ~1 min more; `start` then takes ~3 s (etcd ~0.3 s, kube-apiserver to /readyz ~2.5 s).
#   CROWN_KUBE_VERSION    k8s.io/kubernetes version to build (default v1.34.4)
#   CROWN_ETCD            "auto" (default): `etcd` on PATH if it is >= 3.4.22 (Debian 12's etcd-server
#                         3.4.23 is), else build one; "system": `etcd` on PATH; "build": always build
#                         (needed for streaming lists / sendInitialEvents: see etcd_bin)
#   CROWN_ETCD_VERSION    go.etcd.io/etcd/server/v3 version to build (default v3.6.4: the etcd that
#                         k8s.io/kubernetes v1.34.4 itself depends on, and kubeadm 1.34 deploys)
#   CROWN_KUBECTL         kubectl to use; "build" builds kubectl $CROWN_KUBE_VERSION (default: kubectl
#                         on PATH, else build)
#   CROWN_GO_PARALLEL     packages `go build` compiles at once (default 1: leaves the other core free)
#   CROWN_KUBE_START_TIMEOUT  seconds to wait for /readyz (default 60)
#   CROWN_KUBE_APISERVER_ARGS extra kube-apiserver flags, split on spaces (e.g. --feature-gates=...)
set -euo pipefail

KUBE_VERSION="${CROWN_KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${CROWN_ETCD_VERSION:-v3.6.4}"
ETCD_MODE="${CROWN_ETCD:-auto}"
CACHE_DIR="${CROWN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crown}"
BIN_DIR="$CACHE_DIR/bin"
GO_PARALLEL="${CROWN_GO_PARALLEL:-1}"
START_TIMEOUT="${CROWN_KUBE_START_TIMEOUT:-60}"
read -r -a EXTRA_APISERVER_ARGS <<<"${CROWN_KUBE_APISERVER_ARGS:-}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "kube-test-env: $*" >&2; exit 1; }
log() { echo "kube-test-env: $*" >&2; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$((${2:-$(now_ms)} - $1)); printf '%d.%01ds' $((ms / 1000)) $(((ms % 1000) / 100)); }

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

# The Go build: niced and one package at a time, so it does not starve a cargo build beside it.
go_build() { nice -n 10 env CGO_ENABLED=0 go build -p "$GO_PARALLEL" -trimpath "$@"; }

need_go() { command -v go >/dev/null 2>&1 || die "go not found: the binaries are built from Go modules"; }

# Writes a throw-away module in $CACHE_DIR/kube-build/$KUBE_VERSION that requires k8s.io/kubernetes.
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
# replaces them with ./staging/src/...; a module depending on it must replace each with the
# published v0.X.Y instead. The list is read from k8s.io/kubernetes's own go.mod.
kube_module() {
  local dir="$CACHE_DIR/kube-build/$KUBE_VERSION" staging="v0.${KUBE_VERSION#v1.}" gomod
  if [ -f "$dir/.ready" ]; then echo "$dir"; return; fi
  need_go
  mkdir -p "$dir"
  gomod="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || die "cannot download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
  {
    echo "// Generated by scripts/kube-test-env.sh: builds kube-apiserver/kubectl $KUBE_VERSION."
    echo "module crown.local/kube-build"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    awk -v v="$staging" '/^\t+k8s\.io\/[a-z0-9-]+ v0\.0\.0$/ { printf "\t%s => %s %s\n", $1, $1, v }' "$gomod"
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  log "resolving k8s.io/kubernetes $KUBE_VERSION dependencies (go mod tidy)"
  (cd "$dir" && go mod tidy) >&2 || die "go mod tidy failed in $dir"
  touch "$dir/.ready"
  echo "$dir"
}

# Builds k8s.io/kubernetes/cmd/$1 into $BIN_DIR/$1-$KUBE_VERSION, stamped the way Kubernetes'
# own build stamps it (so `--version` and the server's /version say $KUBE_VERSION).
build_kube_cmd() {
  local name="$1" out="$BIN_DIR/$1-$KUBE_VERSION" dir date minor pkg ld="" t0
  if [ -x "$out" ] && { "$out" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION" ||
    "$out" version --client 2>/dev/null | grep -qx "Client Version: $KUBE_VERSION"; }; then
    echo "$out"; return
  fi
  dir="$(kube_module)"
  t0="$(now_ms)"
  date="$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' \
    "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.info" 2>/dev/null || true)"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date:-unknown}"
  done
  mkdir -p "$BIN_DIR"
  log "building $name $KUBE_VERSION (nice, -p $GO_PARALLEL; a cold build takes a while)"
  # kube-controller-manager needs modules that tools.go does not import: -mod=mod records them.
  local gof="${GOFLAGS:-}"
  [ "$name" != kube-controller-manager ] || gof="-mod=mod"
  (cd "$dir" && GOFLAGS="$gof" go_build -ldflags "-s -w$ld" -o "$out.tmp" "k8s.io/kubernetes/cmd/$name") >&2 ||
    die "go build k8s.io/kubernetes/cmd/$name failed"
  mv -f "$out.tmp" "$out"
  log "built $out in $(elapsed "$t0")"
  echo "$out"
}

# Builds etcd from go.etcd.io/etcd/server/v3 (whose root package is etcd's main) into
# $BIN_DIR/etcd-$ETCD_VERSION.
build_etcd() {
  local out="$BIN_DIR/etcd-$ETCD_VERSION" dir="$CACHE_DIR/etcd-build/$ETCD_VERSION" t0
  if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -qx "etcd Version: ${ETCD_VERSION#v}"; then
    echo "$out"; return
  fi
  need_go
  t0="$(now_ms)"
  mkdir -p "$dir" "$BIN_DIR"
  if [ ! -f "$dir/.ready" ]; then
    printf 'module crown.local/etcd-build\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
      "$ETCD_VERSION" >"$dir/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
    (cd "$dir" && go mod tidy) >&2 || die "go mod tidy failed in $dir"
    touch "$dir/.ready"
  fi
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go_build -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3) >&2 ||
    die "go build go.etcd.io/etcd/server/v3 failed"
  mv -f "$out.tmp" "$out"
  log "built $out in $(elapsed "$t0")"
  echo "$out"
}

# Debian 12's etcd 3.4.23 runs kube-apiserver 1.34 well for crown: Lease get/create/update/watch,
# RBAC, namespaces all work (3.4.22 is Kubernetes' documented minimum for 3.4). What it lacks:
# the apiserver turns off RequestWatchProgress for it, so watches with sendInitialEvents=true
# (streaming lists) fail, and consistent lists go to etcd instead of the watch cache.
# CROWN_ETCD=build gives the etcd of a production 1.34 cluster (v3.6.4), built from source.
etcd_bin() {
  local system="" v
  system="$(command -v etcd || true)"
  case "$ETCD_MODE" in
    system) [ -n "$system" ] || die "CROWN_ETCD=system but no etcd on PATH"; echo "$system" ;;
    build) build_etcd ;;
    auto)
      v="$([ -z "$system" ] || "$system" --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
      if [ -n "$v" ] && printf '3.4.22\n%s\n' "$v" | sort -C -V; then echo "$system"; else build_etcd; fi
      ;;
    *) die "CROWN_ETCD must be auto, system or build, not '$ETCD_MODE'" ;;
  esac
}

# $CROWN_KUBECTL if set ("build": build one), else the machine's kubectl, else one built from
# the same k8s.io/kubernetes (kubectl is only used by this script and by tests, for setup).
kubectl_bin() {
  case "${CROWN_KUBECTL:-}" in
    build) build_kube_cmd kubectl ;;
    "") if command -v kubectl >/dev/null 2>&1; then command -v kubectl; else build_kube_cmd kubectl; fi ;;
    *) [ -x "$CROWN_KUBECTL" ] || die "CROWN_KUBECTL=$CROWN_KUBECTL is not executable"; echo "$CROWN_KUBECTL" ;;
  esac
}

# Sets APISERVER, ETCD and KUBECTL, building what is missing. Holds a lock meanwhile, so that
# two starts in parallel (different --dir) do not build the same binary twice at once.
ensure_binaries() {
  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/.build.lock"
  flock 9
  APISERVER="$(build_kube_cmd kube-apiserver)"
  ETCD="$(etcd_bin)"
  KUBECTL="$(kubectl_bin)"
  exec 9>&-
}

cmd_build() {
  local t0
  t0="$(now_ms)"
  ensure_binaries
  echo "kube-apiserver: $APISERVER"
  echo "etcd:           $ETCD"
  echo "kubectl:        $KUBECTL"
  log "build done in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------------------------

DIR=""
KILL_SIGNAL=TERM
OWNER_PID="${CROWN_KUBE_OWNER_PID:-}"

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
      --dir=*) DIR="${1#--dir=}"; shift ;;
      --kill) KILL_SIGNAL=KILL; shift ;;
      --owner-pid) [ $# -ge 2 ] || die "--owner-pid needs a value"; OWNER_PID="$2"; shift 2 ;;
      *) die "unknown argument: $1 (see the header of $0)" ;;
    esac
  done
  DIR="${DIR:-${CROWN_KUBE_DIR:-$REPO_ROOT/.demo/kube}}"
  case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
  DIR="${DIR%/}"
}

# pid of a process we started, if it is still that process (a pid file can outlive its process).
live_pid() {
  local pidfile="$DIR/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
  echo "$pid"
}

# n free TCP ports on 127.0.0.1, all distinct (the kernel picks them; sockets closed on exit).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts "$@" detached (own session, stdio to the log) and records its pid in DIR/$name.pid.
spawn() {
  local name="$1"; shift
  : >"$DIR/$name.log"
  rm -f "$DIR/$name.pid"
  # shellcheck disable=SC2016 # $$, $0 and $@ are the inner shell's: it writes its own pid, then execs.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/$name.pid" "$@" \
    </dev/null >>"$DIR/$name.log" 2>&1 &
  local i
  for i in $(seq 50); do [ -s "$DIR/$name.pid" ] && return 0; sleep 0.1; done
  die "$name did not start"
}

# True once pid has exited: reaped, or a zombie whose threads have all ended (a Go process's main
# thread can be a zombie while its other threads still hold its sockets open).
gone() {
  [ -d "/proc/$1" ] || return 0
  grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null && [ "$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 | wc -l)" -le 1 ]
}

stop_proc() {
  local name="$1" sig="$2" pid i
  if pid="$(live_pid "$name")"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 150); do
      gone "$pid" && break
      [ "$i" = 100 ] && { log "$name ($pid) still running after 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
      sleep 0.1
    done
    log "stopped $name (pid $pid)"
  fi
  rm -f "$DIR/$name.pid"
}

# Self-signed CA, a serving certificate for 127.0.0.1/localhost, the service-account key pair and
# the static tokens: made once per DIR and reused by later starts.
make_credentials() {
  local c="$DIR/certs" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  mkdir -p "$c"
  if [ ! -f "$c/serving.crt" ]; then
    # ECDSA P-256 keys: instant to generate (tests start one environment each), accepted by rustls.
    openssl req -x509 "${ec[@]}" -nodes -days 3650 -subj "/CN=crown-test-ca" \
      -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
    openssl req "${ec[@]}" -nodes -subj "/CN=kube-apiserver" \
      -keyout "$c/serving.key" -out "$c/serving.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
      "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature" >"$c/serving.ext"
    openssl x509 -req -in "$c/serving.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
      -days 3650 -extfile "$c/serving.ext" -out "$c/serving.crt" 2>/dev/null
  fi
  if [ ! -f "$c/sa.pub" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$c/sa.key"
    openssl ec -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null
  fi
  if [ ! -f "$DIR/tokens.csv" ]; then
    # token,user,uid[,"groups"]; every authenticated user also gets system:authenticated.
    printf '%s,admin,admin,"system:masters"\n%s,crown-participant,crown-participant\n' \
      "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >"$DIR/tokens.csv"
  fi
  chmod 600 "$c"/*.key "$DIR/tokens.csv"
}

token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "$DIR/tokens.csv"; }

write_kubeconfig() { # file user
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: crown-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $DIR/certs/ca.crt
users:
- name: $2
  user:
    token: $(token_of "$2")
contexts:
- name: $2@crown-test
  context:
    cluster: crown-test
    user: $2
    namespace: default
current-context: $2@crown-test
EOF
  chmod 600 "$1"
}

# DIR/state holds the ports and binaries chosen by `start`, for start-apiserver/env/stop.
load_state() {
  [ -f "$DIR/state" ] || die "no environment in $DIR (run: $0 start --dir $DIR)"
  # shellcheck source=/dev/null
  . "$DIR/state"
}

write_env() {
  local apid epid
  apid="$(live_pid apiserver || true)"
  epid="$(live_pid etcd || true)"
  {
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf 'export CROWN_KUBECONFIG_ADMIN=%q\n' "$DIR/kubeconfig"
    printf 'export CROWN_KUBECONFIG_PARTICIPANT=%q\n' "$DIR/kubeconfig-participant"
    printf 'export CROWN_KUBE_DIR=%q\n' "$DIR"
    printf 'export CROWN_KUBE_APISERVER_URL=https://127.0.0.1:%s\n' "$APISERVER_PORT"
    printf 'export CROWN_KUBE_APISERVER_PORT=%s\n' "$APISERVER_PORT"
    printf 'export CROWN_KUBE_APISERVER_PID=%s\n' "$apid"
    printf 'export CROWN_ETCD_PORT=%s\n' "$ETCD_PORT"
    printf 'export CROWN_ETCD_PEER_PORT=%s\n' "$ETCD_PEER_PORT"
    printf 'export CROWN_ETCD_PID=%s\n' "$epid"
    printf 'export CROWN_KUBE_CA=%q\n' "$DIR/certs/ca.crt"
    printf 'export CROWN_KUBE_VERSION=%s\n' "$KUBE_VERSION"
    printf 'export CROWN_KUBECTL=%q\n' "$KUBECTL"
  } >"$DIR/env.tmp"
  mv -f "$DIR/env.tmp" "$DIR/env"
}

start_etcd() {
  spawn etcd "$ETCD" --name crown --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "crown=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --quota-backend-bytes 1073741824 --logger=zap --log-level warn
  local deadline=$((SECONDS + 20))
  until curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
    if [ $SECONDS -ge $deadline ] || ! live_pid etcd >/dev/null; then
      tail -n 30 "$DIR/etcd.log" >&2
      die "etcd did not become healthy on 127.0.0.1:$ETCD_PORT (log: $DIR/etcd.log)"
    fi
    sleep 0.2
  done
}

start_apiserver() {
  local c="$DIR/certs"
  local i
  for i in $(seq 50); do port_in_use "$APISERVER_PORT" || break; sleep 0.1; done
  port_in_use "$APISERVER_PORT" && die "port $APISERVER_PORT is in use: cannot start kube-apiserver"
  spawn apiserver "$APISERVER" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$c/serving.crt" --tls-private-key-file="$c/serving.key" \
    --client-ca-file="$c/ca.crt" \
    --token-auth-file="$DIR/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$c/sa.pub" --service-account-signing-key-file="$c/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --disable-admission-plugins=ServiceAccount \
    --profiling=false --v=0 "${EXTRA_APISERVER_ARGS[@]}"
  wait_ready
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) out=""
  while :; do
    out="$(curl -sS --max-time 5 --cacert "$DIR/certs/ca.crt" -H "Authorization: Bearer $(token_of admin)" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" 2>&1 || true)"
    [ "$out" = ok ] && return 0
    if [ $SECONDS -ge $deadline ] || ! live_pid apiserver >/dev/null; then
      echo "--- last lines of $DIR/apiserver.log:" >&2
      tail -n 40 "$DIR/apiserver.log" >&2
      echo "--- /readyz said: $out" >&2
      if live_pid apiserver >/dev/null; then
        die "kube-apiserver not ready after ${START_TIMEOUT}s on 127.0.0.1:$APISERVER_PORT"
      fi
      die "kube-apiserver exited before it was ready (log: $DIR/apiserver.log)"
    fi
    sleep 0.25
  done
}

# The apiserver's system-namespaces controller makes `default` shortly after startup; make sure.
ensure_default_namespace() {
  local i
  for i in $(seq 20); do
    "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get namespace default >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  "$KUBECTL" --kubeconfig "$DIR/kubeconfig" create namespace default >/dev/null
}

cmd_start() {
  local t0 t1 t2
  t0="$(now_ms)"
  if live_pid apiserver >/dev/null && live_pid etcd >/dev/null; then
    load_state
    log "already running in $DIR"
    write_env; cat "$DIR/env"; return
  fi
  mkdir -p "$DIR"
  cmd_stop_quiet
  ensure_binaries
  make_credentials
  read -r APISERVER_PORT ETCD_PORT ETCD_PEER_PORT <<<"$(free_ports 3)"
  {
    printf 'APISERVER=%q\nETCD=%q\nKUBECTL=%q\n' "$APISERVER" "$ETCD" "$KUBECTL"
    printf 'APISERVER_PORT=%s\nETCD_PORT=%s\nETCD_PEER_PORT=%s\n' "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"
  } >"$DIR/state"
  write_kubeconfig "$DIR/kubeconfig" admin
  write_kubeconfig "$DIR/kubeconfig-participant" crown-participant
  rm -rf "$DIR/etcd-data"
  t1="$(now_ms)"
  start_etcd
  t2="$(now_ms)"
  start_apiserver
  ensure_default_namespace
  start_watchdog
  write_env
  cat "$DIR/env"
  log "started in $(elapsed "$t0") (etcd $(elapsed "$t1" "$t2"), kube-apiserver $(elapsed "$t2")):" \
    "https://127.0.0.1:$APISERVER_PORT, etcd 127.0.0.1:$ETCD_PORT, dir $DIR"
}

# With --owner-pid PID, a watchdog stops the environment once PID has exited (a test process
# killed before it could run `stop` then leaks nothing).
start_watchdog() {
  [ -n "$OWNER_PID" ] || return 0
  kill -0 "$OWNER_PID" 2>/dev/null || die "--owner-pid $OWNER_PID: no such process"
  # shellcheck disable=SC2016 # expanded by the watchdog's own shell
  spawn watchdog bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" stop --dir "$3"' \
    watchdog "$OWNER_PID" "$REPO_ROOT/scripts/kube-test-env.sh" "$DIR/"
}

cmd_stop_quiet() {
  # The watchdog's last act is to run `stop` as itself: it must not kill itself.
  if [ "$(live_pid watchdog || true)" != "$$" ]; then stop_proc watchdog TERM; else rm -f "$DIR/watchdog.pid"; fi
  stop_proc controller-manager TERM
  stop_proc apiserver TERM
  stop_proc etcd TERM
}

cmd_stop() {
  [ -d "$DIR" ] || { log "nothing in $DIR"; return 0; }
  cmd_stop_quiet
  [ -f "$DIR/state" ] && { load_state; write_env; }
  log "stopped (dir $DIR)"
}

cmd_start_apiserver() {
  local t0
  t0="$(now_ms)"
  load_state
  live_pid etcd >/dev/null || die "etcd is not running in $DIR (run: $0 start --dir $DIR)"
  if live_pid apiserver >/dev/null; then
    log "kube-apiserver already running"
  else
    start_apiserver
    log "kube-apiserver started in $(elapsed "$t0") on port $APISERVER_PORT"
  fi
  write_env
  cat "$DIR/env"
}

cmd_build_controller_manager() {
  mkdir -p "$CACHE_DIR"
  # Its own lock: a build of it does not hold up `start` (which needs only the apiserver).
  exec 9>"$CACHE_DIR/.build-kcm.lock"
  flock 9
  build_kube_cmd kube-controller-manager
  exec 9>&-
}

# The controllers a Deployment needs to become Pod objects and EndpointSlices (the Pods are run
# by a test's own kubelet): no node lifecycle (a fake Node would be tainted), no leader election.
cmd_start_controller_manager() {
  local kcm
  load_state
  live_pid apiserver >/dev/null || die "kube-apiserver is not running in $DIR (run: $0 start --dir $DIR)"
  if live_pid controller-manager >/dev/null; then log "kube-controller-manager already running"; return; fi
  kcm="$(cmd_build_controller_manager)"
  spawn controller-manager "$kcm" \
    --kubeconfig="$DIR/kubeconfig" --authentication-kubeconfig="$DIR/kubeconfig" \
    --authorization-kubeconfig="$DIR/kubeconfig" \
    --leader-elect=false --secure-port=0 --use-service-account-credentials=false \
    --controllers=deployment,replicaset,endpointslice,endpoint,disruption,garbagecollector,namespace,serviceaccount \
    --service-account-private-key-file="$DIR/certs/sa.key" --root-ca-file="$DIR/certs/ca.crt" \
    --concurrent-deployment-syncs=2 --concurrent-replicaset-syncs=2 --v=1
  log "kube-controller-manager started (log: $DIR/controller-manager.log)"
}

cmd_stop_apiserver() {
  load_state
  stop_proc apiserver "$KILL_SIGNAL"
  write_env
}

cmd_status() {
  local apid epid
  load_state
  apid="$(live_pid apiserver || echo -)"; epid="$(live_pid etcd || echo -)"
  echo "dir:            $DIR"
  echo "etcd:           pid $epid, 127.0.0.1:$ETCD_PORT"
  echo "kube-apiserver: pid $apid, https://127.0.0.1:$APISERVER_PORT"
  [ "$apid" != - ] && curl -fsS --max-time 5 --cacert "$DIR/certs/ca.crt" \
    -H "Authorization: Bearer $(token_of admin)" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

# A smoke test of a running environment: what crown's Lease backend needs from it.
CHECK_FAILS=0
kc() { "$KUBECTL" --kubeconfig "$DIR/kubeconfig" "$@"; }
kc_participant() { "$KUBECTL" --kubeconfig "$DIR/kubeconfig-participant" "$@"; }
expect() { # description command...
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then echo "ok:   $what"; else echo "FAIL: $what"; CHECK_FAILS=$((CHECK_FAILS + 1)); fi
}

cmd_check() {
  local ns=crown-check lease out watch_out
  load_state
  lease="check-$(date +%s%N)"
  kc get namespace "$ns" >/dev/null 2>&1 || kc create namespace "$ns" >/dev/null
  expect "namespaces default and $ns exist" kc get namespace default "$ns" -o name
  watch_out="$(mktemp)"
  timeout 4 "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get --raw \
    "/apis/coordination.k8s.io/v1/namespaces/$ns/leases?watch=1&fieldSelector=metadata.name%3D$lease" \
    >"$watch_out" 2>&1 &
  sleep 1
  printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: %s, namespace: %s}\nspec: {holderIdentity: a, leaseDurationSeconds: 15, leaseTransitions: 0}\n' \
    "$lease" "$ns" >"$watch_out.yaml"
  expect "create Lease $ns/$lease" kc create -f "$watch_out.yaml"
  kc get lease "$lease" -n "$ns" -o json | sed 's/"holderIdentity": "a"/"holderIdentity": "b"/' >"$watch_out.yaml"
  expect "replace the Lease (update at its resourceVersion)" kc replace -f "$watch_out.yaml"
  wait || true
  expect "watch streamed ADDED" grep -q '"type":"ADDED"' "$watch_out"
  expect "watch streamed MODIFIED (holder b)" grep -q '"type":"MODIFIED".*"holderIdentity":"b"' "$watch_out"
  out="$(timeout 3 "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get --raw \
    "/apis/coordination.k8s.io/v1/namespaces/$ns/leases?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true" 2>&1 || true)"
  if grep -q 'initial-events-end' <<<"$out"; then echo "ok:   streaming list (sendInitialEvents=true)"
  else echo "note: streaming lists unsupported with this etcd: $(head -c 200 <<<"$out")"; fi
  rm -f "$watch_out" "$watch_out.yaml"
  out="$(kc auth can-i --as="system:serviceaccount:$ns:crown-participant" get leases -n "$ns" 2>&1 || true)"
  expect "auth can-i as a service account answers no ($out)" [ "$out" = no ]
  out="$(kc_participant auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1 || true)"
  expect "kubeconfig-participant authenticates as crown-participant ($out)" [ "$out" = crown-participant ]
  out="$(kc_participant get leases -n "$ns" 2>&1 || true)"
  expect "crown-participant has no RBAC grants yet (Forbidden)" grep -q Forbidden <<<"$out"
  kc delete lease "$lease" -n "$ns" >/dev/null || true
  [ "$CHECK_FAILS" = 0 ] || die "check: $CHECK_FAILS check(s) failed"
  echo "kube-test-env: check ok ($DIR)"
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    build) [ $# -eq 0 ] || die "build takes no arguments"; cmd_build ;;
    start) parse_args "$@"; cmd_start ;;
    stop) parse_args "$@"; cmd_stop ;;
    env) parse_args "$@"; [ -f "$DIR/env" ] || die "no $DIR/env (run: $0 start --dir $DIR)"; cat "$DIR/env" ;;
    status) parse_args "$@"; cmd_status ;;
    check) parse_args "$@"; cmd_check ;;
    start-apiserver) parse_args "$@"; cmd_start_apiserver ;;
    stop-apiserver) parse_args "$@"; cmd_stop_apiserver ;;
    build-controller-manager) [ $# -eq 0 ] || die "build-controller-manager takes no arguments"; cmd_build_controller_manager ;;
    start-controller-manager) parse_args "$@"; cmd_start_controller_manager ;;
    *) die "usage: $0 build|start|stop|env|status|check|start-apiserver|stop-apiserver|build-controller-manager|start-controller-manager [--dir DIR]" ;;
  esac
}

main "$@"
