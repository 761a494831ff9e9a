"""What the built-in rendered datasets (``glyphs``, ``typefaces``) share.

Both render characters from the installed fonts (``glyph_fonts``), so a config names
its fonts, the tfds builder downloads nothing and records the fonts and Pillow's
FreeType in ``metadata.json``, and a prepared split is read back as an ``ImageSplit``.
"""

import dataclasses
import hashlib
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL
from PIL import features as pil_features
import tensorflow as tf
import tensorflow_datasets as tfds

from leo_tf.data import glyph_fonts, splits

VERSION = "1.0.0"
# {split: [(class name, [(key suffix, uint8 [S, S] image)])]}, classes in label order.
Classes = Dict[str, List[Tuple[str, List[Tuple[str, np.ndarray]]]]]


@dataclasses.dataclass(eq=False)
class RenderedConfig(tfds.core.BuilderConfig):
  """The settings both datasets have; build one with ``make_config``."""
  image_size: int = 32
  seed: int = 0
  dedupe_threshold: float = 0.0
  font_dirs: Tuple[str, ...] = glyph_fonts.DEFAULT_FONT_DIRS
  font_files: Optional[Tuple[str, ...]] = None  # overrides font_dirs

  def font_file_list(self) -> List[str]:
    return sorted(self.font_files or glyph_fonts.find_font_files(self.font_dirs))

  def where(self) -> str:
    """The fonts, as error messages name them."""
    return ", ".join(self.font_files or self.font_dirs)


def make_config(config_class, registered: Sequence[RenderedConfig], name: str,
                description: str, font_dirs: Sequence[str],
                font_files: Optional[Sequence[str]], **settings) -> RenderedConfig:
  """The config named ``name`` plus its fonts; the registered object when one has that
  name (tfds refuses an equal copy of a registered config)."""
  font_dirs = tuple(font_dirs)
  font_files = tuple(font_files) if font_files else None
  fonts = font_files or font_dirs
  if fonts != glyph_fonts.DEFAULT_FONT_DIRS:
    # Different fonts give different data: keep their prepared copies apart.
    name += "_f" + hashlib.sha1("\n".join(sorted(fonts)).encode()).hexdigest()[:8]
  for config in registered:
    if config.name == name:
      return config
  return config_class(name=name, version=VERSION, description=description,
                      font_dirs=font_dirs, font_files=font_files, **settings)


class RenderedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One-channel square images rendered from fonts; subclasses say which classes.

  The description is the second paragraph of the subclass's module docstring.
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, *, num_workers: Optional[int] = None, **kwargs):
    # Rendering processes; does not change the data.
    self._num_workers = num_workers or os.cpu_count() or 1
    super().__init__(**kwargs)

  def _render_classes(self) -> Tuple[Classes, List[dict], List[str]]:
    """The classes, a JSON-friendly table of the faces, the font files rendered from."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=sys.modules[type(self).__module__].__doc__.split("\n\n")[1],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
            "label": tfds.features.Scalar(dtype=np.int64),
            "class_name": tfds.features.Text(),
            "key": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    classes, faces, font_files = self._render_classes()
    self.info.metadata.update(
        class_names={s: [name for name, _ in c] for s, c in classes.items()}, faces=faces,
        font_files=font_files, pillow=PIL.__version__,
        freetype=pil_features.version("freetype2"))
    return {s: self._generate_examples(c) for s, c in classes.items()}

  def _generate_examples(self, classes):
    for label, (name, examples) in enumerate(classes):
      for suffix, image in examples:
        key = f"{name}_{suffix}"
        yield key, {"image": image[:, :, None], "label": label, "class_name": name,
                    "key": key}


def rendered_split(builder: RenderedBuilder, split: str) -> splits.ImageSplit:
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
