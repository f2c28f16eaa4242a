#!/usr/bin/env bash
# Builds the images from images/*.Dockerfile without a Docker engine, and unpacks each into an
# OCI bundle that `runc run` starts (scaleserve/dev/containers.py).
#
#   images/build.sh [--no-bundle] [operator|gateway|engine-cpu|pause]...  (default: operator gateway)
#
# --no-bundle: the images only, no OCI bundles (the local kubelet node imports images from
# podman's storage; only runc runs need bundles, and the CPU engine's takes minutes to unpack).
# pause is the local node's pod sandbox image (images/pause/): a static binary, no bundle.
# The Dockerfiles' base (PYTHON_IMAGE, python:3.11-slim-bookworm) cannot be pulled here: a
# minimal Debian bookworm with Python 3.11 is made with mmdebstrap from the machine's Debian
# mirror instead and passed as that build argument. podman builds with --isolation=chroot
# (no OCI runtime: crun refuses hybrid cgroups) and --pull=never. Everything lives under the
# cache directory, keyed by a hash of the inputs: an image whose inputs did not change is
# not rebuilt. Run as root; missing tools are installed from Debian's packages.
#
# SCALESERVE_TORCH_INDEX_URL / SCALESERVE_TORCH_VERSION: where the CPU engine image takes
# torch from. The defaults follow scripts/setup.sh (PyPI's torch==<lock>, which runs on the
# CPU) because PyTorch's own index is unreachable here; pass the Dockerfile's defaults
# (https://download.pytorch.org/whl/cpu, <lock>+cpu) where it is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SCALESERVE_CACHE:-$HOME/.cache/scaleserve}/images
MIRROR=${SCALESERVE_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION_LOCK=$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' requirements/lock.txt)
TORCH_INDEX_URL=${SCALESERVE_TORCH_INDEX_URL:-https://pypi.org/simple}
TORCH_VERSION=${SCALESERVE_TORCH_VERSION:-$TORCH_VERSION_LOCK}
# the base: what python:3.11-slim-bookworm offers the Dockerfiles (python, pip, venv, useradd,
# and the headers torch.compile's generated C++ includes: Python.h)
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,libpython3.11-dev,ca-certificates,passwd
BUNDLE=true
if [ "${1:-}" = --no-bundle ]; then BUNDLE=false; shift; fi
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(operator gateway)

step() { printf '==> images: %s\n' "$*"; }
took() { printf '==> images: %s (%ss)\n' "$1" "$((SECONDS - $2))"; }
pod() { podman --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver overlay "$@"; }
hash_of() { sha256sum | cut -c1-16; }

install_tools() {
  local missing=()
  for tool in podman mmdebstrap runc umoci skopeo gcc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] \
    || missing+=(libc6-dev)
  [ ${#missing[@]} -eq 0 ] && return
  step "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends podman mmdebstrap runc umoci skopeo \
    uidmap ca-certificates gcc libc6-dev </dev/null >/dev/null
}

# The build context's files the Dockerfiles COPY (the .dockerignore'd caches left out).
context_hash() {
  find pyproject.toml README.md scaleserve operator gateway engine requirements images \
    -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | hash_of
}

# The machine's own certificate authorities (e.g. of a TLS-inspecting proxy on the way to
# PyPI) go into the base, as the machine trusts them: pip inside the build needs them.
EXTRA_CAS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${EXTRA_CAS[0]}" ] || EXTRA_CAS=()

build_base() {
  local key t
  key=$( (printf '%s\n' "$BASE_PACKAGES" "$MIRROR" bookworm; cat "${EXTRA_CAS[@]}" /dev/null) | hash_of)
  BASE=localhost/scaleserve-python:3.11-bookworm-$key
  if pod image exists "$BASE"; then step "base $BASE: cached"; return; fi
  t=$SECONDS
  step "base $BASE: mmdebstrap bookworm from $MIRROR"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    bookworm "$CACHE/base.tar" "$MIRROR" </dev/null
  pod import --quiet --change 'CMD ["python3"]' "$CACHE/base.tar" "$BASE" >/dev/null
  rm -f "$CACHE/base.tar"
  took "base $BASE: built" "$t"
}

# build_image NAME: localhost/scaleserve-NAME:<key>, then its OCI bundle $CACHE/bundles/NAME-<key>
build_image() {
  local name=$1 key tag bundle t args=()
  args=(--build-arg "PYTHON_IMAGE=$BASE")
  if [ "$name" = engine-cpu ]; then
    args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" --build-arg "TORCH_VERSION=$TORCH_VERSION")
  fi
  key=$(printf '%s\n' "$BASE" "${args[@]}" "$(context_hash)" | hash_of)
  tag=localhost/scaleserve-$name:$key
  bundle=$CACHE/bundles/$name-$key
  printf '%s\n' "$tag" >"$CACHE/$name.image"
  if [ -f "$bundle/.complete" ]; then
    step "$name $tag: cached"
    printf '%s\n' "$bundle" >"$CACHE/$name.bundle"
    return
  fi
  if ! pod image exists "$tag"; then
    t=$SECONDS
    step "$name $tag: podman build (images/$name.Dockerfile)"
    # --layers: podman's layer cache keeps the dependency layers across builds, so a change to
    # the package rebuilds the Dockerfiles' last steps only (the wheel and its install)
    pod build --quiet --format docker --isolation=chroot --pull=never --layers "${args[@]}" \
      -f "images/$name.Dockerfile" -t "$tag" . >/dev/null
    took "$name: built" "$t"
  elif ! $BUNDLE; then
    step "$name $tag: cached"
  fi
  if ! $BUNDLE; then prune "$name" "$key"; return; fi
  t=$SECONDS
  step "$name: unpacking into the OCI bundle $bundle"
  rm -rf "$bundle" "$CACHE/oci"
  skopeo copy --quiet "containers-storage:[overlay@$CACHE/storage+$CACHE/run]$tag" \
    "oci:$CACHE/oci:$name"
  mkdir -p "$CACHE/bundles"
  umoci unpack --image "$CACHE/oci:$name" "$bundle" >/dev/null
  rm -rf "$CACHE/oci"
  touch "$bundle/.complete"
  printf '%s\n' "$bundle" >"$CACHE/$name.bundle"
  took "$name: unpacked" "$t"
  prune "$name" "$key"
}

# Earlier versions of an image and its bundle (hundreds of MB each, GB for the CPU engine).
prune() {
  local name=$1 key=$2 old
  for old in "$CACHE/bundles/$name-"*; do
    [ "$old" = "$CACHE/bundles/$name-$key" ] || rm -rf "$old"
  done
  pod images --filter "reference=localhost/scaleserve-$name" --format '{{.Repository}}:{{.Tag}}' \
    | grep -v ":$key\$" | xargs -r podman --root "$CACHE/storage" --runroot "$CACHE/run" \
      --storage-driver overlay rmi --force >/dev/null || true
}

# The sandbox image: images/pause/pause.c compiled statically, alone in its build context.
build_pause() {
  local key tag t context=$CACHE/pause-context
  key=$(cat images/pause/Dockerfile images/pause/pause.c | hash_of)
  tag=localhost/scaleserve-pause:$key
  printf '%s\n' "$tag" >"$CACHE/pause.image"
  if pod image exists "$tag"; then step "pause $tag: cached"; return; fi
  t=$SECONDS
  step "pause $tag: gcc -static images/pause/pause.c, podman build (images/pause/Dockerfile)"
  rm -rf "$context" && mkdir -p "$context"
  gcc -static -Os -s -o "$context/pause" images/pause/pause.c
  pod build --quiet --format docker --isolation=chroot --pull=never -f images/pause/Dockerfile \
    -t "$tag" "$context" >/dev/null
  rm -rf "$context"
  took "pause: built" "$t"
}

[ "$(id -u)" = 0 ] || { echo "images/build.sh: run as root (mmdebstrap, podman, runc)" >&2; exit 1; }
mkdir -p "$CACHE"
install_tools
build_base
for name in "${images[@]}"; do
  if [ "$name" = pause ]; then build_pause; continue; fi
  [ -f "images/$name.Dockerfile" ] || { echo "no images/$name.Dockerfile" >&2; exit 2; }
  build_image "$name"
done
