#!/usr/bin/env bash
# Build (or find in the cache) the local control plane's binaries from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kwokctl and helm.
#
#   e2e/cluster/build.sh              build what is missing, print the binaries' folder last
#   e2e/cluster/build.sh kubelet      the same, and the local node's kubelet and kube-proxy (e2e/node/)
#   e2e/cluster/build.sh --print-dir  print the folder only (builds nothing)
#
# Binaries go to ${SCALESERVE_CACHE:-$HOME/.cache/scaleserve}/cluster-bin/<key>/, where <key>
# hashes versions.env and the tool modules' go.mod/go.sum (scaleserve/dev/cluster.py computes
# the same key). Go's module and build caches stay at their defaults, outside the checkout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"

export GOTOOLCHAIN=local
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

key_files=(
    versions.env
    tools/helm/go.mod tools/helm/go.sum
    tools/kubernetes/go.mod tools/kubernetes/go.sum
    tools/kwok/go.mod tools/kwok/go.sum
)
key="$(cd "$here" && cat "${key_files[@]}" | sha256sum | cut -c1-16)"
cache="${SCALESERVE_CACHE:-$HOME/.cache/scaleserve}"
out="${SCALESERVE_CLUSTER_BIN:-$cache/cluster-bin/$key}"

if [[ "${1:-}" == "--print-dir" ]]; then
    echo "$out"
    exit 0
fi
with_kubelet=false
[[ "${1:-}" == "kubelet" ]] && with_kubelet=true

log() { printf '[cluster-binaries] %s\n' "$*" >&2; }

if [[ -f "$out/.complete" ]] && { ! $with_kubelet || [[ -x "$out/kubelet" && -x "$out/kube-proxy" ]]; }; then
    log "cached: $out"
    echo "$out"
    exit 0
fi

check_pin() {  # check_pin <module dir> <module path> <version>: go.mod agrees with versions.env
    if ! grep -Eq "^\s*(require )?$2 $3( |$)" "$here/tools/$1/go.mod"; then
        log "tools/$1/go.mod does not pin $2 $3 (versions.env): update one or the other"
        exit 1
    fi
}
check_pin kubernetes k8s.io/kubernetes "$K8S_VERSION"
check_pin kubernetes go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"

if ! command -v go >/dev/null 2>&1; then
    log "Go is required (1.24 or newer) to build the control plane; install it and retry"
    exit 1
fi
if ! command -v openssl >/dev/null 2>&1; then
    # the cluster's certificates are made with openssl
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing openssl (apt)"
        apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    else
        log "warning: openssl not found; 'scaleserve dev cluster up' needs it"
    fi
fi

mkdir -p "$out"
log "building into $out ($(go version | cut -d' ' -f3), $(nproc) cores)"

k8s_pkg_version() {
    # the -X flags Kubernetes' own build sets, so --version and /version report the pin
    local v="${K8S_VERSION#v}" flags="" pkg
    local major="${v%%.*}" rest="${v#*.}"
    local minor="${rest%%.*}"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major"
        flags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
        flags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$flags"
}

build() {  # build <module dir> <binary name> <package> [extra ldflags]
    local dir="$1" name="$2" pkg="$3" extra="${4:-}"
    if [[ -x "$out/$name" ]]; then
        log "$name: cached"
        return
    fi
    local start=$SECONDS
    log "$name: building $pkg"
    (cd "$here/tools/$dir" && go build -ldflags "-s -w $extra" -o "$out/.$name.tmp" "$pkg")
    mv "$out/.$name.tmp" "$out/$name"
    log "$name: done in $((SECONDS - start))s ($(du -h "$out/$name" | cut -f1))"
}

total=$SECONDS
k8s_flags="$(k8s_pkg_version)"
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_flags"
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_flags"
build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_flags"
build kubernetes etcd go.etcd.io/etcd/server/v3
kwok_flags="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
kwok_flags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "$kwok_flags"
build kwok kwokctl sigs.k8s.io/kwok/cmd/kwokctl "$kwok_flags"
build helm helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
if $with_kubelet; then
    build kubernetes kubelet k8s.io/kubernetes/cmd/kubelet "$k8s_flags"
    build kubernetes kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$k8s_flags"
fi

printf '%s\n' "K8S_VERSION=$K8S_VERSION" "ETCD_VERSION=$ETCD_VERSION" \
    "KWOK_VERSION=$KWOK_VERSION" "HELM_VERSION=$HELM_VERSION" > "$out/.complete"
log "all binaries ready in $((SECONDS - total))s"
echo "$out"
