#!/usr/bin/env bash
# Sets up the environment (venv, test fonts) and runs the test suite.
# Usage: bash tools/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_fonts.sh --minimal
bash tools/setup.sh --test
# Tests run the console scripts (leo-train, saved_model_cli) as a user would.
export PATH="$PWD/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/python -m pytest -q "$@"
