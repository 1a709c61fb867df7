#!/usr/bin/env bash
# The minikube walkthrough in one command: start minikube, build the crown image inside
# minikube's Docker, apply a variant (kube Lease or etcd), wait for the rollout, print the
# next steps.
#   scripts/setup.sh [--backend kube|etcd] [--replicas N] [--dry-run]
# --dry-run prints every command instead of running it (nothing needs to be installed).
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=kube
REPLICAS=3
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=${2:?--backend needs kube or etcd}; shift 2 ;;
    --backend=*) BACKEND=${1#*=}; shift ;;
    --replicas) REPLICAS=${2:?--replicas needs a number}; shift 2 ;;
    --replicas=*) REPLICAS=${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BACKEND" in kube|etcd) ;; *) echo "setup: --backend must be kube or etcd, not '$BACKEND'" >&2; exit 2 ;; esac
case "$REPLICAS" in ''|*[!0-9]*) echo "setup: --replicas must be a number, not '$REPLICAS'" >&2; exit 2 ;; esac

run() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ $*"
  else
    "$@"
  fi
}

if [ "$DRY_RUN" = 0 ]; then
  for tool in minikube kubectl docker; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      case "$tool" in
        minikube) hint="https://minikube.sigs.k8s.io/docs/start/" ;;
        kubectl) hint="https://kubernetes.io/docs/tasks/tools/ (or: minikube kubectl --)" ;;
        docker) hint="https://docs.docker.com/engine/install/ (minikube's docker driver needs it)" ;;
      esac
      echo "setup: $tool not found: install it first: $hint" >&2
      exit 1
    fi
  done
fi

run minikube start
if [ "$DRY_RUN" = 1 ]; then
  echo "+ eval \$(minikube docker-env)"
else
  eval "$(minikube docker-env)"
fi
run docker build -t crown:local .
run kubectl apply -k "k8s/$BACKEND"
run kubectl -n crown scale deployment/crown --replicas="$REPLICAS"
if [ "$BACKEND" = etcd ]; then
  run kubectl -n crown rollout status statefulset/etcd --timeout=180s
fi
run kubectl -n crown rollout status deployment/crown --timeout=180s
if [ "$BACKEND" = kube ]; then
  run kubectl -n crown get lease crown -o wide
  cat <<NEXT

Next steps:
  kubectl -n crown get pods -L crown.io/leader -w                      # all Ready; the leader labelled
  kubectl -n crown get endpointslices -l kubernetes.io/service-name=crown-leader   # one: the leader
  kubectl -n crown get lease crown -o jsonpath='{.spec.holderIdentity}{"\n"}'
  crown tui --backend kube -n crown                                    # heartbeats and history
  kubectl -n crown delete pod -l crown.io/leader=true                  # a failover
  kubectl -n crown scale deployment/crown --replicas=5                 # and back to 3
  scripts/cleanup.sh                                                   # undo everything
NEXT
else
  cat <<NEXT

Next steps (the etcd variant has no Lease and no leader label; ask crown who leads):
  kubectl -n crown get pods -l app.kubernetes.io/name=crown -w         # all Ready
  kubectl -n crown port-forward svc/crown 8080:80 & curl -s localhost:8080/leader
  kubectl -n crown logs deploy/crown | grep -i leader
  kubectl -n crown scale deployment/crown --replicas=5                 # and back to 3
  scripts/cleanup.sh                                                   # undo everything
NEXT
fi
