#!/usr/bin/env bash
# The main job on a fresh Debian machine: fonts, venv, then the whole pipeline on the
# built-in typeface benchmark (render faces -> pre-train a WRN -> extract embeddings ->
# meta-train LEO -> evaluate), 5-way 1-shot then 5-way 5-shot, each ending with LEO
# beside nearest class mean and logistic regression on the same 10,000 test episodes.
# Stages already done are reused on a second run. Extra arguments go to leo-train.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_fonts.sh
bash tools/setup.sh
# The main job keeps its data (rendered images, backbone, embeddings) in the clone's data/.
export LEO_TF_DATA=${LEO_TF_DATA:-$PWD/data}
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p runs
log=runs/main_job.log
: >"$log"
times=()
timed() {  # timed LABEL COMMAND...: runs it, output to the console and the log
  local label=$1 start=$SECONDS
  shift
  "$@" 2>&1 | tee -a "$log"
  times+=("$(printf '%-52s %5d s' "$label" $((SECONDS - start)))")
}
start=$SECONDS
for shots in 1 5; do
  run=runs/typefaces_5way${shots}shot
  echo "=== LEO 5-way ${shots}-shot on the built-in typefaces" | tee -a "$log"
  label="leo-train ${shots}-shot"
  [ "$shots" = 1 ] && label+=" (builds the embeddings if missing)"
  timed "$label" \
    leo-train --gin_file=experiments/typefaces_5way${shots}shot.gin "$@"
  timed "LEO vs baselines ${shots}-shot (10,000 test episodes)" \
    leo-eval --checkpoint_dir="$run" --compare --gin_bindings="CompareConfig.ablations = []"
done
echo
echo "=== results (also in runs/typefaces_5way{1,5}shot/compare/compare.md)"
for shots in 1 5; do
  cat runs/typefaces_5way${shots}shot/compare/compare.md
  echo
done
echo "=== stage times"
grep -E '^\[stage\] .* done in' "$log" | sed 's/^\[stage\] /  /' || true
printf '  %s\n' "${times[@]}"
echo "=== main job done in $((SECONDS - start)) s (log: $log)"
