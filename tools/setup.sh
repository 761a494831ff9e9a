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
venv_pip() {
  .venv/bin/python -m pip --disable-pip-version-check "$@" >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; echo "[setup] pip $* failed (full log: $log)" >&2; exit 1; }
}
venv_pip install --upgrade pip
venv_pip install -e ".$extra"
# A venv made while leo_tf pinned tensorflow-cpu also holds that distribution, a second
# copy of the `tensorflow` module: remove it, then rewrite the module from `tensorflow`.
tf_cpu=$(.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null | awk '$1 == "tensorflow_cpu" || $1 == "tensorflow-cpu"')
if [ -n "$tf_cpu" ]; then
  echo "[setup] removing tensorflow-cpu (leo_tf depends on tensorflow alone)"
  tf_version=$(.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null | awk '$1 == "tensorflow" {print $2}')
  venv_pip uninstall -y tensorflow-cpu
  venv_pip install --force-reinstall --no-deps "tensorflow==$tf_version"
fi
.venv/bin/python -c "from leo_tf.runtime.quiet_start import start_tensorflow as s; s(); import tensorflow_probability, keras" \
  || { echo "[setup] installation failed" >&2; exit 1; }
echo "[setup] ok: activate with 'source .venv/bin/activate'"
