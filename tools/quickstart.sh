#!/usr/bin/env bash
# The main job on a fresh Debian machine: fonts, venv, then the whole pipeline on the
# built-in glyph dataset (render glyphs -> pre-train a WRN -> extract embeddings ->
# meta-train LEO -> evaluate), 5-way 1-shot then 5-way 5-shot. Stages already done are
# reused on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_fonts.sh
bash tools/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
start=$(date +%s)
for shots in 1 5; do
  echo "=== LEO 5-way ${shots}-shot on the built-in glyphs"
  .venv/bin/leo-train --gin_file=experiments/glyphs_5way${shots}shot.gin "$@"
done
echo "=== main job done in $(( $(date +%s) - start )) s"
