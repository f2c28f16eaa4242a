#!/usr/bin/env bash
# Prometheus and promtool for the local stack's Prometheus and the observability tests
# (docs/observability.md): Debian's `prometheus` package, unpacked into the cache once rather
# than installed, so that no system service is started. Idempotent; prints the folder that holds
# `prometheus` and `promtool`. Both already on PATH (e.g. `apt-get install prometheus`) win.
set -euo pipefail

CACHE=${SCALESERVE_CACHE:-$HOME/.cache/scaleserve}
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  dirname "$(command -v prometheus)"
  exit 0
fi
dest="$CACHE/prometheus"
if [ ! -f "$dest/.complete" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # stale package lists (a fresh CI machine) are refreshed once, when allowed to
  if ! (cd "$work" && apt-get download prometheus >&2); then
    [ "$(id -u)" = 0 ] || { echo "apt-get download prometheus failed (run as root to refresh the package lists)" >&2; exit 1; }
    apt-get update -qq >&2
    (cd "$work" && apt-get download prometheus >&2)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$dest/"
  touch "$dest/.complete"
fi
echo "$dest"
