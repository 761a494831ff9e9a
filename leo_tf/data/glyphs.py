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
import hashlib
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import gin
import numpy as np
import PIL
from PIL import features as pil_features
import tensorflow as tf
import tensorflow_datasets as tfds

from leo_tf.data import glyph_fonts, splits


def _provide_importlib_resources():
  """tfds 4.9.10 uses the importlib_resources backport to prepare any builder but
  declares it only for Python < 3.9; the standard library module has what it uses.
  A no-op once the backport is installed."""
  try:
    import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    import importlib.resources
    import importlib.resources.abc  # pylint: disable=unused-import
    sys.modules["importlib_resources"] = importlib.resources


_provide_importlib_resources()

DEFAULT_NUM_CLASSES = 800
DEFAULT_IMAGE_SIZE = 32
DEFAULT_MIN_EXAMPLES = 20
DEFAULT_THRESHOLD = 0.03
VERSION = "1.0.0"


@dataclasses.dataclass(eq=False)
class GlyphConfig(tfds.core.BuilderConfig):
  """What to render; build one with ``glyph_config`` so that the name is derived."""
  num_classes: int = DEFAULT_NUM_CLASSES
  image_size: int = DEFAULT_IMAGE_SIZE
  min_examples: int = DEFAULT_MIN_EXAMPLES
  seed: int = 0
  dedupe_threshold: float = DEFAULT_THRESHOLD
  font_dirs: Tuple[str, ...] = glyph_fonts.DEFAULT_FONT_DIRS
  font_files: Optional[Tuple[str, ...]] = None  # overrides font_dirs


def _config_name(num_classes, image_size, min_examples, seed, threshold, font_dirs,
                 font_files) -> str:
  name = f"c{num_classes}_s{image_size}_m{min_examples}_r{seed}"
  if threshold != DEFAULT_THRESHOLD:
    name += f"_t{round(threshold * 10000)}"
  fonts = tuple(font_files or ()) or tuple(font_dirs)
  if fonts != glyph_fonts.DEFAULT_FONT_DIRS:
    # Different fonts give different data: keep their prepared copies apart.
    name += "_f" + hashlib.sha1("\n".join(sorted(fonts)).encode()).hexdigest()[:8]
  return name


def _make_config(num_classes, image_size, min_examples=DEFAULT_MIN_EXAMPLES, seed=0,
                 dedupe_threshold=DEFAULT_THRESHOLD,
                 font_dirs=glyph_fonts.DEFAULT_FONT_DIRS, font_files=None) -> GlyphConfig:
  font_dirs = tuple(font_dirs)
  font_files = tuple(font_files) if font_files else None
  return GlyphConfig(
      name=_config_name(num_classes, image_size, min_examples, seed, dedupe_threshold,
                        font_dirs, font_files),
      version=VERSION, description=f"{num_classes} classes, {image_size}x{image_size} px",
      num_classes=num_classes, image_size=image_size, min_examples=min_examples,
      seed=seed, dedupe_threshold=dedupe_threshold, font_dirs=font_dirs,
      font_files=font_files)


_BUILDER_CONFIGS = [
    # Sized for the 30-minute CPU end-to-end job (see docs/data.md).
    _make_config(DEFAULT_NUM_CLASSES, DEFAULT_IMAGE_SIZE),
    # Most characters with >= 20 renderings when all ~30 packages are installed, at
    # miniImageNet's size (holds ~1.2 GB of images in memory while building).
    _make_config(4000, 84),
]


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
  config = _make_config(num_classes, image_size, min_examples, seed, dedupe_threshold,
                        font_dirs, font_files)
  registered = {c.name: c for c in _BUILDER_CONFIGS}
  return registered.get(config.name, config)


def rendered_split(builder: tfds.core.GeneratorBasedBuilder, split: str):
  """One prepared split of a rendered dataset as a ``splits.ImageSplit``."""
  def example(ex):
    return {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32), "key": ex["key"]}

  size = builder.builder_config.image_size
  return splits.ImageSplit(
      dataset=builder.as_dataset(split=split, shuffle_files=False).map(
          example, num_parallel_calls=tf.data.AUTOTUNE),
      class_names=list(builder.info.metadata["class_names"][split]),
      num_examples=builder.info.splits[split].num_examples,
      image_shape=(size, size, 1))


def rendered_info(builder: tfds.core.GeneratorBasedBuilder, doc: str) -> tfds.core.DatasetInfo:
  """The features of a rendered dataset (glyphs, typefaces): one-channel square images."""
  size = builder.builder_config.image_size
  return builder.dataset_info_from_configs(
      description=doc.split("\n\n")[1],
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
          "label": tfds.features.Scalar(dtype=np.int64),
          "class_name": tfds.features.Text(),
          "key": tfds.features.Text(),
      }),
      supervised_keys=("image", "label"),
      metadata=tfds.core.MetadataDict())


class HanGlyphs(tfds.core.GeneratorBasedBuilder):
  """Han characters (GB2312) rendered from the installed CJK fonts."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = _BUILDER_CONFIGS

  def __init__(self, *, num_workers: Optional[int] = None, **kwargs):
    # Rendering processes; does not change the data.
    self._num_workers = num_workers or os.cpu_count() or 1
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return rendered_info(self, __doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    config = self.builder_config
    faces = _faces_or_raise(config)
    classes = _select_classes(config, faces, self._num_workers)
    by_split = splits.split_classes(list(classes), config.seed)
    metadata = self.info.metadata
    metadata["class_names"] = {s: [glyph_fonts.class_name(c) for c in chars]
                               for s, chars in by_split.items()}
    metadata["faces"] = glyph_fonts.face_table(faces)
    metadata["font_files"] = _installed_font_files(config)
    metadata["pillow"] = PIL.__version__
    metadata["freetype"] = pil_features.version("freetype2")
    return {s: self._generate_examples(chars, classes, faces)
            for s, chars in by_split.items()}

  def _generate_examples(self, chars, classes, faces):
    for label, char in enumerate(chars):
      name = glyph_fonts.class_name(char)
      for face_position, image in classes[char]:
        key = f"{name}_{faces[face_position].key}"
        yield key, {"image": image[:, :, None], "label": label, "class_name": name,
                    "key": key}


def _installed_font_files(config: GlyphConfig) -> List[str]:
  return sorted(config.font_files or glyph_fonts.find_font_files(config.font_dirs))


def _faces_or_raise(config: GlyphConfig) -> List[glyph_fonts.FontFace]:
  faces = glyph_fonts.han_faces(config.font_dirs, config.font_files, config.image_size)
  where = ", ".join(config.font_files or config.font_dirs)
  if not faces:
    raise glyph_fonts.MissingFontsError(glyph_fonts.missing_fonts_message(
        f"No font face with Han characters found in {where}."))
  if len(faces) < config.min_examples:
    raise glyph_fonts.MissingFontsError(glyph_fonts.missing_fonts_message(
        f"Only {len(faces)} font faces with Han characters found in {where}; "
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
# The common image-split form.

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
  return rendered_split(builder, split)


def _warn_if_fonts_changed(builder: HanGlyphs):
  recorded = builder.info.metadata.get("font_files")
  if recorded is not None and recorded != _installed_font_files(builder.builder_config):
    logging.warning(
        "The installed fonts differ from those %s was built from; it is kept as built. "
        "Delete %s to rebuild from the current fonts.", builder.name, builder.data_dir)
