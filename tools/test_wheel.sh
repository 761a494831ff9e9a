#!/usr/bin/env bash
# leo_tf as a new user gets it: builds the wheel, installs it into a clean virtual
# environment outside the checkout, and from an empty temporary directory meta-trains
# on a tiny embeddings tree with a shipped experiment file, then evaluates and exports
# the run from another directory. pip's cache is reused, so it takes a few minutes.
# Usage: bash tools/test_wheel.sh            (CI runs it after tools/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/leo_tf_wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/pip.log"
start=$SECONDS
say() { echo "[wheel] $* ($(( SECONDS - start )) s)"; }
quiet() { "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "[wheel] failed: $*" >&2; exit 1; }; }

say "a clean venv in $work/venv, building the wheel with its pip"
quiet "$PYTHON" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check)
# From a copy of the working tree: a stale build/ would put removed files in the wheel.
mkdir "$work/src"
tar --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' -cf - . \
  | tar -C "$work/src" -xf -
quiet "${pip[@]}" wheel --no-deps -w "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/leo_tf-*.whl)
in_wheel=$("$work/venv/bin/python" -c "import sys, zipfile; print(' '.join(sorted(n[len('leo_tf/gin/'):] for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith('.gin'))))" "$wheel")
shipped=$(cd gin && find . -name '*.gin' | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
echo "[wheel] $(basename "$wheel"): $(wc -w <<<"$in_wheel") gin files (gin/ has $(wc -w <<<"$shipped"))"
[ "$in_wheel" = "$shipped" ] || { echo "[wheel] its gin files differ from gin/'s" >&2; exit 1; }

say "installing it into the venv"
# No byte-compiling of every installed module (TensorFlow has thousands): imports do it.
quiet "${pip[@]}" install --no-compile "$wheel"
tf_dists=$("${pip[@]}" list 2>/dev/null \
  | grep -ciE '^(tensorflow|tensorflow-cpu|tensorflow_cpu|tensorflow-intel) ')
[ "$tf_dists" = 1 ] || { echo "[wheel] $tf_dists TensorFlow distributions installed" >&2; exit 1; }
say "installed"
export PATH="$work/venv/bin:$PATH"
unset PYTHONPATH TF_CPP_MIN_LOG_LEVEL

# Data under LEO_TF_DATA, where the shipped data/*.gin files look; runs in a temp dir.
export LEO_TF_DATA="$work/data"
mkdir -p "$work/cwd" "$work/elsewhere"
cd "$work/cwd"
python - <<'EOF'
import os
import numpy as np
import leo_tf
rng = np.random.default_rng(0)
root = os.path.join(os.environ["LEO_TF_DATA"], "embeddings", "miniImageNet", "center")
for split, classes in (("train", range(0, 8)), ("val", range(8, 14)), ("test", range(14, 20))):
  labels = np.repeat([f"n{c:08d}" for c in classes], 20)
  keys = [f"{i}-{label}-{label}_{i}.JPEG" for i, label in enumerate(labels)]
  features = rng.normal(size=(labels.size, 640)).astype(np.float32)
  leo_tf.save_embeddings(os.path.join(root, f"{split}_embeddings.pkl"), features,
                         np.unique(labels, return_inverse=True)[1], keys)
EOF

# Each command's output is shown and kept, to check it carries no TF start-up lines.
run() { echo "\$ $*"; "$@" 2>&1 | tee -a "$work/output.log"; }
run leo-train --version
run leo-train --gin_file=experiments/mini_final_1shot.gin --output_dir=run \
  --gin_bindings=TrainConfig.num_steps=4 --gin_bindings=TrainConfig.validate_every=2 \
  --gin_bindings=TrainConfig.num_val_episodes=4 --gin_bindings=TrainConfig.meta_batch_size=2 \
  --gin_bindings=EvalConfig.num_episodes=4
grep -q "'$LEO_TF_DATA/embeddings'" run/config.gin \
  || { echo "[wheel] run/config.gin does not hold the absolute embeddings root" >&2; exit 1; }
cd "$work/elsewhere"
# The run remembers absolute paths: evaluating it needs neither its folder nor LEO_TF_DATA.
unset LEO_TF_DATA
run leo-eval --checkpoint_dir="$work/cwd/run" --gin_bindings=EvalConfig.num_episodes=4
run leo-export --checkpoint_dir="$work/cwd/run" --export_base=exported
[ -f exported/1/saved_model.pb ] || { echo "[wheel] no SavedModel written" >&2; exit 1; }
if grep -E "cudart_stub|cuInit|absl::InitializeLog|cpu_feature_guard|oneDNN" "$work/output.log"; then
  echo "[wheel] TensorFlow's start-up lines were printed" >&2; exit 1
fi
say "ok: installed from the wheel, trained, evaluated and exported outside the checkout"
