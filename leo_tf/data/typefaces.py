"""The built-in hard benchmark: which typeface is this? (a class is a font face).

A class is one Latin font face from the installed Debian font packages; its examples
are different characters (letters, digits, punctuation, accented letters) drawn in
that face. Style is the signal and the character is the nuisance, so one example says
little about its class: few-shot recognition here sits in the regime of miniImageNet
rather than of the character-recognition sets.

How it is built, all from the installed fonts (nothing is downloaded):

1. Every face of every font file is rendered (``glyph_fonts``) on ``LATIN_CHARS``;
   faces that draw all 62 ASCII letters and digits are the candidate classes.
2. Near-duplicate faces (mean absolute pixel difference of their 62 letter/digit
   renderings <= ``dedupe_threshold``) are merged, the first in file order kept:
   some packages repackage others' designs.
3. Faces are grouped into *designs*: same package folder and same first word of the
   family name (``Baskervald ADF Std`` and ``Baskervald ADF Std Heavy``), or renderings
   closer than ``2 * dedupe_threshold`` (a clone in another package). A design never
   straddles two splits, so no test class is a weight of a training class.
4. Designs are dealt to train/val/test in a seeded order to reach miniImageNet's
   64/16/20 class proportions.
5. Each face keeps up to ``examples_per_class`` of the characters it draws, in a seeded
   order, exact-duplicate renderings dropped; faces with fewer than ``min_examples``
   are left out.

Examples: ``image`` uint8 [S, S, 1] (white on black), ``label`` (class index within its
split, classes sorted by name), ``class_name`` (the face key), ``key``
``<face key>_u<code point>``. Like the glyph set, the result depends on the installed
fonts and on Pillow's FreeType; ``metadata.json`` records both.
"""

import dataclasses
import hashlib
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import gin
import numpy as np
from PIL import ImageFont

from leo_tf.data import glyph_fonts, rendered, splits
from leo_tf.data.splits import SPLITS

ALNUM = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# ASCII letters, digits and punctuation, then the Latin-1 letters.
LATIN_CHARS = ALNUM + tuple(c for c in map(chr, range(0x21, 0x7F)) if c not in ALNUM) + \
    tuple(c for c in map(chr, range(0xC0, 0x100)) if c not in "\u00d7\u00f7")


@dataclasses.dataclass(eq=False)
class TypefaceConfig(rendered.RenderedConfig):
  examples_per_class: int = 100
  min_examples: int = 40
  dedupe_threshold: float = 0.02


_BUILDER_CONFIGS: List[TypefaceConfig] = []  # filled once typeface_config exists


def typeface_config(image_size: int = 32, examples_per_class: int = 100,
                    min_examples: int = 40, seed: int = 0, dedupe_threshold: float = 0.02,
                    font_dirs: Sequence[str] = glyph_fonts.DEFAULT_FONT_DIRS,
                    font_files: Optional[Sequence[str]] = None) -> TypefaceConfig:
  """The config for these settings; its name encodes every one of them."""
  if not 1 <= min_examples <= examples_per_class:
    raise ValueError(f"need 1 <= min_examples ({min_examples}) <= examples_per_class "
                     f"({examples_per_class})")
  name = (f"s{image_size}_e{examples_per_class}_m{min_examples}_r{seed}"
          f"_t{round(dedupe_threshold * 10000)}")
  return rendered.make_config(
      TypefaceConfig, _BUILDER_CONFIGS, name, f"typefaces, {image_size}x{image_size} px",
      font_dirs, font_files, image_size=image_size, examples_per_class=examples_per_class,
      min_examples=min_examples, seed=seed, dedupe_threshold=dedupe_threshold)


_BUILDER_CONFIGS.append(typeface_config())  # the main job's, sized for 2 CPU cores


# ---------------------------------------------------------------------------------
# Faces -> classes and designs (pure numpy; tested on hand-made renderings).

def _pairwise_mad(signatures: np.ndarray, threshold: float) -> List[Tuple[int, int, float]]:
  """(i, j, mean |a - b|) for i < j with mean |a - b| <= threshold; values in [0, 1].

  Screened with the mean squared difference (one matrix product): for values in
  [0, 1], mean d^2 <= mean |d|, so no pair under the threshold is missed.
  """
  x = signatures.astype(np.float32) / 255.0
  sq = (x * x).sum(1)
  msd = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T) / x.shape[1]
  pairs = []
  for i, j in zip(*np.nonzero(np.triu(msd <= threshold + 1e-6, k=1))):
    mad = float(np.abs(x[i] - x[j]).mean())
    if mad <= threshold:
      pairs.append((int(i), int(j), mad))
  return pairs


def _find(parent: List[int], i: int) -> int:
  while parent[i] != i:
    parent[i] = parent[parent[i]]
    i = parent[i]
  return i


def designs(signatures: np.ndarray, design_keys: Sequence[str],
            dedupe_threshold: float) -> Tuple[List[int], List[int]]:
  """(kept face indices, design id per kept face).

  A face closer than ``dedupe_threshold`` to an earlier one is dropped; faces with the
  same design key, or closer than twice the threshold, share a design.
  """
  n = len(design_keys)
  parent = list(range(n))
  dropped = set()
  for i, j, mad in _pairwise_mad(signatures, 2 * dedupe_threshold):
    parent[_find(parent, j)] = _find(parent, i)
    if mad <= dedupe_threshold and i not in dropped:
      dropped.add(j)
  first_of_key = {}
  for i, key in enumerate(design_keys):  # a key's first face: joins itself, a no-op
    parent[_find(parent, i)] = _find(parent, first_of_key.setdefault(key, i))
  kept = [i for i in range(n) if i not in dropped]
  roots = {}
  return kept, [roots.setdefault(_find(parent, i), len(roots)) for i in kept]


def split_designs(design_ids: Sequence[int], seed: int) -> List[str]:
  """The split of each face: designs, largest first (seeded ties), each to the split
  furthest below its 64/16/20 share of the faces."""
  sizes = np.bincount(np.asarray(design_ids))
  tiebreak = np.random.default_rng([seed, 7]).permutation(len(sizes))
  order = sorted(range(len(sizes)), key=lambda d: (-sizes[d], tiebreak[d]))
  counts, total, of_design = [0, 0, 0], len(design_ids), {}
  for d in order:
    deficits = [splits.SPLIT_FRACTIONS[name] * total - c
                for name, c in zip(SPLITS, counts)]
    # Each split gets one design before any gets a second.
    s = counts.index(0) if 0 in counts else int(np.argmax(deficits))
    of_design[d] = SPLITS[s]
    counts[s] += sizes[d]
  return [of_design[d] for d in design_ids]


def choose_examples(renderings: Dict[str, np.ndarray], limit: int, seed: int,
                    face_key: str) -> List[str]:
  """Up to ``limit`` characters of one face in a seeded order, exact duplicates out."""
  chars = [c for c in LATIN_CHARS if c in renderings]
  digest = int.from_bytes(hashlib.sha1(face_key.encode()).digest()[:4], "little")
  order = np.random.default_rng([seed, digest]).permutation(len(chars))
  first_of = {}  # rendering -> its first character in the seeded order
  for k in order:
    first_of.setdefault(renderings[chars[k]].tobytes(), chars[k])
  return list(first_of.values())[:limit]


# ---------------------------------------------------------------------------------
# Rendering and the tfds builder.

def _design_key(face: glyph_fonts.FontFace) -> str:
  family = ImageFont.truetype(face.path, 16, index=face.index).getname()[0] or face.name
  return f"{os.path.dirname(face.path)}|{(family.split() or ['?'])[0].lower()}"


def _render(config: TypefaceConfig, num_workers: int):
  """Per face position: {char: image}, for every face of the installed fonts."""
  faces = glyph_fonts.list_faces(config.font_file_list())
  per_face = [dict() for _ in faces]
  # threshold -1: keep every face's rendering (faces are deduplicated as wholes here).
  for char, found in glyph_fonts.render_characters(
      list(LATIN_CHARS), faces, config.image_size, -1.0, num_workers=num_workers):
    for position, image in found:
      per_face[position][char] = image
  return faces, per_face


def build_classes(config: TypefaceConfig, num_workers: int):
  """The classes (``rendered.Classes``, sorted by face key; an example's key suffix is
  ``u<code point>``) and a JSON-friendly table of the faces."""
  faces, per_face = _render(config, num_workers)
  latin = [i for i, r in enumerate(per_face) if all(c in r for c in ALNUM)]
  if len(latin) < 3:
    raise glyph_fonts.MissingFontsError(
        f"Only {len(latin)} font faces in {config.where()} draw all 62 Latin letters and "
        "digits; the typeface benchmark needs at least 3. Install the Latin font packages "
        "with `bash tools/install_fonts.sh`.")
  signatures = np.stack([np.stack([per_face[i][c] for c in ALNUM]).ravel() for i in latin])
  kept, design_ids = designs(signatures, [_design_key(faces[i]) for i in latin],
                             config.dedupe_threshold)
  split_of = split_designs(design_ids, config.seed)
  classes = {s: {} for s in SPLITS}
  table = []
  for position, design, split in zip(kept, design_ids, split_of):
    face, renderings = faces[latin[position]], per_face[latin[position]]
    chars = choose_examples(renderings, config.examples_per_class, config.seed, face.key)
    if len(chars) < config.min_examples:
      continue
    classes[split][face.key] = [(glyph_fonts.class_name(c), renderings[c]) for c in chars]
    table.append(dict(dataclasses.asdict(face), design=design, split=split,
                      examples=len(chars)))
  empty = [s for s in SPLITS if not classes[s]]
  if empty:
    raise glyph_fonts.MissingFontsError(
        f"No typeface with >= {config.min_examples} characters left for split(s) "
        f"{empty} from {config.where()}; install more fonts or lower min_examples.")
  logging.info("Typefaces: %d faces draw Latin, %d distinct, %s classes per split",
               len(latin), len(kept), {s: len(c) for s, c in classes.items()})
  return {s: sorted(c.items()) for s, c in classes.items()}, table


class Typefaces(rendered.RenderedBuilder):
  """Latin typefaces from the installed fonts: a class is a face."""

  BUILDER_CONFIGS = _BUILDER_CONFIGS

  def _render_classes(self):
    classes, table = build_classes(self.builder_config, self._num_workers)
    return classes, table, sorted(f["path"] for f in table)


@gin.configurable
def load_typeface_split(split: str, data_dir: Optional[str] = None, image_size: int = 32,
                        examples_per_class: int = 100, min_examples: int = 40,
                        seed: int = 0, dedupe_threshold: float = 0.02,
                        font_dirs: Sequence[str] = glyph_fonts.DEFAULT_FONT_DIRS,
                        font_files: Optional[Sequence[str]] = None,
                        num_workers: Optional[int] = None):
  """One split as a ``splits.ImageSplit``; renders and prepares it on first use."""
  splits.check_split(split)
  config = typeface_config(image_size, examples_per_class, min_examples, seed,
                           dedupe_threshold, font_dirs, font_files)
  builder = Typefaces(data_dir=data_dir, config=config, num_workers=num_workers)
  builder.download_and_prepare()
  return rendered.rendered_split(builder, split)
