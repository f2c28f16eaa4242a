#!/usr/bin/env bash
# Idempotent: installs the benchmark-only peers (requirements/bench.txt: the vllm-router and
# sglang-router wheels, Rust binaries packaged for PyPI) into .venv, then checks that each
# router's entry point starts. A second run with everything in place takes a second or two.
#
#   bash scripts/bench_setup.sh          # after `make setup`
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "no .venv here: run 'make setup' first" >&2
  exit 1
fi

wanted=$(grep -vE '^\s*(#|$)' requirements/bench.txt)
missing=()
for spec in $wanted; do
  name=${spec%%==*}
  version=${spec##*==}
  have=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}' || true)
  if [ "$have" != "$version" ]; then
    missing+=("$spec")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (no deps: theirs are already in requirements/lock.txt)"
  "$PY" -m pip install --quiet --no-deps "${missing[@]}"
else
  echo "==> benchmark routers already installed"
fi

# Their runtime requirements must be present (they are in the lock file).
"$PY" - <<'PYEOF'
import importlib
for module in ("setproctitle", "aiohttp", "orjson", "uvicorn", "fastapi", "requests"):
    importlib.import_module(module)
PYEOF

# Each router must at least start its CLI here (the wheels are manylinux x86_64 binaries).
status=0
if .venv/bin/vllm-router --help >/dev/null 2>&1; then
  echo "    vllm-router: ok"
else
  echo "    vllm-router: does not start on this machine" >&2
  status=1
fi
if .venv/bin/python -m sglang_router.launch_router --help >/dev/null 2>&1; then
  echo "    sglang-router: ok"
else
  echo "    sglang-router: does not start on this machine" >&2
  status=1
fi
exit $status
