#!/usr/bin/env bash
# Installs the Debian font packages the built-in datasets render from.
# Usage: bash tools/install_fonts.sh [--minimal]
#   default    ~30 CJK packages (glyph set, ~330 MB) and ~100 Latin packages
#              (typeface benchmark, ~84 MB)
#   --minimal  four small packages (~5 MB), enough for the test suite
# Idempotent: does nothing when every package is already installed (checked with
# dpkg -s). Needs root (or sudo) and apt-get; run on Debian 12 (bookworm).
# Every package listed exists in bookworm (checked with apt-cache policy).
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
# Latin faces of the typeface benchmark (leo_tf/data/typefaces.py): text, display,
# monospace and script designs from ~100 packages (~84 MB download).
LATIN_PACKAGES=(
  fonts-urw-base35 fonts-texgyre fonts-lmodern fonts-dejavu-core fonts-dejavu-extra
  fonts-liberation fonts-liberation2 fonts-freefont-ttf fonts-crosextra-caladea
  fonts-crosextra-carlito fonts-croscore fonts-adf-accanthis fonts-adf-baskervald
  fonts-adf-berenis fonts-adf-gillius fonts-adf-ikarius fonts-adf-irianis fonts-adf-libris
  fonts-adf-mekanus fonts-adf-oldania fonts-adf-romande fonts-adf-solothurn
  fonts-adf-switzera fonts-adf-tribun fonts-adf-universalis fonts-adf-verana
  fonts-sil-andika fonts-sil-charis fonts-sil-doulos fonts-sil-gentiumplus
  fonts-sil-gentium-basic fonts-dustin fonts-cantarell fonts-cabin fonts-comfortaa
  fonts-comic-neue fonts-courier-prime fonts-dosis fonts-ebgaramond fonts-fanwood
  fonts-goudybookletter fonts-inconsolata fonts-junicode fonts-karla fonts-lato
  fonts-linuxlibertine fonts-lobster fonts-lobstertwo fonts-oldstandard fonts-open-sans
  fonts-quattrocento fonts-quicksand fonts-roboto-unhinted fonts-roboto-slab fonts-vollkorn
  fonts-yanone-kaffeesatz fonts-yrsa-rasa fonts-averia-gwf fonts-averia-sans-gwf
  fonts-averia-serif-gwf fonts-b612 fonts-bebas-neue fonts-cardo fonts-go fonts-hack-ttf
  fonts-inter fonts-jura fonts-league-spartan fonts-manrope fonts-mononoki
  fonts-oflb-euterpe fonts-prociono fonts-tuffy fonts-stix fonts-paratype fonts-humor-sans
  fonts-kristi fonts-dancingscript fonts-kaushanscript fonts-leckerli-one fonts-isabella
  fonts-junction fonts-karmilla fonts-lindenhill fonts-firacode fonts-jetbrains-mono
  fonts-sora fonts-play fonts-allerta fonts-arapey fonts-century-catalogue fonts-clear-sans
  fonts-f500 fonts-femkeklaver fonts-gamaliel fonts-blankenburg fonts-cmu fonts-noto-mono
  fonts-ocr-a fonts-ocr-b fonts-opendin fonts-elstob fonts-gotico-antiqua fonts-linex
  fonts-levien-museum fonts-levien-typoscript fonts-national-park
)
# Smallest packages that cover all of GB2312: a Hei (2 faces in one .ttc) and a Song.
# plus two small Latin families (the typeface builder's tests).
MINIMAL_PACKAGES=(fonts-wqy-microhei fonts-arphic-gbsn00lp fonts-dejavu-core fonts-liberation)

case "${1:-}" in
  "") packages=("${FULL_PACKAGES[@]}" "${LATIN_PACKAGES[@]}") ;;
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
