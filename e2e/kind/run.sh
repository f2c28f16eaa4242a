#!/usr/bin/env bash
# The whole path on a kind cluster, for machines with Docker (not run in CI: CI has no Docker
# engine and uses the kwok control plane instead):
#
#   1. create a kind cluster            4. apply examples/cpu-tiny-model.yaml (vLLM on the CPU)
#   2. build and load the images        5. wait until the LLMEndpoint is Ready
#   3. helm install charts/scaleserve   6. stream one answer through the gateway with curl
#                                       7. tear everything down
#
#   e2e/kind/run.sh              run it all (about 10-20 minutes cold, mostly image builds)
#   KEEP_CLUSTER=1 e2e/kind/run.sh   leave the cluster up afterwards to look around
#
# Needs docker, kind, kubectl and helm on PATH. Settings (environment):
#   CLUSTER_NAME (scaleserve-e2e), NAMESPACE (default), RELEASE_NAMESPACE (scaleserve-system),
#   READY_TIMEOUT (15m), LOCAL_PORT (18000), SKIP_BUILD=1 (images already built and tagged).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

CLUSTER_NAME="${CLUSTER_NAME:-scaleserve-e2e}"
NAMESPACE="${NAMESPACE:-default}"
RELEASE_NAMESPACE="${RELEASE_NAMESPACE:-scaleserve-system}"
READY_TIMEOUT="${READY_TIMEOUT:-15m}"
LOCAL_PORT="${LOCAL_PORT:-18000}"
EXAMPLE="examples/cpu-tiny-model.yaml"
ENDPOINT="tiny"
MODEL="tiny-llama"

version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/scaleserve/Chart.yaml)"
registry="ghcr.io/scaleserve"
# image tag -> Dockerfile; the tags are the ones the chart and the CPU example name
images=(
  "$registry/scaleserve-operator:$version=images/operator.Dockerfile"
  "$registry/scaleserve-gateway:$version=images/gateway.Dockerfile"
  "$registry/scaleserve-cpu:$version=images/engine-cpu.Dockerfile"
)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (see e2e/kind/README.md)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"

pf_pid=""
cleanup() {
  local status=$?
  if [[ -n "$pf_pid" ]]; then
    kill "$pf_pid" 2>/dev/null || true
    wait "$pf_pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 ]]; then
    log "failed; state of the cluster"
    kubectl get llmep,pods,svc -A -o wide 2>/dev/null || true
    kubectl -n "$RELEASE_NAMESPACE" logs deployment/scaleserve-operator --tail=50 2>/dev/null || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "keeping kind cluster $CLUSTER_NAME (kind delete cluster --name $CLUSTER_NAME)"
  else
    log "deleting kind cluster $CLUSTER_NAME"
    kind delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

log "1/7 kind cluster $CLUSTER_NAME"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  echo "reusing the existing cluster"
else
  kind create cluster --name "$CLUSTER_NAME" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER_NAME" >/dev/null

log "2/7 images ($version)"
for entry in "${images[@]}"; do
  tag="${entry%%=*}"
  dockerfile="${entry#*=}"
  if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    docker build -f "$dockerfile" -t "$tag" .
  fi
  kind load docker-image "$tag" --name "$CLUSTER_NAME"
done

log "3/7 helm install"
helm upgrade --install scaleserve charts/scaleserve \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.pullPolicy=IfNotPresent \
  --wait --timeout 5m
kubectl wait --for=condition=Established --timeout=60s crd/llmendpoints.scaleserve.io

log "4/7 apply $EXAMPLE"
kubectl apply -n "$NAMESPACE" -f "$EXAMPLE"

log "5/7 waiting for LLMEndpoint $ENDPOINT to be Ready (up to $READY_TIMEOUT)"
kubectl wait -n "$NAMESPACE" "llmep/$ENDPOINT" --for=jsonpath='{.status.phase}'=Ready \
  --timeout="$READY_TIMEOUT"
kubectl get -n "$NAMESPACE" llmep "$ENDPOINT"

log "6/7 one streamed answer through the gateway"
kubectl port-forward -n "$NAMESPACE" "svc/$ENDPOINT-gateway" "$LOCAL_PORT:8000" >/dev/null 2>&1 &
pf_pid=$!
base="http://127.0.0.1:$LOCAL_PORT"
for _ in $(seq 1 60); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "$base/readyz" >/dev/null || die "the gateway did not become ready through $base"
answer="$(curl -fsS -N --max-time 120 "$base/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"stream\": true, \"max_tokens\": 16,
       \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}")"
printf '%s\n' "$answer"
grep -q '^data: {' <<<"$answer" || die "no streamed chunk in the answer"
grep -q '^data: \[DONE\]' <<<"$answer" || die "the stream did not end with [DONE]"

log "7/7 done: the answer streamed; tearing down"
kubectl delete -n "$NAMESPACE" -f "$EXAMPLE" --wait=true --timeout=2m || true
helm uninstall scaleserve --namespace "$RELEASE_NAMESPACE" --wait || true
