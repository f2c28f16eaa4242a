#!/usr/bin/env bash
# Runs the test layers in order, fastest first, and prints each layer's duration.
# Usage: scripts/test.sh [all|unit|engine|gateway|control_plane|e2e]...
set -uo pipefail
cd "$(dirname "$0")/.."
layers=("$@")
if [ ${#layers[@]} -eq 0 ] || [ "${layers[0]}" = all ]; then
  layers=(unit engine gateway control_plane e2e)
fi
status=0
# The control-plane binaries (and helm, which the chart's unit tests render with) first.
t=$SECONDS
printf '==> control-plane binaries\n'
bash e2e/cluster/build.sh || exit 1
printf '==> control-plane binaries: ready (%ss)\n' "$((SECONDS - t))"
for layer in "${layers[@]}"; do
  case $layer in
    unit) paths=(tests/unit) ;;
    engine) paths=(tests/engine) ;;
    gateway) paths=(tests/gateway) ;;
    control_plane) paths=(tests/control_plane) ;;
    e2e) paths=(e2e) ;;
    *) echo "unknown layer: $layer" >&2; exit 2 ;;
  esac
  t=$SECONDS
  printf '\n==> tests: %s\n' "$layer"
  # `long` scenarios run with `make test-e2e` only (see the marker's description in pyproject).
  .venv/bin/python -m pytest --tb=short -rfE -m "$layer and not long" "${paths[@]}"
  rc=$?
  # 5: no tests collected in this layer yet; that is not a failure of the others.
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
  printf '==> tests: %s: exit %s (%ss)\n' "$layer" "$rc" "$((SECONDS - t))"
done
exit $status
