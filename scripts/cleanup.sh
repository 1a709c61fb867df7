#!/usr/bin/env bash
# Undoes scripts/setup.sh: deletes the crown namespace (and with it everything applied), the
# image in minikube's Docker, and stops minikube.
#   scripts/cleanup.sh [--keep-minikube] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
DRY_RUN=0
for a in "$@"; do
  case "$a" in
    --keep-minikube) KEEP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "cleanup: unknown argument: $a" >&2; exit 2 ;;
  esac
done
run() { if [ "$DRY_RUN" = 1 ]; then echo "+ $*"; else "$@"; fi; }
run kubectl delete -k k8s/kube --ignore-not-found
run kubectl delete -k k8s/etcd --ignore-not-found
if [ "$DRY_RUN" = 1 ]; then
  echo "+ eval \$(minikube docker-env)"
else
  eval "$(minikube docker-env)" || true
fi
run docker image rm -f crown:local
if [ "$KEEP" = 0 ]; then
  run minikube stop
fi
