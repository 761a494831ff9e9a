"""Installed fonts and fast rendering of characters (Han, Latin) into small images.

Pure Pillow + numpy (no TensorFlow), so worker processes start in a fraction of a
second. The tfds builders in ``glyphs.py`` and ``typefaces.py`` use this module.

Rendering: the glyph is drawn at ``SUPERSAMPLE`` times the output size, cropped to
its ink, scaled (aspect kept) so that its longer side fills the image minus a margin,
box-filtered down and centred. White ink (255) on black (0): background is zero, like
the zero padding of the convolutions that read it. Pillow's own FreeType does the
rasterising, so renders are only reproducible with the pinned Pillow.

A face "has" a character when the rendering has ink and differs from the face's
.notdef glyph (what FreeType draws for a code point the face lacks).
"""

import collections
import dataclasses
import itertools
import os
import pickle
import re
import subprocess
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The Debian font packages of the glyph dataset (docs/data.md); all exist in Debian 12
# (bookworm). Keep in sync with tools/install_fonts.sh.
FONT_PACKAGES = (
    "fonts-noto-cjk", "fonts-arphic-ukai", "fonts-arphic-uming", "fonts-arphic-bkai00mp",
    "fonts-arphic-bsmi00lp", "fonts-arphic-gbsn00lp", "fonts-arphic-gkai00mp",
    "fonts-wqy-zenhei", "fonts-wqy-microhei", "fonts-hanazono", "fonts-ipafont-gothic",
    "fonts-ipafont-mincho", "fonts-vlgothic", "fonts-seto", "fonts-klee", "fonts-mplus",
    "fonts-morisawa-bizud-gothic", "fonts-morisawa-bizud-mincho", "fonts-sawarabi-gothic",
    "fonts-sawarabi-mincho", "fonts-umeplus", "fonts-cwtex-kai", "fonts-cwtex-ming",
    "fonts-cwtex-heib", "fonts-lxgw-wenkai", "fonts-kanjistrokeorders", "fonts-kiloji",
    "fonts-aoyagi-kouzan-t", "fonts-aoyagi-soseki", "fonts-dejima-mincho",
    "fonts-droid-fallback")
DEFAULT_FONT_DIRS = ("/usr/share/fonts",)
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")

SUPERSAMPLE = 2
MARGIN_FRACTION = 1 / 16
# A face must draw most of these very common characters to count as a Han face.
_PROBE = "的一是不了人我在有他"
_PROBE_MIN = 5
# Code points no font maps: they draw the face's .notdef glyph.
_UNMAPPED = (chr(0x10FFFD), chr(0xFFFF))


class MissingFontsError(RuntimeError):
  """Too few fonts are installed to build a rendered dataset (glyphs or typefaces)."""


def missing_fonts_message(problem: str) -> str:
  return (f"{problem}\nInstall the CJK font packages with `bash tools/install_fonts.sh` "
          "(as root; `--minimal` for the 2 test packages), or by hand: apt-get install "
          + " ".join(FONT_PACKAGES))


@dataclasses.dataclass(frozen=True)
class FontFace:
  """One face of a font file (.ttc collections hold several)."""
  path: str
  index: int
  name: str
  key: str  # unique among the faces in use; no '-' or '/'


def sanitize(text: str) -> str:
  """Letters, digits and '_' only: safe inside class names and example keys."""
  return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_") or "x"


def unique_name(name: str, used: set) -> str:
  """``name``, else the first of ``name_2``, ``name_3``, ... not in ``used``; added to it."""
  candidate, n = name, 1
  while candidate in used:
    n += 1
    candidate = f"{name}_{n}"
  used.add(candidate)
  return candidate


def find_font_files(font_dirs: Sequence[str] = DEFAULT_FONT_DIRS) -> List[str]:
  """Font files under the directories, symlinks resolved, deduplicated, sorted."""
  found = set()
  for font_dir in font_dirs:
    for parent, _, names in os.walk(font_dir, followlinks=True):
      for name in names:
        if name.lower().endswith(FONT_EXTENSIONS):
          found.add(os.path.realpath(os.path.join(parent, name)))
  return sorted(found)


def _load(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
  # BASIC layout: one code point -> one glyph, independent of libraqm being present.
  return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.BASIC)


def list_faces(font_files: Sequence[str]) -> List[FontFace]:
  """Every face of every file, with keys made unique in a deterministic order."""
  faces, used = [], set()
  for path in sorted(font_files):
    stem = sanitize(os.path.splitext(os.path.basename(path))[0])
    for index in itertools.count():
      try:
        font = _load(path, index, 16)
      except OSError:  # past the last face of a collection, or not a font
        break
      key = unique_name(f"{stem}_{index}", used)
      faces.append(FontFace(path, index, " ".join(font.getname()), key))
  return faces


def gb2312_hanzi() -> List[str]:
  """The 6,763 Han characters of GB2312 (rows 16-87), in GB2312 order."""
  chars = []
  for high in range(0xB0, 0xF8):
    for low in range(0xA1, 0xFF):
      try:
        chars.append(bytes([high, low]).decode("gb2312"))
      except UnicodeDecodeError:  # the 5 unassigned cells at the end of row 55
        pass
  return chars


def class_name(char: str) -> str:
  """'u4e00' for U+4E00: ASCII, no '-' (a glyph class, a typeface example's key)."""
  return f"u{ord(char):04x}"


class FaceRenderer:
  """Renders characters from one face into uint8 [size, size] arrays."""

  def __init__(self, face: FontFace, image_size: int):
    self.image_size = image_size
    self._font = _load(face.path, face.index, image_size * SUPERSAMPLE)
    self._box = image_size - 2 * max(1, round(image_size * MARGIN_FRACTION))
    self._notdef = [self._draw(c) for c in _UNMAPPED]

  def _draw(self, char: str) -> Optional[np.ndarray]:
    left, top, right, bottom = self._font.getbbox(char)
    if right <= left or bottom <= top:
      return None
    canvas = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(canvas).text((-left, -top), char, font=self._font, fill=255)
    ink = canvas.getbbox()
    if ink is None:
      return None
    glyph = canvas.crop(ink)
    scale = self._box / max(glyph.size)
    w, h = (max(1, round(d * scale)) for d in glyph.size)
    glyph = glyph.resize((w, h), Image.Resampling.BOX)
    out = Image.new("L", (self.image_size, self.image_size))
    out.paste(glyph, ((self.image_size - w) // 2, (self.image_size - h) // 2))
    return np.asarray(out)

  def render(self, char: str) -> Optional[np.ndarray]:
    """The image, or None when the face lacks the character (blank or .notdef)."""
    image = self._draw(char)
    if image is None or any(n is not None and np.array_equal(image, n) for n in self._notdef):
      return None
    return image

  def is_han_face(self) -> bool:
    return sum(self.render(c) is not None for c in _PROBE) >= _PROBE_MIN


def distinct_renderings(images: Sequence[np.ndarray], threshold: float) -> List[int]:
  """Indices of the renderings kept after merging (near-)duplicates, first wins.

  A rendering is dropped when its mean absolute pixel difference (as a fraction of
  255) to an already kept one is <= threshold; exact duplicates always merge. Some
  packages borrow glyphs from others and some faces are weights of one design.
  """
  kept, stack = [], np.zeros((0,) + (images[0].shape if images else ()), np.int16)
  for i, image in enumerate(images):
    if len(kept):
      mad = np.abs(stack - image.astype(np.int16)).mean(axis=tuple(range(1, stack.ndim)))
      if mad.min() <= threshold * 255:
        continue
    kept.append(i)
    stack = np.concatenate([stack, image[None].astype(np.int16)])
  return kept


# ---------------------------------------------------------------------------------
# Rendering many characters, optionally in worker processes.
#
# Pillow holds the GIL while rendering, so threads do not help. Workers are fresh
# interpreters running this module (`python -m`), not multiprocessing children:
# spawn re-runs the caller's unguarded __main__ (scripts, notebooks) and fork would
# copy a process that usually has TensorFlow's threads running.

_worker_renderers: List[FaceRenderer] = []


def _init_worker(faces: Sequence[FontFace], image_size: int):
  global _worker_renderers
  _worker_renderers = [FaceRenderer(f, image_size) for f in faces]


def _render_chunk(chars: Sequence[str], threshold: float):
  """Per character: [(face position, image)] of its distinct renderings."""
  results = []
  for char in chars:
    found = [(i, r.render(char)) for i, r in enumerate(_worker_renderers)]
    found = [(i, im) for i, im in found if im is not None]
    keep = distinct_renderings([im for _, im in found], threshold)
    results.append([found[k] for k in keep])
  return results


def _worker_main():
  """Reads (faces, size, threshold), then chunks of chars; writes their renderings."""
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  faces, image_size, threshold = pickle.load(stdin)
  _init_worker(faces, image_size)
  while True:
    try:
      chars = pickle.load(stdin)
    except EOFError:
      return
    pickle.dump(_render_chunk(chars, threshold), stdout)
    stdout.flush()


def _start_worker(faces, image_size, threshold) -> subprocess.Popen:
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  proc = subprocess.Popen([sys.executable, "-m", "leo_tf.data.glyph_fonts"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
  pickle.dump((list(faces), image_size, threshold), proc.stdin)
  proc.stdin.flush()
  return proc


def _read_result(proc: subprocess.Popen):
  try:
    return pickle.load(proc.stdout)
  except EOFError:
    raise RuntimeError(f"glyph rendering worker died (exit code {proc.wait()}); "
                       "see its error output above") from None


def render_characters(chars: Sequence[str], faces: Sequence[FontFace], image_size: int,
                      threshold: float, num_workers: int = 1, chunk_size: int = 32
                      ) -> Iterator[Tuple[str, List[Tuple[int, np.ndarray]]]]:
  """Yields (char, distinct renderings) in the order of ``chars``, lazily.

  Lazy so that a caller can stop once it has enough classes; with workers, at most
  two chunks per worker run ahead of the consumer.
  """
  chunks = [chars[i:i + chunk_size] for i in range(0, len(chars), chunk_size)]
  if num_workers <= 1:
    _init_worker(faces, image_size)
    for chunk in chunks:
      yield from zip(chunk, _render_chunk(chunk, threshold))
    return
  workers = [_start_worker(faces, image_size, threshold) for _ in range(num_workers)]
  pending = collections.deque()
  try:
    for n, chunk in enumerate(chunks):
      proc = workers[n % num_workers]
      pickle.dump(chunk, proc.stdin)  # a few hundred bytes: never blocks
      proc.stdin.flush()
      pending.append((chunk, proc))
      if len(pending) >= 2 * num_workers:
        chunk, proc = pending.popleft()
        yield from zip(chunk, _read_result(proc))
    while pending:
      chunk, proc = pending.popleft()
      yield from zip(chunk, _read_result(proc))
  finally:
    for proc in workers:
      proc.stdin.close()
      if pending:  # stopped early: the rest of the work is not wanted
        proc.kill()
      proc.wait()
      proc.stdout.close()


def han_faces(font_dirs: Sequence[str] = DEFAULT_FONT_DIRS,
              font_files: Optional[Sequence[str]] = None,
              image_size: int = 32) -> List[FontFace]:
  """The installed faces that draw Han characters (Latin-only fonts are skipped)."""
  faces = list_faces(font_files or find_font_files(font_dirs))
  return [f for f in faces if FaceRenderer(f, image_size).is_han_face()]


if __name__ == "__main__":
  _worker_main()
