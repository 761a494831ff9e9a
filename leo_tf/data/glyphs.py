"""The built-in few-shot dataset: Han characters rendered from installed fonts.

One GB2312 character is a class; its visually distinct renderings in the installed
CJK faces are its examples. Nothing is downloaded: the builder scans the font
directories (``bash tools/install_fonts.sh`` installs the Debian packages), renders
with Pillow (see ``glyph_fonts`` for how), merges near-duplicate renderings, keeps
characters with at least ``min_examples`` distinct renderings, picks ``num_classes``
of them in a seeded order and splits the classes 64/16/20 into train/val/test, like
miniImageNet.

Examples: ``image`` uint8 [S, S, 1] (white glyph on black), ``label`` int64 index of
the class within its split (classes of a split sorted by code point), ``class_name``
like ``u4e00``, ``key`` ``<class_name>_<face key>`` (unique, no '-').

The result depends on the installed fonts and on Pillow's FreeType, not only on the
config: ``metadata.json`` of the prepared dataset records both, and
``load_glyph_split`` warns when the installed fonts changed since the build.
"""

import dataclasses
import logging
from typing import Dict, List, Optional, Sequence

import gin
import numpy as np

from leo_tf.data import glyph_fonts, rendered, splits

DEFAULT_NUM_CLASSES = 800
DEFAULT_IMAGE_SIZE = 32
DEFAULT_MIN_EXAMPLES = 20
DEFAULT_THRESHOLD = 0.03


@dataclasses.dataclass(eq=False)
class GlyphConfig(rendered.RenderedConfig):
  """What to render; build one with ``glyph_config`` so that the name is derived."""
  num_classes: int = DEFAULT_NUM_CLASSES
  image_size: int = DEFAULT_IMAGE_SIZE
  min_examples: int = DEFAULT_MIN_EXAMPLES
  dedupe_threshold: float = DEFAULT_THRESHOLD


_BUILDER_CONFIGS: List[GlyphConfig] = []  # filled once glyph_config exists


def glyph_config(num_classes: int = DEFAULT_NUM_CLASSES,
                 image_size: int = DEFAULT_IMAGE_SIZE,
                 min_examples: int = DEFAULT_MIN_EXAMPLES, seed: int = 0,
                 dedupe_threshold: float = DEFAULT_THRESHOLD,
                 font_dirs: Sequence[str] = glyph_fonts.DEFAULT_FONT_DIRS,
                 font_files: Optional[Sequence[str]] = None) -> GlyphConfig:
  """The config for these settings (the registered object when the name matches)."""
  if num_classes < 3:
    raise ValueError(f"num_classes must be >= 3 (one per split), got {num_classes}")
  if min_examples < 1:
    raise ValueError(f"min_examples must be >= 1, got {min_examples}")
  name = f"c{num_classes}_s{image_size}_m{min_examples}_r{seed}"
  if dedupe_threshold != DEFAULT_THRESHOLD:
    name += f"_t{round(dedupe_threshold * 10000)}"
  return rendered.make_config(
      GlyphConfig, _BUILDER_CONFIGS, name, f"{num_classes} classes, {image_size}x{image_size} px",
      font_dirs, font_files, num_classes=num_classes, image_size=image_size,
      min_examples=min_examples, seed=seed, dedupe_threshold=dedupe_threshold)


_BUILDER_CONFIGS.extend([
    # Sized for the 30-minute CPU end-to-end job (see docs/data.md).
    glyph_config(),
    # Most characters with >= 20 renderings when all ~30 packages are installed, at
    # miniImageNet's size (holds ~1.2 GB of images in memory while building).
    glyph_config(4000, 84),
])


class HanGlyphs(rendered.RenderedBuilder):
  """Han characters (GB2312) rendered from the installed CJK fonts."""

  BUILDER_CONFIGS = _BUILDER_CONFIGS

  def _render_classes(self):
    config = self.builder_config
    faces = _faces_or_raise(config)
    renderings = _select_classes(config, faces, self._num_workers)

    def examples(char):  # the face's key tells a character's renderings apart
      return [(faces[i].key, image) for i, image in renderings[char]]

    by_split = splits.split_classes(list(renderings), config.seed)
    classes = {s: [(glyph_fonts.class_name(c), examples(c)) for c in chars]
               for s, chars in by_split.items()}
    return classes, [dataclasses.asdict(f) for f in faces], config.font_file_list()


def _faces_or_raise(config: GlyphConfig) -> List[glyph_fonts.FontFace]:
  faces = glyph_fonts.han_faces(config.font_dirs, config.font_files, config.image_size)
  if not faces:
    raise glyph_fonts.MissingFontsError(glyph_fonts.missing_fonts_message(
        f"No font face with Han characters found in {config.where()}."))
  if len(faces) < config.min_examples:
    raise glyph_fonts.MissingFontsError(glyph_fonts.missing_fonts_message(
        f"Only {len(faces)} font faces with Han characters found in {config.where()}; "
        f"min_examples={config.min_examples} needs at least that many faces."))
  logging.info("Rendering from %d Han font faces", len(faces))
  return faces


def _select_classes(config: GlyphConfig, faces, num_workers: int) -> Dict[str, list]:
  """The first num_classes characters, in seeded order, with enough renderings."""
  chars = glyph_fonts.gb2312_hanzi()
  order = np.random.default_rng(config.seed).permutation(len(chars))
  selected, tried = {}, 0
  for char, renderings in glyph_fonts.render_characters(
      [chars[i] for i in order], faces, config.image_size, config.dedupe_threshold,
      num_workers=num_workers):
    tried += 1
    if len(renderings) >= config.min_examples:
      selected[char] = renderings
      if len(selected) == config.num_classes:
        return selected
  raise glyph_fonts.MissingFontsError(glyph_fonts.missing_fonts_message(
      f"Only {len(selected)} of {tried} GB2312 characters have >= "
      f"{config.min_examples} distinct renderings in the {len(faces)} installed faces; "
      f"{config.num_classes} classes were requested. Install more fonts or lower "
      "num_classes/min_examples."))


# ---------------------------------------------------------------------------------
# Loading a split.

def glyph_builder(data_dir: Optional[str] = None, num_workers: Optional[int] = None,
                  **config_kwargs) -> HanGlyphs:
  """The builder for ``glyph_config(**config_kwargs)`` under ``data_dir``."""
  return HanGlyphs(data_dir=data_dir, config=glyph_config(**config_kwargs),
                   num_workers=num_workers)


@gin.configurable
def load_glyph_split(split: str, data_dir: Optional[str] = None,
                     num_classes: int = DEFAULT_NUM_CLASSES,
                     image_size: int = DEFAULT_IMAGE_SIZE,
                     min_examples: int = DEFAULT_MIN_EXAMPLES, seed: int = 0,
                     dedupe_threshold: float = DEFAULT_THRESHOLD,
                     font_dirs: Sequence[str] = glyph_fonts.DEFAULT_FONT_DIRS,
                     font_files: Optional[Sequence[str]] = None,
                     num_workers: Optional[int] = None):
  """One split ('train', 'val' or 'test') as an ``ImageSplit``; builds it if needed.

  ``data_dir`` is the tfds data directory (None: tfds's default,
  ~/tensorflow_datasets). The first call renders (about a minute for the defaults on
  2 cores); later calls read the prepared files.
  """
  splits.check_split(split)
  builder = glyph_builder(data_dir, num_workers, num_classes=num_classes,
                          image_size=image_size, min_examples=min_examples, seed=seed,
                          dedupe_threshold=dedupe_threshold, font_dirs=font_dirs,
                          font_files=font_files)
  builder.download_and_prepare()
  _warn_if_fonts_changed(builder)
  return rendered.rendered_split(builder, split)


def _warn_if_fonts_changed(builder: HanGlyphs):
  recorded = builder.info.metadata.get("font_files")
  if recorded is not None and recorded != builder.builder_config.font_file_list():
    logging.warning(
        "The installed fonts differ from those %s was built from; it is kept as built. "
        "Delete %s to rebuild from the current fonts.", builder.name, builder.data_dir)
