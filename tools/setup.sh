#!/usr/bin/env bash
# Creates .venv beside the repo and installs leo_tf with its pinned dependencies.
# Usage: bash tools/setup.sh [--test]     (--test adds pytest and hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
echo "[setup] installing leo_tf$extra and its pinned dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import leo_tf, tensorflow, tensorflow_probability, keras" \
  || { echo "[setup] installation failed" >&2; exit 1; }
echo "[setup] ok: activate with 'source .venv/bin/activate'"
