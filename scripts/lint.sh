#!/usr/bin/env bash
# Static checks: ruff (lint + format check), mypy (strict for the pure modules), import-linter.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
run() {
  local name=$1; shift
  local t=$SECONDS
  printf '==> %s\n' "$name"
  if "$@"; then printf '    ok (%ss)\n' "$((SECONDS - t))"; else status=1; printf '    FAILED (%ss)\n' "$((SECONDS - t))"; fi
}
run "ruff check" .venv/bin/ruff check .
run "ruff format --check" .venv/bin/ruff format --check .
run "mypy" .venv/bin/mypy -p scaleserve
run "import-linter" .venv/bin/lint-imports
exit $status
