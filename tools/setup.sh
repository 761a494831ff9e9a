#!/usr/bin/env bash
# Creates .venv beside the repo and installs leo_tf with its pinned dependencies.
# Usage: bash tools/setup.sh [--test]     (--test adds pytest and hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
  # A bare Debian has python3 without venv/ensurepip.
  echo "[setup] installing python3 and python3-venv with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$PYTHON" -c "import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 13)))"; then
  echo "[setup] leo_tf needs Python 3.10-3.12 (TensorFlow 2.21); found $("$PYTHON" --version)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
echo "[setup] installing leo_tf$extra and its pinned dependencies into .venv"
# pip's own chatter goes to a log; it is shown only when an install fails.
log=.venv/pip-install.log
pip_install() {
  .venv/bin/python -m pip install --disable-pip-version-check "$@" >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; echo "[setup] pip install $* failed (full log: $log)" >&2; exit 1; }
}
pip_install --upgrade pip
pip_install -e ".$extra"
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c "import leo_tf, tensorflow, tensorflow_probability, keras" \
  || { echo "[setup] installation failed" >&2; exit 1; }
echo "[setup] ok: activate with 'source .venv/bin/activate'"
