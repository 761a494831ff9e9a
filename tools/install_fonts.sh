#!/usr/bin/env bash
# Installs the Debian font packages the built-in glyph dataset renders from.
# Usage: bash tools/install_fonts.sh [--minimal]
#   default    all ~30 CJK font packages of DESIGN.md section 5 (~330 MB download)
#   --minimal  two small packages (~3.3 MB), enough for the test suite
# Idempotent: does nothing when every package is already installed (checked with
# dpkg -s). Needs root (or sudo) and apt-get; run on Debian 12 (bookworm).
# All 31 packages of the design list exist in bookworm (checked with apt-cache
# policy), so none is dropped.
set -euo pipefail

FULL_PACKAGES=(
  fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-arphic-bkai00mp
  fonts-arphic-bsmi00lp fonts-arphic-gbsn00lp fonts-arphic-gkai00mp fonts-wqy-zenhei
  fonts-wqy-microhei fonts-hanazono fonts-ipafont-gothic fonts-ipafont-mincho
  fonts-vlgothic fonts-seto fonts-klee fonts-mplus fonts-morisawa-bizud-gothic
  fonts-morisawa-bizud-mincho fonts-sawarabi-gothic fonts-sawarabi-mincho
  fonts-umeplus fonts-cwtex-kai fonts-cwtex-ming fonts-cwtex-heib fonts-lxgw-wenkai
  fonts-kanjistrokeorders fonts-kiloji fonts-aoyagi-kouzan-t fonts-aoyagi-soseki
  fonts-dejima-mincho fonts-droid-fallback
)
# Smallest packages that cover all of GB2312: a Hei (2 faces in one .ttc) and a Song.
MINIMAL_PACKAGES=(fonts-wqy-microhei fonts-arphic-gbsn00lp)

case "${1:-}" in
  "") packages=("${FULL_PACKAGES[@]}") ;;
  --minimal) packages=("${MINIMAL_PACKAGES[@]}") ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "[fonts] unknown argument '$1' (use --minimal or nothing)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  # Status, not just presence: a removed package keeps a dpkg record.
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[fonts] all ${#packages[@]} font packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "[fonts] need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "[fonts] apt-get update"
$SUDO apt-get update -q
echo "[fonts] installing ${#missing[@]} package(s): ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "[fonts] done; font files under /usr/share/fonts:"
find /usr/share/fonts -type f \( -iname '*.ttf' -o -iname '*.otf' -o -iname '*.ttc' \) | wc -l
