#!/usr/bin/env bash
# Builds a real few-shot image folder from Debian packages (no fonts): Battle for
# Wesnoth's unit sprites, a class per unit type, its examples the distinct frames of its
# animations (tools/debian_images.py says how; docs/data.md has the counts).
# Usage: bash tools/build_debian_images.sh [OUT_DIR] [extra arguments of debian_images.py]
#   OUT_DIR  default $LEO_TF_DATA/images/wesnoth_units (LEO_TF_DATA: ~/.cache/leo_tf)
# Installs wesnoth-1.16-data and the 16 campaign packages (~280 MB download, ~400 MB on
# disk) when missing; needs root (or sudo) and apt-get on Debian 12 (bookworm). Writes
# OUT_DIR/{train,val,test}/<class>/*.png, the layout IMAGES_ROOT takes. A built folder
# (one with metadata.json) is kept; delete it to rebuild. Python: $PYTHON, else the
# clone's .venv (bash tools/setup.sh), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${LEO_TF_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/leo_tf}
out=${1:-$data/images/wesnoth_units}
shift || true

PACKAGES=(wesnoth-1.16-data)
for campaign in did dm dw ei httt l low nr sof sota sotbe thot trow tsg ttb utbs; do
  PACKAGES+=("wesnoth-1.16-$campaign")
done

if [ -f "$out/metadata.json" ]; then
  echo "[images] $out is built (metadata.json); delete it to rebuild"
  exit 0
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "[images] installing ${#missing[@]} package(s): ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
python=${PYTHON:-python3}  # needs numpy and Pillow: the project's venv has both
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
start=$SECONDS
"$python" tools/debian_images.py --wesnoth /usr/share/games/wesnoth/1.16/data --out "$out" "$@"
echo "[images] built $out in $((SECONDS - start)) s"
